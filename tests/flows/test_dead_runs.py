"""A killed run's rows reach a final status: the next audit's start marks them ``crashed``.

The killed run is a real process (``python -c`` with the real functions the audit and the evaluate flow call)
that opens an audit run, starts an evaluation of it and claims a chunk, then is killed with ``SIGKILL``: no hook,
no cleanup. The store is a real PostgreSQL database. No Prefect API is needed: the holder is judged by its process
(same host), and outside a flow run no flow run is asked about. The killed training run is the real train flow,
run against a real Prefect API and stopped by ``SIGKILL`` inside its first training epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqlalchemy import text

import db
from flows.worker import leases, store
from tests.db.conftest import make_world

REPO = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 300.0

#: A nightly audit as the flows run it: opens its audit run (sweeping first), starts one of its evaluations under
#: the evaluate run's own owner, claims chunk 0, then works until it is killed.
AUDIT = """
import sys, time
import db
from flows.worker import leases, store
url, checkpoint, method, mosaic_set, seconds = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
engine = store.engine_for(url)
audit_run = leases.open_audit_run(engine, name="nightly", threshold=0.05)
evaluation = db.get_or_create_evaluation(engine, checkpoint, method, mosaic_set, audit_run_id=audit_run)
owner = leases.run_owner()
leases.hold(engine, owner)
db.start_evaluation(engine, evaluation, owner=owner, lease_seconds=seconds)
assert db.leases.claim_chunk(engine, evaluation, 0, owner, seconds)
print(audit_run, evaluation, flush=True)
time.sleep(600)
"""


def _start_audit(url: str, world, method: str) -> tuple[subprocess.Popen[str], int, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(a) for a in (url, world.checkpoint_id, world.method_ids[method], world.mosaic_set_id, LEASE_SECONDS)]
    process = subprocess.Popen([sys.executable, "-c", AUDIT, *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if process.poll() is not None or not line.strip():
        process.kill()
        raise AssertionError(f"the audit process did not start: {line!r} {process.stderr.read()}")
    audit_run, evaluation = map(int, line.split())
    return process, audit_run, evaluation


def _rows(url: str, sql: str) -> list[tuple]:
    with store.engine_for(url).connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def _status(url: str, table: str, row_id: int) -> tuple:
    (row,) = _rows(url, f"SELECT status, run_owner FROM {table} WHERE id = {int(row_id)}")
    return row


def test_the_next_audit_marks_a_killed_audits_rows_crashed_and_leaves_a_live_ones(pg_url):
    engine = store.engine_for(pg_url)
    world = make_world(engine)
    killed, killed_audit, killed_evaluation = _start_audit(pg_url, world, "gradcam")
    alive, live_audit, live_evaluation = _start_audit(pg_url, world, "lrp")
    try:
        killed.kill()  # SIGKILL: no hook, no cleanup
        killed.wait(timeout=30)
        assert _status(pg_url, "audit_run", killed_audit)[0] == "running"
        assert _status(pg_url, "evaluation", killed_evaluation)[0] == "running"

        next_audit = leases.open_audit_run(engine, name="nightly", threshold=0.05)

        # the killed run's audit run and evaluation are closed, its chunk lease and holder rows gone
        assert _status(pg_url, "audit_run", killed_audit) == ("crashed", None)
        (finished_at,) = _rows(pg_url, f"SELECT finished_at FROM audit_run WHERE id = {killed_audit}")
        assert finished_at[0] is not None
        assert _status(pg_url, "evaluation", killed_evaluation) == ("crashed", None)
        assert _rows(pg_url, f"SELECT owner FROM chunk_lease WHERE evaluation_id = {killed_evaluation}") == []
        # the live run keeps all of its rows
        assert _status(pg_url, "audit_run", live_audit)[0] == "running"
        assert _status(pg_url, "evaluation", live_evaluation)[0] == "running"
        assert len(_rows(pg_url, f"SELECT owner FROM chunk_lease WHERE evaluation_id = {live_evaluation}")) == 1
        # the new audit run is held by this process, and closing it drops its holder row
        status, owner = _status(pg_url, "audit_run", next_audit)
        assert status == "running" and owner is not None
        assert _rows(pg_url, f"SELECT pid FROM lease_holder WHERE owner = '{owner}'") == [(os.getpid(),)]
        db.finish_audit_run(engine, next_audit)
        assert _status(pg_url, "audit_run", next_audit) == ("finished", None)
        assert _rows(pg_url, f"SELECT pid FROM lease_holder WHERE owner = '{owner}'") == []
        # a holder whose process lives on is never swept; the sweep is idempotent
        assert leases.sweep_dead_runs(engine) == leases.Swept([], [], [], [])
    finally:
        alive.kill()
        alive.wait(timeout=30)
    # once the live run is killed as well, a sweep closes its rows too
    swept = leases.sweep_dead_runs(engine)
    assert (swept.evaluations, swept.audit_runs) == ([live_evaluation], [live_audit])
    assert len(swept.owners) == 2  # its audit's owner and its evaluate's
    assert _status(pg_url, "audit_run", live_audit)[0] == "crashed"
    assert _rows(pg_url, "SELECT status, COUNT(*) FROM audit_run GROUP BY status ORDER BY status") == [
        ("crashed", 2), ("finished", 1)]
    assert _rows(pg_url, "SELECT COUNT(*) FROM lease_holder") == [(0,)]


def test_a_running_evaluation_whose_lease_expired_without_a_holder_is_marked_crashed(pg_url):
    """A run that recorded no process (an older client) is judged by its lease alone."""
    engine = store.engine_for(pg_url)
    world = make_world(engine)
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"],
                                             world.mosaic_set_id)
    db.start_evaluation(engine, evaluation, owner="an-old-client", lease_seconds=0)
    other = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id)
    db.start_evaluation(engine, other, owner="a-live-client", lease_seconds=LEASE_SECONDS)
    assert leases.sweep_dead_runs(engine) == leases.Swept([evaluation], [], [], [])
    assert _status(pg_url, "evaluation", evaluation) == ("crashed", None)
    assert _status(pg_url, "evaluation", other) == ("running", "a-live-client")


#: The train flow as a worker runs it, stopped inside epoch 1's training (after epoch 0 is recorded) until killed.
TRAIN = """
import sys, time
from flows import train
from flows.params import TrainParams

