"""Who works on an evaluation: the run's owner id, its process, the thread that keeps its leases alive, the hooks.

A run of the evaluating flows owns the evaluations it starts and the chunks it claims (:mod:`db.leases`)
under its Prefect flow-run id, and records the process behind that id first (:func:`hold`). While it works,
:class:`LeaseKeeper` renews its leases; when the run ends badly, the flows' state hooks (:data:`STATE_HOOKS`)
mark its evaluations ``crashed`` or ``failed`` at once. A run that dies without running them (``kill -9``, a
lost worker, a full disk) stops renewing: the next run of the request takes its work over at once when it can
tell the holder is gone (:func:`take_over_dead`: the process is gone from this host, or its Prefect flow run
has ended), else once its leases expire. A live run's claims are always waited for.

Rows that no later run of their request takes over (an audit's evaluations belong to that audit run, and the
audit run itself; a training run nobody trains again) are closed by :func:`sweep_dead_runs`, which the audit runs as
it opens its audit run (:func:`open_audit_run`) and the train flow as it opens its training run
(:func:`open_training_run`): every running evaluation, audit run and training run whose holder has certainly
stopped, or whose lease has expired, becomes ``crashed``, so no row of a killed run stays ``running``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from collections.abc import Sequence
from typing import Any, NamedTuple

import db
from flows.worker import processes, store

__all__ = ["run_owner", "hold", "take_over_dead", "Swept", "sweep_dead_runs", "open_audit_run", "open_training_run",
           "LeaseKeeper", "release_run", "STATE_HOOKS"]


def run_owner() -> str:
    """The current Prefect flow run's id, or a new random id outside a flow run."""
    from prefect.runtime import flow_run

    return str(flow_run.id or uuid.uuid4())


def hold(engine: Any, owner: str) -> None:
    """Record this process (and the current Prefect flow run, if any) as the holder of ``owner``'s leases."""
    from prefect.runtime import flow_run

    me = processes.this_process()
    db.leases.register_holder(engine, owner, host=me.host, pid=me.pid, process_started=me.started,
                              flow_run_id=str(flow_run.id) if flow_run.id else None)


