"""Building the report: read the store, write each section's figures and tables, write the page.

The page is written to a temporary file first and moved into place, so a reader never sees a
half-written ``index.html``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import focus_core
from flows.worker import store
from flows.report.design import per_class_section, seeds_section
from flows.report.figures import (
    FigureWriter,
    cascading_section,
    distributions_section,
    layout_section,
    trained_vs_random_section,
)
from flows.report.page import page
from flows.results.names import shared_weights_notes
from flows.report.queries import (
    EvaluationData,
    audit_causes,
    audit_outcome,
    load_evaluations,
    stored_regressions,
    training_runs,
)
from flows.report.reliance import reliance_section
from flows.report.sample import sample_section
from flows.report.selection import checkpoint_names, latest_per_cell, method_key
from flows.report.tables import audits_section, paired_section, summary_section
from flows.report.training import training_section
from focus_core.errors import FocusError

__all__ = ["build_report"]

_FOOTER = (
    "Focus = (R_t1 + R_t2) / (R_1 + R_2 + R_3 + R_4), the share of an explanation's positive relevance that "
    "lands on the two target-class tiles of a 2x2 mosaic (Arias-Duart et al.); on an N x N mosaic with k target "
    "tiles, the share on those k of its N² tiles. A random explanation scores the chance level k/N² (0.5 on 2x2 "
    "mosaics with 2 target tiles, shown beside every median); a faithful method on a good model approaches 1. "
    "Undefined scores (no positive relevance) are counted apart, never as 0 or the chance level."
)


def build_report(out: Path, database_url: str | None = None, evaluations: list[int] | None = None) -> Path:
    """Build the static HTML report of the selected evaluations and return the path of ``index.html``.

    Parameters
    ----------
    out : Path
        Directory of the report; ``index.html`` and ``figures/*.png`` are written there (figures
        of an earlier build in that folder are replaced).
    database_url : str, optional
        The store (default ``FOCUS_DATABASE_URL``, else ``sqlite:///focus.db``).
    evaluations : list of int, optional
        Evaluation ids to report; default every finished evaluation. Unfinished ones among them
        are left out with a note.

    Returns
    -------
    Path
        ``out / "index.html"``.

    Raises
    ------
    FocusError
        When there is no finished evaluation to report, or a selected id is unknown.
    db.errors.StoreError
        When the database cannot be opened or is not at the current schema.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FocusError(f"The report folder '{out}' is a file: pass a directory with --out.")
    engine = store.engine_for(database_url)
    url_text = store.describe(database_url)
    evals, notes = load_evaluations(engine, evaluations, url_text)
    run_ids = None if evaluations is None else {run for e in evals for run, _ in e.runs_and_epochs}
    runs = training_runs(engine, run_ids)

    out.mkdir(parents=True, exist_ok=True)
    figures = FigureWriter(out)
    names = checkpoint_names(evals)
    audited = [e for e in evals if e.audit_run_id is not None]
    evals = latest_per_cell(evals)  # an audit re-measures a cell: the main tables and figures show the latest
    sections = [
        sample_section(engine, evals, names, figures),
        distributions_section(evals, names, runs, figures),
        summary_section(evals, names),
        paired_section(evals, names),
        per_class_section(evals, names, figures),
        trained_vs_random_section(evals, names, figures),
        seeds_section(evals, names, figures),
        cascading_section(evals, names, figures),
        training_section(evals, runs, figures),
        layout_section(evals, names, figures),
    ]
    reliance = reliance_section(engine, evals, names, figures)  # only when some evaluation ran the reliance pass
    if reliance is not None:
        sections.insert(4, reliance)
    if audited:
        regressions = stored_regressions(engine, {e.audit_run_id for e in audited})
        sections.insert(4, audits_section(audited, names, audit_outcome(engine), audit_causes(engine, audited),
                                          regressions))
    sections[0].notes[:0] = notes
    index = out / "index.html"
    partial = out / ".index.html.tmp"
    partial.write_text(page("Focus report", _header(evals, evaluations, url_text), sections, _FOOTER), encoding="utf-8")
    os.replace(partial, index)
    return index


def _header(evals: Sequence[EvaluationData], evaluations: list[int] | None, url_text: str) -> list[str]:
    """When and from what the page was made, what it holds, and when its evaluations finished."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    methods = sorted({e.method for e in evals}, key=method_key)
    header = [
        f"Generated {now} by focus-audit {focus_core.__version__} from {url_text}.",
        f"{len(evals)} finished evaluation(s) of {len({e.checkpoint_id for e in evals})} checkpoint(s) "
        f"on {len({e.mosaic_set_id for e in evals})} mosaic set(s); methods: {', '.join(methods)}"
        + ("." if evaluations is None else f"; selection: {', '.join(map(str, sorted(set(evaluations))))}."),
    ]
    finished = sorted(pd.to_datetime([e.finished_at for e in evals if e.finished_at is not None], utc=True))
    if finished:
        first, last = (f"{t:%Y-%m-%d %H:%M} UTC" for t in (finished[0], finished[-1]))
        header.append(f"Evaluations finished {first}" + ("" if first == last else f" to {last}") + ".")
    origins = {e.checkpoint_id: [(run, epoch) for _, run, epoch in e.origins] for e in evals}
    return header + shared_weights_notes(origins)
