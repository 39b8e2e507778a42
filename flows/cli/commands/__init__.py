"""One module per ``focus`` command (``checkpoint``: :mod:`flows.cli.checkpoint`), each adding its own options.

A module's :data:`HELP` and :data:`DESCRIPTION` are what ``focus --help`` lists; its ``add_options`` adds the
command's options (from the flow's pydantic model, :mod:`flows.params`), which :func:`flows.cli.parser.build_parser`
calls only for the command being parsed, so that ``focus --help`` reads no model at all.
"""

__all__ = ["COMMANDS"]

#: The commands, in the order ``focus --help`` lists them, each the name of its module here.
COMMANDS: tuple[str, ...] = (
    "train", "evaluate", "randomize", "sweep", "audit", "checkpoint", "results", "report", "db", "demo",
)
