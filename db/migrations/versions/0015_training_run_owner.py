"""The process behind a running training run, and ``crashed`` training runs.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08

- ``training_run.run_owner``: the lease owner of the train flow run that works on the training run (its
  ``lease_holder`` row names the process and the Prefect flow run), NULL once the run is closed and for training
  runs closed before this revision.
- status ``crashed``: the train flow died (``kill -9``, a lost host) before closing the training run; the next
  sweep of dead runs (an audit's or a training's start: ``flows.worker.leases.sweep_dead_runs``) marks it so when
  its holder has certainly stopped. A later run of the same request takes the row over again.

No view changes: the views of the revision before are dropped around the table's change (SQLite rebuilds the
table, and views would block it) and created again as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.view_migrations import create_views, drop_views, views_as_of

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_OLD_STATUSES = ("running", "finished", "failed")
_NEW_STATUSES = (*_OLD_STATUSES, "crashed")
_TRAINING_RUN = sa.table("training_run", sa.column("status", sa.String))


def _status_check(statuses: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(s) for s in statuses)})"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views_as_of(down_revision, dialect))
    with op.batch_alter_table("training_run") as batch:
        batch.add_column(sa.Column("run_owner", sa.String(length=64), nullable=True))
        batch.drop_constraint(op.f("ck_training_run_status"), type_="check")
        batch.create_check_constraint(op.f("ck_training_run_status"), _status_check(_NEW_STATUSES))
    create_views(views_as_of(down_revision, dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_views(views_as_of(down_revision, dialect))
    op.execute(sa.update(_TRAINING_RUN).where(_TRAINING_RUN.c.status == "crashed").values(status="failed"))
    with op.batch_alter_table("training_run") as batch:
        batch.drop_constraint(op.f("ck_training_run_status"), type_="check")
        batch.create_check_constraint(op.f("ck_training_run_status"), _status_check(_OLD_STATUSES))
        batch.drop_column("run_owner")
    create_views(views_as_of(down_revision, dialect))
