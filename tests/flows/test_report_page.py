"""``focus report``: the static page built from a real store, checked in headless Chromium.

The module trains a digits CNN on 16x16 tiles for three epochs (seconds on the CPU), scores real Focus
with GradCAM, LRP and the random control on seeded mosaic sets (trained, fully random,
cascading stages, two fixed layouts, per-epoch validation), and writes it all through the
``db`` write API into SQLite and PostgreSQL. The tests then build the report and compare every
table row with statistics computed here from the database rows, and open the page in Debian's
``chromium`` to check that every figure loads. In CI a missing Chromium fails the test.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sqlalchemy import text

import db
from flows.worker import store
from focus_core import models, stats
from focus_core.errors import FocusError
from tests import postgres
from tests.recorded_store import EPOCHS, METHODS, Record, build_record, write_record

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio",
)  # fmt: skip


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Record:
    return build_record(tmp_path_factory.mktemp("report-weights"))


@dataclass
class Built:
    url: str
    ids: dict[str, Any]
    index: Path


@pytest.fixture(scope="module")
def sqlite_report(record: Record, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The record in a SQLite store and its report, built once for the tests that only read them."""
    from flows.report import build_report

    folder = tmp_path_factory.mktemp("report-sqlite")
    url = f"sqlite:///{folder / 'focus.db'}"
    db.upgrade(url)
    ids = write_record(url, record)
    return Built(url, ids, build_report(folder / "report", database_url=url))


# --------------------------------------------------------------------------- reading the page back


class _Page(HTMLParser):
    """Table rows (by table id: data-* attributes and cell texts), images and external references."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.headers: dict[str, list[str]] = {}
        self._th: list[str] | None = None
        self.images: list[str] = []
        self.external: list[str] = []
        self.sections: list[str] = []
        self.missing: list[str] = []
        self.notes: list[str] = []
        self.image_check: str | None = None
        self._table: str | None = None
        self._row: dict[str, Any] | None = None
        self._cell: list[str] | None = None
        self._para: tuple[str, list[str]] | None = None
        self._pre = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if key in a and re.match(r"^(https?:)?//", a[key]):
                self.external.append(a[key])
        if tag in ("link", "script") and (a.get("src") or a.get("href")):
            self.external.append(a.get("src") or a.get("href"))
        if tag == "table":
            self._table = a.get("id", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None and any(k.startswith("data-") for k in a):
            self._row = {"attrs": {k[5:]: v for k, v in a.items() if k.startswith("data-")}, "cells": []}
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "th" and self._table is not None:
            self._th = []
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "p" and a.get("class") in ("missing", "note"):
            self._para = (a["class"], [])
        elif tag == "pre" and a.get("id") == "image-check":
            self._pre = True
            self.image_check = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "th" and self._th is not None:
            self.headers.setdefault(self._table, []).append("".join(self._th).strip())
            self._th = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._para is not None:
            (self.missing if self._para[0] == "missing" else self.notes).append("".join(self._para[1]))
            self._para = None
        elif tag == "pre":
            self._pre = False

    def handle_data(self, text_: str) -> None:
        if self._cell is not None:
            self._cell.append(text_)
        if self._th is not None:
            self._th.append(text_)
        if self._para is not None:
            self._para[1].append(text_)
        if self._pre:
            self.image_check += text_


def parse_page(html_text: str) -> _Page:
    parser = _Page()
    parser.feed(html_text)
    parser.close()
    return parser


def _targets_from_db(url: str, evaluation_id: int, mosaic_ids: list[int]) -> np.ndarray:
    """The target class of each of an evaluation's mosaics, in the order given."""
    with store.engine_for(url).connect() as connection:
        rows = dict(connection.execute(text(
            "SELECT m.id, m.target_class FROM mosaic m JOIN mosaic_result r ON r.mosaic_id = m.id "
            "WHERE r.evaluation_id = :e"), {"e": evaluation_id}).all())
    return np.array([rows[m] for m in mosaic_ids])


def _scores_from_db(url: str) -> dict[int, dict[int, float]]:
    """{evaluation_id: {mosaic_id: focus (NaN when NULL)}} straight from ``mosaic_result``."""
    out: dict[int, dict[int, float]] = {}
    with store.engine_for(url).connect() as connection:
        rows = connection.execute(text("SELECT evaluation_id, mosaic_id, focus FROM mosaic_result"))
        for evaluation_id, mosaic_id, focus in rows:
            out.setdefault(int(evaluation_id), {})[int(mosaic_id)] = math.nan if focus is None else float(focus)
    return out


