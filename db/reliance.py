"""Model reliance per tile: one pass per model, mosaic set and baseline, shared by every evaluation of them.

``get_or_create_reliance_pass`` finds the pass by its natural key (``db.keys.reliance_key``);
``write_reliance`` stores a chunk of its mosaics (the intact target logit and model Focus per mosaic, the drop of
the target logit per tile) in one transaction; ``reliance_mosaic_ids`` lists the mosaics stored, so an interrupted
pass resumes with the chunks still missing. Rows are never replaced: the same pass gives the same numbers, so a
chunk written twice (a retry, two runs at once) keeps its first rows.

``evaluation_reliance_tiles`` reads one finished evaluation beside its pass, a row per mosaic and tile;
``store_evaluation_reliance`` writes the summaries computed from them (``focus_core.stats``, in ``flows``), which
``evaluation_summary`` shows as ``median_model_focus`` and ``median_explainer_gap`` (revision 0016).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, delete, insert, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from db.errors import StoreError
from db.keys import reliance_key
from db.models import RANDOMIZATIONS, EvaluationReliance, ReliancePass
from db.transactions import Store, error_reason, get_or_create_keyed, transaction
from db.types import optional_float, utcnow

__all__ = [
    "RELIANCE_SUMMARY_COLUMNS",
    "evaluation_reliance",
    "evaluation_reliance_tiles",
    "paired_model_focus",
    "get_or_create_reliance_pass",
    "reliance_mosaic_ids",
    "store_evaluation_reliance",
    "write_reliance",
]

#: The summary columns of ``evaluation_reliance`` (after ``evaluation_id`` and ``pass_id``).
RELIANCE_SUMMARY_COLUMNS = tuple(
    c.name for c in EvaluationReliance.__table__.columns if c.name not in ("evaluation_id", "pass_id", "computed_at")
)


def get_or_create_reliance_pass(
    store: Store, checkpoint_id: int, mosaic_set_id: int, *, randomization: str = "none", stage: int | None = None,
    layer: str | None = None, seed: int | None = None, baseline: str = "mean", disconnected: bool = False,
) -> int:
    """The id of the reliance pass of this model (checkpoint, randomization, disconnected or not), mosaic set and
    baseline; created if new. A disconnected pass differs from the connected one by its key alone."""
    if randomization not in RANDOMIZATIONS:
        raise StoreError(f"Expected randomization to be one of {RANDOMIZATIONS} but got {randomization!r}.")
    key = reliance_key(checkpoint_id, mosaic_set_id, randomization, stage, layer, seed, baseline, disconnected)
    values = {"natural_key": key, "checkpoint_id": checkpoint_id, "mosaic_set_id": mosaic_set_id,
              "randomization": randomization, "stage": stage, "layer": layer, "seed": seed, "baseline": baseline}

    return get_or_create_keyed(store, ReliancePass, values, "the reliance pass",
                               "register its checkpoint and mosaic set first.")


def reliance_mosaic_ids(store: Store, pass_id: int) -> set[int]:
    """The ids of the mosaics the pass has stored (to skip finished chunks)."""
    query = text("SELECT mosaic_id FROM mosaic_reliance WHERE pass_id = :pass_id")
    if isinstance(store, Engine):
        with store.connect() as connection:
            return set(connection.execute(query, {"pass_id": int(pass_id)}).scalars())
    return set(store.execute(query, {"pass_id": int(pass_id)}).scalars())


_MOSAIC_INSERT = text(
    "INSERT INTO mosaic_reliance (pass_id, mosaic_id, intact_logit, model_focus) "
    "SELECT CAST(:pass_id AS INTEGER), mo.id, CAST(:intact_logit AS DOUBLE PRECISION), "
    "CAST(:model_focus AS DOUBLE PRECISION) FROM mosaic mo JOIN reliance_pass p ON p.id = :pass_id "
    "WHERE mo.id = :mosaic_id AND mo.mosaic_set_id = p.mosaic_set_id ON CONFLICT DO NOTHING"
)
_TILE_INSERT = text(
    "INSERT INTO tile_reliance (pass_id, mosaic_id, tile, logit_drop) "
    "VALUES (:pass_id, :mosaic_id, :tile, :logit_drop) ON CONFLICT DO NOTHING"
)


def write_reliance(
    store: Store, pass_id: int, mosaic_ids: Sequence[int], intact: np.ndarray, drops: np.ndarray,
    model_focus: np.ndarray,
) -> int:
    """Store a chunk of the pass in one transaction: ``intact`` ``(M,)``, ``drops`` ``(M, N²)``, ``model_focus``
    ``(M,)`` (NaN where undefined: stored NULL). Mosaics the pass has already are kept as they are.

    Returns
    -------
    int
        The mosaics written now (0 when every one was there already).

    Raises
    ------
    StoreError
        For arrays whose shapes do not match ``mosaic_ids``, a non-finite logit or drop, or a mosaic that is not
        in the pass's mosaic set (nothing is written).
    """
    ids = [int(i) for i in mosaic_ids]
    intact, drops, model_focus = (np.asarray(a, dtype=np.float64) for a in (intact, drops, model_focus))
    if intact.shape != (len(ids),) or model_focus.shape != (len(ids),) or drops.ndim != 2 \
            or drops.shape[0] != len(ids):
        raise StoreError(f"Expected one intact logit, one row of drops and one model Focus per mosaic for {len(ids)} "
                         f"mosaics but got {intact.shape}, {drops.shape} and {model_focus.shape}.")
    if not (np.isfinite(intact).all() and np.isfinite(drops).all()):
        raise StoreError("The reliance pass gave a non-finite logit: check the model's weights before storing it.")
    if not ids:
        return 0
    mosaics = [{"pass_id": int(pass_id), "mosaic_id": m, "intact_logit": float(intact[i]),
                "model_focus": optional_float(model_focus[i])} for i, m in enumerate(ids)]
    with transaction(store) as connection:
        present = _present(connection, pass_id, ids)
        todo = [row for row in mosaics if row["mosaic_id"] not in present]
        if not todo:
            return 0
        written = sum(connection.execute(_MOSAIC_INSERT, row).rowcount for row in todo)
        if written != len(todo) and len(_present(connection, pass_id, ids)) != len(ids):
            raise StoreError(f"Some of mosaics {ids[0]}..{ids[-1]} are not in the mosaic set of reliance pass "
                             f"{pass_id}: plan the chunks from the pass's own mosaic set.")
        rows = {row["mosaic_id"] for row in todo}
        connection.execute(_TILE_INSERT, [
            {"pass_id": int(pass_id), "mosaic_id": m, "tile": t, "logit_drop": float(drops[i, t])}
            for i, m in enumerate(ids) if m in rows for t in range(drops.shape[1])
        ])
    return len(todo)


def _present(connection: Connection, pass_id: int, ids: list[int]) -> set[int]:
    return set(connection.execute(
        text("SELECT mosaic_id FROM mosaic_reliance WHERE pass_id = :pass_id AND mosaic_id BETWEEN :lo AND :hi"),
        {"pass_id": int(pass_id), "lo": min(ids), "hi": max(ids)},
    ).scalars()) & set(ids)


def evaluation_reliance_tiles(engine: Engine, evaluation_id: int, pass_id: int) -> pd.DataFrame:
    """One evaluation's mosaics beside the pass's: a row per mosaic and tile, ordered by mosaic position and tile.

    Columns ``mosaic_id, target_class, focus, model_focus, tile, is_target, positive, logit_drop``; ``focus`` and
    ``model_focus`` are NaN where undefined. Only mosaics both have.
    """
    statement = text(
        "SELECT mo.id AS mosaic_id, mo.target_class, r.focus, mr.model_focus, t.position AS tile, "
        "((mo.target_mask >> t.position) & 1) AS is_target, t.positive, tr.logit_drop "
        "FROM mosaic_result r JOIN mosaic mo ON mo.id = r.mosaic_id "
        "JOIN mosaic_reliance mr ON mr.pass_id = :pass_id AND mr.mosaic_id = r.mosaic_id "
        "JOIN mosaic_result_tiles t ON t.evaluation_id = r.evaluation_id AND t.mosaic_id = r.mosaic_id "
        "JOIN tile_reliance tr ON tr.pass_id = :pass_id AND tr.mosaic_id = r.mosaic_id AND tr.tile = t.position "
        "WHERE r.evaluation_id = :evaluation_id ORDER BY mo.position, t.position"
    )
    with engine.connect() as connection:
        frame = pd.read_sql_query(statement, connection,
                                  params={"evaluation_id": int(evaluation_id), "pass_id": int(pass_id)})
    return frame.astype({"focus": float, "model_focus": float})


def store_evaluation_reliance(store: Store, evaluation_id: int, pass_id: int, summary: dict[str, Any]) -> None:
    """Store (or replace) an evaluation's reliance summaries: ``summary`` holds :data:`RELIANCE_SUMMARY_COLUMNS`
    (NaN or ``None``: NULL)."""
    counts = {"n_model_defined", "n_gap_defined"}
    values = {c: int(summary[c]) if c in counts else optional_float(summary.get(c)) for c in RELIANCE_SUMMARY_COLUMNS}
    with transaction(store) as connection:
        connection.execute(delete(EvaluationReliance).where(EvaluationReliance.evaluation_id == int(evaluation_id)))
        try:
            connection.execute(insert(EvaluationReliance).values(
                evaluation_id=int(evaluation_id), pass_id=int(pass_id), computed_at=utcnow(), **values))
        except IntegrityError as exc:
            raise StoreError(f"Cannot store the reliance summary of evaluation {evaluation_id} "
                             f"({error_reason(exc)}): create the evaluation and the pass first.") from None


def evaluation_reliance(engine: Engine, evaluation_ids: Sequence[int]) -> pd.DataFrame:
    """The stored reliance summaries of evaluations (those without one have no row), by evaluation id."""
    columns = ", ".join(("evaluation_id", "pass_id", *RELIANCE_SUMMARY_COLUMNS))
    if not evaluation_ids:
        statement, params = text(f"SELECT {columns} FROM evaluation_reliance WHERE 1 = 0"), {}
    else:
        statement = text(f"SELECT {columns} FROM evaluation_reliance WHERE evaluation_id IN :ids "
                         "ORDER BY evaluation_id").bindparams(bindparam("ids", expanding=True))
        params = {"ids": [int(i) for i in evaluation_ids]}
    with engine.connect() as connection:
        return pd.read_sql_query(statement, connection, params=params)


def paired_model_focus(engine: Engine, evaluation_a: int, evaluation_b: int) -> pd.DataFrame:
    """Focus and model Focus of two evaluations on the same mosaics, each read through its own reliance pass.

    Columns ``mosaic_id, target_class, focus_a, focus_b, model_focus_a, model_focus_b`` (NaN where undefined),
    ordered by mosaic id; only mosaics both evaluations scored and both passes measured, so no rows when either evaluation has no
    reliance summary (it ran without the reliance pass).
    """
    statement = text(
        "SELECT a.mosaic_id, m.target_class, a.focus AS focus_a, b.focus AS focus_b, "
        "ma.model_focus AS model_focus_a, mb.model_focus AS model_focus_b "
        "FROM mosaic_result a JOIN mosaic_result b ON b.mosaic_id = a.mosaic_id AND b.evaluation_id = :b "
        "JOIN mosaic m ON m.id = a.mosaic_id "
        "JOIN evaluation_reliance ea ON ea.evaluation_id = :a "
        "JOIN evaluation_reliance eb ON eb.evaluation_id = :b "
        "JOIN mosaic_reliance ma ON ma.pass_id = ea.pass_id AND ma.mosaic_id = a.mosaic_id "
        "JOIN mosaic_reliance mb ON mb.pass_id = eb.pass_id AND mb.mosaic_id = a.mosaic_id "
        "WHERE a.evaluation_id = :a ORDER BY a.mosaic_id"
    )
    with engine.connect() as connection:
        frame = pd.read_sql_query(statement, connection, params={"a": int(evaluation_a), "b": int(evaluation_b)})
    return frame.astype({c: float for c in ("focus_a", "focus_b", "model_focus_a", "model_focus_b")})
