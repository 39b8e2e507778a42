"""No secret of the store's URL leaks: not to the terminal, Prefect, the report or the store.

A PostgreSQL URL carries a secret in every place libpq reads one (the user-info password,
``?password=`` and ``?sslpassword=``; the server's trust authentication ignores them, so the
URL works). Every kind of command runs with it, through ``--database-url`` or
``FOCUS_DATABASE_URL``, against a real Prefect server; then stdout, stderr, the server's whole
home folder (its SQLite database with the runs' parameters, logs and artifacts), the report,
the checkpoints and a dump of focus-audit's own database are searched for the secrets. Positive
controls make sure each place holds what is searched: the runs are on the server, their logs name
the store (masked) and the report was written.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

try:  # the fixtures live next to this file; import them explicitly
    from server import PROJECT_ROOT, PrefectServer, postgres_url, prefect_server  # noqa: F401
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import PROJECT_ROOT, PrefectServer, postgres_url, prefect_server  # noqa: F401

#: Deadlines only bound a hang (twelve `focus` commands and the store's teardown on a loaded machine): never a verdict
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

FOCUS = str(Path(sys.executable).with_name("focus"))
SECRETS = ("SEKRET1user", "SEKRET2query", "SEKRET3ssl")
COMMAND_TIMEOUT_S = 900


def _with_secrets(url: str) -> str:
    """``url`` with a secret in the user-info part, in ``?password=`` and in ``?sslpassword=``."""
    parsed = make_url(url).set(password=SECRETS[0]).update_query_dict(
        {"password": SECRETS[1], "sslpassword": SECRETS[2]}
    )
    return parsed.render_as_string(hide_password=False)


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _files_with_secrets(folder: Path) -> dict[str, list[str]]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [secret for secret in SECRETS if secret.encode() in data]
            if hits:
                found[str(path)] = hits
    return found


@pytest.fixture(scope="module")
def secret_url(postgres_url: str) -> str:
    yield _with_secrets(postgres_url)
    from flows.worker import store

    store.dispose_engines()


def _focus(server: PrefectServer, cwd: Path, *args: str, env_url: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in server.env.items() if k != "FOCUS_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    if env_url is not None:
        env["FOCUS_DATABASE_URL"] = env_url
    return subprocess.run(
        [FOCUS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


def _prefect_records(server: PrefectServer) -> tuple[list, list, list]:
    """Every flow run, log and artifact on the server, through its API (the UI's view)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs()
            logs = await client.read_logs()
            artifacts = await client.read_artifacts()
        return runs, logs, artifacts

    with temporary_settings({PREFECT_API_URL: server.url}):
        return asyncio.run(read())


def test_no_command_leaks_a_secret_of_the_store_url(
    prefect_server: PrefectServer, secret_url: str, postgres_url: str, digits_weights: str, tmp_path: Path
):
    report = tmp_path / "report"
    checkpoints = tmp_path / "checkpoints"
    tiny = ["--per-class", "1", "--classes", "0,1", "--batch-size", "16"]
    commands = [  # (argv, the URL in FOCUS_DATABASE_URL instead of --database-url)
        (["db", "upgrade", "--database-url", secret_url], False),
        (["db", "current"], True),
        (["train", "--epochs", "1", "--focus-per-class", "1", "--checkpoint-dir", str(checkpoints), "--audit",
          "--database-url", secret_url], False),
        (["evaluate", "--weights", digits_weights, *tiny, "--method", "gradcam", "--database-url", secret_url], False),
        (["randomize", "--weights", digits_weights, *tiny, "--kind", "cascading", "--max-stages", "1"], True),
        (["sweep", "--checkpoint", digits_weights, *tiny, "--method", "gradient", "--database-url", secret_url], False),
        (["audit", "--per-class", "1", "--classes", "0,1", "--method", "gradcam"], True),
        (["results", "checkpoints", "--database-url", secret_url], False),
        (["report", "--out", str(report), "--database-url", secret_url], False),
    ]
    outputs = []
    for argv, through_env in commands:
        result = _focus(prefect_server, tmp_path, *argv, env_url=secret_url if through_env else None)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, f"focus {argv[0]}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        printed = result.stdout + result.stderr
        assert not _leaks(printed), f"focus {' '.join(argv[:2])} printed a secret:\n{printed}"

    # an unreachable server: one line, rc 2, the URL shown masked
    unreachable = secret_url.replace(f":{make_url(secret_url).port}/", ":1/")
    for argv in (["results"], ["db", "upgrade"], ["evaluate", "--weights", digits_weights, *tiny]):
        result = _focus(prefect_server, tmp_path, *argv, env_url=unreachable)
        assert result.returncode == 2, result.stderr
        assert "Cannot open the database at" in result.stderr and "password=***" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not _leaks(result.stdout + result.stderr)

    # Prefect, as the UI shows it: the runs, their parameters, logs and artifacts
    runs, logs, artifacts = _prefect_records(prefect_server)
    assert len(runs) >= 6  # train, evaluate, randomization, sweep, audit and their sub-flows
    assert all(run.state.is_completed() for run in runs), [(run.name, run.state) for run in runs]
    assert not _leaks(repr([(run.name, run.parameters) for run in runs]))
    assert not any("database_url" in repr(run.parameters) and "postgres" in repr(run.parameters) for run in runs)
    log_text = "\n".join(log.message for log in logs)
    assert "password=***" in log_text  # the store's log line is there, masked
    assert not _leaks(log_text)
    assert artifacts and not _leaks(repr([artifact.data for artifact in artifacts]))
    # ... and everything the server keeps on disk (its database, WAL, logs, stored results)
    assert (prefect_server.home / "prefect.db").is_file()
    assert _files_with_secrets(prefect_server.home.parent) == {}

    # the report, the checkpoints and focus-audit's own database
    index = (report / "index.html").read_text()
    assert "password=***" in index
    assert _files_with_secrets(report) == {} and _files_with_secrets(checkpoints) == {}
    assert any(checkpoints.rglob("*.pt"))
    dump = subprocess.run(
        ["pg_dump", "--data-only", make_url(postgres_url).set(drivername="postgresql").render_as_string(False)],
        capture_output=True, text=True, timeout=120,
    )
    assert dump.returncode == 0, dump.stderr
    assert "mosaic_result" in dump.stdout and not _leaks(dump.stdout)
    assert not _leaks("\n".join(outputs))


def test_the_database_option_says_to_prefer_the_environment_variable():
    import argparse

    from flows.cli.params import add_database_option

    parser = argparse.ArgumentParser(prog="focus", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=500))
    add_database_option(parser)
    text = parser.format_help()
    assert "Prefer FOCUS_DATABASE_URL" in text and "process list" in text
