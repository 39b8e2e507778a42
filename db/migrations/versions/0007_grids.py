"""N x N mosaics: a mosaic set's grid and number of target tiles, tiles and per-tile sums for any N.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

- ``mosaic_set`` gains ``grid`` (N, default 2), ``targets`` (k target tiles, default 2), ``confident``
  (the probability threshold of the confident protocol, NULL when not used) and ``confident_model``
  (sha256 of the weights whose predictions chose the tiles). A check keeps ``2 <= grid <= 5`` and
  ``1 <= targets < grid * grid``: ``mosaic.target_mask`` (bit p for tile p) must fit an integer.
- Tiles are numbered row-major 0..N²-1 (2x2: TL, TR, BL, BR = 0..3). A 2x2 mosaic keeps its four
  ``mosaic.image_*`` columns (the fast path, unchanged); any other grid writes ``mosaic_tile``
  (mosaic, position, image) and leaves ``image_*`` NULL. Likewise a 2x2 result keeps ``pos_*``/``neg_*``
  in ``mosaic_result``; any other grid writes them NULL and one ``mosaic_result_tile`` row per tile
  (evaluation, mosaic, position, positive, negative). ``focus`` and the prediction are always filled.
- Views ``mosaic_tiles`` and ``mosaic_result_tiles``: every mosaic's tiles and every result's per-tile
  sums for any N (2x2 unpivoted from the columns), so SQL over tiles never needs to know the grid.
- The summary views (``evaluation_summary``, ``evaluation_summary_live``,
  ``evaluation_class_summary_live``, ``audit_history``, ``training_epoch_focus``) gain ``grid``, ``targets``
  and ``chance_level`` = targets / grid² (what a random explanation scores) after their columns.
- PostgreSQL: ``mosaic_result_tile`` is partitioned like ``mosaic_result`` (RANGE of ``evaluation_id``,
  :data:`PARTITION_WIDTH` a partition, ``mosaic_result_tile_p000000`` beside ``mosaic_result_p000000``);
  ``focus_result_partition`` creates both partitions of an id, from the same trigger on ``evaluation``.
  Retention drops both partitions of a range.

Going down refuses a store that holds a mosaic set revision 0006 cannot hold (grid or targets other
than 2), with one sentence; otherwise nothing is lost but the confident protocol's two columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.errors import StoreError
from db.view_migrations import create_views, drop_views, revision_module

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

QUADRANTS = ("tl", "tr", "bl", "br")
MAX_GRID = 5  # 25 tile bits in a 32-bit integer bitmask


def _previous_views(dialect: str) -> list[tuple[str, str]]:
    return revision_module(down_revision).views(dialect)


GRID_COLUMNS = ("grid", "targets", "chance_level")
_GRID_SELECT = "ms.grid, ms.targets, CAST(ms.targets AS DOUBLE PRECISION) / (ms.grid * ms.grid) AS chance_level"
_GRID_JOIN = "JOIN mosaic_set ms ON ms.id = e.mosaic_set_id"


def _summary_live(dialect: str) -> str:
    s = revision_module("0005")
    keys = (("r.evaluation_id", "evaluation_id"),)
    if dialect == "postgresql":
        source = f"LEFT JOIN LATERAL ({s._stats_select(keys, s._PER_EVALUATION)}) l ON true"
    else:
        pending = f"r.evaluation_id IN (SELECT e.id FROM evaluation e WHERE {s._UNSTORED})"
        source = f"LEFT JOIN ({s._stats_select(keys, pending)}) l ON l.evaluation_id = e.id"
    return (
        f"CREATE VIEW evaluation_summary_live AS\nSELECT {s._EVALUATION_COLUMNS}, {s._status(dialect)}, "
        f"{s._live_columns('l', s.STAT_COLUMNS)}, {_GRID_SELECT}\nFROM evaluation e\n{_GRID_JOIN}\n{source}\n"
        f"WHERE {s._UNSTORED}\n"
    )


def _class_summary_live(dialect: str) -> str:
    s = revision_module("0005")
    keys = (("r.evaluation_id", "evaluation_id"), ("mo.target_class", "target_class"))
    if dialect == "postgresql":
        source = f"CROSS JOIN LATERAL ({s._stats_select(keys, s._PER_EVALUATION, per_class=True)}) l"
    else:
        pending = f"r.evaluation_id IN (SELECT e.id FROM evaluation e WHERE {s._UNSTORED})"
        source = f"JOIN ({s._stats_select(keys, pending, per_class=True)}) l ON l.evaluation_id = e.id"
    return (
        f"CREATE VIEW evaluation_class_summary_live AS\nSELECT e.id AS evaluation_id, l.target_class, "
        f"{', '.join(f'l.{c}' for c in s.CLASS_STAT_COLUMNS)}, {_GRID_SELECT}\nFROM evaluation e\n{_GRID_JOIN}\n"
        f"{source}\nWHERE {s._UNSTORED}\n"
    )


def _summary(dialect: str) -> str:
    """0005's three branches (stored closed, stored running, live), each with the grid columns."""
    s = revision_module("0005")
    stored = (f"{', '.join(f'st.{c}' for c in s.STAT_COLUMNS)}, {_GRID_SELECT}\n"
              f"FROM evaluation e JOIN evaluation_stats st ON st.evaluation_id = e.id {_GRID_JOIN}")
    return (
        f"CREATE VIEW evaluation_summary AS\nSELECT {s._EVALUATION_COLUMNS}, e.status, {stored}\n"
        "WHERE e.status <> 'running'\nUNION ALL\n"
        f"SELECT {s._EVALUATION_COLUMNS}, {s._status(dialect)}, {stored}\nWHERE e.status = 'running'\nUNION ALL\n"
        f"SELECT evaluation_id, checkpoint_id, method_id, mosaic_set_id, randomization, stage, layer, seed, "
        f"audit_run_id, status, {', '.join(s.STAT_COLUMNS)}, {', '.join(GRID_COLUMNS)} FROM evaluation_summary_live\n"
    )


