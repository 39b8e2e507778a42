"""The audit flow: audits marked checkpoints, compares with the previous audit, emits an event on a regression."""

from __future__ import annotations

import db
from flows import audit as audit_module
from flows.worker import record, store
from flows import tasks
from flows.params import AuditParams, DatasetSpec, ModelSpec


def test_audit_compares_with_the_previous_audit_and_emits_an_event_when_focus_falls(
    prefect_api, sqlite_url, digits_weights, monkeypatch
):
    engine = store.engine_for(sqlite_url)
    checkpoint_id, sha = record.register_checkpoint(
        engine, ModelSpec(weights=digits_weights, label="nightly-digits"), DatasetSpec()
    )
    db.set_checkpoint_audit(engine, checkpoint_id, True)
    events: list[dict] = []
    real_emit = audit_module.emit_event

    def spy(**kwargs):
        events.append(kwargs)
        return real_emit(**kwargs)

    monkeypatch.setattr(audit_module, "emit_event", spy)
    params = AuditParams(
        name="nightly",
        methods=[{"name": "gradcam"}],
        mosaics={"split": "test", "per_class": 2, "seed": 11},
        threshold=0.05,
        run={"device": "cpu", "batch_size": 32, "chunk_size": 64, "database_url": sqlite_url},
    )

    first = audit_module.audit(params)
    (result,) = first["results"]
    assert result["previous_evaluation_id"] is None and not result["regressed"]
    assert [e["event"] for e in events] == ["focus.audit.completed"]

    # The serving stack silently changes: the same checkpoint's explanations lose half their Focus.
    real_explain = tasks.explain_chunk

    def degraded(request):
        sums, focus, predicted = real_explain(request)
        return sums, focus * 0.5, predicted

    monkeypatch.setattr(tasks, "explain_chunk", degraded)
    second = audit_module.audit(params)
    (result,) = second["results"]
    assert result["previous_evaluation_id"] == first["results"][0]["evaluation_id"]
    assert result["regressed"] and result["median_change"] < -0.05
    assert 15 <= result["n_paired"] <= 20 and result["p_value"] < 0.05  # mosaics scored in both audits
    regressed = [e for e in events if e["event"] == "focus.audit.regressed"]
    assert len(regressed) == 1
    assert regressed[0]["resource"]["prefect.resource.id"] == f"focus.checkpoint.{sha}"
    assert regressed[0]["resource"]["focus.method"] == "gradcam"
    assert regressed[0]["payload"]["median_change"] < -0.05

    history = db.checkpoint_history(engine, checkpoint_id)
    assert history["audit_run_id"].tolist() == [first["audit_run_id"], second["audit_run_id"]]