def _flow_run_ended(flow_run_id: str) -> bool | None:
    """Whether the Prefect flow run has reached a final state; ``None`` when the API cannot say."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    except Exception:  # noqa: BLE001 - no API, an unknown run: nothing is certain, the lease's expiry decides
        return None
    return True if state is not None and state.is_final() else None


def _gone(holder: db.leases.Holder) -> bool:
    """Whether ``holder`` has certainly stopped: its process is gone from this host, or its flow run has ended."""
    gone = processes.is_gone(holder.host, holder.pid, holder.process_started)
    if gone is None and holder.flow_run_id:
        gone = _flow_run_ended(holder.flow_run_id)
    return bool(gone)


def take_over_dead(engine: Any, evaluation_ids: Sequence[int], owner: str, seconds: float) -> list[str]:
    """Take over at once the leases on ``evaluation_ids`` whose holder has certainly stopped; return those owners.

    Their running evaluations pass to ``owner`` for ``seconds`` and their chunks are freed
    (``db.leases.take_over``), so ``owner`` claims them now. Holders that may be alive keep their leases.
    """
    dead = [h.owner for h in db.leases.holders(engine, evaluation_ids) if h.owner != owner and _gone(h)]
    for stopped in dead:
        db.leases.take_over(engine, stopped, owner, seconds)
    return dead


class Swept(NamedTuple):
    """What :func:`sweep_dead_runs` marked ``crashed`` (evaluation, audit run and training run ids), and the owners
    that stopped."""

    evaluations: list[int]
    audit_runs: list[int]
    training_runs: list[int]
    owners: list[str]


def sweep_dead_runs(engine: Any, *, keep: str | None = None) -> Swept:
    """Mark ``crashed`` every running evaluation, audit run and training run left by a run that has certainly stopped.

    A run has stopped when its holder is gone (its process is gone from this host, or its Prefect flow run has
    ended: :func:`take_over_dead`'s test), or, for an evaluation, when its lease has expired; its chunk leases and
    holder row go too. A holder that may be alive keeps its rows, and so does ``keep`` (the caller's own owner).
    Idempotent; safe while other runs work.
    """
    owners = [h.owner for h in db.leases.running_holders(engine) if h.owner != keep and _gone(h)]
    evaluations: list[int] = []
    audit_runs: list[int] = []
    training_runs: list[int] = []
    for owner in owners:  # the runs first: release_run drops the holder row, which a retry needs
        audit_runs += db.runs.crash_audit_runs(engine, owner)
        training_runs += db.runs.crash_training_runs(engine, owner)
        evaluations += db.leases.release_run(engine, owner, "crashed")
    evaluations += db.leases.expire_stale_runs(engine)
    return Swept(sorted(evaluations), sorted(audit_runs), sorted(training_runs), owners)


def _warn(message: str, *args: Any) -> None:
    """A warning in the flow run's log (this module's logger outside a flow run)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        logger: Any = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger(__name__)
    logger.warning(message, *args)


def open_audit_run(engine: Any, **audit_run: Any) -> int:
    """Sweep the runs that died (:func:`sweep_dead_runs`), then open an audit run held by this run; return its id.

    ``audit_run`` are :func:`db.start_audit_run`'s keywords. The audit run is ``running`` under this run's owner
    (:func:`run_owner`, with its process recorded first: :func:`hold`) until ``db.finish_audit_run`` closes it;
    if this run dies first, the next audit's sweep marks it ``crashed``.
    """
    owner = _swept_and_held(engine)
    return db.start_audit_run(engine, owner=owner, **audit_run)


def open_training_run(engine: Any, config_hash: str, architecture: str, config: dict[str, Any], **training_run: Any
                      ) -> int:
    """Sweep the runs that died (:func:`sweep_dead_runs`), then register a training run held by this run; its id.

    The arguments are :func:`db.register_training_run`'s. The training run is ``running`` under this run's owner
    (:func:`run_owner`, with its process recorded first: :func:`hold`), also when a rerun of the request takes it
    over, until ``db.finish_training_run`` closes it; if this run dies first, the next sweep marks it ``crashed``.
    """
    owner = _swept_and_held(engine)
    return db.register_training_run(engine, config_hash, architecture, config, owner=owner, **training_run)


def _swept_and_held(engine: Any) -> str:
    """This run's owner, once the dead runs are swept (a warning names what was marked) and its process held."""
    owner = run_owner()
    swept = sweep_dead_runs(engine, keep=owner)
    if swept.evaluations or swept.audit_runs or swept.training_runs:
        _warn("Runs that stopped without closing their rows left them running: marked crashed audit run(s) %s, "
              "training run(s) %s and evaluation(s) %s (lease owners %s)", swept.audit_runs or "-",
              swept.training_runs or "-", swept.evaluations or "-", ", ".join(swept.owners) or "- (expired leases)")
    hold(engine, owner)
    return owner


class LeaseKeeper:
    """A daemon thread that renews ``owner``'s leases every third of ``seconds`` until it is stopped.

    Examples
    --------
    >>> with LeaseKeeper(engine, "owner-id", [1, 2], seconds=300):  # doctest: +SKIP
    ...     ...  # compute the chunks
    """

    def __init__(self, engine: Any, owner: str, evaluation_ids: Sequence[int], seconds: float) -> None:
        self.engine, self.owner, self.evaluation_ids, self.seconds = engine, owner, list(evaluation_ids), seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"focus-leases-{owner[:8]}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                db.leases.renew(self.engine, self.owner, self.evaluation_ids, self.seconds)
            except Exception:  # noqa: BLE001 - a lost connection now and then: the next beat tries again
                continue

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def release_run(database_url: str | None, owner: str, status: str) -> list[int]:
    """Mark ``owner``'s running evaluations ``status`` and drop its chunk leases (see ``db.leases.release_run``)."""
    return db.leases.release_run(store.engine_for(database_url), owner, status)


def _database_url(parameters: dict[str, Any]) -> str | None:
    params = parameters.get("params")
    run = params.get("run") if isinstance(params, dict) else getattr(params, "run", None)
    if isinstance(run, dict):
        return run.get("database_url")
    return getattr(run, "database_url", None)


def _opened_store(url: str | None) -> bool:
    """Whether the store exists already: a hook must not create a SQLite file that a refused run never made."""
    parsed = db.database_url(url)
    return parsed.get_backend_name() != "sqlite" or not parsed.database or Path(parsed.database).is_file()


def _hook(status: str) -> Any:
    def mark(flow: Any, flow_run: Any, state: Any) -> None:
        url = _database_url(flow_run.parameters or {})
        if not _opened_store(url):
            return
        try:
            release_run(url, str(flow_run.id), status)
        except db.StoreError:  # a store without the schema (the run was refused before it wrote anything)
            return

    mark.__name__ = f"mark_evaluations_{status}"
    return mark


#: ``on_crashed``, ``on_cancellation`` and ``on_failure`` hooks for the evaluating flows: a crash or a
#: cancellation marks the run's open evaluations ``crashed``, a failure ``failed`` (their rows are kept).
STATE_HOOKS: dict[str, list[Any]] = {
    "on_crashed": [_hook("crashed")],
    "on_cancellation": [_hook("crashed")],
    "on_failure": [_hook("failed")],
}
