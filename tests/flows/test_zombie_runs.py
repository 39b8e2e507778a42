"""A worker killed mid-evaluate on a real Prefect server: its run ends Crashed, the next nightly runs, no row hangs.

1. The automations of deployments/automations.yaml load into a real server as `prefect automation create` reads them.
2. The ``nightly`` deployment of deployments/prefect.yaml (concurrency limit 1) runs the audit on a process worker
   of a pool made from deployments/work-pools/process.json. While its evaluation computes, the worker and its flow
   run process are killed with ``SIGKILL`` (the host is lost: nobody reports). A second nightly run is started at
   once and a new worker comes up. Prefect's zombie automation (the shipped one, with the shortest heartbeat Prefect
   allows and a ``within`` to match) marks the killed run Crashed, which frees the deployment's concurrency slot;
   the second run, which waited in ``AwaitingConcurrencySlot``, completes, and its start marks the killed audit
   run and its evaluation ``crashed`` in the PostgreSQL store.

Every wait polls for a final state with a generous deadline; no verdict depends on how long a step took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

try:  # the fixtures live next to this file; import them explicitly
    from server import (  # noqa: F401
        PREFECT, PROJECT_ROOT, PrefectServer, free_port, postgres_url, server_env, start_process, stop_process,
        wait_healthy,
    )
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import (  # noqa: F401
        PREFECT, PROJECT_ROOT, PrefectServer, free_port, postgres_url, server_env, start_process, stop_process,
        wait_healthy,
    )

pytestmark = [pytest.mark.server, pytest.mark.timeout(1200)]

AUTOMATIONS = PROJECT_ROOT / "deployments" / "automations.yaml"
ZOMBIE = "focus-crash-zombie-flow-runs"
HEARTBEAT_S = 30  # the shortest heartbeat frequency Prefect accepts
WITHIN_S = 90  # three heartbeats, as in Prefect's own example
DEADLINE_S = 480.0  # generous: a verdict never depends on it, only a hang ends there
PARAMS = {  # the nightly's form, on the CPU: a slow first audit (LIME, killed mid-way), a quick second one
    "killed": {"name": "nightly", "dataset": {"kind": "digits"},
               "mosaics": {"split": "test", "per_class": 30, "seed": 0}, "methods": [{"name": "lime"}],
               "threshold": 0.05, "run": {"device": "cpu", "batch_size": 8, "chunk_size": 4, "retries": 0}},
    "next": {"name": "nightly", "dataset": {"kind": "digits"}, "mosaics": {"split": "test", "per_class": 1, "seed": 0},
             "methods": [{"name": "gradcam"}], "threshold": 0.05,
             "run": {"device": "cpu", "batch_size": 8, "chunk_size": 8, "retries": 0}},
}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server whose enqueued runs ask for a concurrency slot again every 2 s (not 30 s)."""
    root = tmp_path_factory.mktemp("prefect-server")
    home = root / "home"
    home.mkdir()
    port = free_port()
    env = {**server_env(home, port), "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2"}
    log_path = root / "server.log"
    proc = start_process([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"], env=env,
                         log_path=log_path, cwd=root)
    server = PrefectServer(url=env["PREFECT_API_URL"], home=home, env=env, log_path=log_path, proc=proc)
    try:
        wait_healthy(server.url, proc, log_path, 300.0)  # a loaded machine starts it slowly
        yield server
    finally:
        server.stop_workers()
        stop_process(proc)


@pytest.fixture(scope="module")
def store_url(postgres_url: str):
    import db

    db.upgrade(postgres_url)
    yield postgres_url
    from flows.worker import store

    store.dispose_engines()


def api(server: PrefectServer):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: server.url})


def _filled(automations: str) -> str:
    """automations.yaml with its notification block id filled in, as its header shows."""
    return automations.replace("${FOCUS_NOTIFICATION_BLOCK_ID}", str(uuid.uuid4()))


def _create_automations(server: PrefectServer, text_: str, folder: Path) -> None:
    path = folder / f"automations-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text_)
    server.run_cli("automation", "create", "--from-file", str(path))


async def _automations_by_name() -> dict:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {a.name: a for a in await client.read_automations()}


def test_the_shipped_automations_load_into_a_real_server(prefect_server: PrefectServer, tmp_path: Path):
    _create_automations(prefect_server, _filled(AUTOMATIONS.read_text()), tmp_path)
    with api(prefect_server):
        loaded = asyncio.run(_automations_by_name())
    assert set(loaded) == {"focus-audit-regressed", ZOMBIE}
    zombie = loaded[ZOMBIE]
    assert zombie.enabled and zombie.trigger.posture == "Proactive"
    assert zombie.trigger.after == {"prefect.flow-run.heartbeat"} and zombie.trigger.expect == {"prefect.flow-run.*"}
    assert zombie.trigger.within.total_seconds() == 300
    (action,) = zombie.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"


def _pool_template(heartbeat_s: int) -> dict:
    template = json.loads((PROJECT_ROOT / "deployments" / "work-pools" / "process.json").read_text())
    assert template["job_configuration"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60"  # as shipped
    template["job_configuration"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(heartbeat_s)
    return template


async def _deploy_nightly_pool(template: dict) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name="focus-gpu", type="process", base_job_template=template))


