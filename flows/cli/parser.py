"""The ``focus`` argument parser: one sub-command per flow, the results, the report and the schema.

Each command's module in :mod:`flows.cli.commands` adds its options and names its handler (``handler``),
which :func:`flows.cli.main` calls with the parsed options. :func:`build_parser` adds the options of the one
command being parsed (all of them when none is named), so ``focus --help`` imports no flow model, torch or Prefect.

Examples
--------
>>> args = build_parser().parse_args(["results", "compare", "--mosaic-set", "3"])
>>> args.table, args.mosaic_set, args.handler.__name__
('compare', 3, 'cmd_results')
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Collection, Sequence
from typing import Any, NoReturn

from flows.cli import params as opts
from flows.cli.checkpoint import add_checkpoint_command
from flows.cli.commands import COMMANDS
from flows.cli.errors import EXIT_USAGE, PROG
from flows.cli.summary import add_output_options

__all__ = ["CommandParser", "SUMMARY_COMMANDS", "add_command", "build_parser", "command_of"]

#: The commands that end with a summary or ``--format json`` (:mod:`flows.cli.summary`).
SUMMARY_COMMANDS = ("train", "evaluate", "randomize", "sweep", "audit")


class CommandParser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block), exit status 2, no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 3` must not quietly mean `--epochs 3`
        kwargs.setdefault("formatter_class", opts.RegistryHelpFormatter)  # --method's help lists the registry
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_command(subparsers: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name, help=help, description=description or help
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback when something fails.")
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is no option), else ``None``.

    Examples
    --------
    >>> command_of(["--debug", "evaluate", "--weights", "w.pt"]), command_of(["--help"])
    ('evaluate', None)
    """
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(with_options: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``focus`` parser with one sub-command per flow and the store's commands.

    Every sub-command gets its options, or, with ``with_options``, only those named there (the others are listed
    with their help, which is all ``focus --help`` shows).
    """
    parser = CommandParser(
        prog=PROG,
        description="Measure how faithful feature-attribution explanations are with the Focus metric. "
        "Without PREFECT_API_URL the flows run in Prefect's local mode; with it, on that server.",
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback when something fails.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    commands.required = True
    for name in COMMANDS:
        if name == "checkpoint":
            add_checkpoint_command(commands, add_command, CommandParser)
            continue
        module = importlib.import_module(f"flows.cli.commands.{name}")
        p = add_command(commands, name, module.HELP, module.DESCRIPTION)
        if with_options is None or name in with_options:
            module.add_options(p)
            if name in SUMMARY_COMMANDS:  # what they print: a summary, or --format json; Prefect's log lines
                add_output_options(p)
    return parser
