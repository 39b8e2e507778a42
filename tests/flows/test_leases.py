"""Who works on what: bad requests write nothing, concurrent runs split the chunks, dead runs are taken over.

Against a real Prefect API and the real stores: two identical requests run at the same time in two threads
(as two workers would: the claims are rows in the store), a run that died is imitated by its leases in the
store (its owner never renews them), and a crash is a ``KeyboardInterrupt`` inside a chunk.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

import db
from flows.worker import leases, store
from flows import evaluate as evaluate_module
from flows import tasks
from flows.evaluate import evaluate
from flows.params import EvaluateParams
from focus_core.errors import FocusError
from tests.flows.test_evaluate import ChunkSpy, _params, _rows

CHUNKS = 3  # 20 mosaics in chunks of 8


class LeaseEvents:
    """Records what a run did about other runs' leases: whose it took over at once (``leases.take_over_dead``) and
    which chunks it waited for because a run that may be alive held them (``flows.evaluate._wait_for_others``).

    A verdict on these events holds at any load, where one on the seconds a run took would not.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken_over: list[str] = []
        self.waited_for: list[int] = []
        real_take, real_wait = leases.take_over_dead, evaluate_module._wait_for_others

        def take(*args, **kwargs):
            dead = real_take(*args, **kwargs)
            self.taken_over += dead
            return dead

        def wait(engine, held, owner, lease_seconds):
            self.waited_for += [request.chunk for request in held]
            return real_wait(engine, held, owner, lease_seconds)

        monkeypatch.setattr(leases, "take_over_dead", take)
        monkeypatch.setattr(evaluate_module, "_wait_for_others", wait)


