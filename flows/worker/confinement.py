"""What a flow run may import, read and write: the worker's trust level and the operator's roots.

Two trust levels:

- **Your own machine** (``focus ...``, a notebook, a flow you call): you may import your own code
  (``package.module:factory``) and read and write any path; setting :data:`DATA_ROOTS_ENV`,
  :data:`OUTPUT_ROOT_ENV` or :data:`ALLOWED_URLS_ENV` confines paths and URLs here too.
- **A worker serving deployments** runs what anyone who can fill a deployment's form typed. A process is one when
  Prefect started it for a flow run (a worker or a runner sets ``PREFECT__FLOW_RUN_ID`` in the flow run's
  environment, which no flow parameter can change), when the current flow run belongs to a deployment, or when
  the operator sets :data:`CONFINED_ENV` to ``1``. Nothing turns it off. There:

  - an architecture is a built-in name, a ``timm:`` model, or a factory the operator allowed (:data:`FACTORIES_ENV`,
    or the entry-point group :data:`FACTORY_ENTRY_POINTS` of an installed package); anything else is refused before
    any import;
  - datasets and local weights are read from :data:`DATA_ROOTS_ENV` or the output root; checkpoints, tile caches
    and figures are written under the output root (:data:`OUTPUT_ROOT_ENV`; default the working directory the
    flow run starts in, the project directory on a process worker), with ``..`` and symbolic links resolved first;
  - a URL is one of :data:`ALLOWED_URLS_ENV`'s prefixes when set, else an object store or registry
    (:data:`OBJECT_STORE_SCHEMES`) or HTTP(S) to a public address; a ``file://`` URL is a path (held to the roots),
    and loopback, link-local and private addresses are refused unless a prefix allows them.

Every refusal is one sentence (a :class:`~focus_core.errors.FocusError`, so a ``ValueError``): the parameter models
call these checks in their validators, so a flow run's parameters are refused before its first line.

Examples
--------
>>> import os
>>> confined(environ={})
False
>>> confined(environ={"PREFECT__FLOW_RUN_ID": "0b7d..."})
True
>>> check_location("file:///etc/shadow", environ={"FOCUS_CONFINED": "1", "FOCUS_DATA_ROOTS": "/data"})
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
focus_core.errors.FocusError: '/etc/shadow' is outside the folders this worker reads (/data, ...
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import unquote, urlsplit

from focus_core.arch_policy import ANY_FACTORY, FactoryPolicy
from focus_core.arch_string import parse_architecture
from focus_core.errors import FocusError

__all__ = [
    "ALLOWED_URLS_ENV",
    "CONFINED_ENV",
    "DATA_ROOTS_ENV",
    "FACTORIES_ENV",
    "FACTORY_ENTRY_POINTS",
    "OBJECT_STORE_SCHEMES",
    "OUTPUT_ROOT_ENV",
    "check_architecture",
    "check_location",
    "check_output",
    "check_read_path",
    "confined",
    "factory_policy",
]

#: ``1`` confines this process like a worker's, whoever started it.
CONFINED_ENV = "FOCUS_CONFINED"
#: Comma-separated ``package.module:factory`` paths a worker may build.
FACTORIES_ENV = "FOCUS_ALLOWED_FACTORIES"
#: The entry-point group whose entries (``name = package.module:factory``) a worker may build too.
FACTORY_ENTRY_POINTS = "focus_audit.factories"
#: Folders (separated by ``os.pathsep``, ``:`` on Linux) a worker reads datasets and local weights from.
DATA_ROOTS_ENV = "FOCUS_DATA_ROOTS"
#: The one folder a worker writes checkpoints, tile caches and figures under (and may read back).
OUTPUT_ROOT_ENV = "FOCUS_OUTPUT_ROOT"
#: Comma-separated URL prefixes (``s3://models/``, ``https://weights.example.com/``) a worker may read and write.
ALLOWED_URLS_ENV = "FOCUS_ALLOWED_URLS"
#: Schemes whose endpoint and credentials are the worker's own (never the URL's): allowed while no prefix is set.
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "models"})
_HTTP = frozenset({"http", "https"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"


def confined(*, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process serves deployments: strangers' parameters, the operator's limits (see the module)."""
    env = os.environ if environ is None else environ
    if env.get(_FLOW_RUN_ENV) or env.get(CONFINED_ENV, "").strip() == "1":
        return True
    if environ is not None or "prefect.context" not in sys.modules:  # no Prefect loaded: no flow run to be in
        return False
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def factory_policy(*, environ: Mapping[str, str] | None = None) -> FactoryPolicy:
    """:data:`~focus_core.arch_policy.ANY_FACTORY` on your own machine; on a worker the factories its operator
    allowed (:data:`FACTORIES_ENV` and the entry points of :data:`FACTORY_ENTRY_POINTS`)."""
    env = os.environ if environ is None else environ
    if not confined(environ=environ):
        return ANY_FACTORY
    listed = {item.strip() for item in env.get(FACTORIES_ENV, "").split(",") if item.strip()}
    registered = {entry.value.strip() for entry in entry_points(group=FACTORY_ENTRY_POINTS)}
    return FactoryPolicy(frozenset(listed | registered))


def check_architecture(arch: str, *, environ: Mapping[str, str] | None = None) -> str:
    """``arch`` itself when this process may build it; a one-sentence FocusError before any import otherwise."""
    factory_policy(environ=environ).check(parse_architecture(arch))
    return arch


