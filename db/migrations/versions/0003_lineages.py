"""Lineages: named, ordered series of checkpoints of one model, and the audit history that names them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- ``lineage``: a name (unique), the one model it holds (architecture, number of classes, input
  channels), whether the nightly audit follows it (``audit``) and where its checkpoints come from
  (``source``: ``training``, ``registered``, ``mlflow:<name>@<alias>``, ...).
- ``model_checkpoint.lineage_id``, ``version`` (ordered within the lineage, unique with it) and
  ``registered_at`` (when it joined the lineage); all NULL for a checkpoint outside any lineage.
- ``audit_history`` gains ``lineage_id``, ``lineage`` (its name) and ``checkpoint_version`` (after
  the columns it had).

SQLite: the columns are added with ``ALTER TABLE ... ADD COLUMN`` (no table rebuild, so the rows that
point at a checkpoint are never touched). Going down rebuilds ``model_checkpoint`` with its foreign keys
deferred and refills it under the same ids, so evaluations keep their checkpoint.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

import db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_FK = "fk_model_checkpoint_lineage_id_lineage"
_INDEX = "ix_model_checkpoint_lineage_version"
_COLUMNS = ("lineage_id", "version", "registered_at")
_COPY = "_focus_0003_model_checkpoint"

AUDIT_HISTORY = """
CREATE VIEW audit_history AS
SELECT a.id AS audit_run_id, a.name AS audit_name, a.started_at AS audit_started_at,
       s.evaluation_id, s.checkpoint_id, c.label AS checkpoint_label, c.architecture,
       s.method_id, m.name AS method_name, s.mosaic_set_id,
       s.n, s.n_defined, s.median_focus, s.mean_focus,
       LAG(a.id) OVER w AS previous_audit_run_id,
       LAG(s.evaluation_id) OVER w AS previous_evaluation_id,
       LAG(s.median_focus) OVER w AS previous_median_focus,
       s.median_focus - LAG(s.median_focus) OVER w AS median_change,
       s.mean_focus - LAG(s.mean_focus) OVER w AS mean_change,
       c.lineage_id, l.name AS lineage, c.version AS checkpoint_version
FROM evaluation_summary s
JOIN audit_run a ON a.id = s.audit_run_id
JOIN model_checkpoint c ON c.id = s.checkpoint_id
LEFT JOIN lineage l ON l.id = c.lineage_id
JOIN xai_method m ON m.id = s.method_id
WHERE s.randomization = 'none' AND s.status = 'finished'
WINDOW w AS (PARTITION BY s.checkpoint_id, s.method_id, s.mosaic_set_id ORDER BY a.started_at, a.id)
"""


def _previous_views(dialect: str) -> list[tuple[str, str]]:
    """The views of revision 0002, from its own module (one definition of each view)."""
    return ScriptDirectory.from_config(context.config).get_revision("0002").module.views(dialect)


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect`` ('postgresql' or 'sqlite').

    0002's list with ``audit_history`` replaced whole; a later revision starts from this list the same way.
    """
    return [(name, AUDIT_HISTORY if name == "audit_history" else sql) for name, sql in _previous_views(dialect)]