def _count(url: str, table: str) -> int:
    with store.engine_for(url).connect() as connection:
        return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def _status(url: str, evaluation_id: int) -> tuple[str, str]:
    """(stored status, status the evaluation_summary view shows)."""
    engine = store.engine_for(url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT status FROM evaluation WHERE id = :e"), {"e": evaluation_id}).scalar()
    return stored, db.evaluation_summary(engine, [evaluation_id])["status"].iloc[0]


@pytest.mark.parametrize(
    "randomization, match",
    [({"kind": "cascading", "stage": 99}, "Cascading stage 99 is out of range"),
     ({"kind": "independent", "layer": "nope"}, "no parametrised layer 'nope'")],
    ids=["stage", "layer"],
)
def test_a_randomization_the_model_lacks_is_refused_before_anything_is_written(
    prefect_api, sqlite_url, digits_weights, randomization, match
):
    request = EvaluateParams.model_validate(
        {**_params(digits_weights, sqlite_url).model_dump(), "randomization": randomization}
    )
    with pytest.raises(FocusError, match=match):
        evaluate(request)
    for table in ("dataset", "mosaic_set", "model_checkpoint", "xai_method", "evaluation"):
        assert _count(sqlite_url, table) == 0, table


def test_a_missing_weights_file_on_the_worker_writes_nothing(prefect_api, sqlite_url, tmp_path):
    with pytest.raises(FocusError, match="does not exist"):
        evaluate(_params(str(tmp_path / "gone.pt"), sqlite_url))
    assert _count(sqlite_url, "dataset") == 0 and _count(sqlite_url, "evaluation") == 0


class SlowChunks(ChunkSpy):
    """A device that takes ``seconds`` per chunk, so that two runs started together certainly overlap."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.computing = threading.Event()

    def __call__(self, request: tasks.ChunkRequest):
        self.computing.set()
        time.sleep(self.seconds)
        return super().__call__(request)


@pytest.mark.slow
def test_two_identical_runs_at_once_split_the_chunks(prefect_api, pg_url, digits_weights, monkeypatch):
    spy = SlowChunks(1.0)  # one run alone takes about 5 s (two chunk threads)
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    request = _params(digits_weights, pg_url, chunk_size=2)  # 10 chunks of 2 mosaics
    outcomes: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcomes.append(evaluate(request))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    threads[0].start()
    assert spy.computing.wait(timeout=120)  # the second run starts once the first computes, as a late worker would
    threads[1].start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(outcomes) == 2
    records = [outcome["evaluations"][0] for outcome in outcomes]
    assert records[0]["evaluation_id"] == records[1]["evaluation_id"]
    assert all(r["status"] == "finished" for r in records)
    print("chunk executions:", sorted(spy.attempts), [r["chunks_run"] for r in records])
    assert len(spy.attempts) <= 10 + 2
    assert all(r["chunks_run"] for r in records)  # both runs computed chunks: they split the work
    assert sorted(set(spy.attempts)) == list(range(10))
    assert _rows(pg_url, records[0]["evaluation_id"]) == (20, 20)
    assert _count(pg_url, "chunk_lease") == 0


def test_a_dead_runs_chunk_is_taken_over_when_its_lease_expires(prefect_api, pg_url, digits_weights, monkeypatch):
    (first,) = evaluate(_params(digits_weights, pg_url, max_chunks=1))["evaluations"]  # chunk 0 written
    engine = store.engine_for(pg_url)
    evaluation_id = first["evaluation_id"]
    # a run that claimed chunk 1 and died: its leases run out in 3 s and nobody renews them
    db.start_evaluation(engine, evaluation_id, owner="dead-worker", lease_seconds=3)
    assert db.leases.claim_chunk(engine, evaluation_id, 1, "dead-worker", 3)

    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    events = LeaseEvents(monkeypatch)
    (record,) = evaluate(_params(digits_weights, pg_url, lease_seconds=30))["evaluations"]
    assert record["status"] == "finished" and record["chunks_run"] == [1, 2]
    assert sorted(spy.attempts) == [1, 2]  # chunk 1 computed once, after the dead run's lease expired
    # a holder this run cannot judge (no process or flow run recorded): waited for, never taken over early
    assert 1 in events.waited_for and events.taken_over == []
    assert _rows(pg_url, evaluation_id) == (20, 20)
    assert _count(pg_url, "chunk_lease") == 0


def test_a_stale_running_evaluation_shows_as_crashed_and_the_next_run_takes_it_over(
    prefect_api, sqlite_url, digits_weights, monkeypatch
):
    (first,) = evaluate(_params(digits_weights, sqlite_url, max_chunks=1))["evaluations"]
    engine = store.engine_for(sqlite_url)
    evaluation_id = first["evaluation_id"]
    assert _status(sqlite_url, evaluation_id) == ("running", "running")  # stopped on purpose: resumable
    started = time.monotonic()
    db.start_evaluation(engine, evaluation_id, owner="killed-worker", lease_seconds=4)  # then killed with -9
    assert _status(sqlite_url, evaluation_id) == ("running", "running")
    time.sleep(max(0.0, started + 4.5 - time.monotonic()))
    assert _status(sqlite_url, evaluation_id) == ("running", "crashed")

    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    (record,) = evaluate(_params(digits_weights, sqlite_url))["evaluations"]
    assert record["evaluation_id"] == evaluation_id and record["status"] == "finished"
    assert sorted(spy.attempts) == [1, 2]
    assert _status(sqlite_url, evaluation_id) == ("finished", "finished")


def test_a_run_that_crashes_marks_its_evaluation_crashed(prefect_api, sqlite_url, digits_weights, monkeypatch):
    monkeypatch.setattr(tasks, "explain_chunk", ChunkSpy(fail={1: KeyboardInterrupt()}))
    with pytest.raises(BaseException):  # noqa: B017, PT011 - Prefect re-raises the interrupt in its own form
        evaluate(_params(digits_weights, sqlite_url, retries=0))
    with store.engine_for(sqlite_url).connect() as connection:
        (evaluation_id,) = connection.execute(text("SELECT id FROM evaluation")).scalars().all()
    assert _status(sqlite_url, evaluation_id) == ("crashed", "crashed")
    assert _count(sqlite_url, "chunk_lease") == 0

    monkeypatch.setattr(tasks, "explain_chunk", ChunkSpy())
    (record,) = evaluate(_params(digits_weights, sqlite_url))["evaluations"]
    assert record["status"] == "finished" and _rows(sqlite_url, evaluation_id) == (20, 20)


@pytest.mark.slow
def test_a_killed_command_shows_as_crashed_and_the_same_command_finishes_it(prefect_api, tmp_path, digits_weights):
    """`kill -9` of a real `focus evaluate`: no hook runs, the lease runs out, `focus results` says crashed."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    url = f"sqlite:///{tmp_path / 'focus.db'}"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"run": {"lease_seconds": 3, "chunk_size": 2, "batch_size": 2}}))
    focus = str(Path(sys.executable).with_name("focus"))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "FOCUS_DATABASE_URL": url}
    command = [focus, "evaluate", "--params", str(params), "--weights", digits_weights, "--per-class", "20",
               "--method", "smoothgrad:n_samples=8"]
    subprocess.run([focus, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            if _count(url, "mosaic_result") > 0:
                break
        assert process.poll() is None, "the evaluation finished before it could be killed: make it longer"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    (evaluation_id,) = [int(i) for i in _ids(url)]
    assert _status(url, evaluation_id)[0] == "running"  # nothing could mark it: the process died at once
    time.sleep(3.5)
    shown = subprocess.run([focus, "results", "--format", "json"], env=env, capture_output=True, text=True,
                           timeout=120, check=True)
    assert [row["status"] for row in json.loads(shown.stdout)] == ["crashed"]

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert _status(url, evaluation_id) == ("finished", "finished")
    assert _rows(url, evaluation_id) == (200, 200)


def _ids(url: str) -> list[int]:
    with store.engine_for(url).connect() as connection:
        return list(connection.execute(text("SELECT id FROM evaluation")).scalars())
