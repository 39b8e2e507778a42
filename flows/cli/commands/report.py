"""``focus report``: a static HTML report of the store's evaluations (:mod:`flows.cli.results`)."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "Build a static HTML report (figures and tables) from the store."
DESCRIPTION = "Build a static HTML page from the store: figures and summary tables of the selected evaluations."


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.results import cmd_report

    p.add_argument("--out", metavar="DIR", default="focus-report",
                   help="Directory of the report (index.html and figures).")
    p.add_argument("--evaluation", dest="evaluations", action="append", type=int, metavar="ID",
                   help="Only this evaluation, repeatable (default all).")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_report)
