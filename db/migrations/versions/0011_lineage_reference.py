"""A lineage's pinned reference: the version (or MLflow alias) the audit compares every new version with.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

``lineage.reference_version`` pins a version of the lineage, ``lineage.reference_alias`` an MLflow Model
Registry alias (e.g. ``champion``) resolved at each audit; at most one of both is set
(``ck_lineage_one_reference``), and ``reference_pinned_at`` says when. Both NULL: the reference is the
lineage's first audited version. No view changes (:func:`views` hands 0010's on); SQLite rebuilds the table
to add the check, so the views are dropped around it and created again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

import db.types
from db.view_migrations import create_views, drop_views, views_as_of

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    views = views_as_of(down_revision, op.get_bind().dialect.name)
    drop_views(views)
    with op.batch_alter_table("lineage") as batch:
        batch.add_column(sa.Column("reference_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reference_alias", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("reference_pinned_at", db.types.UTCDateTime(), nullable=True))
        batch.create_check_constraint(op.f("ck_lineage_one_reference"),
                                      "reference_version IS NULL OR reference_alias IS NULL")
    create_views(views)


def downgrade() -> None:
    views = views_as_of(down_revision, op.get_bind().dialect.name)
    drop_views(views)
    with op.batch_alter_table("lineage") as batch:
        batch.drop_constraint(op.f("ck_lineage_one_reference"), type_="check")
        batch.drop_column("reference_pinned_at")
        batch.drop_column("reference_alias")
        batch.drop_column("reference_version")
    create_views(views)


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision: 0010's, unchanged (a later revision starts from this list)."""
    return ScriptDirectory.from_config(context.config).get_revision(down_revision).module.views(dialect)
