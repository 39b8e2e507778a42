"""A real Prefect server, real process workers and a real PostgreSQL database for tests.

Import the fixtures explicitly in a test module::

    from server import postgres_url, prefect_server  # noqa: F401  (pytest fixtures)

Every process is started here with ``start_new_session=True`` and stopped here by its PID
(terminate, wait, kill), also when the test fails. The Prefect server gets its own
``PREFECT_HOME`` and its own SQLite database; focus-audit's tables go into a PostgreSQL database
of their own, created with a unique name and dropped at the end (never Prefect's database:
``prefect server database reset`` drops every table it finds).

In CI (``CI=true``) a missing PostgreSQL server or a Prefect server that does not come up fails
the test; elsewhere a missing PostgreSQL server skips it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import postgres

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
SERVER_START_TIMEOUT_S = 120.0

__all__ = [
    "PROJECT_ROOT",
    "PrefectServer",
    "postgres_url",
    "prefect_server",
    "start_process",
    "stop_process",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen:
    """Start ``args`` in a new session (so its children can be found by its PID), output to a log."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed in stop_process
    proc = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc._focus_log = log  # type: ignore[attr-defined]
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a process started by :func:`start_process`: terminate, wait, then kill.

    The process leads its own session, so its PID is also the id of the group holding the flow
    run processes a worker started; those get the same treatment.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    try:  # children left behind by this process (same process group, id = its PID)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    log = getattr(proc, "_focus_log", None)
    if log is not None:
        log.close()


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class PrefectServer:
    """A running ``prefect server start`` and the environment that talks to it."""

    url: str
    home: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen
    workers: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)
    started_in: float = 0.0

    def run_cli(self, *args: str, cwd: Path = PROJECT_ROOT, timeout: float = 180.0) -> subprocess.CompletedProcess:
        """Run ``prefect <args>`` against this server; fail the test with its output if it fails."""
        result = subprocess.run(
            [PREFECT, *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            pytest.fail(
                f"`prefect {' '.join(args)}` exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def start_worker(
        self, pool: str, name: str, extra_env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT
    ) -> subprocess.Popen:
        """Start ``prefect worker start --pool <pool> --type process --limit 1`` against this server."""
        env = {**self.env, **(extra_env or {})}
        log_path = self.home.parent / f"worker-{name}.log"
        proc = start_process(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1",
             "--name", name],
            env=env,
            log_path=log_path,
            cwd=cwd,
        )
        self.workers.append((name, proc, log_path))
        return proc

    def logs(self) -> str:
        """The tails of the server's and workers' logs, for a failure message."""
        parts = [f"--- server ---\n{tail(self.log_path)}"]
        parts += [f"--- worker {name} ---\n{tail(path)}" for name, _, path in self.workers]
        return "\n".join(parts)

    def stop_workers(self) -> None:
        for _, proc, _ in self.workers:
            stop_process(proc)


def server_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_LOGGING_LEVEL="INFO",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`prefect server start` exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"`prefect server start` did not answer at {url} within {timeout:.0f} s:\n{tail(log_path)}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server on 127.0.0.1 (free port, own PREFECT_HOME and SQLite database)."""
    root = tmp_path_factory.mktemp("prefect-server")
    home = root / "home"
    home.mkdir()
    port = free_port()
    env = server_env(home, port)
    log_path = root / "server.log"
    proc = start_process(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=env,
        log_path=log_path,
        cwd=root,
    )
    server = PrefectServer(url=env["PREFECT_API_URL"], home=home, env=env, log_path=log_path, proc=proc)
    started = time.monotonic()
    try:
        wait_healthy(server.url, proc, log_path, SERVER_START_TIMEOUT_S)
        server.started_in = time.monotonic() - started
        yield server
    finally:
        server.stop_workers()
        stop_process(proc)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A freshly created PostgreSQL database for focus-audit's tables, dropped afterwards."""
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)
