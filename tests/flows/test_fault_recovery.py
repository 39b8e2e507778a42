"""Faults that end cleanly and fast: a dead run's claims are taken over at once, a live run's are waited for.

A run that holds leases is a real process (``python -c`` with the real lease functions) killed with ``SIGKILL``;
the next run is a real ``evaluate`` flow against the session's Prefect API and a real store. The leases last
minutes; each verdict is on what the next run did (whose leases it took over, which chunks it waited for, which
it tried again: ``LeaseEvents``, counts, its log), never on the seconds it took.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

import db
from flows.worker import leases, store
from flows import tasks
from flows.evaluate import CHUNK_THREADS, evaluate
from tests.flows.test_evaluate import ChunkSpy, _params, _rows
from tests.flows.test_leases import LeaseEvents

REPO = Path(__file__).resolve().parents[2]
#: A lease of minutes: a run that waited for one instead of taking it over would hang the test, and the verdicts
#: (on what the run did: ``LeaseEvents``, its log) tell the two apart at any load.
LEASE_SECONDS = 300.0

#: A run that starts evaluation ``argv[2]`` and claims its chunk 1 under owner ``argv[3]``, then works forever.
HOLDER = """
import sys, time
import db
from flows.worker import leases, store
url, evaluation_id, owner, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
engine = store.engine_for(url)
leases.hold(engine, owner)
db.start_evaluation(engine, evaluation_id, owner=owner, lease_seconds=seconds)
assert db.leases.claim_chunk(engine, evaluation_id, 1, owner, seconds)
print("holding", flush=True)
time.sleep(600)
"""


def _hold_in_a_process(url: str, evaluation_id: int, owner: str, seconds: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(evaluation_id), owner, str(seconds)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.strip() == "holding", process.stderr.read() if process.poll() is not None else line
    return process


def _kill(process: subprocess.Popen[str]) -> None:
    process.kill()  # SIGKILL: no hook, no cleanup
    process.wait(timeout=30)


def _count(url: str, table: str) -> int:
    with store.engine_for(url).connect() as connection:
        return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


@pytest.mark.parametrize("store_url", ["pg_url", "sqlite_url"])
def test_a_killed_runs_claims_are_taken_over_at_once(prefect_api, store_url, digits_weights, monkeypatch, request):
    url = request.getfixturevalue(store_url)
    (first,) = evaluate(_params(digits_weights, url, max_chunks=1))["evaluations"]  # chunk 0 written
    evaluation_id = first["evaluation_id"]
    holder = _hold_in_a_process(url, evaluation_id, "killed-run", LEASE_SECONDS)
    _kill(holder)

    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    events = LeaseEvents(monkeypatch)
    (record,) = evaluate(_params(digits_weights, url, lease_seconds=LEASE_SECONDS))["evaluations"]
    assert record["status"] == "finished" and record["chunks_run"] == [1, 2]
    assert sorted(spy.attempts) == [1, 2]  # the dead run's chunk computed once, by this run
    # taken over at once (its lease, claimed just before the kill, runs for minutes), never waited for
    assert events.taken_over == ["killed-run"] and events.waited_for == []
    assert _rows(url, evaluation_id) == (20, 20)
    assert _count(url, "chunk_lease") == 0 and _count(url, "lease_holder") == 0


def test_a_live_runs_claim_is_waited_for(prefect_api, pg_url, digits_weights, monkeypatch):
    (first,) = evaluate(_params(digits_weights, pg_url, max_chunks=1))["evaluations"]
    evaluation_id = first["evaluation_id"]
    holder = _hold_in_a_process(pg_url, evaluation_id, "live-run", 4.0)  # alive, but never renews: expires in 4 s
    try:
        spy = ChunkSpy()
        monkeypatch.setattr(tasks, "explain_chunk", spy)
        events = LeaseEvents(monkeypatch)
        (record,) = evaluate(_params(digits_weights, pg_url, lease_seconds=30))["evaluations"]
        # chunk 1 was left to its live holder until its lease ran out: waited for, never taken over
        assert 1 in events.waited_for and events.taken_over == []
        assert holder.poll() is None
    finally:
        _kill(holder)
    assert record["status"] == "finished" and sorted(spy.attempts) == [1, 2]
    assert _rows(pg_url, evaluation_id) == (20, 20)


def test_a_run_on_another_host_whose_flow_run_crashed_is_taken_over_at_once(
    prefect_api, pg_url, digits_weights, monkeypatch
):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    @flow(name="lost-worker")
    def lost_worker() -> None:
        pass

    with get_client(sync_client=True) as client:
        crashed = client.create_flow_run(lost_worker, state=Crashed())
    (first,) = evaluate(_params(digits_weights, pg_url, max_chunks=1))["evaluations"]
    evaluation_id = first["evaluation_id"]
    engine = store.engine_for(pg_url)
    db.leases.register_holder(engine, "remote-run", host="another-host", pid=os.getpid(), process_started="1",
                              flow_run_id=str(crashed.id))
    db.start_evaluation(engine, evaluation_id, owner="remote-run", lease_seconds=LEASE_SECONDS)
    assert db.leases.claim_chunk(engine, evaluation_id, 1, "remote-run", LEASE_SECONDS)

    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    events = LeaseEvents(monkeypatch)
    (record,) = evaluate(_params(digits_weights, pg_url, lease_seconds=LEASE_SECONDS))["evaluations"]
    assert record["status"] == "finished" and sorted(spy.attempts) == [1, 2]
    # taken over at once, not after the dead run's lease (minutes) ran out
    assert events.taken_over == ["remote-run"] and events.waited_for == []


def test_a_holder_that_cannot_be_judged_keeps_its_claim(prefect_api, pg_url, digits_weights):
    """Another host, no flow run, or a flow run still running: only the lease's expiry frees its chunks."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="busy-worker")
    def busy_worker() -> None:
        pass

    with get_client(sync_client=True) as client:
        running = client.create_flow_run(busy_worker, state=Running())
    (first,) = evaluate(_params(digits_weights, pg_url, max_chunks=1))["evaluations"]
    evaluation_id = first["evaluation_id"]
    engine = store.engine_for(pg_url)
    for chunk, flow_run_id in [(1, None), (2, str(running.id))]:
        owner = f"remote-{chunk}"
        db.leases.register_holder(engine, owner, host="another-host", pid=1, flow_run_id=flow_run_id)
        assert db.leases.claim_chunk(engine, evaluation_id, chunk, owner, LEASE_SECONDS)
    assert leases.take_over_dead(engine, [evaluation_id], "me", LEASE_SECONDS) == []
    assert not db.leases.claim_chunk(engine, evaluation_id, 1, "me", LEASE_SECONDS)
    assert not db.leases.claim_chunk(engine, evaluation_id, 2, "me", LEASE_SECONDS)


