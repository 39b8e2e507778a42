"""Who works on what: leases on running evaluations and on their chunks, so no work is done twice or lost.

A run that starts an evaluation becomes its ``run_owner`` until ``run_expires_at``, and claims each chunk
in ``chunk_lease`` before computing it; it renews both while it works (:func:`renew`). Concurrent runs of
one request therefore split the chunks (:func:`claim_chunk` gives a chunk to one owner at a time), and the
work of a run that died is taken over once its leases expire. A running evaluation whose run has expired
shows as ``crashed`` in the ``evaluation_summary`` view; :func:`release_run` marks a run's evaluations at once
when the run knows it is ending badly (a crash, a cancellation, a failure). The chunks of a model-reliance pass
(``db.reliance``) are claimed the same way, in ``reliance_chunk_lease`` (:func:`claim_reliance_chunk`), renewed,
released and handed over with the owner's other leases.

A run records the process behind its owner id first (:func:`register_holder`: host, pid, start time, Prefect flow
run); :func:`holders` lists those of the owners holding leases on some evaluations, so that a caller that knows the
process is gone takes its leases over at once (:func:`take_over`) instead of waiting for them to expire.
:func:`running_holders` lists the owners of every running evaluation, chunk lease, audit run and training run, so
that a sweep marks the rows of the dead ones ``crashed`` (:func:`release_run`, ``db.runs.crash_audit_runs``,
``db.runs.crash_training_runs``) even when no run of their request comes again.

Claims are one conditional upsert (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``): the row is taken only
when it is free, expired or already the caller's, atomically on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, or_, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from db.models import AuditRun, Base, ChunkLease, Evaluation, LeaseHolder, RelianceChunkLease, TrainingRun
from db.transactions import Store, transaction
from db.types import utcnow

__all__ = [
    "Holder",
    "register_holder",
    "holders",
    "running_holders",
    "claim_chunk",
    "claim_reliance_chunk",
    "release_reliance_chunk",
    "reliance_chunk_live",
    "release_chunk",
    "chunk_lease_live",
    "renew",
    "release_run",
    "take_over",
    "expire_stale_runs",
]


class Holder(NamedTuple):
    """The process behind a lease owner, as :func:`register_holder` recorded it."""

    owner: str
    host: str
    pid: int
    process_started: str | None
    flow_run_id: str | None


def _until(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=float(seconds))


def _upsert(connection: Connection, table: type[Base]) -> Any:
    """The dialect's ``INSERT`` (it has ``ON CONFLICT``) into ``table``."""
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(table)


def register_holder(
    store: Store, owner: str, *, host: str, pid: int, process_started: str | None = None,
    flow_run_id: str | None = None,
) -> None:
    """Record (or replace) the process behind ``owner``: call it before ``owner`` takes its first lease."""
    values = {"owner": owner, "host": host[:255], "pid": int(pid), "process_started": process_started,
              "flow_run_id": flow_run_id, "since": utcnow()}
    with transaction(store) as connection:
        statement = _upsert(connection, LeaseHolder).values(values)
        connection.execute(statement.on_conflict_do_update(
            index_elements=[LeaseHolder.owner], set_={k: v for k, v in values.items() if k != "owner"}
        ))


def holders(store: Store, evaluation_ids: Sequence[int]) -> list[Holder]:
    """The recorded processes of the owners that hold a lease on one of ``evaluation_ids``.

    An owner holds a lease when it claimed a chunk of one of them, or runs one of them; expired leases count
    too (they are free already, but their holder's row tells whether its evaluation can be marked at once).
    Owners without a recorded process are left out: their leases are only taken over when they expire.
    """
    if not evaluation_ids:
        return []
    ids = list(evaluation_ids)
    owners = union(
        select(ChunkLease.owner.label("owner")).where(ChunkLease.evaluation_id.in_(ids)),
        select(Evaluation.run_owner.label("owner")).where(Evaluation.id.in_(ids), Evaluation.status == "running",
                                                          Evaluation.run_owner.is_not(None)),
    ).subquery()
    return _recorded(store, owners)