def _drop_views() -> None:
    for name, _sql in reversed(_previous_views(op.get_bind().dialect.name)):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def _create_views(sql_views: list[tuple[str, str]]) -> None:
    for _name, sql in sql_views:
        op.execute(sql)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    _drop_views()
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("architecture", sa.String(length=200), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("in_channels", sa.Integer(), nullable=True),
        sa.Column("audit", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("created_at", db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lineage")),
        sa.UniqueConstraint("name", name=op.f("uq_lineage_name")),
    )
    if dialect == "sqlite":  # ADD COLUMN with its foreign key: SQLite cannot add the constraint afterwards
        op.execute(f"ALTER TABLE model_checkpoint ADD COLUMN lineage_id INTEGER "
                   f"CONSTRAINT {_FK} REFERENCES lineage (id)")
    else:
        op.add_column("model_checkpoint", sa.Column("lineage_id", sa.Integer(), nullable=True))
        op.create_foreign_key(op.f(_FK), "model_checkpoint", "lineage", ["lineage_id"], ["id"])
    op.add_column("model_checkpoint", sa.Column("version", sa.Integer(), nullable=True))
    op.add_column("model_checkpoint", sa.Column("registered_at", db.types.UTCDateTime(), nullable=True))
    op.create_index(_INDEX, "model_checkpoint", ["lineage_id", "version"], unique=True)
    _create_views(views(dialect))


def _copied(constraint: sa.Constraint) -> sa.Constraint:
    """A reflected constraint of ``model_checkpoint``, by column names, for the rebuilt table."""
    columns = list(constraint.columns.keys())
    if isinstance(constraint, sa.PrimaryKeyConstraint):
        return sa.PrimaryKeyConstraint(*columns, name=constraint.name or "pk_model_checkpoint")
    if isinstance(constraint, sa.ForeignKeyConstraint):
        return sa.ForeignKeyConstraint(columns, [e.target_fullname for e in constraint.elements],
                                       name=constraint.name, ondelete=constraint.ondelete)
    if isinstance(constraint, sa.UniqueConstraint):
        return sa.UniqueConstraint(*columns, name=constraint.name)
    return sa.CheckConstraint(constraint.sqltext, name=constraint.name)


def _sqlite_drop_columns() -> None:
    """Rebuild ``model_checkpoint`` without the lineage columns, keeping every id (SQLite cannot drop a key column).

    Evaluations point at the checkpoints (``ON DELETE NO ACTION``): dropping the table with foreign keys
    deferred counts those references as violations, and inserting the checkpoints back under the same ids
    clears them before the transaction commits (Alembic's batch mode copies into a table it renames, which
    clears nothing, so the drop fails, or with ``ON DELETE CASCADE`` empties the children). The table is
    rebuilt from its own reflection, so columns a later revision added survive.
    """
    bind = op.get_bind()
    # pysqlite opens a transaction only before INSERT, UPDATE or DELETE: the savepoint makes the rebuild one
    # transaction (nested in the migration's where that has begun), so the deferred checks wait for its end
    bind.exec_driver_sql("SAVEPOINT focus_0003_rebuild")
    bind.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
    metadata = sa.MetaData()
    old = sa.Table("model_checkpoint", metadata, autoload_with=bind)  # and the tables its foreign keys name
    keep = [c.name for c in old.columns if c.name not in _COLUMNS]
    names = ", ".join(keep)
    bind.exec_driver_sql(f"CREATE TEMP TABLE {_COPY} AS SELECT {names} FROM model_checkpoint")
    constraints = [_copied(c) for c in list(old.constraints) if not set(c.columns.keys()) & set(_COLUMNS)]
    op.drop_table("model_checkpoint")
    metadata.remove(old)
    columns = [sa.Column(c.name, c.type, nullable=c.nullable) for c in old.columns if c.name in keep]
    sa.Table("model_checkpoint", metadata, *columns, *constraints).create(bind)
    bind.exec_driver_sql(f"INSERT INTO model_checkpoint ({names}) SELECT {names} FROM {_COPY}")
    bind.exec_driver_sql(f"DROP TABLE {_COPY}")
    bind.exec_driver_sql("RELEASE SAVEPOINT focus_0003_rebuild")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _drop_views()
    op.drop_index(_INDEX, table_name="model_checkpoint")
    if dialect == "sqlite":
        _sqlite_drop_columns()
    else:
        op.drop_constraint(op.f(_FK), "model_checkpoint", type_="foreignkey")
        for column in reversed(_COLUMNS):
            op.drop_column("model_checkpoint", column)
    op.drop_table("lineage")
    _create_views(_previous_views(dialect))