def check_read_path(path: str | None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """``path`` itself when it lies in a data root or the output root (always, unconfined and with no root set)."""
    if path:
        roots = _read_roots(os.environ if environ is None else environ, confined(environ=environ))
        if roots is not None:
            _inside(path, roots, "reads")
    return path


def check_output(location: str | None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """``location`` itself when this process may write there: a folder under the output root, or an allowed URL."""
    if not location:
        return location
    env = os.environ if environ is None else environ
    if _is_url(location):
        return _check_url(location, env, confined(environ=environ), write=True)
    root = _output_root(env, confined(environ=environ))
    if root is not None:
        _inside(location, [root], "writes")
    return location


def check_location(location: str | None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """``location`` itself when this process may read weights from it: a path as :func:`check_read_path`, a URL as
    the module says (a prefix of :data:`ALLOWED_URLS_ENV`, an object store, a public HTTP(S) address)."""
    if not location:
        return location
    env = os.environ if environ is None else environ
    if _is_url(location):
        return _check_url(location, env, confined(environ=environ), write=False)
    return check_read_path(location, environ=environ)


def _is_url(location: str) -> bool:
    """A URL as :func:`flows.weights.weight_store.is_url` reads one.

    ``scheme://`` with a scheme of two letters or more, or ``models:/``.
    """
    return bool(_URL.match(location)) or location.startswith("models:/")


def _output_root(env: Mapping[str, str], is_worker: bool) -> Path | None:
    """The output root: :data:`OUTPUT_ROOT_ENV`, else on a worker the working directory; ``None``: anywhere."""
    given = env.get(OUTPUT_ROOT_ENV, "").strip()
    if given:
        return _real(given)
    return _real(os.getcwd()) if is_worker else None


def _read_roots(env: Mapping[str, str], is_worker: bool) -> list[Path] | None:
    """The data roots and the output root; ``None``: anywhere (unconfined, no root set)."""
    data = [_real(item) for item in env.get(DATA_ROOTS_ENV, "").split(os.pathsep) if item.strip()]
    output = _output_root(env, is_worker)
    if not data and output is None:
        return None
    return data + ([output] if output is not None else [])


def _real(path: str | Path) -> Path:
    """``path`` absolute with ``~``, ``..`` and every symbolic link of its existing part resolved."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _inside(path: str, roots: list[Path], verb: str) -> None:
    real = _real(path)
    if not any(real == root or root in real.parents for root in roots):
        shown = ", ".join(str(r) for r in roots)
        variable = OUTPUT_ROOT_ENV if verb == "writes" else f"{DATA_ROOTS_ENV} or {OUTPUT_ROOT_ENV}"
        raise FocusError(
            f"{path!r} is outside the folders this worker {verb} ({shown}; links and '..' resolved): pass a path "
            f"inside them, or ask the operator to set {variable}."
        )


def _check_url(url: str, env: Mapping[str, str], is_worker: bool, write: bool) -> str:
    prefixes = [item.strip() for item in env.get(ALLOWED_URLS_ENV, "").split(",") if item.strip()]
    if not is_worker and not prefixes:
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":  # a path: held to the roots, whatever the prefixes say
        path = unquote(parts.path)
        roots = ([root] if (root := _output_root(env, is_worker)) else None) if write else _read_roots(env, is_worker)
        if roots is not None:
            _inside(path, roots, "writes" if write else "reads")
        return url
    if ".." in unquote(parts.path).split("/"):
        raise FocusError(f"The URL {_shown(url)} holds a '..' segment: pass the object's own URL.")
    if prefixes:
        if not any(_under(url, prefix) for prefix in prefixes):
            raise FocusError(
                f"The URL {_shown(url)} is under none of the prefixes this worker may use ({', '.join(prefixes)}): "
                f"pass a URL under one, or ask the operator to add it to {ALLOWED_URLS_ENV}."
            )
        return url
    if scheme in OBJECT_STORE_SCHEMES:
        return url
    if scheme in _HTTP and not write:
        _check_public_host(url, parts.hostname or "")
        return url
    raise FocusError(
        f"This worker {'writes' if write else 'reads'} no {scheme}:// URL: use s3://, gs://, az://, models:/ or a "
        f"public https:// address, or ask the operator to allow a prefix in {ALLOWED_URLS_ENV}."
    )


def _under(url: str, prefix: str) -> bool:
    """Whether ``url`` is ``prefix`` or lies below it (``s3://models`` covers ``s3://models/a``, not ``s3://m2``)."""
    if url == prefix or prefix.endswith("/") and url.startswith(prefix):
        return True
    return url.startswith(prefix.rstrip("/") + "/")


def _check_public_host(url: str, host: str) -> None:
    """Refuse a host that is, or resolves to, a loopback, link-local, private or reserved address."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)} if host else set()
    except OSError:
        addresses = set()  # it does not resolve: the download fails with its own sentence
    for address in addresses | ({host} if _is_ip(host) else set()):
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise FocusError(
                f"The URL {_shown(url)} points at {ip}, a loopback, link-local or private address this worker does "
                f"not fetch from: pass a public URL, or ask the operator to allow its prefix in {ALLOWED_URLS_ENV}."
            )
    if not host:
        raise FocusError(f"The URL {_shown(url)} names no host: pass the full URL of the weights.")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _shown(url: str) -> str:
    """The URL without user-info and query (either may hold a credential), for a message."""
    parts = urlsplit(url)
    return repr(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}")
