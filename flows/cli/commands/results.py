"""``focus results``: a table of recorded results as text, CSV or JSON (:mod:`flows.cli.results`)."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "Print recorded results as a text table, CSV or JSON."
DESCRIPTION = (
    "Print a table from the store. evaluations: median, quartiles and mosaic accuracy of every evaluation; "
    "compare: the methods side by side on one mosaic set; epochs: loss, accuracy and Focus per epoch of a "
    "training run; regressions: audits whose median Focus fell, with the paired test; checkpoints: those "
    "marked for the nightly audit."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.results import RESULT_TABLES, cmd_results

    p.add_argument("table", nargs="?", default="evaluations", choices=RESULT_TABLES,
                   help="Which table to print (default evaluations).")
    p.add_argument("--evaluation", dest="evaluations", action="append", type=int, metavar="ID",
                   help="evaluations: only this evaluation, repeatable (default all).")
    p.add_argument("--mosaic-set", type=int, metavar="ID", help="evaluations, compare: only this mosaic set.")
    p.add_argument("--randomization", choices=("none", "full", "cascading", "independent"),
                   help="compare: the randomization kind to compare (default none).")
    p.add_argument("--training-run", metavar="ID|NAME",
                   help="epochs: the training run, by id or name (default: the latest; the demo's is demo-digits).")
    p.add_argument("--threshold", type=float, metavar="DROP",
                   help="regressions: a fall in median Focus larger than this (default 0.05).")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="Output format (default text).")
    p.add_argument("--output", "-o", metavar="FILE", help="Write to this file instead of standard output.")
    p.add_argument("--limit", type=int, metavar="N", help="Print at most N rows (default all).")
    p.add_argument("--columns", metavar="A,B,...",
                   help="Only these columns, by their names in the store, in this order.")
    p.add_argument("--wide", action="store_true", help="text: every column, cells uncut (default: fit 100 columns).")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_results)