def test_a_pid_reused_by_another_process_counts_as_gone():
    from flows.worker import processes

    me = processes.this_process()
    assert processes.is_gone(me.host, me.pid, me.started) is False
    assert processes.is_gone(me.host, me.pid, str(int(me.started) + 1)) is True  # same pid, other start time
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert processes.is_gone(me.host, child.pid, None) is True


def test_four_identical_requests_at_once_all_succeed(prefect_api, pg_url, digits_weights, monkeypatch):
    import threading

    from tests.flows.test_leases import SlowChunks

    spy = SlowChunks(0.3)
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    request = _params(digits_weights, pg_url, chunk_size=4)  # 5 chunks
    start = threading.Barrier(4)
    outcomes: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            outcomes.append(evaluate(request))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(outcomes) == 4
    records = [outcome["evaluations"][0] for outcome in outcomes]
    assert {r["evaluation_id"] for r in records} == {records[0]["evaluation_id"]}
    assert all(r["status"] == "finished" and r["summary"]["n"] == 20 for r in records)
    assert sorted(set(spy.attempts)) == list(range(5))
    assert _rows(pg_url, records[0]["evaluation_id"]) == (20, 20)
    assert _count(pg_url, "chunk_lease") == 0 and _count(pg_url, "lease_holder") == 0


