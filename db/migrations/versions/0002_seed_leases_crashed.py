"""The randomization seed in an evaluation's identity, chunk leases, and crashed evaluations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

- ``evaluation.seed``: the seed of the randomization (NULL for an unrandomized model). It is part
  of ``natural_key`` now; every existing key is recomputed with the seed the evaluation was
  requested with (``metadata.request.randomization.seed``, else 0, the only default there was).
- ``evaluation.run_owner`` and ``evaluation.run_expires_at``: the run working on a running
  evaluation and until when it has said it is alive (it renews that while it works); a running
  evaluation past that time is shown as ``crashed`` by ``evaluation_summary`` and taken over by the
  next run of the same request.
- status ``crashed``: the run died (killed, cancelled, lost its worker) before closing it.
- ``chunk_lease``: one row per chunk being computed, so that concurrent runs of one request split
  the chunks; an expired lease is taken over.
- ``evaluation_summary`` gains ``seed`` (after ``layer``) and shows a running evaluation whose run
  has expired as ``crashed``; ``audit_history`` is recreated on it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

import db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OLD_STATUSES = ("pending", "running", "finished", "failed")
_NEW_STATUSES = (*_OLD_STATUSES, "crashed")


def _status_check(statuses: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(s) for s in statuses)})"


def _initial_views() -> tuple[tuple[str, str], ...]:
    """The views of revision 0001, from its own module (one definition of each view)."""
    return ScriptDirectory.from_config(context.config).get_revision("0001").module.VIEWS


def _summary_columns(dialect: str) -> str:
    """The seed, and the status with a running evaluation past its run's lease shown as crashed.

    The time is UTC on both databases. SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text, and its
    CURRENT_TIMESTAMP has whole seconds only (up to a second late), so there the comparison is with
    strftime's milliseconds, which compare as text in time order.
    """
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if dialect == "sqlite" else "CURRENT_TIMESTAMP"
    return (
        "e.layer, e.seed, e.audit_run_id, "
        f"CASE WHEN e.status = 'running' AND e.run_expires_at < {now} THEN 'crashed' ELSE e.status END "
        "AS status,"
    )


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision, in creation order, for ``dialect`` ('postgresql' or 'sqlite').

    A later revision that changes a view starts from this list (through ``ScriptDirectory``) and
    replaces whole definitions, so that each view has one definition per revision.
    """
    result = []
    for name, sql in _initial_views():
        if name == "evaluation_summary":
            sql = sql.replace("e.layer, e.audit_run_id, e.status,", _summary_columns(dialect))
        result.append((name, sql))
    return result


def _views(with_seed: bool) -> list[tuple[str, str]]:
    return views(op.get_bind().dialect.name) if with_seed else list(_initial_views())


def _key(row: Any, seed: int | None, with_seed: bool) -> str:
    """``db.keys.evaluation_key`` as of this revision (frozen here: a migration must not follow later code)."""
    components = {
        "checkpoint": int(row.checkpoint_id),
        "method": int(row.method_id),
        "mosaic_set": int(row.mosaic_set_id),
        "randomization": row.randomization,
        "stage": None if row.stage is None else int(row.stage),
        "layer": row.layer,
        "audit_run": None if row.audit_run_id is None else int(row.audit_run_id),
    }
    if with_seed:
        components["seed"] = seed
    payload = json.dumps(components, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _requested_seed(row: Any) -> int | None:
    if row.randomization == "none":
        return None
    metadata = row.metadata
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    seed = ((metadata or {}).get("request") or {}).get("randomization", {}).get("seed")
    return int(seed) if seed is not None else 0


_EVALUATION = sa.table(
    "evaluation",
    sa.column("id", sa.Integer), sa.column("checkpoint_id", sa.Integer), sa.column("method_id", sa.Integer),
    sa.column("mosaic_set_id", sa.Integer), sa.column("randomization", sa.String), sa.column("stage", sa.Integer),
    sa.column("layer", sa.String), sa.column("audit_run_id", sa.Integer), sa.column("seed", sa.BigInteger),
    sa.column("natural_key", sa.String), sa.column("metadata", db.types.JSONType), sa.column("status", sa.String),
)


def _drop_views() -> None:
    for name, _sql in reversed(_initial_views()):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def _create_views(with_seed: bool) -> None:
    for _name, sql in _views(with_seed):
        op.execute(sql)


def upgrade() -> None:
    _drop_views()  # SQLite rebuilds the table below, and views would block it
    with op.batch_alter_table("evaluation") as batch:
        batch.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("run_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("run_expires_at", db.types.UTCDateTime(), nullable=True))
        batch.drop_constraint(op.f("ck_evaluation_status"), type_="check")
        batch.create_check_constraint(op.f("ck_evaluation_status"), _status_check(_NEW_STATUSES))
    connection = op.get_bind()
    for row in connection.execute(sa.select(_EVALUATION)).all():
        seed = _requested_seed(row)
        connection.execute(
            sa.update(_EVALUATION).where(_EVALUATION.c.id == row.id)
            .values(seed=seed, natural_key=_key(row, seed, with_seed=True))
        )
    op.create_table(
        "chunk_lease",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("chunk", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("expires_at", db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_id"], ["evaluation.id"], name=op.f("fk_chunk_lease_evaluation_id_evaluation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("evaluation_id", "chunk", name=op.f("pk_chunk_lease")),
    )
    _create_views(with_seed=True)


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(_EVALUATION)).all()
    keys = {}
    for row in rows:
        key = _key(row, None, with_seed=False)
        if key in keys:
            raise RuntimeError(
                f"Cannot downgrade below 0002: evaluations {keys[key]} and {row.id} differ only in their "
                "randomization seed, which revision 0001 cannot tell apart; delete one of them first."
            )
        keys[key] = row.id
    _drop_views()
    op.drop_table("chunk_lease")
    for row in rows:
        status = "failed" if row.status == "crashed" else row.status
        connection.execute(
            sa.update(_EVALUATION).where(_EVALUATION.c.id == row.id)
            .values(natural_key=_key(row, None, with_seed=False), status=status)
        )
    with op.batch_alter_table("evaluation") as batch:
        batch.drop_constraint(op.f("ck_evaluation_status"), type_="check")
        batch.create_check_constraint(op.f("ck_evaluation_status"), _status_check(_OLD_STATUSES))
        batch.drop_column("run_expires_at")
        batch.drop_column("run_owner")
        batch.drop_column("seed")
    _create_views(with_seed=False)
