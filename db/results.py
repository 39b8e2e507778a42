"""Per-mosaic results: one row per evaluation and mosaic, written a chunk at a time.

A chunk's sums are ``(M, T, 2)`` with T = N² tiles of the evaluation's N x N mosaic set (row-major).
T == 4 (2x2) is the fast path: the sums are the ``pos_*``/``neg_*`` columns of ``mosaic_result``. Any
other grid writes those columns NULL and one ``mosaic_result_tile`` row per tile, in the same
transaction and by the same path (COPY into the evaluation's partitions, or staged and merged).

A chunk is one transaction: it is written whole or not at all, and writing it again replaces
its rows (an upsert). Two paths, chosen by one indexed query per chunk:

- first write (the common case): no row of the chunk exists yet and every id is provably a
  mosaic of the evaluation's set, so the rows go straight into ``mosaic_result`` (one binary
  COPY on PostgreSQL, one executemany on SQLite);
- retry: the chunk is staged in a temporary table and merged with ``INSERT ... SELECT ... ON
  CONFLICT DO UPDATE``, which keeps only mosaics of the evaluation's set.

Rows written into an evaluation that already has a stored summary (``db.summaries``) store it
again in the same transaction, so a stored summary always describes the rows stored.

A writer that loses a race for the same chunk (its COPY meets the other's rows) falls back to
the retry path, so concurrent retries of one chunk still leave one row per mosaic.

The foreign key ``mosaic_result.evaluation_id -> evaluation`` stays, although PostgreSQL checks
it row by row (its cost: benchmarks/README.md, section "The results table's foreign key"): the
key keeps ``ON DELETE CASCADE`` and integrity in the database rather than in this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from db.errors import StoreError
from db.pg_copy import copy_into
from db.summaries import store_summary
from db.transactions import Store, error_reason, transaction

__all__ = ["write_mosaic_results", "finished_mosaic_ids"]

_QUADRANTS = ("tl", "tr", "bl", "br")
#: How far a value may stray outside its domain through float rounding (then it is clipped):
#: Focus in [0, 1], positive sums >= 0, negative sums <= 0.
TOLERANCE = 1e-6
_VALUES = tuple(f"pos_{q}" for q in _QUADRANTS) + tuple(f"neg_{q}" for q in _QUADRANTS) + ("focus", "predicted_class")
_STAGE = "_focus_result_chunk"
_STAGE_COLUMNS = (
    "mosaic_id integer, " + ", ".join(f"{c} double precision" for c in _VALUES[:-1]) + ", predicted_class integer"
)
_TILE_VALUES = ("positive", "negative")
_TILE_STAGE = "_focus_result_tile_chunk"
_TILE_STAGE_COLUMNS = "mosaic_id integer, position integer, positive double precision, negative double precision"

# One indexed query: the evaluation's mosaic set, whether it has a stored summary, and, unless the
# evaluation already has a row with an id in [lo, hi] (then -1), how many mosaics of the set have an
# id in that range. The
# set test sits in the SUM, not the WHERE, so both databases scan the primary-key range (with it
# in the WHERE, SQLite walks every mosaic of the set through the (mosaic_set_id, position) index).
_PLAN = (
    "SELECT e.mosaic_set_id, "
    "CASE WHEN EXISTS (SELECT 1 FROM evaluation_stats st WHERE st.evaluation_id = e.id) THEN 1 ELSE 0 END, "
    "CASE WHEN EXISTS (SELECT 1 FROM mosaic_result r "
    "WHERE r.evaluation_id = e.id AND r.mosaic_id BETWEEN :lo AND :hi) THEN -1 ELSE "
    "(SELECT COALESCE(SUM(CASE WHEN m.mosaic_set_id = e.mosaic_set_id THEN 1 ELSE 0 END), 0) "
    "FROM mosaic m WHERE m.id BETWEEN :lo AND :hi) END, {partition}, "
    "(SELECT ms.grid FROM mosaic_set ms WHERE ms.id = e.mosaic_set_id) "
    "FROM evaluation e WHERE e.id = :evaluation_id"
)
# PostgreSQL also names the evaluation's partition of mosaic_result (creating it if a retention drop took it),
# so a first write copies straight into it instead of having the server route every row through the parent.
_PLAN_SQL = {"postgresql": text(_PLAN.format(partition="focus_result_partition(e.id)")),
             "sqlite": text(_PLAN.format(partition="'mosaic_result'"))}
# The scalar subquery is a per-row primary-key lookup on both databases (PostgreSQL never turns
# it into a join that would hash every mosaic of a large set).
_UPSERT_SQL = text(
    f"INSERT INTO mosaic_result (evaluation_id, mosaic_id, {', '.join(_VALUES)}) "
    f"SELECT :evaluation_id, t.mosaic_id, {', '.join('t.' + c for c in _VALUES)} FROM {_STAGE} t "
    "WHERE (SELECT m.mosaic_set_id FROM mosaic m WHERE m.id = t.mosaic_id) = :mosaic_set_id "
    "ON CONFLICT (evaluation_id, mosaic_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _VALUES)
)
_UPSERT_TILES_SQL = text(
    f"INSERT INTO mosaic_result_tile (evaluation_id, mosaic_id, position, {', '.join(_TILE_VALUES)}) "
    f"SELECT :evaluation_id, t.mosaic_id, t.position, {', '.join('t.' + c for c in _TILE_VALUES)} FROM {_TILE_STAGE} t "
    "WHERE (SELECT m.mosaic_set_id FROM mosaic m WHERE m.id = t.mosaic_id) = :mosaic_set_id "
    "ON CONFLICT (evaluation_id, mosaic_id, position) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _TILE_VALUES)
)


class _Chunk(NamedTuple):
    ids: np.ndarray  # int64 (M,), unique
    sums: np.ndarray  # float64 (M, T, 2), finite
    scores: np.ndarray  # float64 (M,), NaN where undefined
    preds: np.ndarray  # int64 (M,)

    @property
    def tiles(self) -> int:
        return int(self.sums.shape[1])

    def columns(self) -> dict[str, np.ndarray]:
        """Column name to values, ``mosaic_id`` first, in ``_VALUES`` order after it (sums NaN, NULL, off 2x2)."""
        columns = {"mosaic_id": self.ids}
        if self.tiles == 4:
            columns.update({f"pos_{q}": self.sums[:, i, 0] for i, q in enumerate(_QUADRANTS)})
            columns.update({f"neg_{q}": self.sums[:, i, 1] for i, q in enumerate(_QUADRANTS)})
        else:
            columns.update({c: np.full(len(self.ids), np.nan) for c in _VALUES[:8]})
        columns.update({"focus": self.scores, "predicted_class": self.preds})
        return columns

    def rows(self) -> list[tuple]:
        """Python rows for executemany, NaN Focus (and the NULL 2x2 sums off 2x2) as ``None``."""
        columns = [values.tolist() for values in self.columns().values()]
        columns[-2] = [None if x != x else x for x in columns[-2]]
        if self.tiles != 4:
            columns[1:9] = [[None] * len(self.ids)] * 8
        return list(zip(*columns, strict=True))

    def tile_columns(self) -> dict[str, np.ndarray]:
        """The ``mosaic_result_tile`` columns (grids other than 2x2): one row per mosaic and tile."""
        m, t = self.sums.shape[:2]
        return {"mosaic_id": np.repeat(self.ids, t), "position": np.tile(np.arange(t, dtype=np.int64), m),
                "positive": self.sums[:, :, 0].reshape(-1), "negative": self.sums[:, :, 1].reshape(-1)}

    def tile_rows(self) -> list[tuple]:
        return list(zip(*(values.tolist() for values in self.tile_columns().values()), strict=True))


def _result_chunk(
    mosaic_ids: Sequence[int] | np.ndarray,
    quadrant_sums: np.ndarray,
    focus: Sequence[float] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
) -> _Chunk:
    ids = np.asarray(mosaic_ids).reshape(-1)
    m = ids.shape[0]
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise StoreError(f"Expected integer mosaic ids but got dtype {ids.dtype}.")
    sums = np.asarray(quadrant_sums, dtype=np.float64)
    if sums.ndim != 3 or sums.shape[0] != m or sums.shape[2] != 2 or sums.shape[1] < 4:
        raise StoreError(f"Expected quadrant_sums of shape ({m}, T, 2) (T = N² tiles) but got {sums.shape}.")
    if not np.isfinite(sums).all():
        raise StoreError("Expected finite quadrant_sums but some are NaN or infinite; check the explainer's output.")
    sums = _in_domain(sums, "positive relevance sums (quadrant_sums[..., 0]) >= 0", 0.0, np.inf, lambda s: s[..., 0])
    sums = _in_domain(sums, "negative relevance sums (quadrant_sums[..., 1]) <= 0", -np.inf, 0.0, lambda s: s[..., 1])
    scores = np.asarray(focus, dtype=np.float64).reshape(-1)
    if scores.shape != (m,):
        raise StoreError(f"Expected focus of shape ({m},) but got {scores.shape}.")
    if np.isinf(scores).any():
        raise StoreError("Expected Focus scores in [0, 1] or NaN but some are infinite.")
    scores = _in_domain(scores, "Focus scores in [0, 1] or NaN", 0.0, 1.0, lambda s: s)
    preds = np.asarray(predicted).reshape(-1)
    if preds.shape != (m,):
        raise StoreError(f"Expected predicted of shape ({m},) but got {preds.shape}.")
    if preds.size and not np.issubdtype(preds.dtype, np.integer):
        raise StoreError(f"Expected integer predicted classes but got dtype {preds.dtype}.")
    if preds.size and preds.min() < 0:
        raise StoreError(f"Expected predicted classes >= 0 but got {int(preds.min())}; check the model's output.")
    if len(np.unique(ids)) != m:
        raise StoreError("Expected each mosaic id once per chunk but some repeat.")
    return _Chunk(ids.astype(np.int64), sums, scores, preds.astype(np.int64))


def _in_domain(values: np.ndarray, expected: str, low: float, high: float, part) -> np.ndarray:
    """``values`` with ``part(values)`` clipped to [low, high], refused beyond :data:`TOLERANCE` (NaN passes).

    Returns a copy when something is clipped; the caller's array is never changed.
    """
    view = part(values)
    below, above = view < low - TOLERANCE, view > high + TOLERANCE
    if below.any() or above.any():
        worst = float(view[below].min()) if below.any() else float(view[above].max())
        raise StoreError(f"Expected {expected} but got {worst:g}; check the explainer's output (nothing was written).")
    if (view < low).any() or (view > high).any():
        values = values.copy()
        clipped = part(values)
        np.clip(clipped, low, high, out=clipped)
    return values


class _Plan(NamedTuple):
    set_id: int  # the evaluation's mosaic set
    summarized: bool  # it has a stored summary (db.summaries), to be stored again after the write
    fresh: bool  # the chunk may go in with a plain insert
    table: str  # where a plain insert goes: the evaluation's partition on PostgreSQL
    grid: int  # N of the set's N x N mosaics

    @property
    def tile_table(self) -> str:
        """Where a plain insert of tile rows goes: the partition of mosaic_result_tile beside ``table``."""
        return self.table.replace("mosaic_result", "mosaic_result_tile", 1)


def _plan(connection: Connection, evaluation_id: int, chunk: _Chunk) -> _Plan:
    """How to write the chunk (see :class:`_Plan`).

    A plain insert is safe when no row of the evaluation has an id in the chunk's range and
    every id in that range is a mosaic of the set (so every id of the chunk is). The range is
    only checked when it is at most twice the chunk, so the query stays as cheap as the chunk.
    """
    lo, hi = int(chunk.ids.min()), int(chunk.ids.max())
    span = hi - lo + 1
    if span > 2 * len(chunk.ids):
        lo, hi = 1, 0  # an empty range: take the upsert path, which checks every id
    params = {"evaluation_id": evaluation_id, "lo": lo, "hi": hi}
    row = connection.execute(_PLAN_SQL[connection.dialect.name], params).one_or_none()
    if row is None:
        raise StoreError(f"No evaluation with id {evaluation_id}; create it with get_or_create_evaluation.")
    set_id, summarized, members, table, grid = row
    if chunk.tiles != grid * grid:
        raise StoreError(
            f"Expected sums for the {grid * grid} tiles of evaluation {evaluation_id}'s {grid}x{grid} mosaics but got "
            f"{chunk.tiles} per mosaic; nothing of this chunk was written."
        )
    return _Plan(set_id, bool(summarized), hi >= lo and members == span, table, int(grid))


def _insert(connection: Connection, evaluation_id: int, chunk: _Chunk, table: str = "mosaic_result",
            tile_table: str = "mosaic_result_tile") -> None:
    if connection.dialect.name == "postgresql":
        columns = {"evaluation_id": np.full(len(chunk.ids), evaluation_id)} | chunk.columns()
        copy_into(connection, table, columns)
        if chunk.tiles != 4:
            tiles = chunk.tile_columns()
            tiles = {"evaluation_id": np.full(len(tiles["mosaic_id"]), evaluation_id)} | tiles
            copy_into(connection, tile_table, tiles)
        return
    placeholders = ", ".join("?" for _ in range(len(_VALUES) + 2))
    connection.exec_driver_sql(
        f"INSERT INTO mosaic_result (evaluation_id, mosaic_id, {', '.join(_VALUES)}) VALUES ({placeholders})",
        [(evaluation_id, *row) for row in chunk.rows()],
    )
    if chunk.tiles != 4:
        connection.exec_driver_sql(
            f"INSERT INTO mosaic_result_tile (evaluation_id, mosaic_id, position, {', '.join(_TILE_VALUES)}) "
            "VALUES (?, ?, ?, ?, ?)",
            [(evaluation_id, *row) for row in chunk.tile_rows()],
        )


def _upsert(connection: Connection, evaluation_id: int, set_id: int, chunk: _Chunk) -> int:
    """Stage the chunk in a temporary table and merge it; returns the rows written."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"CREATE TEMP TABLE {_STAGE} ({_STAGE_COLUMNS}) ON COMMIT DROP")
        copy_into(connection, _STAGE, chunk.columns())
    else:
        connection.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ({_STAGE_COLUMNS})")
        connection.exec_driver_sql(f"DELETE FROM {_STAGE}")
        placeholders = ", ".join("?" for _ in range(len(_VALUES) + 1))
        connection.exec_driver_sql(f"INSERT INTO {_STAGE} VALUES ({placeholders})", chunk.rows())
    params = {"evaluation_id": evaluation_id, "mosaic_set_id": set_id}
    written = connection.execute(_UPSERT_SQL, params).rowcount
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"DROP TABLE {_STAGE}")  # the caller's transaction may write another chunk
    if chunk.tiles != 4:
        _upsert_tiles(connection, params, chunk)
    return written