@pytest.mark.server
def test_losing_the_prefect_api_mid_run_keeps_the_evaluation_finished(pg_url, digits_weights, tmp_path):
    """The Prefect server is killed while `focus evaluate` runs and started again: the run ends finished, n right."""
    import json

    from tests.flows.server import PREFECT, free_port, server_env, start_process, stop_process, wait_healthy

    home = tmp_path / "prefect-home"
    home.mkdir()
    env = server_env(home, free_port())
    port = env["PREFECT_SERVER_API_PORT"]

    def start_server() -> subprocess.Popen:
        server = start_process([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port, "--no-ui"],
                               env=env, log_path=tmp_path / "server.log", cwd=tmp_path)
        wait_healthy(env["PREFECT_API_URL"], server, tmp_path / "server.log", 120)
        return server

    server = start_server()
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"run": {"chunk_size": 2, "batch_size": 2}}))
    focus = str(Path(sys.executable).with_name("focus"))
    command = [focus, "evaluate", "--params", str(params), "--weights", digits_weights, "--per-class", "20",
               "--method", "smoothgrad:n_samples=8"]
    # no client retries: the first call while the server is down raises ConnectError (the default retries
    # for about a minute first, which only moves the failure later)
    run = start_process(command, env={**env, "FOCUS_DATABASE_URL": pg_url, "PYTHONPATH": str(REPO),
                                      "PREFECT_CLIENT_MAX_RETRIES": "0"},
                        log_path=tmp_path / "evaluate.log", cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while _count(pg_url, "mosaic_result") == 0 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run.poll() is None, "the evaluation ended before the server could be killed: make it longer"
        server.kill()  # SIGKILL: the API is gone at once
        server.wait(timeout=30)
        lost_at = _count(pg_url, "mosaic_result")
        time.sleep(3)
        assert run.poll() is None, (tmp_path / "evaluate.log").read_text()[-3000:]
        server = start_server()
        run.wait(timeout=600)
    finally:
        stop_process(run)
        stop_process(server)
    log = (tmp_path / "evaluate.log").read_text()
    with store.engine_for(pg_url).connect() as connection:
        status, n = connection.execute(text("SELECT status, n FROM evaluation")).one()
    assert lost_at < 200, "every row was written before the API went away"
    assert (status, n) == ("finished", 200), log[-3000:]
    assert run.returncode == 0, log[-3000:]


def _admin():
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.postgres import SERVER_URL

    return psycopg.connect(make_url(SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=True)


class TerminateOnce:
    """Terminates the connection of the first statement that contains ``marker``, just before it runs.

    A real ``pg_terminate_backend`` of the store's own connection, so the statement fails the way it does when a
    database administrator (or a failover) ends the session mid-run.
    """

    def __init__(self, marker: str) -> None:
        self.marker, self.fired = marker, False

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if self.fired or self.marker not in statement:
            return
        self.fired = True
        pid = conn.connection.dbapi_connection.info.backend_pid
        with _admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                time.sleep(0.01)


@pytest.mark.parametrize("phase, marker", [
    ("mosaic-set registration", "INSERT INTO mosaic_set "),
    ("planning", "INSERT INTO evaluation "),
    ("chunks", "INSERT INTO chunk_lease "),
    ("close", "INSERT INTO evaluation_stats "),
])
def test_a_terminated_connection_in_any_phase_is_retried(prefect_api, pg_url, digits_weights, phase, marker):
    from sqlalchemy import event

    engine = store.engine_for(pg_url)
    fault = TerminateOnce(marker)
    event.listen(engine, "before_cursor_execute", fault)
    try:
        (record,) = evaluate(_params(digits_weights, pg_url, retries=1, retry_delay_seconds=0))["evaluations"]
    finally:
        event.remove(engine, "before_cursor_execute", fault)
    assert fault.fired, f"no statement of the {phase} contained {marker!r}"
    assert record["status"] == "finished" and record["summary"]["n"] == 20
    assert _rows(pg_url, record["evaluation_id"]) == (20, 20)


def test_a_store_dropped_mid_run_stops_it_at_once_in_one_sentence(
    prefect_api, pg_url, digits_weights, monkeypatch, caplog
):
    """Once the store is gone nothing waits: no chunk is tried again, no step of the store is retried, no lease is
    waited for, and no chunk claimed after the drop is computed (10 chunks, two retries allowed)."""
    from sqlalchemy.engine import make_url

    name = make_url(pg_url).database
    attempts: list[int] = []  # every try of a chunk's task body, in order
    computed_after: list[int] = []  # chunks that entered explain_chunk after the drop
    dropped = threading.Event()
    lock = threading.Lock()
    real_explain, real_body = tasks.explain_chunk, tasks._evaluate_chunk

    def drop_then_explain(request: tasks.ChunkRequest):
        with lock:
            if dropped.is_set():
                computed_after.append(request.chunk)
            elif request.chunk == 1:
                with _admin() as admin:
                    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                dropped.set()
        return real_explain(request)

    def counted_body(engine, request: tasks.ChunkRequest, started: float):
        with lock:
            attempts.append(request.chunk)
        return real_body(engine, request, started)

    monkeypatch.setattr(tasks, "explain_chunk", drop_then_explain)
    monkeypatch.setattr(tasks, "_evaluate_chunk", counted_body)
    events = LeaseEvents(monkeypatch)
    caplog.set_level(logging.WARNING, logger=store.__name__)
    with pytest.raises(db.StoreError) as stopped:
        evaluate(_params(digits_weights, pg_url, chunk_size=2, retries=2, retry_delay_seconds=1))  # 10 chunks
    message = str(stopped.value)
    assert f"has no database '{name}'" in message and "\n" not in message
    assert dropped.is_set()
    print(f"chunk attempts: {attempts}; computed after the drop: {computed_after}")
    assert len(attempts) == len(set(attempts))  # no chunk tried twice: a gone store is never retried
    # only a chunk claimed before the drop, in the other chunk thread, may still compute: a claim after it fails
    assert len(computed_after) <= CHUNK_THREADS - 1
    assert events.waited_for == []  # no lease waited for
    assert not [r for r in caplog.records if r.name == store.__name__ and "Lost the connection" in r.getMessage()]


@pytest.mark.slow  # real `focus` processes in local mode
def test_a_run_stopped_by_a_full_sqlite_disk_is_taken_over_at_once(small_tmpfs, digits_weights):
    """The store's disk fills up while chunks are claimed, leaving no room to mark the evaluation or free its
    leases: the next run (after space is freed) takes them over at once instead of waiting for them to expire."""
    import sqlite3

    from tests import disk

    folder = small_tmpfs("4m")
    path = folder / "focus.db"
    url = f"sqlite:///{path}"
    db.upgrade(url)
    focus = str(Path(sys.executable).with_name("focus"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "FOCUS_DATABASE_URL")}
    env["PYTHONPATH"] = str(REPO)
    command = [focus, "evaluate", "--weights", digits_weights, "--per-class", "10", "--database-url", url,
               "--chunk-size", "2", "--batch-size", "2", "--method", "smoothgrad:n_samples=8"]
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    filler = None
    try:
        deadline = time.monotonic() + 180
        while filler is None and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with sqlite3.connect(path, timeout=30) as connection:
                if connection.execute("SELECT COUNT(*) FROM chunk_lease").fetchone()[0]:
                    filler = disk.fill_up(folder, leave_bytes=0)
        assert filler is not None, "no chunk was claimed before the run ended"
        assert run.wait(timeout=300) == 2, run.stderr.read()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    filler.unlink()  # reading SQLite needs room too (its shared-memory index)
    with sqlite3.connect(path) as connection:
        left = connection.execute("SELECT status, run_owner IS NOT NULL FROM evaluation").fetchall()
        holders = {owner for (owner,) in connection.execute("SELECT DISTINCT owner FROM chunk_lease")}
    print("after the full disk:", left, "chunk leases held by", holders)
    assert len(holders) == 1, "the stopped run left no chunk claimed: nothing to take over"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # taken over while planning (the stopped run's chunks freed before any was claimed), so no chunk was waited for
    (stopped,) = holders
    assert f"The run {stopped} working on evaluation 1 has stopped; taking its work over at once" in done.stderr, (
        done.stderr[-3000:])
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT status, n FROM evaluation").fetchall() == [("finished", 100)]
        assert connection.execute("SELECT COUNT(*) FROM chunk_lease").fetchone()[0] == 0
