"""Make sure the services the test suite needs are up before pytest starts.

PostgreSQL: the suite runs the migrations and queries on a real server at 127.0.0.1:5432.
If nothing answers there, try to start the local cluster (Debian's ``pg_ctlcluster``).
In CI (``CI=true``) a server that cannot be reached is an error, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST, PORT = "127.0.0.1", 5432
CHROMIUM = "/usr/bin/chromium"


def _postgres_answers(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def _start_postgres() -> None:
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"],
        check=False,
    )
    for _ in range(30):
        if _postgres_answers():
            return
        time.sleep(1)


def _ensure_chromium() -> None:
    """The report test opens the HTML page in Debian's headless Chromium."""
    if Path(CHROMIUM).exists() or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    print("test setup: installing Debian's chromium for the report test", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium", "fonts-dejavu-core"],
        check=False,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str]) -> int:
    """``--no-browser`` (``make test-fast``): PostgreSQL only, since the fast tier opens no browser."""
    if not _postgres_answers():
        print("test setup: PostgreSQL is not answering on 127.0.0.1:5432, starting it", flush=True)
        _start_postgres()
    if _postgres_answers():
        print("test setup: PostgreSQL answers on 127.0.0.1:5432")
    elif os.environ.get("CI") == "true":
        print("test setup: PostgreSQL is required in CI and could not be started", file=sys.stderr)
        return 1
    else:
        print("test setup: no PostgreSQL; its tests will be skipped outside CI", file=sys.stderr)
    if "--no-browser" in argv:
        return 0
    _ensure_chromium()
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            print("test setup: chromium is required in CI and could not be installed", file=sys.stderr)
            return 1
        print("test setup: no chromium; the report page test will be skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
