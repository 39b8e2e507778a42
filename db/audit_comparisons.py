"""Audit comparisons: which earlier evaluation each audit evaluation is compared with, stored once.

``audit_history`` (revision 0008) shows every finished, unrandomized audit evaluation next to the one of the
same checkpoint, method and mosaic set in the latest earlier audit (ordered by the audit's ``started_at``, then
its id, then the evaluation's id). Revision 0003 computed that with a LAG window over every audited evaluation
at each query; ``audit_comparison`` holds its result, so the view joins one row per evaluation it shows.

:func:`refresh_audit_comparisons` keeps the table true: ``db.evaluations.start_evaluation`` and
``finish_evaluation`` call it in their transaction, and it recomputes the comparisons of the evaluation's
checkpoint x method x mosaic set (one row per audit of that group) only when the evaluation became finished or
stopped being finished. So an evaluation that finishes late (a failed one re-run after a newer audit) becomes
the previous one of the newer audit's, and one taken up again by a re-run leaves the chain until it finishes.
A change by hand (an evaluation's status edited, an audited evaluation deleted) is not seen: close the
evaluation again, or run the group's refresh.
"""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

__all__ = ["refresh_audit_comparisons", "COMPARISONS"]

#: The comparisons of one checkpoint x method x mosaic set (the window 0003's ``audit_history`` computed).
COMPARISONS = (
    "SELECT e.id AS evaluation_id, e.audit_run_id, e.checkpoint_id, e.method_id, e.mosaic_set_id, "
    "LAG(e.id) OVER w AS previous_evaluation_id, LAG(e.audit_run_id) OVER w AS previous_audit_run_id "
    "FROM evaluation e JOIN audit_run a ON a.id = e.audit_run_id "
    "WHERE e.randomization = 'none' AND e.status = 'finished' AND {where} "
    "WINDOW w AS (PARTITION BY e.checkpoint_id, e.method_id, e.mosaic_set_id ORDER BY a.started_at, a.id, e.id)"
)
_GROUP = "e.checkpoint_id = :checkpoint_id AND e.method_id = :method_id AND e.mosaic_set_id = :mosaic_set_id"
_STATE = text(
    "SELECT e.checkpoint_id, e.method_id, e.mosaic_set_id, e.audit_run_id, e.randomization, e.status, "
    "(SELECT COUNT(*) FROM audit_comparison ac WHERE ac.evaluation_id = e.id) AS stored "
    "FROM evaluation e WHERE e.id = :evaluation_id"
)
_DELETE = text("DELETE FROM audit_comparison WHERE checkpoint_id = :checkpoint_id AND method_id = :method_id "
               "AND mosaic_set_id = :mosaic_set_id")
_INSERT = text(
    "INSERT INTO audit_comparison (evaluation_id, audit_run_id, checkpoint_id, method_id, mosaic_set_id, "
    f"previous_evaluation_id, previous_audit_run_id) {COMPARISONS.format(where=_GROUP)}"
)
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('focus_audit_comparison'), :checkpoint_id)").bindparams(
    bindparam("checkpoint_id")
)


def refresh_audit_comparisons(connection: Connection, evaluation_id: int) -> bool:
    """Bring the stored comparisons of ``evaluation_id``'s group up to date, inside the caller's transaction.

    Nothing happens for an evaluation outside any audit, a randomized one, or one whose membership did not
    change (finished and stored, or not finished and not stored): an audit's order never changes, and the
    numbers the view shows are read from the summaries. Otherwise the group's rows are deleted and written
    again from the window over its finished audit evaluations (one row per audit). On PostgreSQL a
    transaction-level advisory lock per checkpoint makes concurrent refreshes of a group run one after the
    other, so the later one sees the earlier one's evaluation (SQLite has one writer at a time).

    Returns
    -------
    bool
        Whether the group was written again.
    """
    state = connection.execute(_STATE, {"evaluation_id": int(evaluation_id)}).first()
    if state is None or state.audit_run_id is None or state.randomization != "none":
        return False
    if (state.status == "finished") == bool(state.stored):
        return False
    group = {"checkpoint_id": int(state.checkpoint_id), "method_id": int(state.method_id),
             "mosaic_set_id": int(state.mosaic_set_id)}
    if connection.dialect.name == "postgresql":
        connection.execute(_LOCK, {"checkpoint_id": group["checkpoint_id"]})
    connection.execute(_DELETE, group)
    connection.execute(_INSERT, group)
    return True
