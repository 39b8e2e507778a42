"""A form is not a shell, on a real Prefect server and process worker: the attacks a form can make are refused.

The focus-gpu pool is created from deployments/work-pools/process.json and the evaluate deployment from
deployments/prefect.yaml; one process worker serves it, configured as the docs say (FOCUS_DATA_ROOTS). Through the
API, as the UI does:

1. ``architecture = os:system(command='id > <file>')``: the run fails on its parameters, the file is absent and no
   row is written;
2. a ``figures_dir`` outside the worker's output root: refused likewise, the folder absent;
3. a run that overrides the pool's ``command`` job variable: refused by the server, nothing runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

try:  # the fixtures live next to this file; import them explicitly
    from server import PROJECT_ROOT, PrefectServer, postgres_url, prefect_server  # noqa: F401
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import PROJECT_ROOT, PrefectServer, postgres_url, prefect_server  # noqa: F401

pytestmark = [pytest.mark.server, pytest.mark.timeout(420)]

RUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def store_url(postgres_url: str):
    import db

    db.upgrade(postgres_url)
    yield postgres_url
    from flows.worker import store

    store.dispose_engines()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from focus_core import models

    path = tmp_path_factory.mktemp("data") / "digits.pt"
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), path)
    return path


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, store_url: str, weights: Path) -> PrefectServer:
    """The focus-gpu pool (the shipped process template), the evaluate deployment and one worker."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = json.loads((PROJECT_ROOT / "deployments" / "work-pools" / "process.json").read_text())

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="focus-gpu", type="process", base_job_template=template))

    with api(prefect_server):
        asyncio.run(create_pool())
    prefect_server.run_cli("--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "evaluate")
    prefect_server.start_worker("focus-gpu", "gpu-0", {
        "FOCUS_PROJECT_DIR": str(PROJECT_ROOT),
        "FOCUS_DATABASE_URL": store_url,
        "FOCUS_DATA_ROOTS": str(weights.parent),
        "CUDA_VISIBLE_DEVICES": "",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    })
    return prefect_server


def api(server: PrefectServer):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: server.url})


def _parameters(weights: Path, **changes) -> dict:
    params = {
        "model": {"architecture": "digits_cnn", "weights": str(weights)},
        "dataset": {"kind": "digits"},
        "mosaics": {"split": "test", "per_class": 1, "seed": 0},
        "methods": [{"name": "random"}],
        "run": {"device": "cpu", "batch_size": 16, "chunk_size": 8, "retries": 0},
    }
    for key, value in changes.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    return {"params": params}


def _rows(store_url: str) -> int:
    from sqlalchemy import text

    import db

    engine = db.get_engine(store_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT COUNT(*) FROM model_checkpoint")).scalar_one()
    finally:
        engine.dispose()


def test_the_architecture_attack_is_refused_on_the_worker(served: PrefectServer, store_url: str, weights: Path,
                                                          tmp_path: Path):
    from prefect.deployments import run_deployment

    target = tmp_path / "x"
    attack = _parameters(weights, model={"architecture": f"os:system(command='id > {target}')"})
    with api(served):
        flow_run = run_deployment("evaluate/evaluate", parameters=attack, timeout=RUN_TIMEOUT_S)
    assert flow_run.state.is_failed(), f"{flow_run.state}\n{served.logs()}"
    assert "builds no model factory 'os:system'" in (flow_run.state.message or ""), flow_run.state.message
    assert not target.exists()
    assert _rows(store_url) == 0  # refused before any row


def test_a_figures_folder_outside_the_output_root_is_refused_on_the_worker(served: PrefectServer, store_url: str,
                                                                          weights: Path, tmp_path: Path):
    from prefect.deployments import run_deployment

    outside = tmp_path / "cron.d"
    with api(served):
        flow_run = run_deployment("evaluate/evaluate", parameters=_parameters(weights, figures_dir=str(outside)),
                                  timeout=RUN_TIMEOUT_S)
    assert flow_run.state.is_failed(), f"{flow_run.state}\n{served.logs()}"
    assert "outside the folders this worker writes" in (flow_run.state.message or ""), flow_run.state.message
    assert not outside.exists() and _rows(store_url) == 0


def test_a_run_that_overrides_the_command_is_refused_by_the_server(served: PrefectServer, weights: Path,
                                                                  tmp_path: Path):
    from prefect.deployments import run_deployment

    target = tmp_path / "y"
    with api(served), pytest.raises(Exception, match=r"(?i)command"):
        run_deployment("evaluate/evaluate", parameters=_parameters(weights), timeout=0,
                       job_variables={"command": f"sh -c 'id > {target}'"})
    time.sleep(6)  # three of the worker's polls: nothing was scheduled for it to pick up
    assert not target.exists()
