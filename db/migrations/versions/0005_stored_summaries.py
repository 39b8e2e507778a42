"""Stored summaries, indexes for the per-mosaic queries, and a partitioned ``mosaic_result`` on PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- ``evaluation_stats``: one row per closed evaluation (written by ``db.summaries.store_summary`` when it
  is finished, failed or completed by a re-run): n, n_defined, mean, sample standard deviation, median,
  quartiles, min, max of the defined Focus scores, the mosaic accuracy, the share of undefined maps and
  the median with undefined maps counted as 0 (Quantus's convention). ``evaluation_class_stats``: the
  same per target class (n, n_defined, mean, median, mosaic accuracy, median with undefined as 0).
- ``evaluation_summary_live`` and ``evaluation_class_summary_live``: the statistics computed from
  ``mosaic_result`` for the evaluations that have no stored row yet (pending, running, crashed). They are
  the one implementation of the statistics: storing a summary copies their row.
- ``evaluation_summary``: the stored rows, and the live view for the others (UNION ALL), with the
  columns of revision 0002 in their order and ``std_focus``, ``undefined_share``,
  ``median_focus_undefined_as_zero`` after them.
- Indexes on ``evaluation`` (checkpoint, method, mosaic set, audit run), the columns every view and
  query joins or filters on.
- PostgreSQL: ``mosaic_result`` is partitioned by RANGE of ``evaluation_id``, :data:`PARTITION_WIDTH`
  evaluations per partition (``mosaic_result_p000000`` holds ids 0..999). Ids grow with time, so a
  partition is a few nights of audits and dropping old audits is a partition drop. A trigger on
  ``evaluation`` creates the partition of a new id (``focus_result_partition``); the rows of the old
  table move into the partitions. SQLite keeps one table.

Quantiles are numpy's default (linear): rank the defined scores of a group (ROW_NUMBER), then
interpolate between ranks ``floor(p * (n - 1)) + 1`` and the next one, as revision 0001 does.
PostgreSQL computes the live statistics one evaluation at a time (LATERAL, so a query that names a
few evaluations computes a few); SQLite groups the rows of all evaluations without a stored row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

import db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PREVIOUS = down_revision
PARTITION_WIDTH = 1000  # evaluations per mosaic_result partition (PostgreSQL)

# The columns of the summary, in view order after ``status``.
STAT_COLUMNS = (
    "n", "n_defined", "mean_focus", "median_focus", "q1_focus", "q3_focus", "min_focus", "max_focus",
    "mosaic_accuracy", "std_focus", "undefined_share", "median_focus_undefined_as_zero",
)
CLASS_STAT_COLUMNS = ("n", "n_defined", "mean_focus", "median_focus", "mosaic_accuracy",
                      "median_focus_undefined_as_zero")
_RESULT_VALUES = ("pos_tl", "pos_tr", "pos_bl", "pos_br", "neg_tl", "neg_tr", "neg_bl", "neg_br", "focus",
                  "predicted_class")


def _previous_views(dialect: str) -> list[tuple[str, str]]:
    return ScriptDirectory.from_config(context.config).get_revision(PREVIOUS).module.views(dialect)


def _quantile(p_num: int, p_den: int, value: str, rn: str, cnt: str, alias: str) -> str:
    """Linear-interpolation quantile p = p_num / p_den of ``value`` over rows ranked ``rn`` of ``cnt``.

    NULL when ``cnt`` is 0 (a group whose scores are all undefined has no quantile).
    """
    pos = f"({p_num} * ({cnt} - 1))"
    return (
        f"CAST(CASE WHEN MAX({cnt}) > 0 THEN SUM(CASE WHEN {rn} = {pos} / {p_den} + 1 "
        f"THEN {value} * (1 - ({pos} % {p_den}) / {p_den}.0) "
        f"WHEN {rn} = {pos} / {p_den} + 2 THEN {value} * (({pos} % {p_den}) / {p_den}.0) "
        f"ELSE 0 END) END AS DOUBLE PRECISION) AS {alias}"
    )


def _stats_select(keys: tuple[tuple[str, str], ...], where: str, *, per_class: bool = False) -> str:
    """The statistics of the result rows matching ``where``, one row per value of ``keys`` (expr, alias).

    Defined scores rank first (NULLS LAST) so ``rn`` 1..n_defined are theirs; ``rn0`` ranks every row
    with undefined as 0. ``dev`` is the distance to the group's mean (two-pass variance).
    """
    partition = ", ".join(expr for expr, _ in keys)
    window = f"PARTITION BY {partition}"
    inner = (
        f"SELECT {', '.join(f'{expr} AS {alias}' for expr, alias in keys)}, r.focus, "
        "CASE WHEN r.predicted_class = mo.target_class THEN 1.0 ELSE 0.0 END AS hit, "
        f"ROW_NUMBER() OVER ({window} ORDER BY r.focus NULLS LAST) AS rn, "
        f"COUNT(r.focus) OVER ({window}) AS cnt, "
        f"ROW_NUMBER() OVER ({window} ORDER BY COALESCE(r.focus, 0)) AS rn0, "
        f"COUNT(*) OVER ({window}) AS cnt0, "
        f"r.focus - AVG(r.focus) OVER ({window}) AS dev "
        f"FROM mosaic_result r JOIN mosaic mo ON mo.id = r.mosaic_id WHERE {where}"
    )
    aliases = ", ".join(alias for _, alias in keys)
    stats = [
        "COUNT(*) AS n", "COUNT(x.focus) AS n_defined", "CAST(AVG(x.focus) AS DOUBLE PRECISION) AS mean_focus",
        _quantile(1, 2, "x.focus", "x.rn", "x.cnt", "median_focus"),
    ]
    if not per_class:
        stats += [
            _quantile(1, 4, "x.focus", "x.rn", "x.cnt", "q1_focus"),
            _quantile(3, 4, "x.focus", "x.rn", "x.cnt", "q3_focus"),
            "MIN(x.focus) AS min_focus", "MAX(x.focus) AS max_focus",
        ]
    stats.append("CAST(AVG(x.hit) AS DOUBLE PRECISION) AS mosaic_accuracy")
    if not per_class:
        stats += [
            "CAST(SQRT(SUM(x.dev * x.dev) / NULLIF(COUNT(x.focus) - 1, 0)) AS DOUBLE PRECISION) AS std_focus",
            "CAST((COUNT(*) - COUNT(x.focus)) * 1.0 / COUNT(*) AS DOUBLE PRECISION) AS undefined_share",
        ]
    stats.append(_quantile(1, 2, "COALESCE(x.focus, 0)", "x.rn0", "x.cnt0", "median_focus_undefined_as_zero"))
    return f"SELECT {aliases}, {', '.join(stats)} FROM ({inner}) x GROUP BY {aliases}"


def _status(dialect: str) -> str:
    """The status, with a running evaluation past its run's lease shown as crashed (as revision 0002)."""
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if dialect == "sqlite" else "CURRENT_TIMESTAMP"
    return f"CASE WHEN e.status = 'running' AND e.run_expires_at < {now} THEN 'crashed' ELSE e.status END AS status"


