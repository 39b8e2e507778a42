"""Evaluations: checkpoint x method x mosaic set x randomization (x audit), and their lifecycle.

``get_or_create_evaluation`` creates one ``pending``; ``start_evaluation`` marks it ``running``;
``finish_evaluation`` closes it with its summary. Both keep an audit evaluation's stored comparison
(``db.audit_comparisons``) true in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection

from db.audit_comparisons import refresh_audit_comparisons
from db.errors import StoreError
from db.keys import evaluation_key
from db.models import EVALUATION_STATUSES, RANDOMIZATIONS, Evaluation
from db.summaries import store_summary
from db.transactions import Store, get_or_create_keyed, transaction
from db.types import optional_float, utcnow

__all__ = ["get_or_create_evaluation", "start_evaluation", "finish_evaluation", "evaluation_state"]


def _missing(evaluation_id: int) -> StoreError:
    return StoreError(f"No evaluation with id {evaluation_id}; create it with get_or_create_evaluation.")


def get_or_create_evaluation(
    store: Store,
    checkpoint_id: int,
    method_id: int,
    mosaic_set_id: int,
    *,
    randomization: str = "none",
    stage: int | None = None,
    layer: str | None = None,
    seed: int | None = None,
    audit_run_id: int | None = None,
    code_version: str | None = None,
    device: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Return the id of the evaluation with this natural key, creating it (status ``pending``) if new.

    The natural key is checkpoint x method x mosaic set x randomization (kind, stage, layer, seed) x
    audit run; see ``db.keys.evaluation_key``.
    """
    if randomization not in RANDOMIZATIONS:
        raise StoreError(f"Expected randomization to be one of {RANDOMIZATIONS} but got {randomization!r}.")
    key = evaluation_key(checkpoint_id, method_id, mosaic_set_id, randomization, stage, layer, audit_run_id, seed)
    values = {
        "natural_key": key, "checkpoint_id": checkpoint_id, "method_id": method_id, "mosaic_set_id": mosaic_set_id,
        "randomization": randomization, "stage": stage, "layer": layer, "seed": seed, "audit_run_id": audit_run_id,
        "code_version": code_version, "device": device, "metadata_": metadata,
    }  # fmt: skip

    return get_or_create_keyed(store, Evaluation, values, "the evaluation",
                               "register its checkpoint, method and mosaic set first.")


def start_evaluation(
    store: Store,
    evaluation_id: int,
    *,
    code_version: str | None = None,
    device: str | None = None,
    owner: str | None = None,
    lease_seconds: float | None = None,
) -> None:
    """Mark an evaluation as running (its first start time is kept across retries).

    With ``owner``, that run holds the evaluation for ``lease_seconds`` (renewed with ``db.leases.renew``);
    past that, the evaluation shows as ``crashed`` and the next run of the request takes it over.
    """
    values: dict[str, Any] = {"status": "running"}
    if code_version is not None:
        values["code_version"] = code_version
    if device is not None:
        values["device"] = device
    if owner is not None:
        values["run_owner"] = owner
        values["run_expires_at"] = utcnow() + dt.timedelta(seconds=float(lease_seconds or 0))
    with transaction(store) as connection:
        result = connection.execute(
            update(Evaluation)
            .where(Evaluation.id == evaluation_id)
            .values(started_at=func.coalesce(Evaluation.started_at, utcnow()), **values)
        )
        if result.rowcount != 1:
            raise _missing(evaluation_id)
        refresh_audit_comparisons(connection, evaluation_id)  # a finished one taken up again leaves audit_history


def _stored_summary(connection: Connection, evaluation_id: int) -> dict[str, Any]:
    """Store the summary of the rows written (``db.summaries``) and return its n, n_defined, median, mean."""
    if not store_summary(connection, evaluation_id):
        raise _missing(evaluation_id)
    row = connection.execute(
        text("SELECT n, n_defined, median_focus, mean_focus FROM evaluation_stats "
             "WHERE evaluation_id = :evaluation_id"),
        {"evaluation_id": evaluation_id},
    ).one()
    return {"n": row[0], "n_defined": row[1], "median": row[2], "mean": row[3]}


def finish_evaluation(
    store: Store,
    evaluation_id: int,
    *,
    status: str = "finished",
    summary: dict[str, Any] | None = None,
    seconds: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Close an evaluation: status, finish time, seconds and summary columns.

    Whatever the status, the statistics of the rows written are stored with it (``evaluation_stats``
    and ``evaluation_class_stats``, see ``db.summaries``), in the same transaction; closing it again
    (a re-run that completes it) stores them again. An audit evaluation that becomes finished (or stops
    being finished) gets its comparison in ``audit_history`` written there too (``db.audit_comparisons``).

    Parameters
    ----------
    summary
        ``n``, ``n_defined``, ``median``, ``mean`` (as from ``focus_core.stats.summarize``); ``None``
        takes them from the stored summary of the rows written.

    Returns
    -------
    dict
        The summary stored.
    """
    if status not in EVALUATION_STATUSES:
        raise StoreError(f"Expected status to be one of {EVALUATION_STATUSES} but got {status!r}.")
    with transaction(store) as connection:
        stored = _stored_summary(connection, evaluation_id)
        if summary is None:
            summary = stored
        values: dict[str, Any] = {
            "status": status,
            "finished_at": utcnow(),
            "run_owner": None,
            "run_expires_at": None,
            "n": None if summary.get("n") is None else int(summary["n"]),
            "n_defined": None if summary.get("n_defined") is None else int(summary["n_defined"]),
            "focus_median": optional_float(summary.get("median")),
            "focus_mean": optional_float(summary.get("mean")),
        }
        if seconds is not None:
            values["seconds"] = float(seconds)
        if metadata is not None:
            values["metadata_"] = metadata
        result = connection.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(values))
        if result.rowcount != 1:
            raise _missing(evaluation_id)
        refresh_audit_comparisons(connection, evaluation_id)
    return summary


def evaluation_state(store: Store, evaluation_id: int) -> dict[str, Any]:
    """The stored status and summary of an evaluation: ``{"status", "summary": {n, n_defined, median, mean}}``."""
    with transaction(store) as connection:
        row = connection.execute(
            select(Evaluation.status, Evaluation.n, Evaluation.n_defined, Evaluation.focus_median,
                   Evaluation.focus_mean).where(Evaluation.id == evaluation_id)
        ).one_or_none()
    if row is None:
        raise _missing(evaluation_id)
    return {"status": row.status,
            "summary": {"n": row.n, "n_defined": row.n_defined, "median": row.focus_median, "mean": row.focus_mean}}
