"""Stored summaries: an evaluation's statistics written once, when it is closed.

``store_summary`` copies the rows of the views ``evaluation_summary_live`` and
``evaluation_class_summary_live`` (revision 0004: the one implementation of the statistics, in SQL)
into ``evaluation_stats`` and ``evaluation_class_stats``; from then on ``evaluation_summary`` and the
queries read the stored row instead of ranking the evaluation's mosaics again. A stored summary
always describes the rows stored: writing results into an evaluation that has one stores it again
in the same transaction (``db.results``), and a re-run that completes an evaluation stores it when it
closes it (``db.evaluations.finish_evaluation``).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import Connection

from db.models import Evaluation, EvaluationClassStats, EvaluationStats
from db.types import UTCDateTime, utcnow

__all__ = ["SUMMARY_COLUMNS", "CLASS_SUMMARY_COLUMNS", "store_summary"]

SUMMARY_COLUMNS = tuple(c.name for c in EvaluationStats.__table__.columns if c.name not in ("evaluation_id",
                                                                                              "computed_at"))
CLASS_SUMMARY_COLUMNS = tuple(c.name for c in EvaluationClassStats.__table__.columns
                              if c.name not in ("evaluation_id", "target_class"))

_DELETE = (text("DELETE FROM evaluation_class_stats WHERE evaluation_id = :evaluation_id"),
           text("DELETE FROM evaluation_stats WHERE evaluation_id = :evaluation_id"))
_INSERT = text(
    f"INSERT INTO evaluation_stats (evaluation_id, {', '.join(SUMMARY_COLUMNS)}, computed_at) "
    f"SELECT evaluation_id, {', '.join(SUMMARY_COLUMNS)}, :now FROM evaluation_summary_live "
    "WHERE evaluation_id = :evaluation_id"
).bindparams(bindparam("now", type_=UTCDateTime()))


def store_summary(connection: Connection, evaluation_id: int) -> bool:
    """(Re)compute and store the summary of an evaluation's stored rows, inside the caller's transaction.

    The class rows are read while the evaluation has no stored row (the live views only show
    such evaluations) and written after their parent row. Cost: one ranking of this evaluation's
    rows, through the primary key of ``mosaic_result``.

    Concurrent calls for one evaluation take turns: the evaluation's row is locked first (``FOR UPDATE`` on
    PostgreSQL; SQLite has one writer at a time), so each replaces the summary the previous one committed.

    Returns
    -------
    bool
        False when there is no evaluation with that id (nothing is written).
    """
    params = {"evaluation_id": int(evaluation_id)}
    locked = select(Evaluation.id).where(Evaluation.id == params["evaluation_id"]).with_for_update()
    if connection.execute(locked).scalar_one_or_none() is None:
        return False
    for statement in _DELETE:
        connection.execute(statement, params)
    classes = connection.execute(
        text(f"SELECT target_class, {', '.join(CLASS_SUMMARY_COLUMNS)} FROM evaluation_class_summary_live "
             "WHERE evaluation_id = :evaluation_id"), params,
    ).all()
    written = connection.execute(_INSERT, params | {"now": utcnow()}).rowcount
    if written != 1:
        return False
    if classes:
        columns = ("target_class", *CLASS_SUMMARY_COLUMNS)
        connection.execute(
            text(f"INSERT INTO evaluation_class_stats (evaluation_id, {', '.join(columns)}) "
                 f"VALUES (:evaluation_id, {', '.join(':' + c for c in columns)})"),
            [params | dict(zip(columns, row, strict=True)) for row in classes],
        )
    return True
