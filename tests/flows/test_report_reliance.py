"""The report's model-reliance section and the audit's "which one changed", read back from the page.

- an evaluate run with the reliance pass (GradCAM and the random control on the digits CNN, SQLite): the section
  holds one figure with one panel per method, drawn from the stored per-mosaic values, and its table carries the
  stored summaries exactly;
- a store without any reliance rows shows no such section;
- two audits of one checkpoint on a 3x3 mosaic set whose model Focus held while Focus fell: the audit section
  shows the cause recomputed from the stored values (``explainer``) and the regression the audit stored with its
  model Focus change and cause.
"""

from __future__ import annotations

import html
import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import db
from flows import reliance as flow_reliance
from flows.evaluate import evaluate
from flows.report import reliance as report_reliance
from focus_core.report.reliance import MAX_COLUMNS, PANEL_INCHES
from flows.worker import store
from focus_core import reliance
from focus_core.cause import which_changed
from focus_core.report import DPI
from tests.db.test_grids import make_grid, tile_sums
from tests.flows.test_reliance_store import _params
from tests.flows.test_report_page import _LAYOUT_CHECK, _chromium, _run_chromium, parse_page


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG from its header."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def _number(value: str) -> float:
    return math.nan if value == "" else float(value)


@dataclass
class Reported:
    url: str
    ids: list[int]
    index: Path
    drawn: list[dict]  # the points each call of the figure's plot received


@pytest.fixture(scope="module")
def reported(prefect_api, digits_weights, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reported]:
    """GradCAM and the random control on the digits CNN with the reliance pass (SQLite), and its report."""
    from flows.report import build_report

    folder = tmp_path_factory.mktemp("report-reliance")
    url = f"sqlite:///{folder / 'focus.db'}"
    db.upgrade(url)
    outcome = evaluate(_params(digits_weights, url, ["gradcam", "random"]))
    drawn: list[dict] = []
    real = report_reliance.plot_focus_against_model_focus
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_reliance, "plot_focus_against_model_focus",
                      lambda points, path, **kw: drawn.append(points) or real(points, path, **kw))
        index = build_report(folder / "report", database_url=url)
    yield Reported(url, [e["evaluation_id"] for e in outcome["evaluations"]], index, drawn)
    store.dispose_engines()


def test_the_reliance_section_shows_the_stored_pass(reported: Reported) -> None:
    index, ids, drawn = reported.index, reported.ids, reported.drawn
    page_ = parse_page(index.read_text(encoding="utf-8"))
    engine = store.engine_for(reported.url)

    assert "reliance" in page_.sections
    (figure,) = [src for src in page_.images if "fig-reliance" in src]
    assert [list(points) for points in drawn] == [["gradcam", "random"]]  # one figure, a panel per method
    width, height = _png_size(index.parent / figure)
    assert (width, height) == (round((0.5 + 2 * PANEL_INCHES) * DPI), round((0.8 + PANEL_INCHES) * DPI))
    # a full row fits the page's content at a 1280 px window (main's 1.6rem padding each side) without scaling
    assert width <= round((0.5 + MAX_COLUMNS * PANEL_INCHES) * DPI) <= 1280 - 2 * 24
    for method, evaluation_id in zip(("gradcam", "random"), ids):  # the points are the stored per-mosaic values
        pass_id = int(db.evaluation_reliance(engine, [evaluation_id])["pass_id"].iloc[0])
        mosaics = db.evaluation_reliance_tiles(engine, evaluation_id, pass_id).drop_duplicates("mosaic_id")
        model_focus, focus = drawn[0][method]
        assert len(focus) == len(mosaics) == 20
        np.testing.assert_array_equal(np.sort(focus), np.sort(mosaics["focus"].to_numpy(float)))
        np.testing.assert_array_equal(np.sort(model_focus), np.sort(mosaics["model_focus"].to_numpy(float)))

    rows = page_.tables["reliance-table"]
    assert [int(r["attrs"]["evaluation-id"]) for r in rows] == ids
    stored = db.evaluation_reliance(engine, ids).set_index("evaluation_id")
    summary = db.evaluation_summary(engine, ids).set_index("evaluation_id")
    for r in rows:
        evaluation_id = int(r["attrs"]["evaluation-id"])
        for column in db.reliance.RELIANCE_SUMMARY_COLUMNS:
            expected = stored.loc[evaluation_id, column]
            expected = math.nan if expected is None else float(expected)  # NULL: an empty attribute
            got = _number(r["attrs"][column.replace("_", "-")])
            assert got == pytest.approx(expected, nan_ok=True, abs=0), column
        assert r["cells"][-1] == "–"  # no rank agreement on 2x2 mosaics
        view = summary.loc[evaluation_id]
        assert _number(r["attrs"]["median-model-focus"]) == view["median_model_focus"]
        assert f"{view['median_model_focus']:.3f}" in r["cells"]
        assert f"{view['median_explainer_gap']:+.3f}" in r["cells"]


def _write_evaluation(engine, grid, focus: np.ndarray, **kind) -> int:
    evaluation = db.get_or_create_evaluation(engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id, **kind)
    db.start_evaluation(engine, evaluation)
    db.write_mosaic_results(engine, evaluation, grid.mosaic_ids, tile_sums(focus, grid.masks), focus, grid.targets)
    db.finish_evaluation(engine, evaluation)
    return evaluation


MOSAICS = 24


