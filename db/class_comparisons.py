"""What the audit's per-class comparison reads: two evaluations' Focus per mosaic with its target class.

:func:`focus_core.class_comparison.compare_classes` tests per target class; this module only returns the
numbers. Both reads touch the evaluations they name (by their primary keys and the ``mosaic_result``
partition of each), never the whole store.

Examples
--------
>>> earlier = earlier_audit_evaluation(engine, 41, "9f2c...", before_audit_run=7)  # doctest: +SKIP
>>> paired_focus_by_class(engine, 41, earlier).columns.tolist()  # doctest: +SKIP
['mosaic_id', 'target_class', 'focus_a', 'focus_b']
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Engine

__all__ = ["audit_run_evaluations", "earlier_audit_evaluation", "reference_audit_evaluation", "paired_focus_by_class",
           "class_names"]


def audit_run_evaluations(engine: Engine, audit_run_id: int, mosaic_set_id: int,
                          checkpoint_sha256: str) -> list[dict[str, Any]]:
    """The finished, unrandomized evaluations of one audit run on one mosaic set of checkpoint ``checkpoint_sha256``:
    ``evaluation_id`` and ``method_name`` each, by evaluation id."""
    sql = text(
        "SELECT e.id AS evaluation_id, x.name AS method_name FROM evaluation e "
        "JOIN model_checkpoint m ON m.id = e.checkpoint_id JOIN xai_method x ON x.id = e.method_id "
        "WHERE e.audit_run_id = :audit_run_id AND e.mosaic_set_id = :mosaic_set_id AND m.sha256 = :sha256 "
        "AND e.status = 'finished' AND e.randomization = 'none' ORDER BY e.id"
    )
    with engine.connect() as connection:
        rows = connection.execute(sql, {"audit_run_id": int(audit_run_id), "mosaic_set_id": int(mosaic_set_id),
                                        "sha256": str(checkpoint_sha256)}).mappings().all()
    return [dict(row) for row in rows]


def earlier_audit_evaluation(engine: Engine, evaluation_id: int, checkpoint_sha256: str,
                             before_audit_run: int) -> int | None:
    """The newest finished, unrandomized audit evaluation of checkpoint ``checkpoint_sha256`` with the same method
    and mosaic set as evaluation ``evaluation_id``, from an audit run before ``before_audit_run``; ``None`` if none.

    This is the evaluation a probe (or clean) mosaic set of this audit is compared with in a ``previous``
    comparison, on the same mosaics.
    """
    return _audit_evaluation(engine, evaluation_id, checkpoint_sha256, "e.audit_run_id < :run",
                             int(before_audit_run), "DESC")


def reference_audit_evaluation(engine: Engine, evaluation_id: int, checkpoint_sha256: str,
                               audit_run: int) -> int | None:
    """The oldest finished, unrandomized audit evaluation of checkpoint ``checkpoint_sha256`` with the same method
    and mosaic set as evaluation ``evaluation_id``, other than it, from audit run ``audit_run`` or an earlier one;
    ``None`` if none.

    This is the evaluation a probe (or clean) mosaic set of this audit is compared with in a ``reference``
    comparison: the reference's first audit on these mosaics, as the overall comparison has it
    (``flows.audit_baselines.reference_baseline``).
    """
    return _audit_evaluation(engine, evaluation_id, checkpoint_sha256, "e.audit_run_id <= :run AND e.id <> c.id",
                             int(audit_run), "ASC")


def _audit_evaluation(engine: Engine, evaluation_id: int, checkpoint_sha256: str, runs: str, run: int,
                      order: str) -> int | None:
    """The first audit evaluation in ``order`` (audit run, then id) of the checkpoint with evaluation
    ``evaluation_id``'s method and mosaic set, among the audit runs the condition ``runs`` keeps."""
    sql = text(
        "SELECT e.id FROM evaluation e "
        "JOIN evaluation c ON c.id = :evaluation_id "
        "JOIN model_checkpoint m ON m.id = e.checkpoint_id "
        "WHERE m.sha256 = :sha256 AND e.method_id = c.method_id AND e.mosaic_set_id = c.mosaic_set_id "
        f"AND {runs} AND e.status = 'finished' AND e.randomization = 'none' "
        f"ORDER BY e.audit_run_id {order}, e.id {order} LIMIT 1"
    )
    with engine.connect() as connection:
        found = connection.execute(sql, {"evaluation_id": int(evaluation_id), "sha256": str(checkpoint_sha256),
                                         "run": run}).scalar()
    return None if found is None else int(found)


def paired_focus_by_class(engine: Engine, evaluation_a: int, evaluation_b: int) -> pd.DataFrame:
    """Focus of two evaluations on the same mosaics, both defined, with each mosaic's target class.

    Columns ``mosaic_id``, ``target_class``, ``focus_a``, ``focus_b``, ordered by mosaic id.
    """
    sql = text(
        "SELECT a.mosaic_id, m.target_class, a.focus AS focus_a, b.focus AS focus_b "
        "FROM mosaic_result a JOIN mosaic_result b ON b.mosaic_id = a.mosaic_id "
        "JOIN mosaic m ON m.id = a.mosaic_id "
        "WHERE a.evaluation_id = :a AND b.evaluation_id = :b "
        "AND a.focus IS NOT NULL AND b.focus IS NOT NULL ORDER BY a.mosaic_id"
    )
    with engine.connect() as connection:
        return pd.read_sql_query(sql, connection, params={"a": int(evaluation_a), "b": int(evaluation_b)})


def class_names(engine: Engine, evaluation_id: int) -> list[str]:
    """The class names of the dataset evaluation ``evaluation_id``'s mosaics come from (a target class indexes it)."""
    sql = text(
        "SELECT d.classes FROM evaluation e JOIN mosaic_set s ON s.id = e.mosaic_set_id "
        "JOIN dataset d ON d.id = s.dataset_id WHERE e.id = :evaluation_id"
    )
    with engine.connect() as connection:
        classes = connection.execute(sql, {"evaluation_id": int(evaluation_id)}).scalar()
    if isinstance(classes, str):  # a JSON column read back as text
        classes = json.loads(classes)
    return [str(c) for c in classes or []]
