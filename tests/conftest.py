"""Settings every test shares: a quiet, offline, deterministic CPU."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import torch  # noqa: E402

torch.set_flush_denormal(True)

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests import disk, postgres  # noqa: E402
from tests.s3 import S3Server, start_s3_server  # noqa: E402


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own, dropped (with its connections) afterwards."""
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture
def small_tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """Mount tiny filesystems (``mount -t tmpfs -o size=SIZE``) to fill up; each is unmounted afterwards.

    Call it with a size such as ``"512k"``; it returns the mount point. Mounting needs root (or
    CAP_SYS_ADMIN): elsewhere the test is skipped, except under CI (``CI=true``), where it fails.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path_factory.mktemp("tmpfs")
        reason = disk.mount_tmpfs(point, size)
        if reason is not None:
            if postgres.in_ci():
                pytest.fail(f"cannot mount a tmpfs in CI ({reason}): run the tests as root")
            pytest.skip(f"cannot mount a tmpfs ({reason}): run as root to test a full disk")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        disk.unmount(point)



@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (``moto_server`` on 127.0.0.1, a free port) for the session, killed by PID after.

    Its ``env`` (credentials, region, ``AWS_ENDPOINT_URL``) is what a client process needs; :func:`s3_env` puts it
    into this process's environment for one test.
    """
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """``s3_server`` with its environment set in this process and a weights cache of the test's own.

    ``FOCUS_WEIGHTS_CACHE`` points into ``tmp_path``; fsspec's cached S3 filesystems are dropped before
    and after, so no client built for another endpoint or environment is reused.
    """
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FOCUS_WEIGHTS_CACHE", str(tmp_path / "weights-cache"))
    _clear_s3fs()
    yield s3_server
    _clear_s3fs()


def _clear_s3fs() -> None:
    try:
        import s3fs
    except ImportError:  # pragma: no cover - s3fs is in the test extra
        return
    s3fs.S3FileSystem.clear_instance_cache()