def _with_grid(sql: str, alias: str) -> str:
    """A view over ``evaluation_summary`` (alias ``alias``) with the grid columns after its last column."""
    head, sep, tail = sql.partition("\nFROM ")
    if not sep:  # pragma: no cover - guarded by the migration tests
        raise RuntimeError("Expected a view with a FROM clause.")
    return f"{head.rstrip()},\n       {', '.join(f'{alias}.{c}' for c in GRID_COLUMNS)}{sep}{tail}"


def _unpivot(table: str, alias: str, columns, where: str) -> str:
    return "\nUNION ALL\n".join(
        f"SELECT {columns(i, q)} FROM {table} {alias} WHERE {where.format(q=q)}" for i, q in enumerate(QUADRANTS)
    )


MOSAIC_TILES = (
    "CREATE VIEW mosaic_tiles AS\n"
    + _unpivot("mosaic", "mo", lambda i, q: f"mo.id AS mosaic_id, mo.mosaic_set_id, {i} AS position, "
               f"mo.image_{q} AS image_id, ((mo.target_mask >> {i}) & 1) AS is_target",
               "mo.image_{q} IS NOT NULL")
    + "\nUNION ALL\nSELECT t.mosaic_id, mo.mosaic_set_id, t.position, t.image_id, "
      "((mo.target_mask >> t.position) & 1) AS is_target "
      "FROM mosaic_tile t JOIN mosaic mo ON mo.id = t.mosaic_id\n"
)
MOSAIC_RESULT_TILES = (
    "CREATE VIEW mosaic_result_tiles AS\n"
    + _unpivot("mosaic_result", "r", lambda i, q: f"r.evaluation_id, r.mosaic_id, {i} AS position, "
               f"r.pos_{q} AS positive, r.neg_{q} AS negative", "r.pos_{q} IS NOT NULL")
    + "\nUNION ALL\nSELECT t.evaluation_id, t.mosaic_id, t.position, t.positive, t.negative "
      "FROM mosaic_result_tile t\n"
)


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect`` ('postgresql' or 'sqlite').

    0006's list with the summary views replaced whole (the grid columns appended) and ``mosaic_tiles``,
    ``mosaic_result_tiles`` after them; a later revision starts from this list the same way.
    """
    replaced = {"evaluation_summary_live": _summary_live(dialect),
                "evaluation_class_summary_live": _class_summary_live(dialect),
                "evaluation_summary": _summary(dialect)}
    result = []
    for name, sql in _previous_views(dialect):
        if name in replaced:
            sql = replaced[name]
        elif name in ("audit_history", "training_epoch_focus"):
            sql = _with_grid(sql, "s")
        result.append((name, sql))
    return result + [("mosaic_tiles", MOSAIC_TILES), ("mosaic_result_tiles", MOSAIC_RESULT_TILES)]


def _partition_function() -> str:
    """``focus_result_partition`` creating both partitions of an id (``mosaic_result`` and ``mosaic_result_tile``)."""
    width = revision_module("0005").PARTITION_WIDTH
    return f"""
CREATE OR REPLACE FUNCTION focus_result_partition(evaluation integer) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    k integer := evaluation / {width};
    name text := 'mosaic_result_p' || lpad(k::text, 6, '0');
    tiles text := 'mosaic_result_tile_p' || lpad(k::text, 6, '0');