def _upsert_tiles(connection: Connection, params: dict[str, int], chunk: _Chunk) -> None:
    """Stage the chunk's tile rows and merge them (only mosaics of the set), as :func:`_upsert` does its rows."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"CREATE TEMP TABLE {_TILE_STAGE} ({_TILE_STAGE_COLUMNS}) ON COMMIT DROP")
        copy_into(connection, _TILE_STAGE, chunk.tile_columns())
    else:
        connection.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_TILE_STAGE} ({_TILE_STAGE_COLUMNS})")
        connection.exec_driver_sql(f"DELETE FROM {_TILE_STAGE}")
        connection.exec_driver_sql(f"INSERT INTO {_TILE_STAGE} VALUES (?, ?, ?, ?)", chunk.tile_rows())
    connection.execute(_UPSERT_TILES_SQL, params)
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"DROP TABLE {_TILE_STAGE}")


def _write(connection: Connection, evaluation_id: int, chunk: _Chunk, *, plain_insert: bool) -> int:
    plan = _plan(connection, evaluation_id, chunk)
    m = len(chunk.ids)
    if plain_insert and plan.fresh:
        _insert(connection, evaluation_id, chunk, plan.table, plan.tile_table)
    else:
        written = _upsert(connection, evaluation_id, plan.set_id, chunk)
        if written != m:
            raise StoreError(
                f"{m - written} of {m} mosaic ids are not in the mosaic set of evaluation "
                f"{evaluation_id}; nothing of this chunk was written."
            )
    if plan.summarized:  # rows of a closed evaluation changed: its stored summary follows them
        store_summary(connection, evaluation_id)
    return m


def write_mosaic_results(
    store: Store,
    evaluation_id: int,
    mosaic_ids: Sequence[int] | np.ndarray,
    quadrant_sums: np.ndarray,
    focus: Sequence[float] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
) -> int:
    """Write (upsert) the results of a chunk of mosaics in one transaction.

    Parameters
    ----------
    store
        Engine or connection.
    evaluation_id
        The evaluation the rows belong to.
    mosaic_ids
        ``(M,)`` mosaic ids of the evaluation's mosaic set, each once.
    quadrant_sums
        ``(M, T, 2)`` finite float: ``[..., 0]`` positive (>= 0) and ``[..., 1]`` negative (<= 0)
        relevance per tile, row-major, T = N² for the evaluation's N x N mosaic set (2x2: TL, TR, BL, BR,
        as from ``focus_core.metric.quadrant_sums``; any N: ``focus_core.metric.tile_sums``). A T that is
        not the set's raises before anything is written.
    focus
        ``(M,)`` Focus scores in [0, 1]; NaN (no positive relevance) is stored as NULL.
    predicted
        ``(M,)`` the model's predicted class per mosaic, an integer >= 0.

    Returns
    -------
    int
        Number of rows written. Writing the same chunk again replaces its rows (one row per
        mosaic); a chunk that fails (a mosaic outside the set, a missing evaluation) writes nothing.

    Examples
    --------
    >>> write_mosaic_results(engine, 1, [10, 11], np.zeros((2, 4, 2)), [np.nan, 0.5], [3, 4])  # doctest: +SKIP
    2
    """
    chunk = _result_chunk(mosaic_ids, quadrant_sums, focus, predicted)
    if len(chunk.ids) == 0:
        return 0
    try:
        with transaction(store) as connection:
            return _write(connection, evaluation_id, chunk, plain_insert=True)
    except IntegrityError:
        pass  # another writer of this chunk got there first: the upsert below replaces its rows
    try:
        with transaction(store) as connection:
            return _write(connection, evaluation_id, chunk, plain_insert=False)
    except IntegrityError as exc:
        raise StoreError(
            f"Writing results of evaluation {evaluation_id} failed ({error_reason(exc)}); "
            f"nothing of this chunk was written."
        ) from None


def finished_mosaic_ids(store: Store, evaluation_id: int) -> set[int]:
    """The ids of the mosaics that already have a result in this evaluation (to skip finished chunks)."""
    query = text("SELECT mosaic_id FROM mosaic_result WHERE evaluation_id = :evaluation_id")
    if isinstance(store, Engine):
        with store.connect() as connection:
            return set(connection.execute(query, {"evaluation_id": evaluation_id}).scalars())
    return set(store.execute(query, {"evaluation_id": evaluation_id}).scalars())
