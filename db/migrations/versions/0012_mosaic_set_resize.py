"""A mosaic set's resize: the shorter side its ImageFolder images were resized to before the centre crop.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

``mosaic_set`` gains ``resize`` (NULL for data that is not resized, the bundled digits), beside ``tile_size``: two
preprocessings of one folder are two mosaic sets a reader tells apart by these two columns. Existing sets are
filled from the request their evaluations recorded (``evaluation.metadata -> request -> dataset``): its ``resize``,
else 256 for an ``image_folder`` request (what an empty resize loaded as when they were computed); a set no
evaluation recorded a request for (or one of the digits) keeps NULL. No view changes (:func:`views` hands the
previous revision's on).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: What an ImageFolder request without a resize was loaded with before this revision.
LOADER_RESIZE = 256


def _recorded_resize(metadata: Any) -> int | None:
    """The resize a recorded request's dataset was loaded with (``None``: no request, or not an ImageFolder)."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    request = metadata.get("request") if isinstance(metadata, dict) else None
    dataset = request.get("dataset") if isinstance(request, dict) else None
    if not isinstance(dataset, dict) or dataset.get("kind") != "image_folder":
        return None
    resize = dataset.get("resize")
    return int(resize) if isinstance(resize, int) and not isinstance(resize, bool) else LOADER_RESIZE


def upgrade() -> None:
    op.add_column("mosaic_set", sa.Column("resize", sa.Integer(), nullable=True))
    connection = op.get_bind()
    first = sa.text(  # one recorded request per mosaic set: every evaluation of a set loaded the same tiles
        "SELECT e.mosaic_set_id, e.metadata FROM evaluation e JOIN (SELECT mosaic_set_id, MIN(id) AS id "
        "FROM evaluation WHERE metadata IS NOT NULL GROUP BY mosaic_set_id) f ON f.id = e.id"
    )
    found = {int(set_id): _recorded_resize(metadata) for set_id, metadata in connection.execute(first)}
    update = sa.text("UPDATE mosaic_set SET resize = :resize WHERE id = :id")
    rows = [{"id": set_id, "resize": resize} for set_id, resize in sorted(found.items()) if resize is not None]
    if rows:
        connection.execute(update, rows)


def downgrade() -> None:
    op.drop_column("mosaic_set", "resize")


def views(dialect: str) -> list[tuple[str, str]]:
    """Every view as of this revision: the previous revision's, unchanged (a later revision starts from this list)."""
    return ScriptDirectory.from_config(context.config).get_revision(down_revision).module.views(dialect)