BEGIN
    IF to_regclass(name) IS NULL OR to_regclass(tiles) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('focus_result_partition'), k);
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE mosaic_result INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('ALTER TABLE mosaic_result ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           name, k * {width}, (k + 1) * {width});
        END IF;
        IF to_regclass(tiles) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE mosaic_result_tile INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           tiles);
            EXECUTE format('ALTER TABLE mosaic_result_tile ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           tiles, k * {width}, (k + 1) * {width});
        END IF;
    END IF;
    RETURN name;
END
$$
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(_previous_views(dialect))
    with op.batch_alter_table("mosaic_set") as batch:
        batch.add_column(sa.Column("grid", sa.Integer(), server_default="2", nullable=False))
        batch.add_column(sa.Column("targets", sa.Integer(), server_default="2", nullable=False))
        batch.add_column(sa.Column("confident", sa.Double(), nullable=True))
        batch.add_column(sa.Column("confident_model", sa.String(length=64), nullable=True))
        batch.create_check_constraint(
            op.f("ck_mosaic_set_grid"),
            f"grid BETWEEN 2 AND {MAX_GRID} AND targets >= 1 AND targets < grid * grid",
        )
    with op.batch_alter_table("mosaic") as batch:
        for q in QUADRANTS:
            batch.alter_column(f"image_{q}", existing_type=sa.Integer(), nullable=True)
        batch.drop_constraint(op.f("ck_mosaic_target_mask"), type_="check")
        batch.create_check_constraint(op.f("ck_mosaic_target_mask"), "target_mask >= 0")
    with op.batch_alter_table("mosaic_result") as batch:
        for kind in ("pos", "neg"):
            for q in QUADRANTS:
                batch.alter_column(f"{kind}_{q}", existing_type=sa.Double(), nullable=True)
    op.create_table(
        "mosaic_tile",
        sa.Column("mosaic_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["mosaic_id"], ["mosaic.id"], name=op.f("fk_mosaic_tile_mosaic_id_mosaic"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], name=op.f("fk_mosaic_tile_image_id_image")),
        sa.PrimaryKeyConstraint("mosaic_id", "position", name=op.f("pk_mosaic_tile")),
    )
    op.create_table(
        "mosaic_result_tile",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("mosaic_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("positive", sa.Double(), nullable=False),
        sa.Column("negative", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_mosaic_result_tile_evaluation_id_evaluation"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("evaluation_id", "mosaic_id", "position", name=op.f("pk_mosaic_result_tile")),
        **({"postgresql_partition_by": "RANGE (evaluation_id)"} if dialect == "postgresql" else {}),
    )
    if dialect == "postgresql":
        width = revision_module("0005").PARTITION_WIDTH
        op.execute(_partition_function())
        op.execute(f"SELECT focus_result_partition(k * {width}) FROM generate_series(0, "
                   f"(SELECT COALESCE(MAX(id), 0) FROM evaluation) / {width}) AS k")
    create_views(views(dialect))


def _refuse_grids() -> None:
    bind = op.get_bind()
    count = bind.exec_driver_sql("SELECT COUNT(*) FROM mosaic_set WHERE grid <> 2 OR targets <> 2").scalar()
    if count:
        raise StoreError(
            f"The store holds {count} mosaic set(s) with a grid or target count other than 2x2 with 2 targets, "
            "which revision 0006 cannot hold; delete their evaluations and mosaic sets first, or stay at 0007."
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _refuse_grids()
    drop_views(views(dialect))
    if dialect == "postgresql":
        body = revision_module("0005")._PARTITION_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        op.execute(body)
    op.drop_table("mosaic_result_tile")  # its partitions go with it
    op.drop_table("mosaic_tile")
    with op.batch_alter_table("mosaic_result") as batch:
        for kind in ("pos", "neg"):
            for q in QUADRANTS:
                batch.alter_column(f"{kind}_{q}", existing_type=sa.Double(), nullable=False)
    with op.batch_alter_table("mosaic") as batch:
        batch.drop_constraint(op.f("ck_mosaic_target_mask"), type_="check")
        batch.create_check_constraint(op.f("ck_mosaic_target_mask"), "target_mask BETWEEN 0 AND 15")
        for q in QUADRANTS:
            batch.alter_column(f"image_{q}", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("mosaic_set") as batch:
        batch.drop_constraint(op.f("ck_mosaic_set_grid"), type_="check")
        for column in ("confident_model", "confident", "targets", "grid"):
            batch.drop_column(column)
    create_views(_previous_views(dialect))
