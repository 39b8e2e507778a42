"""Two hosts that share nothing but the services: train on one, audit on the other, the alert from the events API.

Real parts only: ``prefect server start`` (own PREFECT_HOME), PostgreSQL (a database of its own), the moto S3
server, and two process workers, ``host-a`` and ``host-b``, each with its own checkout of the code (a copy of
``flows``, ``focus_core``, ``db`` and ``deployments``: the deployments' pull step changes to it), its own ``HOME``,
``PREFECT_HOME``, ``TMPDIR``, weights cache and working directory. All they share is ``PREFECT_API_URL``,
``FOCUS_DATABASE_URL`` and the ``AWS_*`` environment of the S3 server. Each worker polls a work queue of its own
(``--work-queue host-a``), and each run is sent to one with ``run_deployment(..., work_queue_name=...)``:

1. ``train`` on host A: the digits, one epoch, checkpoints to ``s3://...``, into the lineage ``digits-prod``
   (marked for auditing); nothing is written to host A's checkout.
2. ``evaluate`` on host B of the trained checkpoint, by its ``s3://`` URL.
3. ``nightly`` (the audit) on host B: the baseline, no regression.
4. On host B's disk, the trained weights with the classifier re-initialised (a worse model), uploaded to S3 as a
   platform team's pipeline would, and registered as version 2 with ``focus checkpoint register`` run as host B.
5. ``nightly`` on host A, which never had those weights on its disk: ``focus.audit.regressed`` for the lineage,
   comparison ``previous``, read back from the server's events API.
6. ``nightly`` on host B with nothing new: version 2 against itself is quiet, against the lineage's reference
   (version 1) it still fell: one more regressed event, comparison ``reference``.

Every run completes on the worker of its queue, and no worker's or the server's log shows the S3 secret.

Each step's duration and the event's payload are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:  # the fixtures live next to this file; import them explicitly
    from server import PREFECT, PROJECT_ROOT, PrefectServer, postgres_url, prefect_server, start_process  # noqa: F401
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.flows.server import (  # noqa: F401
        PREFECT, PROJECT_ROOT, PrefectServer, postgres_url, prefect_server, start_process,
    )

from tests.s3 import SECRET_KEY, S3Server

pytestmark = [pytest.mark.server, pytest.mark.training, pytest.mark.timeout(900)]

FOCUS = str(Path(sys.executable).with_name("focus"))
LINEAGE = "digits-prod"
BUCKET = "focus-two-hosts"
POOL = "focus-gpu"
TILE = 16  # small tiles: the epoch and the audits take seconds
DATASET = {"kind": "digits", "tile_size": TILE}
AUDIT = {  # the nightly deployment's form, made tiny: 3 mosaics per class, one method, the CPU
    "name": "nightly", "dataset": DATASET, "mosaics": {"split": "test", "per_class": 3, "seed": 5},
    "methods": [{"name": "gradcam"}], "threshold": 0.05, "alpha": 0.05,
    "run": {"device": "cpu", "batch_size": 64, "chunk_size": 64, "retries": 0},
}
CODE = ("flows", "focus_core", "db", "deployments")  # what a host's checkout needs to run the flows
RUN_TIMEOUT_S = 420
EVENT_TIMEOUT_S = 900  # only bounds a hang: the poll returns as soon as the events are there
REGRESSED, COMPLETED = "focus.audit.regressed", "focus.audit.completed"


@dataclass
class Host:
    """One machine of the pool: its folders and the environment its worker and commands run with."""

    name: str
    root: Path
    env: dict[str, str]

    @property
    def checkout(self) -> Path:
        return self.root / "focus-audit"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def cache(self) -> Path:
        return self.root / "weights-cache"


def _host(root: Path, name: str, server: PrefectServer, store_url: str, s3: S3Server) -> Host:
    root.mkdir(parents=True)
    host = Host(name, root, {})
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in CODE:
        shutil.copytree(PROJECT_ROOT / folder, host.checkout / folder, ignore=ignore)
    for folder in (host.home, root / "tmp"):
        folder.mkdir()
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PREFECT_", "AWS_", "FOCUS_", "MLFLOW_"))
                 and k not in ("HOME", "PYTHONPATH", "TMPDIR", "XDG_CACHE_HOME", "MPLCONFIGDIR")}
    host.env = {
        **inherited,
        "HOME": str(host.home),
        "TMPDIR": str(root / "tmp"),
        "PYTHONPATH": str(host.checkout),  # this host's code, not the test's
        "PREFECT_HOME": str(host.home / ".prefect"),
        "PREFECT_API_URL": server.url,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "FOCUS_PROJECT_DIR": str(host.checkout),  # the deployments' pull step changes to it
        "FOCUS_DATABASE_URL": store_url,
        "FOCUS_WEIGHTS_CACHE": str(host.cache),
        **s3.env,
    }
    return host


def _start_worker(server: PrefectServer, host: Host) -> None:
    """``prefect worker start`` on the host's work queue, from its home folder; stopped by PID with the server."""
    log_path = host.root / "worker.log"
    proc = start_process(
        [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--limit", "1", "--name", host.name,
         "--work-queue", host.name],
        env=host.env, log_path=log_path, cwd=host.home,
    )
    server.workers.append((host.name, proc, log_path))


