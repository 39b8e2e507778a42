"""Per-epoch Focus from the stored summaries, and the latest audit through an index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

- ``training_epoch_focus`` joins each epoch's evaluations with their stored summaries
  (``evaluation_stats``) through their keys instead of joining the ``evaluation_summary`` view. The planner
  cannot push a join key into that UNION ALL (its branches are joins), so every query of the view built the
  summary row of every evaluation in the store and filtered them per epoch: 116 buffers at 977 evaluations
  against 15 at 89 for the same five epochs. The columns, their order and their numbers stay those of revision
  0007: ``flows.train`` links an epoch's evaluations (``db.record_epoch``) after closing them, and closing an
  evaluation stores its summary in the same transaction, so the stored row is what ``evaluation_summary``
  shows. An evaluation linked while still open (only possible through ``db.record_epoch`` called by hand) shows
  its method but no statistics until it is closed.
- ``ix_audit_run_started_at`` on ``audit_run (started_at, id)``: the latest audit (the SQL cookbook's third
  query, ``ORDER BY started_at DESC, id DESC LIMIT 1``) is one index probe at any number of audits.

Every other view is the previous revision's.
"""

from __future__ import annotations

from alembic import op

from db.view_migrations import create_views, drop_views, views_as_of

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PREVIOUS = down_revision

TRAINING_EPOCH_FOCUS = """
CREATE VIEW training_epoch_focus AS
SELECT t.id AS training_run_id, t.name AS training_run_name, t.architecture, t.config_hash,
       te.epoch, te.train_loss, te.train_accuracy, te.val_loss, te.val_accuracy,
       te.val_mean_class_accuracy,
       l.evaluation_id, e.method_id, m.name AS method_name,
       s.n AS focus_n, s.n_defined AS focus_n_defined,
       CASE WHEN l.evaluation_id IS NULL THEN te.focus_median ELSE s.median_focus END AS focus_median,
       CASE WHEN l.evaluation_id IS NULL THEN te.focus_mean ELSE s.mean_focus END AS focus_mean,
       s.q1_focus AS focus_q1, s.q3_focus AS focus_q3,
       te.seconds,
       ms.grid, ms.targets, CAST(ms.targets AS DOUBLE PRECISION) / (ms.grid * ms.grid) AS chance_level
FROM training_epoch te
JOIN training_run t ON t.id = te.training_run_id
LEFT JOIN training_epoch_evaluation l ON l.training_run_id = te.training_run_id AND l.epoch = te.epoch
LEFT JOIN evaluation e ON e.id = l.evaluation_id
LEFT JOIN evaluation_stats s ON s.evaluation_id = l.evaluation_id
LEFT JOIN mosaic_set ms ON ms.id = e.mosaic_set_id
LEFT JOIN xai_method m ON m.id = e.method_id
"""

_AUDIT_RUN_INDEX = ("ix_audit_run_started_at", ["started_at", "id"])


def _previous_views(dialect: str) -> list[tuple[str, str]]:
    """The views before this revision."""
    return views_as_of(PREVIOUS, dialect)


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect``: the previous revision's list with
    ``training_epoch_focus`` replaced whole; a later revision starts from this list the same way."""
    return [(name, TRAINING_EPOCH_FOCUS if name == "training_epoch_focus" else sql)
            for name, sql in _previous_views(dialect)]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(_previous_views(dialect))
    name, columns = _AUDIT_RUN_INDEX
    op.create_index(op.f(name), "audit_run", columns)
    create_views(views(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views(dialect))
    op.drop_index(op.f(_AUDIT_RUN_INDEX[0]), table_name="audit_run")
    create_views(_previous_views(dialect))
