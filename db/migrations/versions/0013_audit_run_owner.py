"""The process behind a running audit run, and ``crashed`` audit runs.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

- ``audit_run.run_owner``: the lease owner of the run that opened the audit run (its ``lease_holder`` row
  names the process and the Prefect flow run), NULL once the audit run is closed and for audit runs opened before
  this revision.
- status ``crashed``: the run died (``kill -9``, a lost host) before closing the audit run; the next audit's start
  marks it so when its holder has certainly stopped (``flows.worker.leases.sweep_dead_runs``).

No view changes: the views of the revision before are dropped around the table's change (SQLite rebuilds the
table, and views would block it) and created again as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.view_migrations import create_views, drop_views, views_as_of

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_OLD_STATUSES = ("running", "finished", "failed")
_NEW_STATUSES = (*_OLD_STATUSES, "crashed")
_AUDIT_RUN = sa.table("audit_run", sa.column("status", sa.String))


def _status_check(statuses: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(s) for s in statuses)})"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views_as_of(down_revision, dialect))
    with op.batch_alter_table("audit_run") as batch:
        batch.add_column(sa.Column("run_owner", sa.String(length=64), nullable=True))
        batch.drop_constraint(op.f("ck_audit_run_status"), type_="check")
        batch.create_check_constraint(op.f("ck_audit_run_status"), _status_check(_NEW_STATUSES))
    create_views(views_as_of(down_revision, dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views_as_of(down_revision, dialect))
    op.execute(sa.update(_AUDIT_RUN).where(_AUDIT_RUN.c.status == "crashed").values(status="failed"))
    with op.batch_alter_table("audit_run") as batch:
        batch.drop_constraint(op.f("ck_audit_run_status"), type_="check")
        batch.create_check_constraint(op.f("ck_audit_run_status"), _status_check(_OLD_STATUSES))
        batch.drop_column("run_owner")
    create_views(views_as_of(down_revision, dialect))
