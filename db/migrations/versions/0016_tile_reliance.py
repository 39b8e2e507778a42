"""Model reliance per tile, measured once per model and mosaic set, and its summaries beside Focus.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08

- ``reliance_pass``: one model (checkpoint and randomization, as an evaluation records them) on one mosaic set
  with one baseline (``focus_core.reliance.BASELINES``); ``natural_key`` hashes those (``db.keys.reliance_key``).
- ``mosaic_reliance``: per pass and mosaic, the intact mosaic's target logit and its model Focus (NULL where no
  drop is positive); ``tile_reliance``: per pass, mosaic and tile (row-major), the drop of the target logit.
- ``reliance_chunk_lease``: a chunk of a pass being measured by one run, as ``chunk_lease`` for evaluations.
- ``evaluation_reliance``: a finished evaluation's pass and the stored summaries of model Focus, the explainer gap
  and the rank agreement over its mosaics (``db.reliance``).
- ``evaluation_summary`` gains ``median_model_focus`` and ``median_explainer_gap`` after its last column (NULL
  for an evaluation without a reliance pass); every other view and column stays as it was.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types
from db.view_migrations import create_views, drop_views, views_as_of

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: The columns ``evaluation_summary`` gains, read from ``evaluation_reliance``.
RELIANCE_COLUMNS = ("median_model_focus", "median_explainer_gap")
_STATS = (
    "median_model_focus", "q1_model_focus", "q3_model_focus", "model_focus_low", "model_focus_high",
    "median_explainer_gap", "q1_explainer_gap", "q3_explainer_gap", "explainer_gap_low", "explainer_gap_high",
    "median_rank_agreement",
)
_PREFIX = "CREATE VIEW evaluation_summary AS\n"


def _summary(previous: str) -> str:
    """The previous ``evaluation_summary`` with the reliance columns after its last column."""
    if not previous.startswith(_PREFIX):  # pragma: no cover - guarded by the migration tests
        raise RuntimeError("Expected the previous evaluation_summary to start with its CREATE VIEW line.")
    reliance = ", ".join(f"er.{c}" for c in RELIANCE_COLUMNS)
    return (f"{_PREFIX}SELECT b.*, {reliance}\nFROM ({previous[len(_PREFIX):]}) b\n"
            "LEFT JOIN evaluation_reliance er ON er.evaluation_id = b.evaluation_id\n")


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision: the previous revision's, with ``evaluation_summary`` widened."""
    return [(name, _summary(sql) if name == "evaluation_summary" else sql)
            for name, sql in views_as_of(down_revision, dialect)]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views_as_of(down_revision, dialect))
    op.create_table(
        "reliance_pass",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("natural_key", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("mosaic_set_id", sa.Integer(), nullable=False),
        sa.Column("randomization", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=True),
        sa.Column("layer", sa.String(length=300), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("baseline", sa.String(length=16), nullable=False),
        sa.Column("created_at", db.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("randomization IN ('none', 'full', 'cascading', 'independent')",
                           name=op.f("ck_reliance_pass_randomization")),
        sa.ForeignKeyConstraint(["checkpoint_id"], ["model_checkpoint.id"],
                                name=op.f("fk_reliance_pass_checkpoint_id_model_checkpoint")),
        sa.ForeignKeyConstraint(["mosaic_set_id"], ["mosaic_set.id"],
                                name=op.f("fk_reliance_pass_mosaic_set_id_mosaic_set")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reliance_pass")),
        sa.UniqueConstraint("natural_key", name=op.f("uq_reliance_pass_natural_key")),
    )
    op.create_index(op.f("ix_reliance_pass_checkpoint_id"), "reliance_pass", ["checkpoint_id"])
    op.create_index(op.f("ix_reliance_pass_mosaic_set_id"), "reliance_pass", ["mosaic_set_id"])
    op.create_table(
        "mosaic_reliance",
        sa.Column("pass_id", sa.Integer(), nullable=False),
        sa.Column("mosaic_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("intact_logit", sa.Double(), nullable=False),
        sa.Column("model_focus", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["pass_id"], ["reliance_pass.id"],
                                name=op.f("fk_mosaic_reliance_pass_id_reliance_pass"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mosaic_id"], ["mosaic.id"], name=op.f("fk_mosaic_reliance_mosaic_id_mosaic"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pass_id", "mosaic_id", name=op.f("pk_mosaic_reliance")),
    )
    op.create_table(
        "tile_reliance",
        sa.Column("pass_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("mosaic_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tile", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("logit_drop", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["pass_id", "mosaic_id"], ["mosaic_reliance.pass_id", "mosaic_reliance.mosaic_id"],
                                name=op.f("fk_tile_reliance_pass_id_mosaic_reliance"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pass_id", "mosaic_id", "tile", name=op.f("pk_tile_reliance")),
    )
    op.create_table(
        "reliance_chunk_lease",
        sa.Column("pass_id", sa.Integer(), nullable=False),
        sa.Column("chunk", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("expires_at", db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pass_id"], ["reliance_pass.id"],
                                name=op.f("fk_reliance_chunk_lease_pass_id_reliance_pass"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pass_id", "chunk", name=op.f("pk_reliance_chunk_lease")),
    )
    op.create_table(
        "evaluation_reliance",
        sa.Column("evaluation_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pass_id", sa.Integer(), nullable=False),
        sa.Column("n_model_defined", sa.Integer(), nullable=False),
        *(sa.Column(c, sa.Double(), nullable=True) for c in _STATS[:5]),
        sa.Column("n_gap_defined", sa.Integer(), nullable=False),
        *(sa.Column(c, sa.Double(), nullable=True) for c in _STATS[5:]),
        sa.Column("computed_at", db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"],
                                name=op.f("fk_evaluation_reliance_evaluation_id_evaluation"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pass_id"], ["reliance_pass.id"],
                                name=op.f("fk_evaluation_reliance_pass_id_reliance_pass"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("evaluation_id", name=op.f("pk_evaluation_reliance")),
    )
    op.create_index(op.f("ix_evaluation_reliance_pass_id"), "evaluation_reliance", ["pass_id"])
    create_views(views(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views(dialect))
    op.drop_index(op.f("ix_evaluation_reliance_pass_id"), table_name="evaluation_reliance")
    op.drop_table("evaluation_reliance")
    op.drop_table("reliance_chunk_lease")
    op.drop_table("tile_reliance")
    op.drop_table("mosaic_reliance")
    op.drop_index(op.f("ix_reliance_pass_mosaic_set_id"), table_name="reliance_pass")
    op.drop_index(op.f("ix_reliance_pass_checkpoint_id"), table_name="reliance_pass")
    op.drop_table("reliance_pass")
    create_views(views_as_of(down_revision, dialect))
