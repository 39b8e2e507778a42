"""The ``focus`` commands that read the store: results tables, the HTML report and the schema.

A read never creates the store: a SQLite file that does not exist is named in one sentence (and ``focus db current``
says it is empty) instead of being created empty.

Examples
--------
>>> RESULT_TABLES[0]
'evaluations'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flows.cli import params as opts
from flows.cli.errors import UsageError, info

__all__ = ["RESULT_TABLES", "cmd_db_current", "cmd_db_upgrade", "cmd_report", "cmd_results"]

RESULT_TABLES = ("evaluations", "compare", "epochs", "regressions", "checkpoints")


def _results_table(args: argparse.Namespace) -> Any:
    """The DataFrame of ``focus results <table>`` from the store's queries."""
    import db
    from db.engine import require_existing
    from flows.worker import store

    require_existing(opts.database_url(args))  # a read never creates the store (a misspelt SQLite path)
    engine = store.engine_for(opts.database_url(args))  # StoreError (one sentence) for an old schema
    if args.table == "evaluations":
        return _named(engine, db.evaluation_summary(engine, args.evaluations, mosaic_set_id=args.mosaic_set))
    if args.table == "compare":
        if args.mosaic_set is None:
            raise UsageError("`focus results compare` needs --mosaic-set ID (see `focus results evaluations`).")
        return _named(engine, db.compare_methods(engine, args.mosaic_set, randomization=args.randomization or "none"))
    if args.table == "epochs":
        run = db.latest_training_run(engine, args.training_run)
        if run is None:
            which = f"named {args.training_run!r} " if args.training_run else ""
            raise UsageError(f"No training run {which}is recorded: run `focus train` (or `focus demo`) first, or pass "
                             "--training-run with the id or name that `focus train` printed.")
        if args.training_run is None:
            info(f"epochs of the latest training run, {run} (--training-run ID or NAME picks another)")
        return db.training_curve(engine, run)
    if args.table == "regressions":
        from flows.results import analysis  # db returns the rows, focus_core.stats tests them

        return analysis.focus_regressions(engine, threshold=args.threshold if args.threshold is not None else 0.05)
    if args.table == "checkpoints":
        from flows.results.names import names_of  # a checkpoint several runs produced: named by all of them

        frame = db.checkpoints_to_audit(engine)
        named = names_of(engine, {int(c): label for c, label in zip(frame["checkpoint_id"], frame["label"])})
        return frame.assign(label=[named[int(c)] for c in frame["checkpoint_id"]])
    raise UsageError(f"Unknown table {args.table!r}: use one of {', '.join(RESULT_TABLES)}.")  # pragma: no cover


def _named(engine: Any, frame: Any) -> Any:
    """``frame`` with each ``checkpoint_name`` naming every training run that produced the weights, and each
    method of the disconnected setting marked so."""
    from flows.results.names import mark_disconnected, names_of

    if not len(frame):
        return frame
    frame = mark_disconnected(engine, frame)
    named = names_of(engine, {int(c): n for c, n in zip(frame["checkpoint_id"], frame["checkpoint_name"])})
    return frame.assign(checkpoint_name=[named[int(c)] for c in frame["checkpoint_id"]])


def cmd_results(args: argparse.Namespace) -> None:
    """Print (or ``--output``) a table: text fitted to 100 columns unless ``--wide``, or every column as CSV/JSON."""
    from flows.cli import result_text

    frame = result_text.integers(_results_table(args))
    if args.limit is not None:
        frame = frame.head(args.limit)
    columns = [c.strip() for c in (getattr(args, "columns", None) or "").split(",") if c.strip()]
    if columns:
        try:
            frame = result_text.select(frame, [_column_named(frame, c) for c in columns])
        except ValueError as error:
            raise UsageError(f"--columns: {error}.") from None
    if args.format == "csv":
        text = result_text.csv_safe(frame).to_csv(index=False)
    elif args.format == "json":
        text = result_text.records_json(frame)
    elif not len(frame):
        text = _nothing(args) + "\n"
    else:
        rendered = result_text.render(frame, args.table, wide=bool(getattr(args, "wide", False)),
                                      chosen=bool(columns))
        text = rendered.text + "\n"
        if rendered.left_out:
            info(f"{len(rendered.left_out)} more column(s) left out to fit 100 characters: --wide shows them")
    if args.output:
        Path(args.output).write_text(text)
        info(f"wrote {len(frame)} rows to {args.output}")
    else:
        sys.stdout.write(text)


def _column_named(frame: Any, name: str) -> str:
    """The column ``name`` names: a column of ``frame``, else the first whose header in the text table is ``name``
    (``id``, ``randomized``, ``median``...), else ``name`` itself (refused by ``select``, listing the columns)."""
    from flows.cli.result_text import HEADERS

    if name in frame.columns:
        return name
    return next((c for c in frame.columns if HEADERS.get(c) == name), name)


def _nothing(args: argparse.Namespace) -> str:
    """What an empty table means: nothing recorded yet, or (regressions) audits that found none."""
    if args.table == "regressions":
        import db
        from flows.worker import store

        audits = db.finished_audit_runs(store.engine_for(opts.database_url(args)))
        if audits:
            threshold = args.threshold if args.threshold is not None else 0.05
            return (f"(no regressions: {audits} finished audit run(s) found no median Focus that fell by more than "
                    f"{threshold})")
        return "(no audit has run yet: `focus audit` compares each marked checkpoint with its previous audit)"
    return f"(no {args.table} recorded yet)"


def cmd_report(args: argparse.Namespace) -> Path:
    from db.engine import require_existing
    from flows.report import build_report

    require_existing(opts.database_url(args))  # a read never creates the store
    path = build_report(Path(args.out), database_url=opts.database_url(args), evaluations=args.evaluations)
    print(path)
    return path


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    import db

    url = opts.database_url(args)
    before = db.current(url)
    after = db.upgrade(url)
    if before == after:
        print(f"The database is already at revision {after} (head).")
    else:
        print(f"Upgraded the database from revision {before or '(empty)'} to {after}.")


def cmd_db_current(args: argparse.Namespace) -> None:
    import db
    from db.engine import missing_sqlite_file

    url = opts.database_url(args)
    missing = missing_sqlite_file(url)  # reading it would create it
    revision = None if missing else db.current(url)
    head = db.head()
    if missing:
        print(f"(empty) - no focus-audit schema, no file at '{missing}'; run `focus db upgrade` to create it at "
              f"revision {head}.")
    elif revision is None:
        print(f"(empty) - no focus-audit schema; run `focus db upgrade` to create revision {head}.")
    elif revision == head:
        print(f"{revision} (head)")
    else:
        print(f"{revision} - behind head {head}; run `focus db upgrade`.")

