"""Who holds a lease: the process (host, pid, start time) and the Prefect flow run behind a lease owner.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

``lease_holder`` has one row per run that holds leases (``evaluation.run_owner``, ``chunk_lease.owner``):
``host`` (the machine and its process namespace), ``pid``, ``process_started`` (the process's start time, so a
reused pid is told apart) and ``flow_run_id``. A lease whose holder's process is gone, or whose flow run has
ended, is taken over at once; a lease without a holder row (written before this revision) still waits for its
expiry. No view changes (:func:`views` hands 0009's on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

import db.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease_holder",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("process_started", sa.String(length=32), nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("since", db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_lease_holder")),
    )


def downgrade() -> None:
    op.drop_table("lease_holder")


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision: 0009's, unchanged (a later revision starts from this list)."""
    return ScriptDirectory.from_config(context.config).get_revision(down_revision).module.views(dialect)
