"""The MLflow Model Registry as a source of checkpoints: ``models:/<name>@<alias>`` and ``models:/<name>/<version>``.

A registry URI is resolved through the tracking server named by ``MLFLOW_TRACKING_URI`` (its credentials, if any,
come from MLflow's own environment variables such as ``MLFLOW_TRACKING_TOKEN``, never from a flow parameter) into
the model version it points at *now* and a local ``state_dict`` file of that version. Versions are immutable in
MLflow, so each version is downloaded once per machine into ``$FOCUS_MLFLOW_CACHE`` (default
``~/.cache/focus-audit/mlflow``), and a pinned version already there is read without the server
(:func:`cached`): an MLflow outage does not stop the audit of a version it evaluated before. An alias is asked of
the server every time, so moving it moves what is resolved.

The accepted artifacts (nothing here unpickles code; the weights are later read with ``weights_only=True``):

- a version whose source is one weights file, e.g. ``mlflow.log_artifact("digits.pt")`` registered with
  ``MlflowClient().create_model_version(name, f"{run.info.artifact_uri}/digits.pt", run_id=...)``;
- a version whose source is a folder holding ``state_dict.pth``, what ``mlflow.pytorch.log_state_dict(
  model.state_dict(), "weights")`` writes (register ``runs:/<run id>/weights``), also inside a logged model;
- a folder holding exactly one ``.pt``/``.pth`` file outside a logged PyTorch model's pickled ``data/`` folder;
- a model logged with ``mlflow.pytorch.log_model(..., serialization_format="pt2")`` (MLflow 3's safe format):
  its weights are read from the ``.pt2`` archive's raw tensor records (an archive holding any pickled record is
  refused) and written once as a ``state_dict`` file next to the download.

A model logged with ``mlflow.pytorch.log_model`` as a pickled module is refused with one sentence that says to
log its ``state_dict``.

Examples
--------
>>> is_registry_uri("models:/digits@champion"), is_registry_uri("s3://bucket/w.pt")
(True, False)
>>> parse_registry_uri("models:/digits/3")
('digits', '3', None)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focus_core.errors import FocusError

__all__ = [
    "CACHE_ENV_VAR",
    "RegistryVersion",
    "cached",
    "is_registry_uri",
    "parse_registry_uri",
    "resolve",
    "version_for_alias",
]

#: The environment variable naming the download cache (default ``~/.cache/focus-audit/mlflow``).
CACHE_ENV_VAR = "FOCUS_MLFLOW_CACHE"
_SCHEME = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))$")
_WEIGHT_SUFFIXES = (".pt", ".pth")
_STATE_DICT_FILE = "state_dict.pth"  # the name mlflow.pytorch.log_state_dict writes
_HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RegistryVersion:
    """One model version of the MLflow Model Registry and a local copy of its ``state_dict``.

    Attributes
    ----------
    name, version:
        The registered model and the version found (a string of digits, as MLflow gives it).
    alias:
        The alias it was reached through, or ``None`` for a URI that named the version.
    run_id:
        The MLflow run that produced it (``None`` when the version was registered without one).
    source:
        The artifact URI the version points at.
    path:
        The local ``state_dict`` file (in the download cache): hash it, load it with ``weights_only=True``.
    """

    name: str
    version: str
    alias: str | None
    run_id: str | None
    source: str
    path: Path

    @property
    def uri(self) -> str:
        """The URI pinned to this version, ``models:/<name>/<version>``: what a record of it should keep."""
        return f"{_SCHEME}{self.name}/{self.version}"


def is_registry_uri(value: str | None) -> bool:
    """Whether ``value`` is an MLflow Model Registry URI (``models:/...``), well formed or not."""
    return bool(value) and str(value).startswith(_SCHEME)


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` (one of both None).

    Raises
    ------
    FocusError
        For any other form (a stage, ``latest``, a logged model id ``models:/m-...``, a path inside the model).
    """
    match = _URI.match(uri.strip())
    if not match:
        raise FocusError(
            f"{uri!r} is not a registry URI focus-audit reads: write models:/<registered-name>@<alias> "
            "or models:/<registered-name>/<version>."
        )
    return match["name"], match["version"], match["alias"]


def resolve(uri: str, cache_dir: str | os.PathLike | None = None, *, refresh: bool = False) -> RegistryVersion:
    """The model version ``uri`` points at now, with its ``state_dict`` downloaded to a local file.

    A version is downloaded once per cache folder; ``refresh`` drops the cached copy and downloads it again
    (what :func:`flows.weights.weight_store.local_copy` does once when the bytes are not the recorded ones).

    Raises
    ------
    FocusError
        One sentence each: a malformed URI, no ``MLFLOW_TRACKING_URI``, no server answering there, an unknown
        registered model, alias or version, or a version that holds no ``state_dict`` file.
    """
    name, version, alias = parse_registry_uri(uri)
    client, server = _client()
    if alias is not None:
        found = _call(lambda: client.get_model_version_by_alias(name, alias), server,
                      lambda: _missing_alias(client, name, alias, server))
    else:
        found = _call(lambda: client.get_model_version(name, version), server,
                      lambda: _missing_version(client, name, version, server))
    source = _call(lambda: client.get_model_version_download_uri(name, found.version), server, lambda: None)
    path = _download(name, str(found.version), source, server, cache_dir, refresh)
    return RegistryVersion(name=name, version=str(found.version), alias=alias, run_id=found.run_id or None,
                           source=source, path=path)