@pytest.fixture(scope="module")
def store_url(postgres_url: str) -> Iterator[str]:
    import db

    db.upgrade(postgres_url)
    yield postgres_url
    from flows.worker import store

    store.dispose_engines()


def api(server: PrefectServer):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: server.url})


def _deploy(server: PrefectServer) -> None:
    """The GPU pool (its template) and the CPU pool, then every deployment of deployments/prefect.yaml."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async def create_pools() -> None:
        template = json.loads((PROJECT_ROOT / "deployments" / "work-pools" / "process.json").read_text())
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=template))
            await client.create_work_pool(WorkPoolCreate(name="focus-cpu", type="process"))

    with api(server):
        asyncio.run(create_pools())
    server.run_cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")


def _ran_on(server: PrefectServer, flow_run_id: str) -> list[str]:
    """The workers that submitted a flow run (a worker that lost the race logs "Aborted submission")."""
    names = []
    for name, _, log_path in server.workers:
        log = log_path.read_text(errors="replace")
        aborted = f"Aborted submission of flow run '{flow_run_id}'" in log
        if f"submitting flow run '{flow_run_id}'" in log and not aborted:
            names.append(name)
    return names


class Steps:
    """Runs the steps, times them and prints the timings."""

    def __init__(self, server: PrefectServer) -> None:
        self.server = server
        self.timings: list[tuple[str, float]] = []

    def run(self, label: str, deployment: str, params: dict[str, Any], host: Host) -> None:
        from prefect.deployments import run_deployment

        started = time.monotonic()
        with api(self.server):
            flow_run = run_deployment(deployment, parameters={"params": params}, work_queue_name=host.name,
                                      timeout=RUN_TIMEOUT_S)
        self.timed(label, started)
        assert flow_run.state.is_completed(), f"{label}: {flow_run.state}\n{self.server.logs()}"
        assert _ran_on(self.server, str(flow_run.id)) == [host.name], (label, self.server.logs())

    def timed(self, label: str, started: float) -> None:
        seconds = time.monotonic() - started
        self.timings.append((label, seconds))
        print(f"[two hosts] {label}: {seconds:.1f} s", flush=True)


def _events(server: PrefectServer, name: str, since: Any) -> list[Any]:
    """The events called ``name`` since ``since`` from the server's events API (oldest first)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder

    async def read() -> list[Any]:
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(event=EventNameFilter(name=[name]), occurred=EventOccurredFilter(since=since),
                            order=EventOrder.ASC),
                limit=50,
            )
        return list(page.events)

    with api(server):
        return asyncio.run(read())