def test_a_store_without_reliance_has_no_reliance_section(sqlite_url: str, tmp_path: Path) -> None:
    from flows.report import build_report

    engine = db.open_store(sqlite_url)
    try:
        grid = make_grid(engine, mosaics=MOSAICS)
        _write_evaluation(engine, grid, np.random.default_rng(0).uniform(0.5, 1.0, MOSAICS))
    finally:
        engine.dispose()
    page_ = parse_page(build_report(tmp_path / "report", database_url=sqlite_url).read_text(encoding="utf-8"))
    assert "summary" in page_.sections and "reliance" not in page_.sections
    assert "reliance-table" not in page_.tables and not [s for s in page_.images if "fig-reliance" in s]


def test_the_audit_section_says_which_one_changed(sqlite_url: str, tmp_path: Path) -> None:
    """Focus fell by about 0.3 between two audits of one checkpoint while its model Focus (one pass) held."""
    from flows.report import build_report

    rng = np.random.default_rng(5)
    engine = db.open_store(sqlite_url)
    try:
        grid = make_grid(engine, mosaics=MOSAICS)
        drops = rng.uniform(0.05, 1.0, (MOSAICS, 9))
        model_focus = reliance.model_focus(torch.tensor(drops), torch.tensor(grid.masks)).double().numpy()
        pass_id = db.get_or_create_reliance_pass(engine, grid.checkpoint_id, grid.mosaic_set_id)
        db.write_reliance(engine, pass_id, grid.mosaic_ids, np.full(MOSAICS, 5.0), drops, model_focus)
        first_focus = rng.uniform(0.7, 0.95, MOSAICS)
        second_focus = first_focus - rng.uniform(0.25, 0.35, MOSAICS)
        audits, evaluations = [], []
        for focus in (first_focus, second_focus):
            audit_id = db.start_audit_run(engine, name=f"nightly-{len(audits)}", threshold=0.05)
            evaluation_id = _write_evaluation(engine, grid, focus, audit_run_id=audit_id)
            frame = db.evaluation_reliance_tiles(engine, evaluation_id, pass_id)
            db.store_evaluation_reliance(engine, evaluation_id, pass_id, flow_reliance.summarize(frame, 3))
            audits.append(audit_id), evaluations.append(evaluation_id)
        expected = which_changed(first_focus, second_focus, model_focus, model_focus)
        regression = {"lineage": None, "checkpoint": "e" * 64, "compared_with": "e" * 64, "method": "gradcam",
                      "median_change": -0.3, "p_value": 1e-5, "kind": "previous",
                      "model_focus_change": expected.model_focus_change, "cause": expected.cause}
        db.finish_audit_run(engine, audits[0])
        db.finish_audit_run(engine, audits[1], metadata={"regressions": [regression]})
    finally:
        engine.dispose()
    assert expected.cause == "explainer" and expected.model_focus_change == 0.0 and expected.n == MOSAICS

    page_ = parse_page(build_report(tmp_path / "report", database_url=sqlite_url).read_text(encoding="utf-8"))
    assert page_.sections.index("audits") < page_.sections.index("reliance")
    (change,) = page_.tables["audit-causes-table"]
    assert change["attrs"]["evaluation-id"] == str(evaluations[1])
    assert change["attrs"]["previous-evaluation-id"] == str(evaluations[0])
    assert change["attrs"]["cause"] == "explainer" and change["cells"][-1] == "explainer"
    assert int(change["attrs"]["n"]) == expected.n
    assert float(change["attrs"]["model-focus-change"]) == expected.model_focus_change
    assert float(change["attrs"]["focus-change"]) == pytest.approx(expected.focus_change, abs=1e-12)
    assert float(change["attrs"]["gap-change"]) == pytest.approx(expected.gap_change, abs=1e-12)
    (alert,) = page_.tables["regressions-table"]
    assert alert["attrs"]["audit-run-id"] == str(audits[1]) and alert["attrs"]["cause"] == "explainer"
    assert float(alert["attrs"]["model-focus-change"]) == expected.model_focus_change
    assert alert["cells"][-2:] == ["+0.000", "explainer"] and alert["cells"][5] == "-0.300"
    assert len(page_.tables["reliance-table"]) == 1  # the main tables show the cell's latest audit


@pytest.mark.server  # starts a browser
@pytest.mark.parametrize("width", [1280, 1400])
def test_the_reliance_section_fits_the_window(reported: Reported, tmp_path: Path, width: int) -> None:
    """In Chromium at 1280 and 1400 px: the figure is shown at its own size, within the window, and the table
    neither scrolls nor cuts a cell."""
    chromium = _chromium()
    check = _LAYOUT_CHECK.replace("pre.textContent = JSON.stringify({", (
        "var img = document.querySelector('img[src*=\"fig-reliance\"]'); "
        "pre.textContent = JSON.stringify({figure: [img.naturalWidth, img.clientWidth, "
        "img.getBoundingClientRect().right], "))
    probe = reported.index.with_name(f"reliance-{width}.html")
    probe.write_text(reported.index.read_text(encoding="utf-8").replace("</body>", check + "\n</body>"),
                     encoding="utf-8")
    done = _run_chromium(chromium, tmp_path / "profile", f"--window-size={width},2400", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"the probe script did not run; stderr: {done.stderr[-2000:]}"
    layout = json.loads(html.unescape(found.group(1)))
    natural, shown, right = layout["figure"]
    assert natural > 0 and shown == natural and right <= layout["viewport"], layout["figure"]
    assert layout["page"] <= layout["viewport"]
    (table,) = [t for t in layout["tables"] if t["table"] == "reliance-table"]
    assert not table["scroll"] and table["width"] <= table["container"] and not table["cut"], table