def cached(uri: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The local ``state_dict`` file of the pinned version ``models:/<name>/<version>`` when this machine downloaded
    it before from the server ``MLFLOW_TRACKING_URI`` names, else ``None`` (an alias, another server, not cached).

    Asks no server: a version's artifacts never change, so its download is its bytes. Callers that know the sha256
    those bytes must have check it (:func:`flows.weights.weight_store.local_copy`).
    """
    try:
        name, version, alias = parse_registry_uri(uri)
    except FocusError:
        return None
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if version is None or alias is not None or not tracking_uri:
        return None
    target = _cache_root(cache_dir) / _cache_key(_redacted(tracking_uri), name, version)
    if not target.is_dir():
        return None
    try:
        return _state_dict_file(target, f"{name}/{version}")
    except FocusError:
        return None


def version_for_alias(name: str, alias: str, cache_dir: str | os.PathLike | None = None) -> RegistryVersion:
    """The version the alias ``alias`` of registered model ``name`` points at now (``focus audit --follow-alias``).

    Examples
    --------
    >>> version_for_alias("resnet18-prod", "champion").uri  # doctest: +SKIP
    'models:/resnet18-prod/7'
    """
    return resolve(f"{_SCHEME}{name}@{alias}", cache_dir)


def _client() -> tuple[Any, str]:
    """An MlflowClient on ``MLFLOW_TRACKING_URI`` and the server's name fit for a message (no credentials)."""
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not tracking_uri:
        raise FocusError(
            "Resolving a models:/ URI needs the MLflow tracking server: set MLFLOW_TRACKING_URI "
            "(e.g. http://mlflow:5000) in the environment where focus runs."
        )
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise FocusError("Reading the MLflow Model Registry needs mlflow: pip install 'focus-audit[mlflow]'.") from None
    server = _redacted(tracking_uri)
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme in ("http", "https"):  # MLflow retries a dead server for minutes: ask once, briefly, first
        health = _redacted(tracking_uri).rstrip("/") + "/health"  # no user-info: urllib cannot send it anyway
        try:
            with urllib.request.urlopen(health, timeout=_HEALTH_TIMEOUT_S):  # noqa: S310 - http(s) only
                pass
        except urllib.error.HTTPError:
            pass  # it answers (a proxy without /health, an auth wall): the calls below say more
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise FocusError(
                f"No MLflow tracking server answers at {server} ({reason}): start it or fix MLFLOW_TRACKING_URI."
            ) from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), server


