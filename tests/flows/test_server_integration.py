"""The whole orchestration for real: a Prefect server, process workers, deployments, PostgreSQL.

1. ``prefect server start`` on 127.0.0.1 (own PREFECT_HOME and SQLite database); the work pools
   are created from deployments/work-pools/*.json (the server validates the templates) and every
   deployment of deployments/prefect.yaml is deployed with ``prefect deploy``.
2. One process worker; the evaluate deployment is started through the API with parameters, as the
   UI does (a bad parameter is refused by the server first); the run completes and its rows are
   in PostgreSQL, one per mosaic.
3. A second worker; ``focus sweep --deployment evaluate/evaluate`` (the CLI against the server)
   fans a 2 x 2 grid out to the pool; both workers run cells and every cell is recorded once.

Tiny work: the digits, one mosaic per class, cheap methods. Processes are stopped by PID.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:  # the fixtures live next to this file; import them explicitly
    from server import PROJECT_ROOT, PrefectServer, postgres_url, prefect_server  # noqa: F401
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import PROJECT_ROOT, PrefectServer, postgres_url, prefect_server  # noqa: F401

pytestmark = [pytest.mark.server, pytest.mark.timeout(480)]

FOCUS = str(Path(sys.executable).with_name("focus"))
POOLS = {  # name -> (type, template file)
    "focus-gpu": ("process", "process.json"),
    "focus-cpu": ("process", None),
    "focus-gpu-docker": ("docker", "docker.json"),
    "focus-gpu-k8s": ("kubernetes", "kubernetes.json"),
}
PER_CLASS = 1  # 10 mosaics per evaluation on the digits
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def store_url(postgres_url: str) -> str:
    """focus-audit's tables in their own PostgreSQL database (never Prefect's)."""
    import db

    db.upgrade(postgres_url)
    yield postgres_url
    from flows.worker import store

    store.dispose_engines()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two digits CNN checkpoints (freshly initialised, different seeds): the sweep's rows."""
    import torch

    from focus_core import models

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
        path = folder / f"digits-{seed}.pt"
        models.save_weights(model, path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer, store_url: str) -> PrefectServer:
    """Work pools from deployments/work-pools/, deployments from deployments/prefect.yaml."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async def create_pools() -> None:  # what `prefect work-pool create --base-job-template` sends
        async with get_client() as client:
            for name, (kind, template) in POOLS.items():
                base = json.loads((PROJECT_ROOT / "deployments" / "work-pools" / template).read_text()) if template else {}
                await client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=base))

    started = time.monotonic()
    with api(prefect_server):
        asyncio.run(create_pools())
    prefect_server.run_cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    print(f"server up in {prefect_server.started_in:.1f} s; pools and deployments in {time.monotonic() - started:.1f} s")
    return prefect_server


def worker_env(server: PrefectServer, store_url: str, gpu: str, data_root: str) -> dict[str, str]:
    return {
        "FOCUS_PROJECT_DIR": str(PROJECT_ROOT),  # the deployments' pull step changes to it
        "FOCUS_DATA_ROOTS": data_root,  # where a worker may read weights and data (the checkpoints' folder here)
        "FOCUS_DATABASE_URL": store_url,  # the workers' store; not a flow parameter
        "CUDA_VISIBLE_DEVICES": gpu,  # one worker per GPU ("" here: a CPU machine)
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    }


def evaluate_parameters(weights: str, methods: list[str]) -> dict:
    return {
        "params": {
            "model": {"architecture": "digits_cnn", "weights": weights},
            "dataset": {"kind": "digits"},
            "mosaics": {"split": "test", "per_class": PER_CLASS, "seed": 0},
            "methods": [{"name": m} for m in methods],
            "run": {"device": "cpu", "batch_size": 16, "chunk_size": 8, "retries": 0},
        }
    }


def api(server: PrefectServer):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: server.url})


def test_server_validates_the_pools_and_lists_every_deployment(deployed: PrefectServer):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            pools = {p.name: p for p in await client.read_work_pools()}
            deployments = await client.read_deployments()
        return pools, deployments

    import asyncio

    with api(deployed):
        pools, deployments = asyncio.run(read())
    assert set(POOLS) <= set(pools)
    limits = pools["focus-gpu-k8s"].base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    by_name = {d.name: d for d in deployments}
    assert set(by_name) == {"evaluate", "randomization", "train", "nightly", "sweep"}
    nightly = by_name["nightly"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron and schedule.schedule.timezone
    assert by_name["train"].global_concurrency_limit.limit == 1  # two training runs never share a GPU
    assert by_name["evaluate"].pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    # no deployed form shows the store's URL or an internal id
    for deployment in deployments:
        schema = json.dumps(deployment.parameter_openapi_schema)
        assert '"database_url"' not in schema and '"audit_run_id"' not in schema, deployment.name


def test_a_form_without_weights_is_refused_by_the_server_before_any_work(deployed: PrefectServer):
    """evaluate's defaults name no weights file: the server refuses the run (weights required), no worker needed."""
    from prefect.deployments import run_deployment

    with api(deployed):
        for name in ("evaluate/evaluate", "randomization/randomization"):
            with pytest.raises(Exception, match=r"(?i)weights.*required|required.*weights"):
                run_deployment(name, timeout=0)


