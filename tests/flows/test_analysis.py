"""flows.results.analysis: statistics over stored results, on both databases, against scipy used directly.

``focus_accuracy_correlation``, ``paired_test`` and the test columns of ``focus_regressions`` combine
``db.queries`` (values) with ``focus_core.stats`` (the statistics); each answer must equal scipy's on the same values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats

import db
from flows.results import analysis
from flows import cli
from tests.db.conftest import make_world, sums_for
from tests.db.test_queries import _evaluate


@pytest.fixture(params=["sqlite_url", "pg_url"])
def url(request: pytest.FixtureRequest) -> str:
    """A migrated store on each backend (the fixtures of tests/flows/conftest.py)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def engine(url: str) -> Iterator:
    engine = db.open_store(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _three_audits(engine) -> tuple[list[int], list[int]]:
    """Three nightly audits of one checkpoint; median Focus 0.8, 0.8, then 0.5 (mosaic 1 undefined)."""
    world = make_world(engine)
    gradcam = world.method_ids["gradcam"]
    t0 = dt.datetime(2025, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
    audits = [db.start_audit_run(engine, name=f"nightly-{i}", threshold=0.1, started_at=t0 + dt.timedelta(days=i))
              for i in range(3)]
    db.set_checkpoint_audit(engine, world.checkpoint_id, True)
    values = [[0.8, 0.8, 0.9, 0.7], [0.8, 0.9, 0.8, 0.7], [0.5, np.nan, 0.4, 0.5]]
    evaluations = [_evaluate(engine, world, sums_for, gradcam, v, [0] * 4, audit_run_id=a)
                   for v, a in zip(values, audits)]
    for audit in audits:
        db.finish_audit_run(engine, audit)
    return audits, evaluations


def test_regressions_add_a_wilcoxon_test_on_the_mosaics_both_audits_scored(engine):
    audits, evaluations = _three_audits(engine)
    regressions = analysis.focus_regressions(engine, threshold=0.1)
    sql_only = db.focus_regressions(engine, threshold=0.1)
    assert list(regressions.columns) == list(sql_only.columns) + list(analysis.REGRESSION_TEST_COLUMNS)
    assert len(regressions) == 1
    row = regressions.iloc[0]
    assert (row["evaluation_id"], row["previous_evaluation_id"]) == (evaluations[2], evaluations[1])
    # paired on the mosaics both audits scored: 0, 2, 3 (mosaic 1 is undefined in the last audit)
    now, before = np.array([0.5, 0.4, 0.5]), np.array([0.8, 0.8, 0.7])
    reference = stats.wilcoxon(now, before)
    assert row["n_paired"] == 3
    assert row["median_difference"] == pytest.approx(-0.3)
    assert row["statistic"] == pytest.approx(reference.statistic)
    assert row["p_value"] == pytest.approx(reference.pvalue)
    empty = analysis.focus_regressions(engine, threshold=0.1, audit_run_id=audits[1])
    assert empty.empty and list(empty.columns) == list(regressions.columns)


def test_paired_comparison_of_identical_and_disjoint_evaluations(engine):
    world = make_world(engine)
    first = _evaluate(engine, world, sums_for, world.method_ids["gradcam"], [0.5, 0.6, 0.7, 0.8], [0] * 4)
    second = _evaluate(engine, world, sums_for, world.method_ids["lrp"], [0.5, 0.6, 0.7, 0.8], [0] * 4)
    same = analysis.paired_comparison(engine, first, second)
    assert (same["n"], same["median_difference"], same["p_value"]) == (4, 0.0, 1.0)
    undefined = _evaluate(engine, world, sums_for, db.register_method(engine, "random", {}), [np.nan] * 4, [0] * 4)
    none = analysis.paired_comparison(engine, first, undefined)  # no mosaic defined in both: no evidence
    assert none["n"] == 0 and np.isnan(none["p_value"]) and np.isnan(none["median_difference"])


def test_focus_accuracy_correlation_over_the_epochs_with_focus(engine):
    run = db.register_training_run(engine, "t" * 64, "digits_cnn", {"epochs": 4}, name="toy")
    for epoch, (f, a) in enumerate(zip([0.5, 0.6, 0.8, None], [0.3, 0.6, 0.7, 0.9])):
        db.record_epoch(engine, run, epoch, train_loss=2.0 - epoch / 2, val_accuracy=a, focus_median=f)
    result = analysis.focus_accuracy_correlation(engine, run)
    # by hand over the three epochs with Focus: x = .5 .6 .8, y = .3 .6 .7
    x, y = np.array([0.5, 0.6, 0.8]), np.array([0.3, 0.6, 0.7])
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum())
    assert result["n"] == 3
    assert result["r"] == pytest.approx(r)
    assert result["p_value"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    loss = analysis.focus_accuracy_correlation(engine, run, metric="train_loss")
    assert loss["r"] == pytest.approx(-np.corrcoef(x, [0, 1, 2])[0, 1])  # loss falls 0.5 per epoch
    with pytest.raises(db.StoreError, match="metric"):
        analysis.focus_accuracy_correlation(engine, run, metric="DROP TABLE")
    with pytest.raises(db.StoreError, match="focus"):
        analysis.focus_accuracy_correlation(engine, run, focus="val_loss")


def test_focus_accuracy_correlation_needs_three_epochs(engine):
    """focus_core.stats.pearson's rule: two epochs give no correlation, never +-1 with p = 1."""
    run = db.register_training_run(engine, "u" * 64, "digits_cnn", {"epochs": 2}, name="short")
    for epoch, (f, a) in enumerate(zip([0.5, 0.7], [0.3, 0.6])):
        db.record_epoch(engine, run, epoch, val_accuracy=a, focus_median=f)
    result = analysis.focus_accuracy_correlation(engine, run)
    assert result["n"] == 2 and np.isnan(result["r"]) and np.isnan(result["p_value"])
    empty = analysis.focus_accuracy_correlation(engine, db.register_training_run(engine, "v" * 64, "digits_cnn", {}))
    assert empty["n"] == 0 and np.isnan(empty["r"])


def test_focus_results_regressions_prints_the_paired_test(url, engine, capsys, monkeypatch):
    _three_audits(engine)
    monkeypatch.setenv("FOCUS_DATABASE_URL", url)  # --database-url sets it for the process: restored afterwards
    code = cli.main(["results", "regressions", "--threshold", "0.1", "--format", "json", "--database-url", url])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and len(rows) == 1
    reference = stats.wilcoxon([0.5, 0.4, 0.5], [0.8, 0.8, 0.7])
    assert rows[0]["n_paired"] == 3 and rows[0]["p_value"] == pytest.approx(reference.pvalue)
    assert rows[0]["audit_name"] == "nightly-2" and rows[0]["median_change"] == pytest.approx(-0.3)
