"""The report's sample mosaic of a probe set is the mosaic its evaluation explained: with the patch stamped.

A real evaluate flow (real Prefect API, real PostgreSQL store) explains a corner-patch probe set; the report then
recomputes the sample mosaic from the store alone. The patch it shows is checked pixel by pixel against the
manifest's own corner codes, and the recomputed Focus against the recorded one.
"""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import text

from flows.evaluate import evaluate
from flows.params import EvaluateParams
from flows.specs import with_effective_dataset
from flows.worker import caches, store
from focus_core import report
from tests.flows.test_report_page import parse_page

PATCH = {"kind": "corner_patch", "size": 5, "seed": 7, "corner": "random"}


def test_the_reports_sample_mosaic_of_a_probe_set_carries_its_patch(prefect_api, pg_url, digits_weights, tmp_path,
                                                                    monkeypatch):
    from flows.report import build_report

    params = EvaluateParams(
        model={"architecture": "digits_cnn", "weights": digits_weights},
        mosaics={"split": "test", "per_class": 1, "seed": 3, "probe": PATCH},
        methods=[{"name": "gradcam"}],
        run={"device": "cpu", "batch_size": 16, "retries": 0, "database_url": pg_url},
    )
    evaluate(params)
    with store.engine_for(pg_url).connect() as connection:
        assert connection.execute(text("SELECT probe FROM mosaic_set")).scalars().all() == [PATCH]

    shown: list[torch.Tensor] = []
    drawn = report.plot_mosaic_explanations

    def seen(mosaic, *args, **kwargs):  # the real figure, with the mosaic it shows kept
        shown.append(mosaic.clone())
        return drawn(mosaic, *args, **kwargs)

    monkeypatch.setattr(report, "plot_mosaic_explanations", seen)
    index = build_report(tmp_path / "report", database_url=pg_url)

    (row,) = parse_page(index.read_text(encoding="utf-8")).tables["sample-focus"]
    assert float(row["attrs"]["recomputed"]) == pytest.approx(float(row["attrs"]["focus"]), abs=1e-4)
    with store.engine_for(pg_url).connect() as connection:
        position = connection.execute(text("SELECT position FROM mosaic WHERE id = :m"),
                                      {"m": int(row["attrs"]["mosaic-id"])}).scalar_one()
    effective = with_effective_dataset(params)  # the dataset as the flow loaded it
    codes = caches.load_manifest(effective.dataset, effective.mosaics).probe_codes()[position]  # the whole manifest's
    (mosaic,) = shown
    tile = mosaic.shape[-1] // 2
    size = PATCH["size"]
    for p, code in enumerate(codes.tolist()):
        rows, cols = slice(p // 2 * tile, (p // 2 + 1) * tile), slice(p % 2 * tile, (p % 2 + 1) * tile)
        square = mosaic[:, rows, cols]
        if code < 0:  # a target tile is never stamped
            continue
        top = slice(0, size) if code in (0, 1) else slice(tile - size, tile)
        left = slice(0, size) if code in (0, 2) else slice(tile - size, tile)
        assert (square[:, top, left] == 255).all(), f"tile {p} lacks the patch in corner {code}"
    assert (codes >= 0).sum() == 2  # two stamped tiles checked
