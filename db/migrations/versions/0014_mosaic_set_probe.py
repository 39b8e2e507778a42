"""A mosaic set's probe: the patch stamped on its non-target tiles (a probe set), NULL for a clean set.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08

``mosaic_set`` gains ``probe``: the JSON form of the set's probe (``focus_core.probes.CornerPatch.to_dict``, e.g.
``{"kind": "corner_patch", "size": 3, "seed": 0, "corner": "random"}``), the part of the manifest besides its
tiles that changes the images explained; whoever rebuilds the set's mosaics from the store (the report's sample
mosaic) stamps it. Existing sets are filled from the request their evaluations recorded (``evaluation.metadata ->
request -> mosaics -> probe``); a set no evaluation recorded a probe for keeps NULL. No view changes.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

import db.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _recorded_probe(metadata: Any) -> dict[str, Any] | None:
    """The probe a recorded request's mosaic set carried (``None``: no request, or a clean set)."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    request = metadata.get("request") if isinstance(metadata, dict) else None
    mosaics = request.get("mosaics") if isinstance(request, dict) else None
    probe = mosaics.get("probe") if isinstance(mosaics, dict) else None
    return probe if isinstance(probe, dict) else None


def upgrade() -> None:
    op.add_column("mosaic_set", sa.Column("probe", db.types.JSONType, nullable=True))
    connection = op.get_bind()
    first = sa.text(  # one recorded request per mosaic set: every evaluation of a set explained the same mosaics
        "SELECT e.mosaic_set_id, e.metadata FROM evaluation e JOIN (SELECT mosaic_set_id, MIN(id) AS id "
        "FROM evaluation WHERE metadata IS NOT NULL GROUP BY mosaic_set_id) f ON f.id = e.id"
    )
    found = {int(set_id): _recorded_probe(metadata) for set_id, metadata in connection.execute(first)}
    table = sa.table("mosaic_set", sa.column("id", sa.Integer), sa.column("probe", db.types.JSONType))
    for set_id, probe in sorted(found.items()):
        if probe is not None:
            connection.execute(sa.update(table).where(table.c.id == set_id).values(probe=probe))


def downgrade() -> None:
    op.drop_column("mosaic_set", "probe")