def _wait_for(server: PrefectServer, name: str, since: Any, count: int) -> list[Any]:
    """Poll the events API until ``count`` events called ``name`` have landed (they arrive a moment later)."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        found = _events(server, name, since)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def _worse_copy(trained: Path, path: Path) -> Path:
    """The trained weights with the classifier re-initialised: the same model, explanations near chance."""
    import torch

    from focus_core import architectures, models

    model = models.load_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), trained)
    torch.manual_seed(1)
    _, head = architectures.last_linear(model)
    head.reset_parameters()
    models.save_weights(model, path)
    return path


def _key(url: str) -> str:
    match = re.fullmatch(rf"s3://{BUCKET}/(.+)", url)
    assert match, url
    return match.group(1)


def test_a_worse_model_registered_on_one_host_regresses_in_an_audit_on_the_other(
    prefect_server: PrefectServer, store_url: str, s3_server: S3Server, tmp_path: Path
):
    from prefect.types._datetime import now

    import db
    from focus_core import models

    steps = Steps(prefect_server)
    since = now("UTC")
    started = time.monotonic()
    s3_server.make_bucket(BUCKET)
    _deploy(prefect_server)
    host_a = _host(tmp_path / "host-a", "host-a", prefect_server, store_url, s3_server)
    host_b = _host(tmp_path / "host-b", "host-b", prefect_server, store_url, s3_server)
    for host in (host_a, host_b):
        _start_worker(prefect_server, host)
    steps.timed(f"server up ({prefect_server.started_in:.1f} s), pools, deployments, two workers", started)

    # 1. train on host A, checkpoints to S3, into the lineage (marked for auditing)
    steps.run("train on host-a (1 epoch, s3:// checkpoints)", "train/train", {
        "name": "digits", "model": {"architecture": "digits_cnn"}, "dataset": DATASET, "epochs": 1,
        "batch_size": 128, "seed": 0, "focus_mosaics": {"split": "val", "per_class": 1},
        "checkpoint_dir": f"s3://{BUCKET}/runs", "audit": True, "lineage": LINEAGE,
        "run": {"device": "cpu", "retries": 0},
    }, host_a)
    engine = db.get_engine(store_url)
    try:
        (trained,) = db.lineage_checkpoints(engine, LINEAGE).to_dict("records")
    finally:
        engine.dispose()
    assert trained["version"] == 1 and trained["path"].startswith(f"s3://{BUCKET}/runs/"), trained
    assert not (host_a.checkout / "checkpoints").exists()  # nothing on host A's disk but its cache

    # 2. evaluate the trained checkpoint on host B, by its URL
    steps.run("evaluate on host-b (s3:// weights)", "evaluate/evaluate", {
        "model": {"architecture": "digits_cnn", "weights": trained["path"]}, "dataset": DATASET,
        "mosaics": {"split": "test", "per_class": 1, "seed": 0}, "methods": [{"name": "gradcam"}],
        "run": {"device": "cpu", "batch_size": 64, "chunk_size": 64, "retries": 0},
    }, host_b)

    # 3. the first audit, on host B: the baseline
    steps.run("audit 1 on host-b (baseline)", "audit/nightly", AUDIT, host_b)
    completed = _wait_for(prefect_server, COMPLETED, since, 1)
    assert len(completed) == 1 and completed[0].payload["regressions"] == 0, completed

    # 4. a worse model on host B's disk, uploaded to S3 and registered from host B
    started = time.monotonic()
    local = host_b.home / "models"
    local.mkdir()
    (local / "trained.pt").write_bytes(s3_server.get(BUCKET, _key(trained["path"])))
    worse = _worse_copy(local / "trained.pt", local / "digits-retrained.pt")
    worse_sha = models.weights_sha256(worse)
    worse_key = "platform/digits-prod/retrained.pt"
    s3_server.put(BUCKET, worse_key, worse.read_bytes())
    register = subprocess.run(
        [FOCUS, "checkpoint", "register", "--lineage", LINEAGE, "--weights", f"s3://{BUCKET}/{worse_key}",
         "--arch", "digits_cnn", "--num-classes", "10", "--in-channels", "1", "--label", "retrained"],
        env=host_b.env, cwd=host_b.home, capture_output=True, text=True, timeout=300,
    )
    steps.timed("worse model made on host-b, uploaded, `focus checkpoint register` as host-b", started)
    assert register.returncode == 0, register.stderr[-3000:]
    assert f"as version 2 of lineage {LINEAGE!r}" in register.stdout, register.stdout

    # 5. the second audit, on host A, which never had the worse weights on its disk: the regression
    downloads_before = s3_server.requests("GET", f"/{BUCKET}/{worse_key}")
    steps.run("audit 2 on host-a (regressed)", "audit/nightly", AUDIT, host_a)
    assert s3_server.requests("GET", f"/{BUCKET}/{worse_key}") > downloads_before  # host A read it from S3
    assert (host_a.cache / "sha256" / f"{worse_sha}.pt").is_file()
    started = time.monotonic()
    (event,) = _wait_for(prefect_server, REGRESSED, since, 1)
    steps.timed("focus.audit.regressed in the events API", started)
    payload = dict(event.payload)
    print(f"[two hosts] {REGRESSED} resource {dict(event.resource)}\n[two hosts] payload {json.dumps(payload)}")
    assert event.resource.id == f"focus.lineage.{LINEAGE}"
    assert event.resource["focus.comparison"] == "previous"
    assert payload["lineage"] == LINEAGE and payload["kind"] == "previous"
    assert payload["checkpoint"] == worse_sha and payload["compared_with"] == trained["sha256"]
    assert payload["checkpoint_version"] == 2 and payload["compared_with_version"] == 1
    assert payload["method"] == "gradcam" and payload["median_change"] < -AUDIT["threshold"]
    assert 0 <= payload["p_value"] < AUDIT["alpha"]

    # 6. the third audit, on host B, with nothing new: still below the reference, one event of that kind only
    steps.run("audit 3 on host-b (nothing new)", "audit/nightly", AUDIT, host_b)
    completed = _wait_for(prefect_server, COMPLETED, since, 3)
    assert [e.payload["regressions"] for e in completed] == [0, 1, 1], [e.payload for e in completed]
    regressed = _wait_for(prefect_server, REGRESSED, since, 2)
    assert sorted(e.resource["focus.comparison"] for e in regressed) == ["previous", "reference"]

    # the object store's secret reached the workers through their environment only: no log shows it
    for name, _, log_path in prefect_server.workers:
        assert SECRET_KEY not in log_path.read_text(errors="replace"), name
    assert SECRET_KEY not in prefect_server.log_path.read_text(errors="replace")
    print("[two hosts] timings: " + json.dumps({label: round(s, 1) for label, s in steps.timings}))