def test_evaluate_deployment_runs_on_a_worker_and_writes_postgres(
    deployed: PrefectServer, store_url: str, checkpoints: list[str]
):
    from prefect.deployments import run_deployment
    from sqlalchemy import text

    import db
    from focus_core import models

    env = worker_env(deployed, store_url, gpu="", data_root=str(Path(checkpoints[0]).parent))
    deployed.start_worker("focus-gpu", "gpu-0", env)
    with api(deployed):
        # a bad parameter is refused by the server's schema check before any work is scheduled
        bad = evaluate_parameters(checkpoints[0], ["gradcam"])
        bad["params"]["mosaics"]["per_class"] = 0
        with pytest.raises(Exception, match=r"(?i)validation|per_class|greater"):
            run_deployment("evaluate/evaluate", parameters=bad, timeout=0)

        started = time.monotonic()
        flow_run = run_deployment(
            "evaluate/evaluate", parameters=evaluate_parameters(checkpoints[0], ["gradcam"]), timeout=RUN_TIMEOUT_S
        )
        print(f"evaluate deployment: {flow_run.state.name} in {time.monotonic() - started:.1f} s")
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{deployed.logs()}"

    engine = db.get_engine(store_url)
    try:
        summary = db.evaluation_summary(engine)
        assert len(summary) == 1, summary
        row = summary.iloc[0]
        assert row["n"] == 10 * PER_CLASS and row["status"] == "finished"
        with engine.connect() as connection:
            sha = connection.execute(
                text("SELECT sha256 FROM model_checkpoint WHERE id = :id"), {"id": int(row["checkpoint_id"])}
            ).scalar_one()
            rows, distinct = connection.execute(
                text("SELECT COUNT(*), COUNT(DISTINCT mosaic_id) FROM mosaic_result WHERE evaluation_id = :id"),
                {"id": int(row["evaluation_id"])},
            ).one()
    finally:
        engine.dispose()
    assert sha == models.weights_sha256(checkpoints[0])
    assert rows == distinct == 10 * PER_CLASS


def _submitted_by(server: PrefectServer) -> dict[str, list[str]]:
    """flow run id -> names of the workers that ran it.

    Both workers may try to submit the same scheduled run; the server lets one through and the
    other logs "Aborted submission of flow run ...", which does not count.
    """
    runs: dict[str, list[str]] = {}
    for name, _, log_path in server.workers:
        log = log_path.read_text(errors="replace")
        aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]{36})'", log))
        for run_id in re.findall(r"submitting flow run '([0-9a-f-]{36})'", log):
            if run_id not in aborted:
                runs.setdefault(run_id, []).append(name)
    return runs


def test_two_workers_share_a_sweep_and_record_each_cell_once(
    deployed: PrefectServer, store_url: str, checkpoints: list[str]
):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from sqlalchemy import text

    import db

    env = worker_env(deployed, store_url, gpu="", data_root=str(Path(checkpoints[0]).parent))
    if not any(name == "gpu-0" for name, _, _ in deployed.workers):
        deployed.start_worker("focus-gpu", "gpu-0", env)
    deployed.start_worker("focus-gpu", "gpu-1", env)

    methods = ["gradcam", "random"]
    command = [FOCUS, "sweep", "--deployment", "evaluate/evaluate", "--timeout", str(RUN_TIMEOUT_S),
               "--per-class", str(PER_CLASS), "--device", "cpu", "--batch-size", "16", "--chunk-size", "8"]
    for weights in checkpoints:
        command += ["--checkpoint", f"digits_cnn={weights}"]
    for method in methods:
        command += ["--method", method]
    env = {**deployed.env, "FOCUS_DATABASE_URL": store_url}
    started = time.monotonic()
    result = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"{result.stderr[-4000:]}\n{deployed.logs()}"

    async def cell_runs():
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["evaluate"]))
            )

    with api(deployed):
        runs = asyncio.run(cell_runs())
    sweep_cells = [r for r in runs if r.parent_task_run_id is not None]
    assert len(sweep_cells) == len(checkpoints) * len(methods)
    assert all(r.state.is_completed() for r in sweep_cells), [str(r.state) for r in sweep_cells]

    submitted = _submitted_by(deployed)
    ran = {str(r.id): submitted.get(str(r.id), []) for r in sweep_cells}
    assert all(len(workers) == 1 for workers in ran.values()), ran  # each cell ran on exactly one worker
    by_worker: dict[str, list[str]] = {}
    for run in sweep_cells:
        by_worker.setdefault(ran[str(run.id)][0], []).append(run.name)
    print(f"sweep of {len(sweep_cells)} cells in {seconds:.1f} s; cells per worker: {json.dumps(by_worker)}")
    assert set(by_worker) == {"gpu-0", "gpu-1"}, f"both workers should share the sweep: {by_worker}"

    # every cell (checkpoint x method on the mosaic set) is recorded exactly once, with one row per mosaic
    engine = db.get_engine(store_url)
    try:
        with engine.connect() as connection:
            cells = connection.execute(
                text(
                    "SELECT c.path, m.name, COUNT(DISTINCT e.id), COUNT(r.mosaic_id), COUNT(DISTINCT r.mosaic_id) "
                    "FROM evaluation e JOIN model_checkpoint c ON c.id = e.checkpoint_id "
                    "JOIN xai_method m ON m.id = e.method_id "
                    "JOIN mosaic_result r ON r.evaluation_id = e.id "
                    "WHERE e.randomization = 'none' GROUP BY c.path, m.name"
                )
            ).all()
    finally:
        engine.dispose()
    recorded = {(Path(path).name, method): (evaluations, rows, distinct) for path, method, evaluations, rows, distinct in cells}
    expected = {(Path(w).name, m) for w in checkpoints for m in methods}
    assert expected <= set(recorded), recorded
    for cell in expected:
        assert recorded[cell] == (1, 10 * PER_CLASS, 10 * PER_CLASS), (cell, recorded[cell])
