"""Who works on what: leases on running evaluations and on their chunks, so no work is done twice or lost.

A run that starts an evaluation becomes its ``run_owner`` until ``run_expires_at``, and claims each chunk
in ``chunk_lease`` before computing it; it renews both while it works (:func:`renew`). Concurrent runs of
one request therefore split the chunks (:func:`claim_chunk` gives a chunk to one owner at a time), and the
work of a run that died is taken over once its leases expire. A running evaluation whose run has expired
shows as ``crashed`` in the ``evaluation_summary`` view; :func:`release_run` marks a run's evaluations at once
when the run knows it is ending badly (a crash, a cancellation, a failure).

Claims are one conditional upsert (``INSERT ... ON CONFLICT DO UPDATE ... WHERE``): the row is taken only
when it is free, expired or already the caller's, atomically on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from db.models import ChunkLease, Evaluation
from db.transactions import Store, transaction
from db.types import utcnow

__all__ = ["claim_chunk", "release_chunk", "chunk_lease_live", "renew", "release_run", "expire_stale_runs"]


def _until(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=float(seconds))


def claim_chunk(store: Store, evaluation_id: int, chunk: int, owner: str, seconds: float) -> bool:
    """Claim chunk ``chunk`` of an evaluation for ``owner`` for ``seconds``; whether the claim was granted.

    Granted when nobody holds the chunk, its lease has expired, or ``owner`` holds it already (a retry).
    """
    now = utcnow()
    with transaction(store) as connection:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        statement = insert(ChunkLease).values(
            evaluation_id=evaluation_id, chunk=chunk, owner=owner, expires_at=_until(seconds)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[ChunkLease.evaluation_id, ChunkLease.chunk],
            set_={"owner": statement.excluded.owner, "expires_at": statement.excluded.expires_at},
            where=or_(ChunkLease.expires_at < now, ChunkLease.owner == statement.excluded.owner),
        ).returning(ChunkLease.owner)
        return connection.execute(statement).scalar_one_or_none() == owner


def release_chunk(store: Store, evaluation_id: int, chunk: int, owner: str) -> None:
    """Give up ``owner``'s lease on a chunk (its results are written, or it will not be computed)."""
    with transaction(store) as connection:
        connection.execute(
            delete(ChunkLease).where(
                ChunkLease.evaluation_id == evaluation_id, ChunkLease.chunk == chunk, ChunkLease.owner == owner
            )
        )


def chunk_lease_live(store: Store, evaluation_id: int, chunk: int) -> bool:
    """Whether somebody holds an unexpired lease on the chunk."""
    with transaction(store) as connection:
        holder = connection.scalar(
            select(ChunkLease.owner).where(
                ChunkLease.evaluation_id == evaluation_id, ChunkLease.chunk == chunk, ChunkLease.expires_at >= utcnow()
            )
        )
    return holder is not None


def renew(store: Store, owner: str, evaluation_ids: Sequence[int], seconds: float) -> None:
    """Extend ``owner``'s leases: its chunks, and its running evaluations among ``evaluation_ids``."""
    until = _until(seconds)
    with transaction(store) as connection:
        connection.execute(update(ChunkLease).where(ChunkLease.owner == owner).values(expires_at=until))
        if evaluation_ids:
            connection.execute(
                update(Evaluation)
                .where(Evaluation.id.in_(list(evaluation_ids)), Evaluation.run_owner == owner,
                       Evaluation.status == "running")
                .values(run_expires_at=until)
            )


def expire_stale_runs(store: Store, evaluation_ids: Sequence[int]) -> list[int]:
    """Mark ``crashed`` those of ``evaluation_ids`` still ``running`` under a run whose lease has expired.

    Returns the ids marked; their rows are kept, and the caller may take them over.
    """
    if not evaluation_ids:
        return []
    stale = and_(Evaluation.id.in_(list(evaluation_ids)), Evaluation.status == "running",
                 Evaluation.run_expires_at < utcnow())
    with transaction(store) as connection:
        ids = list(connection.scalars(select(Evaluation.id).where(stale)))
        if ids:
            connection.execute(
                update(Evaluation).where(Evaluation.id.in_(ids))
                .values(status="crashed", run_owner=None, run_expires_at=None)
            )
    return sorted(ids)


def release_run(store: Store, owner: str, status: str = "running") -> list[int]:
    """End ``owner``'s leases: its running evaluations get ``status`` and no owner; its chunk leases go.

    ``running`` (the default) leaves them resumable by the next run of the request (a run stopped by
    ``max_chunks``); a run's state hooks pass ``crashed`` or ``failed``. Returns the ids of the evaluations.
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
    return sorted(ids)