_EVALUATION_COLUMNS = (
    "e.id AS evaluation_id, e.checkpoint_id, e.method_id, e.mosaic_set_id, e.randomization, e.stage, e.layer, "
    "e.seed, e.audit_run_id"
)
_UNSTORED = "NOT EXISTS (SELECT 1 FROM evaluation_stats st WHERE st.evaluation_id = e.id)"
# Inside the LATERAL subquery the stored-row test is a one-time filter per evaluation, so an evaluation
# with a stored summary never reads its rows, whatever join order the planner picks outside.
_PER_EVALUATION = f"r.evaluation_id = e.id AND {_UNSTORED}"


def _live_columns(alias: str, columns: tuple[str, ...]) -> str:
    counted = {"n", "n_defined"}
    return ", ".join(f"COALESCE({alias}.{c}, 0) AS {c}" if c in counted else f"{alias}.{c}" for c in columns)


def _summary_live(dialect: str) -> str:
    keys = (("r.evaluation_id", "evaluation_id"),)
    if dialect == "postgresql":
        source = f"LEFT JOIN LATERAL ({_stats_select(keys, _PER_EVALUATION)}) l ON true"
    else:
        pending = f"r.evaluation_id IN (SELECT e.id FROM evaluation e WHERE {_UNSTORED})"
        source = f"LEFT JOIN ({_stats_select(keys, pending)}) l ON l.evaluation_id = e.id"
    return (
        f"CREATE VIEW evaluation_summary_live AS\nSELECT {_EVALUATION_COLUMNS}, {_status(dialect)}, "
        f"{_live_columns('l', STAT_COLUMNS)}\nFROM evaluation e\n{source}\nWHERE {_UNSTORED}\n"
    )


