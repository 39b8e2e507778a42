"""``focus db``: create or migrate the store's schema, or show its revision (:mod:`flows.cli.results`)."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "Create or migrate focus-audit's database schema."
DESCRIPTION = HELP


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.parser import CommandParser, add_command
    from flows.cli.results import cmd_db_current, cmd_db_upgrade

    actions = p.add_subparsers(dest="db_command", metavar="ACTION", parser_class=CommandParser)
    actions.required = True
    q = add_command(actions, "upgrade", "Create the schema, or migrate it to this version's head (idempotent).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_db_upgrade)
    q = add_command(actions, "current", "Print the schema revision of the database (and whether it is at head).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_db_current)
