"""Focus per epoch and method: which evaluations measured each epoch, and the view over them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

- ``training_epoch_evaluation``: one row per (training run, epoch, evaluation): the evaluations that
  measured an epoch's Focus, one per method the run measures (epoch 0 is the model before its first
  optimisation step). The training flow writes them with the epoch.
- ``training_epoch_focus`` shows one row per epoch AND method: ``evaluation_id``, ``method_id``,
  ``method_name``, ``focus_n``, ``focus_n_defined``, ``focus_median``, ``focus_mean``, ``focus_q1``,
  ``focus_q3`` from ``evaluation_summary``. An epoch recorded without evaluations (before this
  revision) keeps one row with the median and mean the run recorded itself and no method: which
  method that was is not recorded reliably, so it is not guessed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TRAINING_EPOCH_FOCUS = """
CREATE VIEW training_epoch_focus AS
SELECT t.id AS training_run_id, t.name AS training_run_name, t.architecture, t.config_hash,
       te.epoch, te.train_loss, te.train_accuracy, te.val_loss, te.val_accuracy,
       te.val_mean_class_accuracy,
       l.evaluation_id, s.method_id, m.name AS method_name,
       s.n AS focus_n, s.n_defined AS focus_n_defined,
       CASE WHEN l.evaluation_id IS NULL THEN te.focus_median ELSE s.median_focus END AS focus_median,
       CASE WHEN l.evaluation_id IS NULL THEN te.focus_mean ELSE s.mean_focus END AS focus_mean,
       s.q1_focus AS focus_q1, s.q3_focus AS focus_q3,
       te.seconds
FROM training_epoch te
JOIN training_run t ON t.id = te.training_run_id
LEFT JOIN training_epoch_evaluation l ON l.training_run_id = te.training_run_id AND l.epoch = te.epoch
LEFT JOIN evaluation_summary s ON s.evaluation_id = l.evaluation_id
LEFT JOIN xai_method m ON m.id = s.method_id
"""


def _previous_views(dialect: str) -> list[tuple[str, str]]:
    return ScriptDirectory.from_config(context.config).get_revision("0003").module.views(dialect)


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect``: 0003's with ``training_epoch_focus``
    replaced whole."""
    return [(name, TRAINING_EPOCH_FOCUS if name == "training_epoch_focus" else sql)
            for name, sql in _previous_views(dialect)]


def _recreate(definitions: list[tuple[str, str]]) -> None:
    for name, _sql in reversed(definitions):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for _name, sql in definitions:
        op.execute(sql)


def upgrade() -> None:
    op.create_table(
        "training_epoch_evaluation",
        sa.Column("training_run_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_training_epoch_evaluation_evaluation_id_evaluation"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_run_id"], ["training_run.id"],
                                name=op.f("fk_training_epoch_evaluation_training_run_id_training_run"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("training_run_id", "epoch", "evaluation_id", name=op.f("pk_training_epoch_evaluation")),
    )
    _recreate(views(op.get_bind().dialect.name))


def downgrade() -> None:
    _recreate(_previous_views(op.get_bind().dialect.name))
    op.drop_table("training_epoch_evaluation")
