"""What the Alembic revisions that redefine views share (imported by ``db/migrations/versions/``, nothing else).

A revision that changes a view drops every view of the revision before it, changes its tables, and creates every
view again from its own list, which starts from the previous revision's list (views depend on each other, so
they are dropped in reverse creation order and created in order). A revision that defines no view function
leaves the views of the revision before it.
"""

from __future__ import annotations

from types import ModuleType

from alembic import context, op
from alembic.script import ScriptDirectory

__all__ = ["create_views", "drop_views", "revision_module", "views_as_of"]


def revision_module(revision: str) -> ModuleType:
    """The module of the Alembic ``revision`` of the migration being run."""
    return ScriptDirectory.from_config(context.config).get_revision(revision).module


def views_as_of(revision: str, dialect: str) -> list[tuple[str, str]]:
    """``(name, CREATE VIEW ...)`` of every view as of ``revision``, in creation order: the ``views(dialect)`` of
    the latest revision at or before it that defines one."""
    script = ScriptDirectory.from_config(context.config)
    found = script.get_revision(revision)
    while not hasattr(found.module, "views"):
        found = script.get_revision(found.down_revision)
    return found.module.views(dialect)


def drop_views(definitions: list[tuple[str, str]]) -> None:
    """Drop the views of ``definitions``, last created first (those missing are skipped)."""
    for name, _sql in reversed(definitions):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def create_views(definitions: list[tuple[str, str]]) -> None:
    """Create the views of ``definitions`` in their order."""
    for _name, sql in definitions:
        op.execute(sql)