def running_holders(store: Store) -> list[Holder]:
    """The recorded processes of every owner of a running evaluation, a chunk lease, a running audit or training run.

    Owners without a recorded process are left out (see :func:`holders`).
    """
    owners = union(
        select(ChunkLease.owner.label("owner")),
        select(Evaluation.run_owner.label("owner")).where(Evaluation.status == "running",
                                                          Evaluation.run_owner.is_not(None)),
        select(AuditRun.run_owner.label("owner")).where(AuditRun.status == "running", AuditRun.run_owner.is_not(None)),
        select(TrainingRun.run_owner.label("owner")).where(TrainingRun.status == "running",
                                                           TrainingRun.run_owner.is_not(None)),
    ).subquery()
    return _recorded(store, owners)


def claim_chunk(store: Store, evaluation_id: int, chunk: int, owner: str, seconds: float) -> bool:
    """Claim chunk ``chunk`` of an evaluation for ``owner`` for ``seconds``; whether the claim was granted.

    Granted when nobody holds the chunk, its lease has expired, or ``owner`` holds it already (a retry).
    """
    return _claim(store, ChunkLease, ChunkLease.evaluation_id, evaluation_id, chunk, owner, seconds)


def release_chunk(store: Store, evaluation_id: int, chunk: int, owner: str) -> None:
    """Give up ``owner``'s lease on a chunk (its results are written, or it will not be computed)."""
    _release(store, ChunkLease, ChunkLease.evaluation_id, evaluation_id, chunk, owner)


def chunk_lease_live(store: Store, evaluation_id: int, chunk: int) -> bool:
    """Whether somebody holds an unexpired lease on the chunk."""
    return _live(store, ChunkLease, ChunkLease.evaluation_id, evaluation_id, chunk)


def claim_reliance_chunk(store: Store, pass_id: int, chunk: int, owner: str, seconds: float) -> bool:
    """Claim chunk ``chunk`` of a reliance pass for ``owner`` for ``seconds``, as :func:`claim_chunk` does."""
    return _claim(store, RelianceChunkLease, RelianceChunkLease.pass_id, pass_id, chunk, owner, seconds)


def release_reliance_chunk(store: Store, pass_id: int, chunk: int, owner: str) -> None:
    """Give up ``owner``'s lease on a chunk of a reliance pass."""
    _release(store, RelianceChunkLease, RelianceChunkLease.pass_id, pass_id, chunk, owner)


def reliance_chunk_live(store: Store, pass_id: int, chunk: int) -> bool:
    """Whether somebody holds an unexpired lease on the chunk of the reliance pass."""
    return _live(store, RelianceChunkLease, RelianceChunkLease.pass_id, pass_id, chunk)


# A chunk lease table (ChunkLease, RelianceChunkLease): a parent id column, ``chunk``, ``owner``, ``expires_at``.

def _claim(store: Store, table: Any, parent: Any, parent_id: int, chunk: int, owner: str, seconds: float) -> bool:
    now = utcnow()
    with transaction(store) as connection:
        statement = _upsert(connection, table).values(
            {parent.key: parent_id, "chunk": chunk, "owner": owner, "expires_at": _until(seconds)}
        )
        statement = statement.on_conflict_do_update(
            index_elements=[parent, table.chunk],
            set_={"owner": statement.excluded.owner, "expires_at": statement.excluded.expires_at},
            where=or_(table.expires_at < now, table.owner == statement.excluded.owner),
        ).returning(table.owner)
        return connection.execute(statement).scalar_one_or_none() == owner


def _release(store: Store, table: Any, parent: Any, parent_id: int, chunk: int, owner: str) -> None:
    with transaction(store) as connection:
        connection.execute(delete(table).where(parent == parent_id, table.chunk == chunk, table.owner == owner))


def _live(store: Store, table: Any, parent: Any, parent_id: int, chunk: int) -> bool:
    with transaction(store) as connection:
        holder = connection.scalar(select(table.owner).where(
            parent == parent_id, table.chunk == chunk, table.expires_at >= utcnow()))
    return holder is not None


