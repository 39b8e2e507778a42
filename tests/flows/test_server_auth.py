"""The server set up as docs/security.md says: with PREFECT_SERVER_API_AUTH_STRING, a request without the
credentials is refused, and a client with PREFECT_API_AUTH_STRING is let in."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # the helpers live next to this file
    from server import PREFECT, SERVER_START_TIMEOUT_S, free_port, server_env, start_process, stop_process, wait_healthy
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import (PREFECT, SERVER_START_TIMEOUT_S, free_port, server_env, start_process,
                                    stop_process, wait_healthy)

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

CREDENTIALS = "focus-admin:correct-horse-battery"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """``prefect server start`` with basic authentication on; yields its API URL and a client's environment."""
    root = tmp_path_factory.mktemp("guarded-server")
    home = root / "home"
    home.mkdir()
    port = free_port()
    env = {**server_env(home, port), "PREFECT_SERVER_API_AUTH_STRING": CREDENTIALS}
    log_path = root / "server.log"
    proc = start_process([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                         env=env, log_path=log_path, cwd=root)
    try:
        wait_healthy(env["PREFECT_API_URL"], proc, log_path, SERVER_START_TIMEOUT_S)  # /health stays open to probes
        client_env = {k: v for k, v in env.items() if k != "PREFECT_SERVER_API_AUTH_STRING"}
        yield env["PREFECT_API_URL"], client_env
    finally:
        stop_process(proc)


def _post(url: str, authorization: str | None) -> int:
    request = urllib.request.Request(f"{url}/work_pools/filter", data=json.dumps({}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_request_without_the_credentials_is_refused(guarded_server):
    url, _ = guarded_server
    assert _post(url, None) == 401
    wrong = base64.b64encode(b"focus-admin:guess").decode()
    assert _post(url, f"Basic {wrong}") == 401
    right = base64.b64encode(CREDENTIALS.encode()).decode()
    assert _post(url, f"Basic {right}") == 200


def test_a_client_with_the_auth_string_is_let_in_and_one_without_is_not(guarded_server, tmp_path: Path):
    _, env = guarded_server
    command = [PREFECT, "work-pool", "ls"]
    refused = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    allowed = subprocess.run(command, env={**env, "PREFECT_API_AUTH_STRING": CREDENTIALS}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stdout[-2000:] + allowed.stderr[-2000:]