def check_tables(page_: _Page, url: str, finished: list[int], unfinished: list[int]) -> None:
    """The summary and paired tables hold exactly the statistics of the database rows."""
    scores = _scores_from_db(url)
    summary = {int(r["attrs"]["evaluation-id"]): r for r in page_.tables["summary-table"]}
    assert sorted(summary) == sorted(finished)
    assert not set(summary) & set(unfinished)
    for evaluation_id, row_ in summary.items():
        values = np.array(list(scores[evaluation_id].values()))
        defined = values[~np.isnan(values)]
        median, mean = float(np.median(defined)), float(defined.mean())
        q1, q3 = np.percentile(defined, [25, 75])
        attrs, cells = row_["attrs"], row_["cells"]
        assert int(attrs["n"]) == values.size and int(attrs["n-defined"]) == defined.size
        assert float(attrs["median"]) == pytest.approx(median, abs=1e-12)
        assert float(attrs["mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(attrs["q1"]) == pytest.approx(q1, abs=1e-12) and float(attrs["q3"]) == pytest.approx(q3, abs=1e-12)
        low, high = stats.bootstrap_median_ci(values, 0.95, 2000, seed=0)
        assert (float(attrs["ci-low"]), float(attrs["ci-high"])) == pytest.approx((low, high), abs=1e-12)
        # Quantus's convention beside ours, and the interval that resamples target classes beside the mosaic one
        assert float(attrs["median-undefined-as-zero"]) == pytest.approx(float(np.median(np.nan_to_num(values))))
        classes = _targets_from_db(url, evaluation_id, list(scores[evaluation_id]))
        cluster = stats.cluster_bootstrap_median_ci(values, classes, 0.95, 2000, seed=0)
        assert (float(attrs["cluster-ci-low"]), float(attrs["cluster-ci-high"])) == pytest.approx(cluster, abs=1e-12)
        # what a reader sees: n, undefined share, median [CI], mean, q1, q3 with 3 decimals
        seen = dict(zip(page_.headers["summary-table"], cells, strict=True))
        # the demo's 2x2 mosaics with two target tiles: chance level 0.5, said once above the table
        assert (attrs["grid"], attrs["targets"], float(attrs["chance-level"])) == ("2", "2", 0.5)
        assert "chance" not in seen  # every row's: said once, above the table
        # the set named short (id, dataset, tile size; its layout when fixed), its whole identity on hover
        label = rf"#{attrs['mosaic-set-id']} digits \d+ px( val)?( top| diagonal)?"
        assert re.fullmatch(label, seen["mosaic set"]), seen
        assert [seen[k] for k in ("n", "undefined", "median", "95% CI of median", "mean", "q1", "q3")] == [
            str(values.size), f"{1 - defined.size / values.size:.3f}", f"{median:.3f}", f"[{low:.3f}, {high:.3f}]",
            f"{mean:.3f}", f"{q1:.3f}", f"{q3:.3f}"]
    assert any(n.startswith("Chance level 0.500 for every row (2x2 mosaics with 2 target tiles)") for n in page_.notes)
    paired = page_.tables.get("paired-table", []) + page_.tables.get("paired-randomized-table", [])
    assert paired, "the paired comparison table is empty"
    for row_ in paired:
        a, b = int(row_["attrs"]["evaluation-a"]), int(row_["attrs"]["evaluation-b"])
        common = sorted(set(scores[a]) & set(scores[b]))
        x = np.array([scores[a][m] for m in common])
        y = np.array([scores[b][m] for m in common])
        keep = ~(np.isnan(x) | np.isnan(y))
        diff = x[keep] - y[keep]
        assert int(row_["attrs"]["n"]) == diff.size
        assert float(row_["attrs"]["median-difference"]) == pytest.approx(float(np.median(diff)), abs=1e-12)
        expected_p = float(scipy_stats.wilcoxon(diff).pvalue)
        assert float(row_["attrs"]["p-value"]) == pytest.approx(expected_p, rel=1e-9)
        seen = dict(zip(page_.headers["paired-table"], row_["cells"], strict=True))
        assert seen["p-value"] == ("< 0.001" if expected_p < 0.001 else f"{expected_p:.3f}")
        ranks = scipy_stats.rankdata(np.abs(diff[diff != 0]))
        effect = (ranks[diff[diff != 0] > 0].sum() - ranks[diff[diff != 0] < 0].sum()) / ranks.sum()
        assert float(row_["attrs"]["rank-biserial"]) == pytest.approx(effect, abs=1e-12)
    methods_paired = {(r["attrs"]["method-a"], r["attrs"]["method-b"]) for r in page_.tables["paired-table"]}
    assert methods_paired == {("gradcam", "lrp"), ("gradcam", "random"), ("lrp", "random")}


EXPECTED_FIGURES = ("fig1-sample-mosaic", "fig4-", "fig3-", "fig-cascading-", "fig5-", "fig6-", "fig2-", "fig-classes-",
                    "fig-seeds-")


def check_structure(page_: _Page, out: Path) -> None:
    assert page_.external == [], f"the page references external resources: {page_.external}"
    assert page_.sections == ["sample", "distributions", "summary", "paired", "per-class", "randomization", "seeds",
                              "cascading", "training", "layouts"]
    assert page_.missing == [], f"sections report missing data: {page_.missing}"
    for prefix in EXPECTED_FIGURES:
        assert any(Path(src).name.startswith(prefix) for src in page_.images), f"no figure {prefix}*: {page_.images}"
    for src in page_.images:
        assert not src.startswith("/") and (out / src).is_file(), src
    # Figure 3 for both randomized methods; per-epoch Focus of the 3 training epochs with Pearson r
    assert sum(Path(s).name.startswith("fig3-") for s in page_.images) == 2
    epochs = next(rows for name, rows in page_.tables.items() if name.startswith("epochs-"))
    assert [int(r["attrs"]["epoch"]) for r in epochs] == [1, 2, 3]
    # every per-epoch median travels with its n and undefined share
    assert all(r["attrs"]["n-gradcam"] != "" and r["attrs"]["share-undefined-gradcam"] != "" for r in epochs)
    correlation = next(rows for name, rows in page_.tables.items() if name.startswith("correlation-"))
    assert all(r["attrs"]["r"] != "" for r in correlation)
    per_class = next(rows for name, rows in page_.tables.items() if name.startswith("per-class-"))
    assert [int(r["attrs"]["target-class"]) for r in per_class] == list(range(10))
    seeds = next(rows for name, rows in page_.tables.items() if name.startswith("seeds-"))
    assert [r["attrs"]["method"] for r in seeds] == ["gradcam", "lrp"]
    assert all(r["attrs"]["significant"] in ("0", "1") and r["attrs"]["p-value"] != "" for r in seeds)
    sample = page_.tables["sample-focus"]
    assert [r["attrs"]["method"] for r in sample] == list(METHODS)
    for r in sample:  # the recomputed maps give the recorded Focus
        assert float(r["attrs"]["recomputed"]) == pytest.approx(float(r["attrs"]["focus"]), abs=1e-4)


# --------------------------------------------------------------------------- the tests


def test_report_tables_match_the_database(sqlite_report: Built) -> None:
    assert sqlite_report.index.name == "index.html"
    page_ = parse_page(sqlite_report.index.read_text(encoding="utf-8"))
    check_tables(page_, sqlite_report.url, sqlite_report.ids["finished"], sqlite_report.ids["unfinished"])
    check_structure(page_, sqlite_report.index.parent)


def test_report_on_postgresql(record: Record, pg_url: str, tmp_path: Path) -> None:
    from flows.report import build_report

    ids = write_record(pg_url, record)
    index = build_report(tmp_path / "report", database_url=pg_url)
    page_ = parse_page(index.read_text(encoding="utf-8"))
    check_tables(page_, pg_url, ids["finished"], ids["unfinished"])
    check_structure(page_, index.parent)


def test_selection_and_missing_weights(sqlite_report: Built, record: Record, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import main
    from flows.report import build_report

    url, ids = sqlite_report.url, sqlite_report.ids
    chosen = ids["finished"][-2:] + ids["unfinished"]  # the two layout evaluations and an unfinished one
    weights = Path(record.checkpoints[f"epoch{EPOCHS}"][0])
    hidden = weights.with_suffix(".hidden")
    weights.rename(hidden)
    monkeypatch.setenv("FOCUS_DATABASE_URL", url)
    try:  # exactly what `focus report --evaluation ...` runs
        argv = ["report", "--out", str(tmp_path / "some")] + [a for i in chosen for a in ("--evaluation", str(i))]
        assert main(argv) == 0
    finally:
        hidden.rename(weights)
    index = tmp_path / "some" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    page_ = parse_page(index.read_text(encoding="utf-8"))
    assert sorted(int(r["attrs"]["evaluation-id"]) for r in page_.tables["summary-table"]) == sorted(chosen[:2])
    notes = " ".join(page_.notes)
    assert f"evaluation {ids['unfinished'][0]} (running)" in notes
    assert "could not be recomputed" in notes and "is gone" in notes
    assert not any(Path(s).name.startswith("fig1-") for s in page_.images)
    assert any(Path(s).name.startswith("fig2-") for s in page_.images)
    assert any(Path(s).name.startswith("fig5-") for s in page_.images)  # the checkpoints' training run
    missing = " ".join(page_.missing)
    assert "No full randomization evaluation" in missing and "No cascading randomization" in missing
    with pytest.raises(FocusError, match=r"^Evaluation 9999 is not in sqlite:///.*focus results"):
        build_report(tmp_path / "none", database_url=url, evaluations=[9999])


def test_empty_store_says_what_to_do(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import main
    from flows.report import build_report

    message = r"No finished evaluation in sqlite:///\S+focus\.db: run `focus evaluate` or `focus demo` first\."
    with pytest.raises(FocusError, match=f"^{message}$"):
        build_report(tmp_path / "report", database_url=sqlite_url)
    assert not (tmp_path / "report" / "index.html").exists()
    monkeypatch.setenv("FOCUS_DATABASE_URL", sqlite_url)
    assert main(["report", "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(f"focus report: error: {message}", err), err


def test_a_3x3_evaluation_is_reported_with_its_grid_and_chance_level(sqlite_url: str, tmp_path: Path) -> None:
    """A 3x3 mosaic set with k = 3 target tiles: its row says 3x3, k=3 and the note above it chance level 1/3."""
    from flows.report import build_report
    from tests.db.test_grids import make_grid, tile_sums

    db.upgrade(sqlite_url)
    engine = db.open_store(sqlite_url)
    try:
        grid = make_grid(engine)
        evaluation = db.get_or_create_evaluation(engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id)
        db.start_evaluation(engine, evaluation)
        focus = np.array([0.9, 0.6, 0.2, 0.5, 0.7, 0.4])
        db.write_mosaic_results(engine, evaluation, grid.mosaic_ids, tile_sums(focus, grid.masks), focus,
                                grid.targets)
        db.finish_evaluation(engine, evaluation)
    finally:
        engine.dispose()
    index = build_report(tmp_path / "report", database_url=sqlite_url)
    page_ = parse_page(index.read_text(encoding="utf-8"))
    (row_,) = page_.tables["summary-table"]
    seen = dict(zip(page_.headers["summary-table"], row_["cells"], strict=True))
    assert (row_["attrs"]["grid"], row_["attrs"]["targets"]) == ("3", "3")
    assert float(row_["attrs"]["chance-level"]) == pytest.approx(1 / 3)
    assert seen["median"] == f"{np.median(focus):.3f}" and seen["mosaic set"].endswith(" 3x3, k=3")
    assert any(note.startswith("Chance level 0.333 for every row (3x3 mosaics with 3 target tiles)")
               for note in page_.notes), page_.notes
    store.dispose_engines()


# --------------------------------------------------------------------------- in a real browser

_IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth, height: img.naturalHeight};
  });
  var pre = document.createElement("pre");
  pre.id = "image-check";
  pre.textContent = JSON.stringify(images);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium)"
        if postgres.in_ci():
            pytest.fail(f"{reason}; CI checks the report page in a real browser.")
        pytest.skip(reason)
    return path


def _run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.server  # starts a browser
def test_page_in_headless_chromium(sqlite_report: Built, tmp_path: Path) -> None:
    chromium = _chromium()
    index = sqlite_report.index
    probe = index.with_name("probe.html")  # the page plus a script that reports each image's load
    probe.write_text(index.read_text(encoding="utf-8").replace("</body>", _IMAGE_CHECK + "\n</body>"), encoding="utf-8")

    done = _run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    page_ = parse_page(done.stdout)
    assert page_.image_check, f"the probe script did not run; stderr: {done.stderr[-2000:]}"
    images = json.loads(page_.image_check)
    assert len(images) == len(parse_page(index.read_text(encoding="utf-8")).images) >= len(EXPECTED_FIGURES)
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert broken == [], f"figures that did not load in Chromium: {broken}"
    # the numbers as the browser holds them
    check_tables(page_, sqlite_report.url, sqlite_report.ids["finished"], sqlite_report.ids["unfinished"])
    check_structure(page_, index.parent)

    shot = tmp_path / "report.png"
    done = _run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400",
                         index.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    if os.environ.get("FOCUS_REPORT_SCREENSHOT"):  # keep it for a human to look at
        shutil.copy(shot, os.environ["FOCUS_REPORT_SCREENSHOT"])


_LAYOUT_CHECK = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll(".table-wrap").forEach(function (wrap) {
    var t = wrap.querySelector("table"), closed = t.closest("details") && !t.closest("details").open;
    if (closed) return;
    var cut = [], lines = 0, tallest = "";
    t.querySelectorAll("td, th").forEach(function (c) {
      if (c.scrollWidth > c.clientWidth + 1) cut.push(c.textContent);
      if (c.tagName !== "TD") return;
      var style = getComputedStyle(c);
      var inner = c.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
      var n = Math.round(inner / parseFloat(style.lineHeight));
      if (n > lines) { lines = n; tallest = c.textContent; }
    });
    out.push({table: t.id, container: wrap.clientWidth, width: t.scrollWidth,
              right: t.getBoundingClientRect().right, scroll: wrap.scrollWidth > wrap.clientWidth + 1, cut: cut,
              lines: lines, tallest: tallest});
  });
  var pre = document.createElement("pre");
  pre.id = "layout-check";
  pre.textContent = JSON.stringify({viewport: window.innerWidth, page: document.documentElement.scrollWidth,
                                    tables: out});
  document.body.appendChild(pre);
});
</script>"""


#: The most lines a data cell of the summary or paired table may wrap to (a name, a randomization with its seed).
MAX_CELL_LINES = 3


@pytest.mark.server  # starts a browser
@pytest.mark.parametrize("width", [1280, 1400, 1920])
def test_main_tables_fit_the_window(sqlite_report: Built, tmp_path: Path, width: int) -> None:
    """At 1280, 1400 and 1920 px: no cell cut, no horizontal scroll on the main tables, no table and no page wider
    than the window, and no data cell of the main tables taller than :data:`MAX_CELL_LINES` lines."""
    chromium = _chromium()
    index = sqlite_report.index
    probe = index.with_name(f"layout-{width}.html")
    probe.write_text(index.read_text(encoding="utf-8").replace("</body>", _LAYOUT_CHECK + "\n</body>"),
                     encoding="utf-8")
    done = _run_chromium(chromium, tmp_path / "profile", f"--window-size={width},2400", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"the probe script did not run; stderr: {done.stderr[-2000:]}"
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["page"] <= layout["viewport"], layout  # nothing sticks out of the window
    tables = {t["table"]: t for t in layout["tables"]}
    assert {"summary-table", "paired-table"} <= set(tables)
    wider = {name: (t["right"], t["width"], t["container"]) for name, t in tables.items()
             if t["right"] > layout["viewport"]}
    assert not wider, wider
    for name in ("summary-table", "paired-table"):
        table = tables[name]
        assert not table["scroll"] and table["width"] <= table["container"], table
        assert 1 <= table["lines"] <= MAX_CELL_LINES, table
    assert all(not t["cut"] for t in tables.values()), {k: t["cut"] for k, t in tables.items() if t["cut"]}
    shot = tmp_path / "report.png"
    done = _run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", f"--window-size={width},2400",
                         index.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]


def test_audits_have_their_own_section(record: Record, tmp_path: Path) -> None:
    """The summary and paired tables show each cell once, however often an audit re-evaluated it."""
    from flows.report import build_report

    url = f"sqlite:///{tmp_path / 'focus.db'}"
    db.upgrade(url)
    ids = write_record(url, record, audits=True)
    try:
        page_ = parse_page(build_report(tmp_path / "report", database_url=url).read_text(encoding="utf-8"))
    finally:
        store.dispose_engines()
    assert page_.sections.index("audits") == page_.sections.index("paired") + 1
    audit_rows = page_.tables["audit-table"]
    assert len(audit_rows) == len(ids["audits"]) == 2
    assert [r["attrs"]["audit-run-id"] for r in audit_rows] == [str(i) for i in ids["audits"]]
    cells = [tuple(r["attrs"][k] for k in ("checkpoint-id", "method", "mosaic-set-id", "randomization", "stage"))
             for r in page_.tables["summary-table"]]
    assert len(cells) == len(set(cells)), "one row per checkpoint x method x mosaic set x randomization"
    latest = str(ids["audits"][-1])  # the cell the audits re-measured shows its latest evaluation
    assert latest in {r["attrs"]["audit-run-id"] for r in page_.tables["summary-table"]}
    assert "2 audit run(s), 1 regression(s) found (median Focus fell by more than 0.05)" in " ".join(page_.notes)


def test_audits_that_found_no_regression_say_so(record: Record, tmp_path: Path) -> None:
    """After audits that found no regression the page says so."""
    from flows.report import build_report
    from focus_core import explainers

    url = f"sqlite:///{tmp_path / 'focus.db'}"
    db.upgrade(url)
    write_record(url, record)
    engine = store.engine_for(url)
    trained = next(s for s in record.scored if s.method == "gradcam" and s.mosaic_set == "test"
                   and s.randomization == "none")
    checkpoint_id = db.recorded_checkpoint(engine, models.weights_sha256(record.checkpoints[trained.checkpoint][0]))
    explainer = explainers.get_explainer("gradcam")
    method_id = db.register_method(engine, explainer.name, dict(explainer.params))
    with engine.connect() as connection:
        set_id, = connection.execute(text("SELECT id FROM mosaic_set WHERE manifest_hash = :h"),
                                     {"h": record.manifests[trained.mosaic_set].hash}).one()
        mosaic_ids = [r[0] for r in connection.execute(text(
            "SELECT id FROM mosaic WHERE mosaic_set_id = :s ORDER BY position"), {"s": set_id})]
    for night in (1, 2):
        audit_id = db.start_audit_run(engine, name=f"nightly-{night}", threshold=0.05)
        evaluation_id = db.get_or_create_evaluation(engine, checkpoint_id.checkpoint_id, method_id, set_id,
                                                    audit_run_id=audit_id)
        db.start_evaluation(engine, evaluation_id)
        db.write_mosaic_results(engine, evaluation_id, mosaic_ids, trained.sums, trained.focus, trained.predicted)
        db.finish_evaluation(engine, evaluation_id)
        db.finish_audit_run(engine, audit_id)
    try:
        page_ = parse_page(build_report(tmp_path / "report", database_url=url).read_text(encoding="utf-8"))
    finally:
        store.dispose_engines()
    assert "audits" in page_.sections
    assert "2 audit run(s), no regression found" in " ".join(page_.notes), page_.notes


def test_a_checkpoint_two_runs_produced_is_named_by_both(record: Record, tmp_path: Path) -> None:
    """Two runs that made byte-identical weights are both named on the page."""
    from flows.report import build_report

    url = f"sqlite:///{tmp_path / 'focus.db'}"
    db.upgrade(url)
    ids = write_record(url, record)
    engine = store.engine_for(url)
    final_name = max(record.checkpoints, key=lambda name: record.checkpoints[name][1])
    path, epoch = record.checkpoints[final_name]
    sha = models.weights_sha256(path)
    second = db.register_training_run(engine, "d" * 64, "digits_cnn", {"epochs": epoch}, name="digits")
    checkpoint_id = db.register_checkpoint(engine, sha, "digits_cnn", 10, path=path, in_channels=1,
                                           training_run_id=second, epoch=epoch, label=f"digits epoch {epoch}")
    db.register_checkpoint(engine, sha, "digits_cnn", 10, training_run_id=second, epoch=epoch)  # idempotent
    origins = db.checkpoint_origins(engine, [checkpoint_id])
    assert list(origins["training_run_name"]) == ["demo-digits", "digits"] and set(origins["epoch"]) == {epoch}
    try:
        html_text = build_report(tmp_path / "report", database_url=url).read_text(encoding="utf-8")
    finally:
        store.dispose_engines()
    page_ = parse_page(html_text)
    both = f"demo-digits epoch {epoch} = digits epoch {epoch}"
    shown = {r["cells"][1] for r in page_.tables["summary-table"] if r["attrs"]["checkpoint-id"] == str(checkpoint_id)}
    assert shown == {both}, shown
    assert f"Training runs demo-digits and digits produced the same weights (byte-identical): checkpoint " \
           f"{checkpoint_id} is {both}" in html_text
    violin = re.search(r'<figure[^>]*id="fig4-[^"]*"[\s\S]*?</figure>', html_text)
    assert violin is not None and f"“{both}” is one checkpoint that several training runs produced" in violin.group(0)
    assert ids["run_id"] != second
