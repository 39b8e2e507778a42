"""Training runs with their per-epoch metrics, and audit runs.

An audit run is ``running`` under the lease owner of the run that opened it (``run_owner``, its process in
``lease_holder``) until :func:`finish_audit_run` closes it; a training run likewise under the train flow run working
on it (:func:`register_training_run` with ``owner``) until :func:`finish_training_run`. A run that dies first leaves
its row to the next sweep of dead runs, which marks it ``crashed`` (:func:`crash_audit_runs`,
:func:`crash_training_runs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from db.errors import StoreError
from db.models import AuditRun, LeaseHolder, TrainingEpoch, TrainingEpochEvaluation, TrainingRun
from db.transactions import Store, error_reason, idempotent, transaction
from db.types import optional_float, utcnow

__all__ = ["register_training_run", "record_epoch", "finish_training_run", "start_audit_run", "finish_audit_run",
           "crash_audit_runs", "crash_training_runs"]

_EPOCH_METRICS = (
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_mean_class_accuracy",
    "focus_median", "focus_mean", "seconds",
)  # fmt: skip


def register_training_run(
    store: Store,
    config_hash: str,
    architecture: str,
    config: dict[str, Any],
    *,
    name: str | None = None,
    dataset_id: int | None = None,
    owner: str | None = None,
) -> int:
    """Register a training run by the hash of its configuration and return its id (existing on a rerun).

    ``owner``: the lease owner of the run that works on it now (record its process first:
    ``db.leases.register_holder``); the row is then ``running`` under ``owner`` (a rerun takes it over, whatever its
    status was) until :func:`finish_training_run` closes it.
    """
    held = {"status": "running", "run_owner": owner, "finished_at": None} if owner is not None else {}

    def work(connection: Connection) -> int:
        existing = connection.scalar(select(TrainingRun.id).where(TrainingRun.config_hash == config_hash))
        if existing is not None:
            if held:
                connection.execute(update(TrainingRun).where(TrainingRun.id == existing).values(held))
            return existing
        return connection.scalar(
            insert(TrainingRun)
            .values(config_hash=config_hash, architecture=architecture, config=config, name=name, dataset_id=dataset_id,
                    **held)
            .returning(TrainingRun.id)
        )

    return idempotent(store, work)


def record_epoch(
    store: Store,
    training_run_id: int,
    epoch: int,
    *,
    train_loss: float | None = None,
    train_accuracy: float | None = None,
    val_loss: float | None = None,
    val_accuracy: float | None = None,
    val_mean_class_accuracy: float | None = None,
    focus_median: float | None = None,
    focus_mean: float | None = None,
    seconds: float | None = None,
    evaluation_ids: Sequence[int] = (),
) -> None:
    """Record (insert or replace) the metrics of one epoch; NaN is stored as NULL.

    ``evaluation_ids`` are the evaluations that measured this epoch's Focus, one per method (epoch 0: the model
    before its first optimisation step); they replace the epoch's earlier ones in the same transaction, and
    ``training_epoch_focus`` shows one row per epoch and method from them. ``focus_median``/``focus_mean`` are
    the first method's, kept for epochs recorded without evaluations.
    """
    metrics = (train_loss, train_accuracy, val_loss, val_accuracy, val_mean_class_accuracy, focus_median, focus_mean,
               seconds)
    values: dict[str, Any] = {name: optional_float(v) for name, v in zip(_EPOCH_METRICS, metrics, strict=True)}
    values["recorded_at"] = utcnow()
    with transaction(store) as connection:
        upsert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        stmt = upsert(TrainingEpoch).values(training_run_id=training_run_id, epoch=int(epoch), **values)
        stmt = stmt.on_conflict_do_update(index_elements=["training_run_id", "epoch"], set_=values)
        try:
            connection.execute(stmt)
            link = TrainingEpochEvaluation
            connection.execute(delete(link).where(link.training_run_id == training_run_id, link.epoch == int(epoch)))
            if evaluation_ids:
                connection.execute(insert(link), [{"training_run_id": training_run_id, "epoch": int(epoch),
                                                   "evaluation_id": int(e)} for e in dict.fromkeys(evaluation_ids)])
        except IntegrityError as exc:
            raise StoreError(
                f"Cannot record epoch {epoch} ({error_reason(exc)}); register the training run and its evaluations "
                "first."
            ) from None


def finish_training_run(store: Store, training_run_id: int, status: str = "finished") -> None:
    """Set a training run's final status and finish time; its owner's holder row goes."""
    _close(store, TrainingRun, training_run_id, {"status": status, "finished_at": utcnow()})


def _close(store: Store, table: type[AuditRun] | type[TrainingRun], row_id: int, values: dict[str, Any]) -> None:
    """Write ``values`` into a run's row, clear its owner and drop that owner's holder row."""
    with transaction(store) as connection:
        owner = connection.scalar(select(table.run_owner).where(table.id == row_id))
        if owner is not None:
            values = {**values, "run_owner": None}
        connection.execute(update(table).where(table.id == row_id).values(values))
        if owner is not None:
            connection.execute(delete(LeaseHolder).where(LeaseHolder.owner == owner))


def start_audit_run(
    store: Store,
    *,
    name: str | None = None,
    threshold: float | None = None,
    metadata: dict[str, Any] | None = None,
    started_at: dt.datetime | None = None,
    owner: str | None = None,
) -> int:
    """Open an audit run and return its id; ``owner``: the lease owner of the run that opens it.

    Record ``owner``'s process first (``db.leases.register_holder``), so that a later audit can tell when it died.
    """
    with transaction(store) as connection:
        return connection.scalar(
            insert(AuditRun)
            .values(name=name, threshold=threshold, metadata_=metadata, started_at=started_at or utcnow(),
                    **({"run_owner": owner} if owner is not None else {}))
            .returning(AuditRun.id)
        )


def finish_audit_run(
    store: Store, audit_run_id: int, status: str = "finished", metadata: dict[str, Any] | None = None
) -> None:
    """Close an audit run with its status (and, optionally, replace its metadata); its owner's holder row goes."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if metadata is not None:
        values["metadata_"] = metadata
    _close(store, AuditRun, audit_run_id, values)


def crash_audit_runs(store: Store, owner: str) -> list[int]:
    """Mark ``crashed`` the audit runs still ``running`` under ``owner``, a run that has stopped; return their ids.

    Their metadata is kept; ``owner``'s holder row is left to ``db.leases.release_run``. Idempotent.
    """
    return _crash(store, AuditRun, owner)


def crash_training_runs(store: Store, owner: str) -> list[int]:
    """Mark ``crashed`` the training runs still ``running`` under ``owner``, a run that has stopped; return their ids.

    Their epochs and checkpoints are kept (a rerun of the request resumes after the last one); ``owner``'s holder
    row is left to ``db.leases.release_run``. Idempotent.
    """
    return _crash(store, TrainingRun, owner)


def _crash(store: Store, table: type[AuditRun] | type[TrainingRun], owner: str) -> list[int]:
    with transaction(store) as connection:
        ids = list(connection.scalars(select(table.id).where(table.run_owner == owner, table.status == "running")))
        if ids:
            connection.execute(
                update(table).where(table.id.in_(ids)).values(status="crashed", run_owner=None, finished_at=utcnow())
            )
    return sorted(ids)