def stalled(*args, **kwargs):
    print("training", flush=True)
    time.sleep(600)

train.recipe.train_model = stalled
train.train(TrainParams.model_validate_json(sys.argv[1]))
"""


@pytest.mark.training
def test_the_next_audit_marks_a_killed_train_flows_training_run_crashed(prefect_api, pg_url, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.params import TrainParams

    params = TrainParams(name="killed", dataset={"kind": "digits", "tile_size": 16}, epochs=1,
                         focus_mosaics={"split": "val", "per_class": 1, "seed": 1}, focus_methods=[{"name": "gradcam"}],
                         checkpoint_dir=str(tmp_path / "checkpoints"), database_url=pg_url, retries=0)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": PREFECT_API_URL.value()}
    killed = subprocess.Popen([sys.executable, "-c", TRAIN, params.model_dump_json()], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = killed.stdout.readline()  # the event: the flow is inside epoch 1, its training run registered
        assert line.strip() == "training", f"the train flow did not reach its epoch: {line!r} {killed.stderr.read()}"
        ((run_id, owner, config_hash),) = _rows(
            pg_url, "SELECT id, run_owner, config_hash FROM training_run WHERE status = 'running'")
        assert owner is not None
        assert _rows(pg_url, f"SELECT pid, flow_run_id FROM lease_holder WHERE owner = '{owner}'") == [
            (killed.pid, owner)]  # the train flow's Prefect flow run holds its row
    finally:
        killed.kill()  # SIGKILL: no hook, no ``except``, no cleanup
        killed.wait(timeout=60)
    engine = store.engine_for(pg_url)
    assert _status(pg_url, "training_run", run_id) == ("running", owner)
    config = json.loads(params.model_dump_json())
    live = leases.open_training_run(engine, "a" * 64, "digits_cnn", config, name="alive")  # held by this process

    audit = leases.open_audit_run(engine, name="nightly")

    assert _status(pg_url, "training_run", run_id) == ("crashed", None)
    assert _rows(pg_url, f"SELECT finished_at IS NOT NULL FROM training_run WHERE id = {run_id}") == [(True,)]
    assert _rows(pg_url, f"SELECT COUNT(*) FROM lease_holder WHERE owner = '{owner}'") == [(0,)]
    assert _rows(pg_url, f"SELECT epoch FROM training_epoch WHERE training_run_id = {run_id}") == [(0,)]  # kept
    assert _status(pg_url, "training_run", live)[0] == "running"  # its holder lives on
    db.finish_audit_run(engine, audit)
    # a rerun of the request takes the crashed row over, and closing it leaves no holder behind
    again = leases.open_training_run(engine, config_hash, "digits_cnn", config, name="killed")
    assert again == run_id and _status(pg_url, "training_run", run_id)[0] == "running"
    db.finish_training_run(engine, run_id)
    db.finish_training_run(engine, live)
    assert _rows(pg_url, "SELECT status, run_owner FROM training_run ORDER BY id") == [
        ("finished", None), ("finished", None)]
    assert _rows(pg_url, "SELECT COUNT(*) FROM lease_holder") == [(0,)]
