"""Where weights live: a local path or an fsspec URL, read through a local cache keyed by sha256.

A weights file (or a training run's resume checkpoint) is named by a *location*: a local path or a URL
such as ``s3://bucket/models/r18.pt``, ``gs://...``, ``az://...`` or ``file:///models/r18.pt``. A worker
never loads a URL in place: :func:`local_copy` downloads it once into the cache folder
(``$FOCUS_WEIGHTS_CACHE``, default ``~/.cache/focus-audit/weights``) as ``sha256/<hex>.pt`` (written
through a hidden partial file and renamed), and checks the cached file's hash before it hands it out.
A small index (``urls/<sha256 of the URL>.json``) remembers which bytes a URL held and the object's
size and ETag (or modification time) then: a later run whose metadata request (HEAD) finds the object
unchanged reads the cache without downloading it again; a changed object is downloaded and hashed anew.

A download is bounded (:mod:`flows.weights.cache_limits`, set in the worker's environment): connect and read
timeouts and a total deadline (a hanging or trickling server fails in their time, as a ``TimeoutError``), and a
size cap (an object larger than ``FOCUS_WEIGHTS_MAX_BYTES`` is refused before, or while, it is downloaded). A
download that fails for any reason leaves no partial file. The cache holds at most
``FOCUS_WEIGHTS_CACHE_MAX_BYTES``: after each download the least recently used files are removed.

Credentials come only from the worker's environment, as each filesystem reads them (s3fs/botocore:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL`` for an
S3-compatible server, ``AWS_PROFILE``...; gcsfs: ``GOOGLE_APPLICATION_CREDENTIALS``; adlfs:
``AZURE_STORAGE_*``), never from a flow parameter: a location that carries a secret is refused
(:func:`check_no_secret`), and every message names a URL through :func:`redact`. ``s3://`` needs the
``s3`` extra (``pip install 'focus-audit[s3]'``); fsspec itself is a dependency.

An MLflow Model Registry URI (``models:/<name>/<version>``, or ``models:/<name>@<alias>``) is a location too
(:func:`is_url` is true for it, :func:`is_registry` says which): :func:`local_copy` and :func:`sha256_of`
resolve it through the tracking server in ``MLFLOW_TRACKING_URI`` (:mod:`flows.weights.mlflow_source`, imported only
then: mlflow is the ``mlflow`` extra), which downloads the version's ``state_dict`` once per machine, and
check its sha256 like a URL's. What the store records of a registry version is its pinned URI
``models:/<name>/<version>``. Such a location is read-only: nothing is written to it.

Examples
--------
>>> is_url("s3://models/r18.pt"), is_url("file:///models/r18.pt"), is_url("/models/r18.pt")
(True, True, False)
>>> is_url("models:/resnet18-prod/7"), is_registry("models:/resnet18-prod@champion"), is_registry("s3://m/r.pt")
(True, True, False)
>>> redact("s3://key:secret@models/r18.pt?versionId=3&X-Amz-Signature=abc")
's3://models/r18.pt?versionId=3&X-Amz-Signature=***'
>>> join("s3://models/runs/", "digits-0f1819c26eca", "epoch-0001.pt")
's3://models/runs/digits-0f1819c26eca/epoch-0001.pt'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from flows.worker import confinement
from flows.weights.cache_limits import ENV_VARS, DownloadLimits, evict_least_recent, mark_used
from focus_core.errors import FocusError

__all__ = [
    "CACHE_ENV_VAR",
    "cache_dir",
    "canonical",
    "check_no_secret",
    "exists",
    "has_secret",
    "is_registry",
    "is_url",
    "join",
    "local_copy",
    "mismatch_error",
    "redact",
    "sha256_of",
    "upload",
]

#: The environment variable naming the cache folder (default ``~/.cache/focus-audit/weights``).
CACHE_ENV_VAR = "FOCUS_WEIGHTS_CACHE"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: never a Windows drive
_REGISTRY = "models:/"  # mlflow_source's scheme: one slash, so _URL does not match it
#: Query keys whose values may be shown (an object's version); every other value is masked in messages.
_PLAIN_QUERY_KEYS = frozenset({"versionid", "generation", "version_id"})
#: Query keys that carry a credential (pre-signed URLs, SAS tokens): such a location is refused as a parameter.
_SECRET_QUERY = re.compile(r"signature|credential|token|password|secret|sig$|^sv$|key", re.IGNORECASE)
_MASK = "***"
_CHUNK = 1 << 20
_LOCK = threading.Lock()
_VERIFIED: dict[str, tuple[int, int]] = {}  # cached file -> (size, mtime_ns) whose hash this process checked
_HASHED: dict[str, tuple[tuple[int, int], str]] = {}  # registry download -> ((size, mtime_ns), its sha256)
_PINNED: dict[tuple[str, str], str] = {}  # (alias URI, sha256 read through it) -> models:/<name>/<version>


def is_registry(location: str | os.PathLike | None) -> bool:
    """Whether ``location`` is an MLflow Model Registry URI (``models:/...``), read through the tracking server."""
    return location is not None and str(location).startswith(_REGISTRY)


def is_url(location: str | os.PathLike | None) -> bool:
    """Whether ``location`` is a URL (``scheme://...``, ``file://`` included, or a registry ``models:/`` URI)
    rather than a local path."""
    return location is not None and (bool(_URL.match(str(location))) or is_registry(location))


def redact(location: str | os.PathLike) -> str:
    """``location`` fit for a message: a URL without user-info and with its query values masked (but versions)."""
    text = str(location)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}={value if key.lower() in _PLAIN_QUERY_KEYS else _MASK}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_secret(location: str | None) -> bool:
    """Whether a location carries a credential: user-info (``user:password@``) or a signature/token query value.

    Examples
    --------
    >>> has_secret("s3://AKIA:pw@bucket/w.pt"), has_secret("https://h/w.pt?X-Amz-Signature=abc")
    (True, True)
    >>> has_secret("s3://bucket/w.pt?versionId=3"), has_secret("/models/w.pt")
    (False, False)
    """
    if not is_url(location):
        return False
    parts = urlsplit(str(location))
    return "@" in parts.netloc or any(_SECRET_QUERY.search(key) for key, _ in parse_qsl(parts.query))


def check_no_secret(location: str | None) -> str | None:
    """``location`` itself; ``ValueError`` when it carries a credential (for the parameter models' validators)."""
    if location and has_secret(location):
        raise ValueError(
            "a weights location must not carry credentials (parameters are visible in the Prefect UI): "
            "give the worker its object-store credentials in its environment (e.g. AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY) and pass the plain URL"
        )
    return location


def canonical(location: str | os.PathLike, sha256: str | None = None) -> str:
    """What the store records: a URL as it is, a local path absolute (``~`` expanded, links resolved), and a
    registry alias ``models:/<name>@<alias>`` as the version it names, ``models:/<name>/<version>``.

    An alias moves, so recording it would name other weights tomorrow. Given the ``sha256`` of the bytes read
    through the alias, the version is the one those bytes came from (no second request); without it, the
    version the alias names now (a request to the tracking server).

    Raises
    ------
    FocusError
        For an alias: when the alias now names other bytes than ``sha256``, and as
        :func:`flows.weights.mlflow_source.resolve` (no tracking server, an unknown alias...).
    """
    text = str(location)
    if is_registry(text) and "@" in text:
        pinned = _PINNED.get((text, sha256)) if sha256 is not None else None
        if pinned is None:
            found = _registry_copy(text, sha256)[0]  # FocusError when the alias moved to other bytes
            pinned = _PINNED[(text, found)]
        return pinned
    return text if is_url(text) else str(Path(text).expanduser().resolve())


def join(base: str | os.PathLike, *names: str) -> str:
    """``base`` with ``names`` appended: ``/`` separated for a URL, :class:`~pathlib.Path` joined for a path."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(Path(base, *names))


def cache_dir() -> Path:
    """The cache folder: ``$FOCUS_WEIGHTS_CACHE``, else ``~/.cache/focus-audit/weights``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "focus-audit" / "weights").expanduser()


def mismatch_error(location: str, found: str, expected: str) -> FocusError:
    """The one sentence for weights whose bytes are not the ones recorded (both hashes' prefixes)."""
    if is_registry(location):
        changed = ("the alias now names other weights, so register the version it names (focus checkpoint "
                   "register) or pass the pinned models:/<name>/<version> URI recorded"
                   if "@" in str(location) else
                   "the registry's artifact changed since it was registered, so restore it, or register the new "
                   "weights as a new model version")
        return FocusError(f"The weights of {location} have sha256 {found[:12]} but {expected[:12]} was recorded for "
                          f"them: {changed}.")
    return FocusError(
        f"The weights at {redact(location)} have sha256 {found[:12]} but {expected[:12]} was recorded for them: "
        "they changed since, so restore the recorded file or give changed weights a new URL."
    )


def _filesystem(url: str, limits: DownloadLimits | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of a URL, with ``limits``' timeouts (the environment's by default);
    FocusError when its filesystem is not installed."""
    if is_registry(url):
        raise FocusError(
            f"{url} is a model registry version, which focus-audit only reads: write weights and checkpoints to a "
            "local folder or an object-store URL (s3://...)."
        )
    import fsspec

    options = (limits or DownloadLimits.from_environment()).storage_options(urlsplit(url).scheme.lower())
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as error:  # fsspec's message names the package to install ("Install s3fs to access S3")
        raise FocusError(
            f"Reading {redact(url)} needs a filesystem package this worker lacks ({error}): install it there, "
            "e.g. pip install 'focus-audit[s3]' for s3://."
        ) from None
    except ValueError:
        raise FocusError(
            f"{redact(url)} has a protocol fsspec does not know: use a local path or an s3://, gs://, az:// "
            "or file:// URL."
        ) from None


def _bucket_url(url: str) -> str:
    """The bucket (or container) part of a URL: ``s3://models/runs/w.pt`` -> ``s3://models``."""
    parts = urlsplit(redact(url))
    return f"{parts.scheme}://{parts.netloc}"


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` or an error it was raised from is a timeout (fsspec's HTTP reports one as not found)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, TimeoutError) or "Timeout" in type(error).__name__:
            return True
        error = error.__cause__ or error.__context__
    return False


class _TimedOut(TimeoutError):
    """A download that passed one of its time limits (its message names them); other timeouts are the library's."""


def _timeout_error(url: str, limits: DownloadLimits) -> TimeoutError:
    return _TimedOut(
        f"Reading {redact(url)} timed out: the server did not connect within {limits.connect_seconds:g} s, sent "
        f"nothing for {limits.read_seconds:g} s, or the download passed {limits.total_seconds:g} s; check the "
        f"server, or raise {ENV_VARS['connect_seconds']}, {ENV_VARS['read_seconds']} or "
        f"{ENV_VARS['total_seconds']} on the worker."
    )


def _too_large_error(url: str, limits: DownloadLimits, size: int | None = None) -> FocusError:
    """The one sentence for an object over the size cap (``size``: its announced size; ``None``: found streaming)."""
    found = f"are {_size(size)}" if size is not None else f"are more than {_size(limits.max_bytes)}"
    return FocusError(
        f"The weights at {redact(url)} {found}, larger than the {_size(limits.max_bytes)} a download may be: pass a "
        f"state_dict of the model, or raise {ENV_VARS['max_bytes']} on the worker."
    )


def _size(count: int) -> str:
    """``count`` bytes in the largest binary unit that keeps it at least 1 (``'1.5 GiB'``)."""
    value, unit = float(count), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def _io_error(url: str, error: BaseException, action: str = "read") -> Exception:
    """A filesystem error as one sentence without the library's text (which may quote a signed URL)."""
    if isinstance(error, FileNotFoundError) and action == "write":  # s3fs: NoSuchBucket
        return FocusError(
            f"Cannot write {redact(url)}: its bucket does not exist, so create it first "
            f"(e.g. aws s3 mb {_bucket_url(url)}) or pass a URL in an existing one."
        )
    if isinstance(error, FileNotFoundError):
        return FocusError(f"The weights at {redact(url)} do not exist: pass the URL of an uploaded state_dict.")
    if isinstance(error, (PermissionError, IsADirectoryError, NotADirectoryError)) or (
        type(error).__name__ in {"NoCredentialsError", "PartialCredentialsError", "ClientError"}
    ):
        return FocusError(
            f"Cannot {action} {redact(url)} ({type(error).__name__}): give the worker credentials with access to it "
            "in its environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."
        )
    return OSError(f"Cannot {action} {redact(url)} ({type(error).__name__}); the object store may be unreachable")


def _object_info(fs: Any, path: str) -> dict[str, Any]:
    """The object's metadata, from one metadata request."""
    fs.invalidate_cache(path)
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(path)
    return info


def _fingerprint(fs: Any, path: str) -> list[Any] | None:
    """The object's size and ETag (or modification time) from one metadata request; ``None``: nothing to trust."""
    return _fingerprint_of(_object_info(fs, path))


def _fingerprint_of(info: dict[str, Any]) -> list[Any] | None:
    """The size and ETag (or modification time) in an object's metadata; ``None``: nothing to trust."""
    tag = info.get("ETag") or info.get("etag") or info.get("generation") or info.get("md5Hash")
    when = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("updated")
    if tag is None and when is None:
        return None
    return [info.get("size"), None if tag is None else str(tag), None if when is None else str(when)]


def _index_file(url: str) -> Path:
    return cache_dir() / "urls" / f"{hashlib.sha256(redact(url).encode()).hexdigest()}.json"


def _cached_file(sha256: str) -> Path:
    return cache_dir() / "sha256" / f"{sha256}.pt"


def _write_atomically(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _copy_of(source: Path) -> Any:
    """A writer for :func:`_write_atomically` that copies ``source`` in chunks."""

    def write(file: Any) -> None:
        with source.open("rb") as handle:
            shutil.copyfileobj(handle, file, _CHUNK)

    return write


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(sha256: str) -> Path | None:
    """The cached file of ``sha256`` when it is there and holds those bytes (checked once per process per file)."""
    path = _cached_file(sha256)
    try:
        status = path.stat()
    except OSError:
        return None
    identity = (status.st_size, status.st_mtime_ns)
    with _LOCK:
        if _VERIFIED.get(str(path)) == identity:
            return path
    if _file_sha256(path) != sha256:
        path.unlink(missing_ok=True)  # a damaged cache entry: fetched again
        return None
    with _LOCK:
        _VERIFIED[str(path)] = identity
    return path


def _remember(url: str, fingerprint: list[Any] | None, sha256: str) -> None:
    if fingerprint is None:
        return
    entry = json.dumps({"url": redact(url), "fingerprint": fingerprint, "sha256": sha256}).encode()
    _write_atomically(_index_file(url), lambda file: file.write(entry))


def _remembered(url: str, fingerprint: list[Any] | None) -> str | None:
    """The sha256 the index holds for ``url`` when the object's fingerprint is still the one recorded."""
    if fingerprint is None:
        return None
    try:
        entry = json.loads(_index_file(url).read_text())
    except (OSError, ValueError):
        return None
    return entry.get("sha256") if entry.get("fingerprint") == fingerprint else None


def _download(fs: Any, path: str, url: str, limits: DownloadLimits) -> str:
    """Copy the object into the cache while hashing it (through a hidden partial file, removed on any failure);
    return its sha256. More than ``limits.max_bytes`` bytes, or a download past ``limits.total_seconds``, stop it."""
    digest = hashlib.sha256()
    folder = cache_dir() / "sha256"
    folder.mkdir(parents=True, exist_ok=True)
    deadline, received = time.monotonic() + limits.total_seconds, 0
    streaming = {"block_size": 0} if urlsplit(url).scheme.lower() in ("http", "https") else {"block_size": 8 * _CHUNK}
    handle, partial = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file, fs.open(path, "rb", **streaming) as source:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                received += len(chunk)
                if received > limits.max_bytes:
                    raise _too_large_error(url, limits)
                if time.monotonic() > deadline:
                    raise _timeout_error(url, limits)
                digest.update(chunk)
                file.write(chunk)
        sha256 = digest.hexdigest()
        target = _cached_file(sha256)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    status = target.stat()
    with _LOCK:
        _VERIFIED[str(target)] = (status.st_size, status.st_mtime_ns)
    return sha256


def _fetch(url: str) -> tuple[str, Path]:
    """``(sha256, cached file)`` of the bytes at ``url`` now: from the cache when the object is unchanged.

    A download is bounded by the environment's :class:`~flows.weights.cache_limits.DownloadLimits` and followed by
    the cache's eviction of its least recently used files.
    """
    limits = DownloadLimits.from_environment()
    fs, path = _filesystem(url, limits)
    try:
        info = _object_info(fs, path)
        fingerprint = _fingerprint_of(info)
        known = _remembered(url, fingerprint)
        cached = _verified(known) if known else None
        if cached is not None:
            mark_used(cached)
            return known, cached  # type: ignore[return-value]
        if isinstance(info.get("size"), int) and info["size"] > limits.max_bytes:
            raise _too_large_error(url, limits, info["size"])  # announced: refused before a byte is read
        sha256 = _download(fs, path, url, limits)
    except (FocusError, _TimedOut):
        raise
    except Exception as error:  # noqa: BLE001 - every filesystem raises its own kinds
        raise (_timeout_error(url, limits) if _timed_out(error) else _io_error(url, error)) from None
    _remember(url, fingerprint, sha256)
    _evict(limits, keep=_cached_file(sha256))
    return sha256, _cached_file(sha256)


def _evict(limits: DownloadLimits, keep: Path) -> None:
    """Keep the cache's files under ``limits.cache_max_bytes``, least recently used first out (never ``keep``)."""
    evict_least_recent(cache_dir() / "sha256", limits.cache_max_bytes, keep=keep,
                       stale_after_seconds=2 * limits.total_seconds)


def _hashed(path: Path) -> str:
    """The sha256 of a registry download (hashed again only when the file changed)."""
    status = path.stat()
    identity = (status.st_size, status.st_mtime_ns)
    with _LOCK:
        known = _HASHED.get(str(path))
    if known is not None and known[0] == identity:
        return known[1]
    sha256 = _file_sha256(path)
    with _LOCK:
        _HASHED[str(path)] = (identity, sha256)
    return sha256


def _registry_copy(uri: str, expected_sha256: str | None = None) -> tuple[str, Path]:
    """``(sha256, local state_dict file)`` of the registry version ``uri`` names now, checked against a hash.

    A pinned version this machine downloaded before is read from its download, without the server, when its
    bytes are ``expected_sha256`` (or none is expected: a version never changes). A download whose bytes are not
    ``expected_sha256`` is fetched again once (a damaged copy heals); the same bytes again mean the registry's
    artifact (or the alias) changed: refused in one sentence.
    """
    from flows.weights import mlflow_source  # mlflow is an optional extra: imported when a models:/ URI is read

    offline = mlflow_source.cached(uri)
    if offline is not None:
        sha256 = _hashed(offline)
        if expected_sha256 is None or sha256 == expected_sha256:
            with _LOCK:
                _PINNED[(uri, sha256)] = uri
            return sha256, offline
    found = mlflow_source.resolve(uri)
    sha256 = _hashed(found.path)
    if expected_sha256 is not None and sha256 != expected_sha256:
        found = mlflow_source.resolve(uri, refresh=True)
        sha256 = _hashed(found.path)
        if sha256 != expected_sha256:
            raise mismatch_error(uri, sha256, expected_sha256)
    with _LOCK:
        _PINNED[(uri, sha256)] = found.uri
    return sha256, found.path


def local_copy(location: str | os.PathLike, expected_sha256: str | None = None) -> Path:
    """A local file holding the weights at ``location``: the path itself, or the URL's verified cached copy.

    Parameters
    ----------
    location
        A local path, an fsspec URL or a registry URI (``models:/<name>/<version>``: its downloaded
        ``state_dict``).
    expected_sha256
        The sha256 the bytes must have (what the store recorded); ``None``: whatever the location holds.

    Raises
    ------
    FocusError
        When the bytes' sha256 is not ``expected_sha256`` (one sentence naming the location and both
        hashes' prefixes: never a silent load), when the object does not exist, when the worker's
        credentials do not give access, or when the URL's filesystem package is not installed; for a
        registry URI, as :func:`flows.weights.mlflow_source.resolve` (no tracking server, an unknown version...).
    OSError
        When the object store cannot be reached (worth a retry).
    """
    text = str(location)
    confinement.check_location(text)  # a worker reads only where its operator allows
    if is_registry(text):
        return _registry_copy(text, expected_sha256)[1]
    if not is_url(text):
        if expected_sha256 is not None:
            from focus_core.models import weights_sha256

            found = weights_sha256(text)  # FocusError when it is missing
            if found != expected_sha256:
                raise mismatch_error(text, found, expected_sha256)
        return Path(text)
    sha256, path = _fetch(text)
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise mismatch_error(text, sha256, expected_sha256)
    return path


def sha256_of(location: str | os.PathLike) -> str:
    """The sha256 of the bytes at ``location`` (a URL is downloaded into the cache only when it changed)."""
    text = str(location)
    if is_registry(text):
        return _registry_copy(text)[0]
    if not is_url(text):
        from focus_core.models import weights_sha256

        return weights_sha256(text)
    return _fetch(text)[0]


def exists(location: str | os.PathLike) -> bool:
    """Whether a file is at ``location`` (a metadata request for a URL)."""
    text = str(location)
    if not is_url(text):
        return Path(text).is_file()
    fs, path = _filesystem(text)
    try:
        fs.invalidate_cache(path)
        return bool(fs.isfile(path))
    except Exception as error:  # noqa: BLE001
        raise _io_error(text, error) from None


def upload(local_file: str | os.PathLike, location: str | os.PathLike, *, cache: bool = True) -> str:
    """Put ``local_file`` at ``location`` whole (a reader never sees half a file); return its sha256.

    A local destination is written through a hidden partial file and renamed; an object store's upload
    appears whole by itself. With ``cache`` (weights), the uploaded bytes also go into the cache, so reading
    them back on this worker downloads nothing; ``cache=False`` for files no flow reads back (figures).
    """
    source, target = Path(local_file), str(location)
    sha256 = _file_sha256(source)
    if not is_url(target):
        _write_atomically(Path(target), _copy_of(source))
        return sha256
    from fsspec.implementations.local import LocalFileSystem

    fs, path = _filesystem(target)
    try:
        if isinstance(fs, LocalFileSystem):
            _write_atomically(Path(path), _copy_of(source))
        else:
            fs.put_file(str(source), path)
        fingerprint = _fingerprint(fs, path)
    except Exception as error:  # noqa: BLE001
        raise _io_error(target, error, action="write") from None
    if not cache:
        return sha256
    if _verified(sha256) is None:
        _write_atomically(_cached_file(sha256), _copy_of(source))
    _remember(target, fingerprint, sha256)
    _evict(DownloadLimits.from_environment(), keep=_cached_file(sha256))
    return sha256
