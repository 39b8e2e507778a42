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

