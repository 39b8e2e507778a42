"""A real ``mlflow server`` for tests: SQLite backend and a local artifact root, on 127.0.0.1.

Import the fixture explicitly in a test module::

    from tests.mlflow_server import mlflow_server  # noqa: F401  (pytest fixture)

The server is started with ``start_new_session=True`` and stopped by its PID (terminate, wait, kill, then its
process group), also when the test fails. Its artifacts are served by the server itself
(``--artifacts-destination``), so clients need nothing but ``MLFLOW_TRACKING_URI``. In CI (``CI=true``) a server
that does not come up fails the test; elsewhere too, since mlflow is in the ``test`` extra.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.flows.server import free_port, start_process, stop_process, tail

__all__ = ["MlflowServer", "mlflow_server", "start_mlflow_server", "stop_mlflow_server"]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
START_TIMEOUT_S = 90.0


@dataclass
class MlflowServer:
    """A running ``mlflow server``: its URL (set it as ``MLFLOW_TRACKING_URI``), folders and log."""

    url: str
    root: Path
    log_path: Path
    started_in: float = 0.0

    def env(self) -> dict[str, str]:
        """The environment variables a client of this server needs."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_DISABLE_TELEMETRY": "true",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def start_mlflow_server(root: Path) -> tuple[MlflowServer, object]:
    """Start ``mlflow server`` with its SQLite database and artifacts under ``root``; return it and its process."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    log_path = root / "mlflow-server.log"
    proc = start_process(
        [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        env=env, log_path=log_path, cwd=root,
    )
    server = MlflowServer(url=f"http://127.0.0.1:{port}", root=root, log_path=log_path)
    started = time.monotonic()
    try:
        _wait_healthy(server, proc)
    except BaseException:
        stop_mlflow_server(proc)
        raise
    server.started_in = time.monotonic() - started
    return server, proc


def _wait_healthy(server: MlflowServer, proc) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`mlflow server` exited with {proc.returncode}:\n{tail(server.log_path)}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(
        f"`mlflow server` did not answer at {server.url} within {START_TIMEOUT_S:.0f} s:\n{tail(server.log_path)}"
    )


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server and model registry on 127.0.0.1 (free port, SQLite, local artifacts)."""
    pytest.importorskip("mlflow")
    server, proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop_mlflow_server(proc)


def stop_mlflow_server(proc) -> None:
    """Stop the server by its PID: SIGTERM to its process group (the CLI and its uvicorn child), then as usual."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group is the server's own session (start_new_session=True)
    except (ProcessLookupError, PermissionError):
        pass
    stop_process(proc)