async def _pause_schedules() -> None:
    """The nightly's cron must not start a run of its own during the test."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("audit/nightly")
        for schedule in deployment.schedules:
            await client.update_deployment_schedule(deployment.id, schedule.id, active=False)


async def _state_history(flow_run_id) -> list:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run_states(flow_run_id)


async def _flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


def _wait_for(what: str, check, server: PrefectServer, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    pytest.fail(f"{what}: not reached within {deadline_s:.0f} s\n{server.logs()}")


def _rows(url: str, sql: str) -> list[tuple]:
    from flows.worker import store

    with store.engine_for(url).connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def _worker_env(store_url: str, data_root: str) -> dict[str, str]:
    return {
        "FOCUS_PROJECT_DIR": str(PROJECT_ROOT), "FOCUS_DATA_ROOTS": data_root, "FOCUS_DATABASE_URL": store_url,
        "CUDA_VISIBLE_DEVICES": "", "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    }


def _checkpoint_marked_for_auditing(store_url: str, folder: Path) -> None:
    import torch

    import db
    from flows.worker import store
    from focus_core import models

    torch.manual_seed(0)
    path = folder / "digits.pt"
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), path)
    db.register_checkpoint(store.engine_for(store_url), models.weights_sha256(path), "digits_cnn", 10, path=str(path),
                           in_channels=1, audit=True, label="digits-nightly")


def test_a_killed_nightly_ends_crashed_frees_its_slot_and_its_rows_are_closed_by_the_next(
    prefect_server: PrefectServer, store_url: str, tmp_path: Path
):
    from prefect.deployments import run_deployment

    server = prefect_server
    _checkpoint_marked_for_auditing(store_url, tmp_path)
    with api(server):
        # the shipped zombie automation, with the shortest heartbeat and a `within` of three heartbeats
        shipped = yaml.safe_load(_filled(AUTOMATIONS.read_text()))
        (zombie,) = [a for a in shipped["automations"] if a["name"] == ZOMBIE]
        zombie = {**zombie, "name": f"{ZOMBIE}-test", "trigger": {**zombie["trigger"], "within": WITHIN_S}}
        _create_automations(server, yaml.safe_dump({"automations": [zombie]}), tmp_path)
        asyncio.run(_deploy_nightly_pool(_pool_template(HEARTBEAT_S)))
        server.run_cli("--no-prompt", "deploy", "--name", "nightly", "--prefect-file", "deployments/prefect.yaml")
        asyncio.run(_pause_schedules())

        env = _worker_env(store_url, str(tmp_path))
        first_worker = server.start_worker("focus-gpu", "gpu-0", env)
        killed = run_deployment("audit/nightly", parameters={"params": PARAMS["killed"]}, timeout=0)

        # mid-evaluate: the audit run is open and a chunk of its evaluation is claimed by the flow run's process
        holder_sql = ("SELECT h.pid FROM chunk_lease l JOIN lease_holder h ON h.owner = l.owner "
                      "JOIN evaluation e ON e.id = l.evaluation_id WHERE e.status = 'running'")
        (pid,) = _wait_for("a chunk of the first audit computing", lambda: _rows(store_url, holder_sql), server)[0]
        assert pid != first_worker.pid
        os.killpg(first_worker.pid, signal.SIGKILL)  # the worker and its flow run process: nobody reports
        try:
            os.kill(pid, signal.SIGKILL)  # in case Prefect started it in a session of its own
        except ProcessLookupError:
            pass
        first_worker.wait(timeout=30)
        (killed_audit,) = _rows(store_url, "SELECT id FROM audit_run WHERE status = 'running'")[0]
        (killed_evaluation,) = _rows(store_url, "SELECT id FROM evaluation WHERE status = 'running'")[0]

        # the next nightly at once: the dead run still holds the deployment's only slot
        following = run_deployment("audit/nightly", parameters={"params": PARAMS["next"]}, timeout=0)
        server.start_worker("focus-gpu", "gpu-1", env)

        crashed = _wait_for("the killed flow run marked Crashed",
                            lambda: (run := asyncio.run(_flow_run(killed.id))).state.is_final() and run, server)
        finished = _wait_for("the next nightly finished",
                             lambda: (run := asyncio.run(_flow_run(following.id))).state.is_final() and run, server)
        history = asyncio.run(_state_history(following.id))

    assert crashed.state.type == "CRASHED", crashed.state
    assert "stopped sending heartbeats" in (crashed.state.message or ""), crashed.state.message  # the automation's
    assert finished.state.type == "COMPLETED", f"{finished.state}\n{server.logs()}"
    # the next run waited for the slot, and ran once the dead run had crashed
    names = [state.name for state in history]
    assert "AwaitingConcurrencySlot" in names, names
    running = next(state for state in history if state.type == "RUNNING")
    assert running.timestamp >= crashed.state.timestamp
    # the store: the killed audit run and its evaluation crashed, the next audit finished, no holder left
    assert _rows(store_url, f"SELECT status, run_owner FROM audit_run WHERE id = {killed_audit}") == [("crashed", None)]
    assert _rows(store_url, f"SELECT status, run_owner FROM evaluation WHERE id = {killed_evaluation}") == [
        ("crashed", None)]
    assert _rows(store_url, "SELECT status, COUNT(*) FROM audit_run GROUP BY status ORDER BY status") == [
        ("crashed", 1), ("finished", 1)]
    assert _rows(store_url, "SELECT COUNT(*) FROM evaluation WHERE status = 'running'") == [(0,)]
    assert _rows(store_url, "SELECT COUNT(*) FROM lease_holder") == [(0,)]
