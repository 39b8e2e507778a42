"""The audit flow: compares with the previous audit and with a reference, emits an event on a significant fall.

A real Prefect API (the session's test harness) and a real store; the serving stack's drift is made by
scaling the Focus of every explained mosaic (``tasks.explain_chunk``), so the size of each fall is known.
"""

from __future__ import annotations

import pytest
import torch

import db
from flows import audit as audit_module
from flows import cli
from flows.weights import lineages
from flows.worker import record, store
from flows import tasks
from flows.params import AuditParams, DatasetSpec, ModelSpec
from focus_core import models


@pytest.fixture
def events(monkeypatch) -> list[dict]:
    """The events the audit emits (they also go to the Prefect API)."""
    emitted: list[dict] = []
    real_emit = audit_module.emit_event

    def spy(**kwargs):
        emitted.append(kwargs)
        return real_emit(**kwargs)

    monkeypatch.setattr(audit_module, "emit_event", spy)
    return emitted


def _scale_focus(patch, factor: float) -> None:
    """Within ``patch`` (a ``monkeypatch.context()``), each explained mosaic's Focus is ``factor`` times the model's."""
    real_explain = tasks.explain_chunk

    def scaled(request):
        sums, focus, predicted = real_explain(request)
        return sums, focus * factor, predicted

    patch.setattr(tasks, "explain_chunk", scaled)


def _regressed(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == audit_module.REGRESSED_EVENT]


def _params(url: str, **extra) -> AuditParams:
    return AuditParams(name="nightly", methods=[{"name": "gradcam"}], mosaics={"split": "test", "per_class": 2,
                       "seed": 11}, threshold=0.05,
                       run={"device": "cpu", "batch_size": 32, "chunk_size": 64, "database_url": url}, **extra)


def test_audit_compares_with_the_previous_audit_and_emits_an_event_when_focus_falls(
    prefect_api, sqlite_url, digits_weights, monkeypatch, events
):
    engine = store.engine_for(sqlite_url)
    checkpoint_id, sha = record.register_checkpoint(
        engine, ModelSpec(weights=digits_weights, label="nightly-digits"), DatasetSpec()
    )
    db.set_checkpoint_audit(engine, checkpoint_id, True)
    params = _params(sqlite_url)

    first = audit_module.audit(params)
    assert [r["kind"] for r in first["results"]] == ["previous", "reference"]
    assert all(r["previous_evaluation_id"] is None and not r["regressed"] for r in first["results"])
    assert [e["event"] for e in events] == ["focus.audit.completed"]

    # The serving stack silently changes: the same checkpoint's explanations lose half their Focus.
    with monkeypatch.context() as patch:
        _scale_focus(patch, 0.5)
        second = audit_module.audit(params)
    previous, reference = second["results"]
    for result in (previous, reference):  # both compare with the first audit (its own reference)
        assert result["previous_evaluation_id"] == first["results"][0]["evaluation_id"]
        assert result["regressed"] and result["significant"] and result["median_change"] < -0.05
        assert 15 <= result["n_paired"] <= 20 and result["p_value"] < 0.05  # mosaics scored in both audits
        assert result["same_checkpoint"]
    (event,) = _regressed(events)  # one comparison, one event: the reference adds none of its own
    assert event["resource"]["prefect.resource.id"] == f"focus.checkpoint.{sha}"
    assert event["resource"]["focus.method"] == "gradcam"
    assert event["resource"]["focus.comparison"] == event["payload"]["kind"] == "previous"
    assert event["payload"]["median_change"] < -0.05 and event["payload"]["significant"] is True

    history = db.checkpoint_history(engine, checkpoint_id)
    assert history["audit_run_id"].tolist() == [first["audit_run_id"], second["audit_run_id"]]


def test_a_fall_beyond_the_threshold_that_is_not_significant_fires_no_event(
    prefect_api, sqlite_url, digits_weights, monkeypatch, events
):
    """Ten mosaics that all lose half their Focus: a paired Wilcoxon test cannot reach p < 0.001 on ten
    pairs (its smallest two-sided p is 2/2^10 = 0.002), so at alpha 0.001 the fall is not significant."""
    engine = store.engine_for(sqlite_url)
    checkpoint_id, _ = record.register_checkpoint(engine, ModelSpec(weights=digits_weights), DatasetSpec())
    db.set_checkpoint_audit(engine, checkpoint_id, True)
    params = _params(sqlite_url, alpha=0.001).model_copy(
        update={"mosaics": _params(sqlite_url).mosaics.model_copy(update={"per_class": 1})})
    audit_module.audit(params)
    with monkeypatch.context() as patch:
        _scale_focus(patch, 0.5)
        second = audit_module.audit(params)
    for result in second["results"]:
        assert result["median_change"] < -params.threshold and result["p_value"] >= 0.001
        assert not result["significant"] and not result["regressed"]
    assert second["regressions"] == [] and _regressed(events) == []
    with monkeypatch.context() as patch:  # the same fall at alpha 0.05 is significant: the verdict changes
        _scale_focus(patch, 0.5)
        third = audit_module.audit(_params(sqlite_url).model_copy(update={"mosaics": params.mosaics}))
    assert [r["kind"] for r in third["regressions"]] == ["reference"]  # against the first audit, not the second
    assert len(_regressed(events)) == 1


