"""Audit comparisons stored once: ``audit_history`` without a window over every audited evaluation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

- ``audit_comparison``: one row per finished, unrandomized audit evaluation (``evaluation_id``) with the one
  it is compared with (``previous_evaluation_id``: the same checkpoint, method and mosaic set in the latest
  earlier audit, by the audit's ``started_at``, then its id, then the evaluation's id; NULL for the first)
  and copies of the evaluations' key columns (``audit_run_id``, ``checkpoint_id``, ``method_id``,
  ``mosaic_set_id``, ``previous_audit_run_id``). ``db.audit_comparisons.refresh_audit_comparisons`` keeps it
  true when an audit evaluation is started or closed; the upgrade fills it from the audits stored.
- ``audit_history`` reads it instead of computing ``LAG`` over every audited evaluation (revision 0003): the
  same columns in the same order and the same numbers (both evaluations' stored summaries, which are what
  ``evaluation_summary`` shows for a finished evaluation), so a query that names a checkpoint or an audit run
  reads that one's rows through an index. 0003's window ordered ties within one audit arbitrarily; the
  evaluation's id now decides them.

Only the audit tables and ``audit_history`` change: every other view is the previous revision's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.view_migrations import create_views, drop_views, views_as_of

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PREVIOUS = down_revision

# The numbers are the stored summaries (``evaluation_stats``): an audit evaluation is in ``audit_comparison``
# only while it is finished (db.audit_comparisons), and closing an evaluation stores its summary in the same
# transaction (0005 stored those of the evaluations closed before it), so these are the rows
# ``evaluation_summary`` shows for them. Joining the tables, not that UNION ALL view, lets the planner find a few
# rows through their keys; the copied key columns spare a join with ``evaluation`` (cookbook 3's planning fell
# from about 9 to 2.6 ms without it).
AUDIT_HISTORY = """
CREATE VIEW audit_history AS
SELECT ac.audit_run_id, a.name AS audit_name, a.started_at AS audit_started_at,
       ac.evaluation_id, ac.checkpoint_id, c.label AS checkpoint_label, c.architecture,
       ac.method_id, m.name AS method_name, ac.mosaic_set_id,
       s.n, s.n_defined, s.median_focus, s.mean_focus,
       ac.previous_audit_run_id,
       ac.previous_evaluation_id,
       p.median_focus AS previous_median_focus,
       s.median_focus - p.median_focus AS median_change,
       s.mean_focus - p.mean_focus AS mean_change,
       c.lineage_id, l.name AS lineage, c.version AS checkpoint_version,
       ms.grid, ms.targets, CAST(ms.targets AS DOUBLE PRECISION) / (ms.grid * ms.grid) AS chance_level
FROM audit_comparison ac
JOIN evaluation_stats s ON s.evaluation_id = ac.evaluation_id
JOIN audit_run a ON a.id = ac.audit_run_id
JOIN model_checkpoint c ON c.id = ac.checkpoint_id
LEFT JOIN lineage l ON l.id = c.lineage_id
JOIN xai_method m ON m.id = ac.method_id
JOIN mosaic_set ms ON ms.id = ac.mosaic_set_id
LEFT JOIN evaluation_stats p ON p.evaluation_id = ac.previous_evaluation_id
"""

# The comparisons of the audits stored (the same window as db.audit_comparisons.COMPARISONS, over every group).
_BACKFILL = """
INSERT INTO audit_comparison (evaluation_id, audit_run_id, checkpoint_id, method_id, mosaic_set_id,
                              previous_evaluation_id, previous_audit_run_id)
SELECT e.id, e.audit_run_id, e.checkpoint_id, e.method_id, e.mosaic_set_id, LAG(e.id) OVER w,
       LAG(e.audit_run_id) OVER w
FROM evaluation e JOIN audit_run a ON a.id = e.audit_run_id
WHERE e.randomization = 'none' AND e.status = 'finished'
WINDOW w AS (PARTITION BY e.checkpoint_id, e.method_id, e.mosaic_set_id ORDER BY a.started_at, a.id, e.id)
"""

_INDEXED = ("audit_run_id", "checkpoint_id", "previous_evaluation_id")


def _previous_views(dialect: str) -> list[tuple[str, str]]:
    """The views before this revision."""
    return views_as_of(PREVIOUS, dialect)


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect``: the previous revision's list with
    ``audit_history`` replaced whole; a later revision starts from this list the same way."""
    return [(name, AUDIT_HISTORY if name == "audit_history" else sql) for name, sql in _previous_views(dialect)]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(_previous_views(dialect))
    op.create_table(
        "audit_comparison",
        sa.Column("evaluation_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("audit_run_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("method_id", sa.Integer(), nullable=False),
        sa.Column("mosaic_set_id", sa.Integer(), nullable=False),
        sa.Column("previous_evaluation_id", sa.Integer(), nullable=True),
        sa.Column("previous_audit_run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_audit_comparison_evaluation_id_evaluation"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["previous_evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_audit_comparison_previous_evaluation_id_evaluation"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("evaluation_id", name=op.f("pk_audit_comparison")),
    )
    for column in _INDEXED:
        op.create_index(op.f(f"ix_audit_comparison_{column}"), "audit_comparison", [column])
    op.execute(_BACKFILL)
    create_views(views(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views(dialect))
    for column in reversed(_INDEXED):
        op.drop_index(op.f(f"ix_audit_comparison_{column}"), table_name="audit_comparison")
    op.drop_table("audit_comparison")
    create_views(_previous_views(dialect))