def _class_summary_live(dialect: str) -> str:
    keys = (("r.evaluation_id", "evaluation_id"), ("mo.target_class", "target_class"))
    if dialect == "postgresql":
        source = f"CROSS JOIN LATERAL ({_stats_select(keys, _PER_EVALUATION, per_class=True)}) l"
    else:
        pending = f"r.evaluation_id IN (SELECT e.id FROM evaluation e WHERE {_UNSTORED})"
        source = f"JOIN ({_stats_select(keys, pending, per_class=True)}) l ON l.evaluation_id = e.id"
    return (
        f"CREATE VIEW evaluation_class_summary_live AS\nSELECT e.id AS evaluation_id, l.target_class, "
        f"{', '.join(f'l.{c}' for c in CLASS_STAT_COLUMNS)}\nFROM evaluation e\n{source}\nWHERE {_UNSTORED}\n"
    )


def _summary(dialect: str) -> str:
    """Stored rows (a closed evaluation's status as a plain column, so a filter on it is estimated and indexed
    like one; only a running re-run needs the crashed test), then the live view."""
    stored = (f"{', '.join(f'st.{c}' for c in STAT_COLUMNS)}\n"
              "FROM evaluation e JOIN evaluation_stats st ON st.evaluation_id = e.id")
    return (
        f"CREATE VIEW evaluation_summary AS\nSELECT {_EVALUATION_COLUMNS}, e.status, {stored}\n"
        "WHERE e.status <> 'running'\nUNION ALL\n"
        f"SELECT {_EVALUATION_COLUMNS}, {_status(dialect)}, {stored}\nWHERE e.status = 'running'\nUNION ALL\n"
        f"SELECT evaluation_id, checkpoint_id, method_id, mosaic_set_id, randomization, stage, layer, seed, "
        f"audit_run_id, status, {', '.join(STAT_COLUMNS)} FROM evaluation_summary_live\n"
    )


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect`` ('postgresql' or 'sqlite').

    Starts from revision 0004's list and replaces ``evaluation_summary`` whole; a later revision
    starts from this list the same way.
    """
    result = [("evaluation_summary_live", _summary_live(dialect)),
              ("evaluation_class_summary_live", _class_summary_live(dialect))]
    for name, sql in _previous_views(dialect):
        result.append((name, _summary(dialect) if name == "evaluation_summary" else sql))
    return result


# PostgreSQL: the partition of an evaluation id, created (and attached, which only takes a SHARE UPDATE
# EXCLUSIVE lock on the parent, so concurrent COPY writers keep going) when it does not exist yet.
_PARTITION_FUNCTION = f"""
CREATE FUNCTION focus_result_partition(evaluation integer) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    k integer := evaluation / {PARTITION_WIDTH};
    name text := 'mosaic_result_p' || lpad(k::text, 6, '0');