def _version(source: str, path, epsilon: float) -> str:
    """``source``'s weights with the classifier's bias moved by ``epsilon``: other bytes, the same Focus (GradCAM
    of the target class does not see a bias added after the last convolution)."""
    model = models.load_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), source)
    with torch.no_grad():
        model.state_dict()[[k for k in model.state_dict() if k.endswith("bias")][-1]].add_(epsilon)
    models.save_weights(model, path)
    return str(path)


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url"])
def test_small_falls_that_add_up_fire_against_the_lineage_reference(
    prefect_api, url_fixture, request, digits_weights, tmp_path, monkeypatch, events, capsys
):
    """v1 -> v2 (a small fall) -> v3 (a further small fall): each under the threshold against the previous
    version, v3 against the reference (v1) beyond it; the next night the reference still fires, and once the
    team pins v3 as the reference, it is quiet."""
    url = request.getfixturevalue(url_fixture)
    engine = store.engine_for(url)
    spec = {"architecture": "digits_cnn", "num_classes": 10, "in_channels": 1}
    weights = [digits_weights] + [_version(digits_weights, tmp_path / f"v{v}.pt", 1e-4 * v) for v in (2, 3)]
    lineages.register_into_lineage(engine, "digits-prod", ModelSpec(weights=weights[0], **spec), audit=True)
    params = _params(url)

    first = audit_module.audit(params)
    (median,) = {r["median_focus"] for r in first["results"]}
    step = 0.7 * params.threshold  # each version loses 0.035 of median Focus: under the threshold of 0.05

    nights = []
    for version in (2, 3):
        lineages.register_into_lineage(engine, "digits-prod", ModelSpec(weights=weights[version - 1], **spec))
        with monkeypatch.context() as patch:
            _scale_focus(patch, 1 - (version - 1) * step / median)
            nights.append(audit_module.audit(params))
    second, third = nights
    assert second["regressions"] == []
    changes = {r["kind"]: (r["compared_with_version"], r["median_change"]) for r in second["results"]}
    assert changes["previous"][0] == changes["reference"][0] == 1
    assert changes["previous"][1] == pytest.approx(-step, abs=1e-3)

    previous, reference = third["results"]
    assert (previous["kind"], previous["compared_with_version"]) == ("previous", 2)
    assert previous["median_change"] == pytest.approx(-step, abs=1e-3) and not previous["regressed"]
    assert (reference["kind"], reference["compared_with_version"]) == ("reference", 1)
    assert reference["median_change"] == pytest.approx(-2 * step, abs=1e-3)
    assert reference["regressed"] and reference["significant"]
    (regression,) = third["regressions"]
    assert regression["kind"] == "reference" and regression["compared_with"] == models.weights_sha256(weights[0])
    (event,) = _regressed(events)
    assert event["resource"]["focus.comparison"] == "reference"
    assert event["payload"]["checkpoint_version"] == 3 and event["payload"]["compared_with_version"] == 1

    with monkeypatch.context() as patch:  # nothing new: v3 against itself is 0.000, against v1 it still fell
        _scale_focus(patch, 1 - 2 * step / median)
        fourth = audit_module.audit(params)
    assert [(r["kind"], r["compared_with"]) for r in fourth["regressions"]] == [
        ("reference", regression["compared_with"])]

    only_previous = params.model_copy(update={"alert_on": ["previous"]})
    with monkeypatch.context() as patch:  # the team alerts on the previous comparison only: no event
        _scale_focus(patch, 1 - 2 * step / median)
        fifth = audit_module.audit(only_previous)
    assert fifth["regressions"] == [] and [r["kind"] for r in fifth["results"] if r["regressed"]] == ["reference"]
    assert len(_regressed(events)) == 2

    code = cli.main(["checkpoint", "pin", "--lineage", "digits-prod", "--version", "3", "--database-url", url])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "version 3" in out
    with monkeypatch.context() as patch:  # v3 accepted as the reference: quiet
        _scale_focus(patch, 1 - 2 * step / median)
        sixth = audit_module.audit(params)
    assert sixth["regressions"] == []
    assert {r["compared_with_version"] for r in sixth["results"]} == {3}
    assert len(_regressed(events)) == 2
