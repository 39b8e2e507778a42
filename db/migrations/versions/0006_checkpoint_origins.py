"""Every training run and epoch that produced a checkpoint's weights.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A checkpoint is its weights (sha256): two training runs that produce byte-identical weights (the same
seed, data and recipe under two names) share one ``model_checkpoint`` row, whose ``training_run_id`` and
``epoch`` keep the first run's. ``checkpoint_origin`` holds one row per (checkpoint, training run, epoch)
that produced the weights, so every run is named; the training flow writes a row each time it registers
an epoch's checkpoint (idempotently). Backfilled from ``model_checkpoint.training_run_id`` and ``epoch``.
No view changes (:func:`views` hands 0005's on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_origin",
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("training_run_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(["checkpoint_id"], ["model_checkpoint.id"],
                                name=op.f("fk_checkpoint_origin_checkpoint_id_model_checkpoint"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_run_id"], ["training_run.id"],
                                name=op.f("fk_checkpoint_origin_training_run_id_training_run"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("checkpoint_id", "training_run_id", "epoch", name=op.f("pk_checkpoint_origin")),
    )
    op.create_index(op.f("ix_checkpoint_origin_training_run_id"), "checkpoint_origin", ["training_run_id"])
    op.execute(
        "INSERT INTO checkpoint_origin (checkpoint_id, training_run_id, epoch) "
        "SELECT id, training_run_id, epoch FROM model_checkpoint "
        "WHERE training_run_id IS NOT NULL AND epoch IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_checkpoint_origin_training_run_id"), table_name="checkpoint_origin")
    op.drop_table("checkpoint_origin")


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision: 0005's, unchanged (a later revision starts from this list)."""
    return ScriptDirectory.from_config(context.config).get_revision(down_revision).module.views(dialect)