BEGIN
    IF to_regclass(name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('focus_result_partition'), k);
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE mosaic_result INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('ALTER TABLE mosaic_result ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           name, k * {PARTITION_WIDTH}, (k + 1) * {PARTITION_WIDTH});
        END IF;
    END IF;
    RETURN name;
END
$$
"""
_TRIGGER_FUNCTION = """
CREATE FUNCTION focus_evaluation_partition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM focus_result_partition(NEW.id);
    RETURN NULL;
END
$$
"""
_TRIGGER = ("CREATE TRIGGER evaluation_result_partition AFTER INSERT ON evaluation "
            "FOR EACH ROW EXECUTE FUNCTION focus_evaluation_partition()")


def _result_columns() -> list[sa.Column]:
    return [
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("mosaic_id", sa.Integer(), autoincrement=False, nullable=False),
        *(sa.Column(c, sa.Double(), nullable=c == "focus") for c in _RESULT_VALUES[:-1]),
        sa.Column("predicted_class", sa.Integer(), nullable=False),
    ]


def _create_results(**kwargs) -> None:
    op.create_table(
        "mosaic_result", *_result_columns(),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_mosaic_result_evaluation_id_evaluation"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("evaluation_id", "mosaic_id", name=op.f("pk_mosaic_result")),
        **kwargs,
    )


def _move_results(partitioned: bool) -> None:
    """Rebuild ``mosaic_result`` (partitioned or plain) and move its rows into the new table."""
    op.execute("ALTER TABLE mosaic_result RENAME TO mosaic_result_moving")
    op.execute("ALTER TABLE mosaic_result_moving RENAME CONSTRAINT pk_mosaic_result TO pk_mosaic_result_moving")
    if partitioned:
        _create_results(postgresql_partition_by="RANGE (evaluation_id)")
        op.execute(_PARTITION_FUNCTION)
        op.execute("SELECT focus_result_partition(k * %d) FROM generate_series(0, "
                   "(SELECT COALESCE(MAX(id), 0) FROM evaluation) / %d) AS k" % (PARTITION_WIDTH, PARTITION_WIDTH))
        op.execute(_TRIGGER_FUNCTION)
        op.execute(_TRIGGER)
    else:
        op.execute("DROP TRIGGER evaluation_result_partition ON evaluation")
        op.execute("DROP FUNCTION focus_evaluation_partition()")
        _create_results()
    columns = ", ".join(("evaluation_id", "mosaic_id", *_RESULT_VALUES))
    op.execute(f"INSERT INTO mosaic_result ({columns}) SELECT {columns} FROM mosaic_result_moving")
    op.execute("DROP TABLE mosaic_result_moving CASCADE")  # the old partitions go with a partitioned table
    if not partitioned:
        op.execute("DROP FUNCTION focus_result_partition(integer)")


_INDEXED = ("checkpoint_id", "method_id", "mosaic_set_id", "audit_run_id")


def _stats_columns(columns: tuple[str, ...]) -> list[sa.Column]:
    counts = {"n", "n_defined"}
    return [sa.Column(c, sa.Integer() if c in counts else sa.Double(), nullable=c not in counts) for c in columns]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, _sql in reversed(_previous_views(dialect)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.create_table(
        "evaluation_stats",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        *_stats_columns(STAT_COLUMNS),
        sa.Column("computed_at", db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_evaluation_stats_evaluation_id_evaluation"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("evaluation_id", name=op.f("pk_evaluation_stats")),
    )
    op.create_table(
        "evaluation_class_stats",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("target_class", sa.Integer(), autoincrement=False, nullable=False),
        *_stats_columns(CLASS_STAT_COLUMNS),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation_stats.evaluation_id"],
                                name=op.f("fk_evaluation_class_stats_evaluation_id_evaluation_stats"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("evaluation_id", "target_class", name=op.f("pk_evaluation_class_stats")),
    )
    for column in _INDEXED:
        op.create_index(op.f(f"ix_evaluation_{column}"), "evaluation", [column])
    if dialect == "postgresql":
        _move_results(partitioned=True)
    for _name, sql in views(dialect):
        op.execute(sql)
    # Evaluations closed before this revision get their stored summary now (the live views' rows).
    closed = "SELECT id FROM evaluation WHERE status IN ('finished', 'failed')"
    now = "CURRENT_TIMESTAMP" if dialect == "postgresql" else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    class_rows = (f"SELECT evaluation_id, target_class, {', '.join(CLASS_STAT_COLUMNS)} "
                  f"FROM evaluation_class_summary_live WHERE evaluation_id IN ({closed})")
    op.execute(f"CREATE TEMPORARY TABLE focus_class_rows AS {class_rows}")
    op.execute(f"INSERT INTO evaluation_stats (evaluation_id, {', '.join(STAT_COLUMNS)}, computed_at) "
               f"SELECT evaluation_id, {', '.join(STAT_COLUMNS)}, {now} FROM evaluation_summary_live "
               f"WHERE evaluation_id IN ({closed})")
    op.execute(f"INSERT INTO evaluation_class_stats (evaluation_id, target_class, {', '.join(CLASS_STAT_COLUMNS)}) "
               f"SELECT evaluation_id, target_class, {', '.join(CLASS_STAT_COLUMNS)} FROM focus_class_rows")
    op.execute("DROP TABLE focus_class_rows")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, _sql in reversed(views(dialect)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    if dialect == "postgresql":
        _move_results(partitioned=False)
    for column in reversed(_INDEXED):
        op.drop_index(op.f(f"ix_evaluation_{column}"), table_name="evaluation")
    op.drop_table("evaluation_class_stats")
    op.drop_table("evaluation_stats")
    for _name, sql in _previous_views(dialect):
        op.execute(sql)