def _redacted(uri: str) -> str:
    """``uri`` without user-info, query or fragment (a token or password never reaches a message)."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) if parts.scheme else uri


def _call(fn: Any, server: str, on_missing: Any) -> Any:
    """Run one registry call; a missing resource becomes ``on_missing()``'s sentence, anything else a short one."""
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as error:
        code = getattr(error, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            message = on_missing()
            if message:
                raise FocusError(message) from None
        first = str(error.message if hasattr(error, "message") else error).splitlines()[0][:200]
        raise FocusError(
            f"The MLflow server at {server} refused the request ({code}: {first}); check its log."
        ) from None


def _missing_alias(client: Any, name: str, alias: str, server: str) -> str:
    model = _registered_model(client, name, server)
    aliases = sorted(getattr(model, "aliases", {}) or {})
    known = f"its aliases are {', '.join(aliases)}" if aliases else "it has no aliases"
    return (f"Registered model {name!r} has no alias {alias!r} ({known}): set it with "
            f"MlflowClient().set_registered_model_alias({name!r}, {alias!r}, <version>).")


def _missing_version(client: Any, name: str, version: str | None, server: str) -> str:
    _registered_model(client, name, server)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{_quoted(name)}'"))
    known = f"it has versions {versions[0]} to {versions[-1]}" if versions else "it has no versions yet"
    return f"Registered model {name!r} has no version {version} ({known}): pick one of them or register it first."


def _registered_model(client: Any, name: str, server: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise FocusError(
            f"No registered model {name!r} on the MLflow server at {server}: check the name in the registry."
        ) from None


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "focus-audit" / "mlflow").expanduser()


def _cache_key(server: str, name: str, version: str) -> str:
    """The cache folder's name of a version on a server (the server as :func:`_redacted` writes it)."""
    return hashlib.sha256(f"{server}\n{name}\n{version}".encode()).hexdigest()[:32]


def _download(name: str, version: str, source: str, server: str, cache_dir: str | os.PathLike | None,
              refresh: bool = False) -> Path:
    """The version's ``state_dict`` file, downloaded once into the cache (a folder renamed into place when complete)."""
    import mlflow.artifacts

    key = _cache_key(server, name, version)
    target = _cache_root(cache_dir) / key
    if refresh and target.is_dir():  # renamed away first: a reader never sees half a folder
        stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=target.parent))
        try:
            target.rename(stale / key)
        except OSError:
            pass  # another process refreshed it first
        shutil.rmtree(stale, ignore_errors=True)
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging),
                                                tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
            try:
                staging.rename(target)
            except OSError:  # another process finished the same download first: keep its copy
                pass
        except Exception as error:  # noqa: BLE001 - any download failure means the same to the user
            raise FocusError(
                f"Model version {name}/{version} could not be downloaded from the MLflow server at {server} "
                f"({type(error).__name__}): check that its artifacts exist and are readable."
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _state_dict_file(target, f"{name}/{version}")


_FROM_PT2 = "focus-state_dict-from-pt2.pt"  # the state_dict read out of a pt2 program, beside its download


def _state_dict_file(folder: Path, label: str) -> Path:
    """The one ``state_dict`` file among a version's downloaded artifacts (see the module's accepted forms)."""
    if (folder / _FROM_PT2).is_file():
        return folder / _FROM_PT2
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    named = [p for p in files if p.name == _STATE_DICT_FILE]
    if len(named) == 1:
        return named[0]
    pickled = _pickled_model_folders(folder)
    candidates = [p for p in files if p.name.endswith(_WEIGHT_SUFFIXES) and not any(d in p.parents for d in pickled)
                  and p not in named]
    if len(named) + len(candidates) == 1:
        return (named + candidates)[0]
    if len(named) + len(candidates) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in named + candidates)
        raise FocusError(f"Model version {label} holds several weights files ({names}): register a folder with one.")
    programs = [p for p in files if p.suffix == ".pt2" and any(d in p.parents for d in pickled)]
    if len(programs) == 1:
        return _state_dict_from_pt2(programs[0], folder / _FROM_PT2, label)
    if pickled:
        raise FocusError(
            f"Model version {label} is a logged PyTorch model without a state_dict file, and focus-audit never "
            "unpickles a model: log mlflow.pytorch.log_state_dict(model.state_dict(), 'state_dict') and register that."
        )
    raise FocusError(
        f"Model version {label} holds no state_dict file (.pt or .pth): register the file written by "
        "torch.save(model.state_dict(), path) or by mlflow.pytorch.log_state_dict."
    )


def _pickled_model_folders(folder: Path) -> list[Path]:
    """The ``model_data`` folders of every logged PyTorch model (an ``MLmodel`` with a pytorch flavor) in ``folder``."""
    import yaml

    found = []
    for mlmodel in folder.rglob("MLmodel"):
        try:
            flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("pytorch")
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(flavor, dict):
            found.append(mlmodel.parent / str(flavor.get("model_data", "data")))
    return found


def _state_dict_from_pt2(program: Path, out: Path, label: str) -> Path:
    """Write the parameters and buffers of a ``torch.export`` ``.pt2`` archive to ``out`` as a ``state_dict`` file.

    Only raw tensor records are read (torch's own archive reader); an archive with a pickled record, more than one
    program, or a layout this torch cannot read is refused in one sentence.
    """
    from focus_core.weights import save_atomically

    refused = FocusError(
        f"Model version {label} is a pt2 program whose weights focus-audit cannot read without unpickling: log "
        "mlflow.pytorch.log_state_dict(model.state_dict(), 'state_dict') and register that."
    )
    try:
        from torch.export.pt2_archive import _package as pt2
        from torch.export.pt2_archive.constants import WEIGHTS_CONFIG_FILENAME_FORMAT

        with pt2.PT2ArchiveReader(str(program)) as reader:
            names = [n for n in reader.get_file_names() if re.fullmatch(r"models/[^/]+\.json", n)]
            if len(names) != 1:
                raise refused
            model = names[0][len("models/"):-len(".json")]
            config = json.loads(reader.read_string(WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)))["config"]
            if any(entry.get("use_pickle") for entry in config.values()):
                raise refused
            state = pt2._load_state_dict(reader, model)  # raw records only: nothing is unpickled
    except FocusError:
        raise
    except Exception:  # noqa: BLE001 - another torch's archive layout, a damaged file: the same to the user
        raise refused from None
    if not isinstance(state, dict) or not state:
        raise refused
    save_atomically({key: value.detach().clone() for key, value in state.items()}, out)
    return out