def renew(store: Store, owner: str, evaluation_ids: Sequence[int], seconds: float) -> None:
    """Extend ``owner``'s leases: its chunks (of evaluations and of reliance passes), and its running evaluations
    among ``evaluation_ids``."""
    until = _until(seconds)
    with transaction(store) as connection:
        connection.execute(update(ChunkLease).where(ChunkLease.owner == owner).values(expires_at=until))
        connection.execute(update(RelianceChunkLease).where(RelianceChunkLease.owner == owner)
                           .values(expires_at=until))
        if evaluation_ids:
            connection.execute(
                update(Evaluation)
                .where(Evaluation.id.in_(list(evaluation_ids)), Evaluation.run_owner == owner,
                       Evaluation.status == "running")
                .values(run_expires_at=until)
            )


def expire_stale_runs(store: Store, evaluation_ids: Sequence[int] | None = None) -> list[int]:
    """Mark ``crashed`` those of ``evaluation_ids`` (``None``: every evaluation) still ``running`` under a run whose
    lease has expired.

    Returns the ids marked; their rows are kept, and the caller may take them over.
    """
    if evaluation_ids is not None and not evaluation_ids:
        return []
    stale = and_(Evaluation.status == "running", Evaluation.run_expires_at < utcnow())
    if evaluation_ids is not None:
        stale = and_(Evaluation.id.in_(list(evaluation_ids)), stale)
    with transaction(store) as connection:
        ids = list(connection.scalars(select(Evaluation.id).where(stale)))
        if ids:
            connection.execute(
                update(Evaluation).where(Evaluation.id.in_(ids))
                .values(status="crashed", run_owner=None, run_expires_at=None)
            )
    return sorted(ids)


def release_run(store: Store, owner: str, status: str = "running") -> list[int]:
    """End ``owner``'s leases: its running evaluations get ``status`` and no owner; its chunk leases and its holder go.

    ``running`` (the default) leaves them resumable by the next run of the request (a run stopped by
    ``max_chunks``); a run's state hooks pass ``crashed`` or ``failed``, and so does a sweep of dead runs.
    Idempotent. Returns the ids of the evaluations.
    """
    with transaction(store) as connection:
        ids = list(connection.scalars(
            select(Evaluation.id).where(Evaluation.run_owner == owner, Evaluation.status == "running")
        ))
        if ids:
            connection.execute(
                update(Evaluation).where(Evaluation.id.in_(ids))
                .values(status=status, run_owner=None, run_expires_at=None)
            )
        connection.execute(delete(ChunkLease).where(ChunkLease.owner == owner))
        connection.execute(delete(RelianceChunkLease).where(RelianceChunkLease.owner == owner))
        connection.execute(delete(LeaseHolder).where(LeaseHolder.owner == owner))
    return sorted(ids)


def take_over(store: Store, owner: str, successor: str, seconds: float) -> list[int]:
    """Hand a stopped ``owner``'s leases to ``successor`` at once; return the ids of the evaluations handed over.

    ``owner``'s running evaluations stay ``running`` under ``successor`` for ``seconds``, its chunk leases go (the
    chunks are free to claim) and so does its holder row. Idempotent: a second call finds nothing of ``owner``.
    """
    with transaction(store) as connection:
        ids = list(connection.scalars(
            select(Evaluation.id).where(Evaluation.run_owner == owner, Evaluation.status == "running")
        ))
        if ids:
            connection.execute(
                update(Evaluation).where(Evaluation.id.in_(ids), Evaluation.run_owner == owner)
                .values(run_owner=successor, run_expires_at=_until(seconds))
            )
        connection.execute(delete(ChunkLease).where(ChunkLease.owner == owner))
        connection.execute(delete(RelianceChunkLease).where(RelianceChunkLease.owner == owner))
        connection.execute(delete(LeaseHolder).where(LeaseHolder.owner == owner))
    return sorted(ids)


def _recorded(store: Store, owners: Any) -> list[Holder]:
    """The recorded processes of the owners a subquery (column ``owner``) lists, by owner."""
    with transaction(store) as connection:
        rows = connection.execute(
            select(LeaseHolder.owner, LeaseHolder.host, LeaseHolder.pid, LeaseHolder.process_started,
                   LeaseHolder.flow_run_id)
            .where(LeaseHolder.owner.in_(select(owners.c.owner))).order_by(LeaseHolder.owner)
        ).all()
    return [Holder(*row) for row in rows]
