"""The ``focus`` command line: every flow, the results, the report and the store's schema.

Each command builds the flow's pydantic parameters (:mod:`flows.params`) from its options and
runs the flow in this process. Without ``PREFECT_API_URL`` the command starts a temporary Prefect
API for its flows and stops it when it ends (:mod:`flows.cli.local_api`); with it, the run is recorded
on that server (and shows in its UI). To run on a work pool's workers instead, trigger the
deployment (``prefect deployment run`` or the UI).

A mistake the user can fix (a bad option, a missing file, a database at an old schema version)
ends with one line on stderr and exit status 2; ``--debug`` shows the traceback instead.

Examples
--------
::

    focus db upgrade
    focus train --epochs 5
    focus evaluate --weights checkpoints/digits/final.pt --method gradcam --method lrp
    focus checkpoint register --lineage digits-prod --weights s3://models/digits.pt --arch digits_cnn \
        --num-classes 10 --in-channels 1 --audit
    focus results --format csv > focus.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from flows.cli.run import prefect_target, run_flow
from flows.cli.errors import (
    EXIT_FAILED,
    EXIT_USAGE,
    PROG,
    UsageError,
    is_user_error,
    one_line,
    user_cause,
)
from flows.cli import flow_summaries as _flow_summaries  # noqa: F401 - registers the flows' summaries
from flows.cli import summary
from flows.cli.params import given_flags
from flows.cli.parser import build_parser, command_of
from flows.cli.local_api import LocalApiError

__all__ = ["main", "build_parser", "UsageError", "prefect_target", "run_flow"]


def _given_url(args: argparse.Namespace) -> str | None:
    """The ``--database-url`` given, else ``None``."""
    return getattr(args, "database_url", None)


def _use_database(args: argparse.Namespace) -> None:
    """``--database-url`` wins over ``$FOCUS_DATABASE_URL`` for everything this process runs."""
    if getattr(args, "database_url", None):
        os.environ["FOCUS_DATABASE_URL"] = args.database_url


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``focus`` command and return its exit status: 0, 1 (failed), 2 (a user mistake) or 130 (Ctrl-C)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the local mode's temporary server (flows.cli.local_api): on a busy laptop it needs more than Prefect's
    # 20 s default
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    args = build_parser({command} if command else set()).parse_args(argv)
    debug = bool(args.debug or os.environ.get("FOCUS_DEBUG"))
    if debug:
        os.environ["FOCUS_DEBUG"] = "1"
    action = getattr(args, "db_command", None) or getattr(args, "checkpoint_command", None)
    prog = f"{PROG} {args.command}" + (f" {action}" if action else "")
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        _use_database(args)
        if args.command in summary.SUMMARIES:  # the flow commands: Prefect's console kept quiet by run_flow
            summary.emit(args.command, handler(args), args)
        else:
            handler(args)
    except LocalApiError as error:  # the command was right; the same command may succeed on a calmer machine
        print(f"{prog}: failed: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rows already written are kept, run the same command to finish.", file=sys.stderr)
        return 130
    except BaseException as error:  # noqa: BLE001 - the top of the command line
        if isinstance(error, SystemExit):
            raise
        if debug:
            raise
        flags = given_flags(args) | ({"database_url": ("--database-url", None)} if _given_url(args) else {})
        if is_user_error(error):
            print(f"{prog}: error: {one_line(error, flags)}", file=sys.stderr)
            return EXIT_USAGE
        cause = user_cause(error)
        if cause is not None:
            print(f"{prog}: error: {one_line(cause, flags)}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"{prog}: failed: {type(error).__name__}: {one_line(error)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
