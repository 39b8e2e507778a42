"""The audit follows lineages: a worse new version regresses against the previous audited one and the reference.

A real Prefect API (the session's test harness) and real stores (SQLite and PostgreSQL): ``focus train
--lineage`` registers its epochs, ``focus checkpoint register`` adds a worse model trained "elsewhere" (the
trained weights with the classifier re-initialised) as the next version, and ``focus audit --format json``
prints the regressions the flow emitted as ``focus.audit.regressed``.
"""

from __future__ import annotations

import json

import pytest
import torch

import db
from flows import audit as audit_module
from flows import cli
from flows.worker import store
from flows import train as train_module
from flows.params import TrainParams
from focus_core import architectures, models

TILE = 16  # small tiles: the training epoch and the audits take seconds
AUDIT_ARGS = ["--method", "gradcam", "--per-class", "3", "--mosaic-seed", "5", "--tile-size", str(TILE),
              "--batch-size", "64", "--threshold", "0.05"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, monkeypatch) -> str:
    chosen = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    monkeypatch.setenv("FOCUS_DATABASE_URL", chosen)  # `focus` sets it from --database-url; restored afterwards
    return chosen


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


def _focus(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _audit(capsys, url: str, *extra: str) -> dict:
    code, out, err = _focus(capsys, "audit", *AUDIT_ARGS, *extra, "--format", "json", "--database-url", url)
    assert code == 0, err[-3000:]
    return json.loads(out)  # the document alone on stdout


def _worse_copy(weights: str, path) -> str:
    """The trained weights with the classifier re-initialised: the same model, explanations near chance."""
    model = models.load_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), weights)
    torch.manual_seed(1)
    _, head = architectures.last_linear(model)
    head.reset_parameters()
    models.save_weights(model, path)
    return str(path)


@pytest.mark.training
def test_a_worse_version_regresses_against_the_previous_audited_one(
    prefect_api, url, tmp_path, capsys, events
):
    trained = train_module.train(TrainParams(
        name="digits-lineage", dataset={"kind": "digits", "tile_size": TILE}, epochs=1, batch_size=128,
        focus_mosaics={"split": "val", "per_class": 1}, checkpoint_dir=str(tmp_path / "checkpoints"),
        database_url=url, audit=True, lineage="digits-prod", retries=0,
    ))
    assert trained["lineage"] == {"name": "digits-prod", "versions": [1]}

    first = _audit(capsys, url)
    assert set(first) == {"audit_run_id", "regressions", "class_regressions"}
    assert first["regressions"] == [] and first["class_regressions"] == []  # the baseline

    worse = _worse_copy(trained["final_weights"], tmp_path / "elsewhere" / "worse.pt")
    register = ["checkpoint", "register", "--lineage", "digits-prod", "--weights", worse, "--arch", "digits_cnn",
                "--num-classes", "10", "--in-channels", "1", "--label", "retrained", "--database-url", url]
    code, out, err = _focus(capsys, *register)
    assert code == 0, err
    assert "as version 2 of lineage 'digits-prod'" in out
    code, out, _ = _focus(capsys, *register)
    assert code == 0 and "already version 2" in out and "nothing to do" in out

    second = _audit(capsys, url)
    (regression,) = second["regressions"]
    worse_sha = models.weights_sha256(worse)
    assert regression["lineage"] == "digits-prod" and regression["kind"] == "previous"
    assert regression["checkpoint"] == worse_sha and regression["compared_with"] == trained["final_sha256"]
    assert regression["method"] == "gradcam" and regression["median_change"] < -0.05
    assert 0 <= regression["p_value"] < 0.05
    assert list(regression) == list(audit_module.REGRESSION_KEYS)
    # the re-initialised classifier no longer relies on the target tiles as the trained one did: the model's own
    # reliance fell (model Focus of the same mosaics, from the reliance pass every audit runs), so the cause is
    # never the explanation alone (30 mosaics at 16 px leave too few with every value defined to say more)
    assert regression["model_focus_change"] < -0.05
    assert regression["cause"] in {"model", "both", "unclear"}
    (event,) = [e for e in events if e["event"] == audit_module.REGRESSED_EVENT]
    assert event["resource"]["prefect.resource.id"] == "focus.lineage.digits-prod"
    assert event["resource"]["focus.method"] == "gradcam"
    assert event["resource"]["focus.comparison"] == "previous"
    assert {k: event["payload"][k] for k in audit_module.REGRESSION_KEYS} == regression
    assert event["payload"]["checkpoint_version"] == 2 and event["payload"]["compared_with_version"] == 1

    third = _audit(capsys, url)  # nothing new: version 2 against its own audit, 0.000; against version 1 it fell
    (again,) = third["regressions"]
    assert (again["kind"], again["compared_with"]) == ("reference", trained["final_sha256"])
    assert len([e for e in events if e["event"] == audit_module.REGRESSED_EVENT]) == 2

    engine = store.engine_for(url)
    history = db.checkpoint_history(engine, int(db.lineages_to_audit(engine)["checkpoint_id"][0]))
    assert history["lineage"].tolist() == ["digits-prod", "digits-prod"]
    assert history["checkpoint_version"].tolist() == [2, 2]
    assert history["audit_run_id"].tolist() == [second["audit_run_id"], third["audit_run_id"]]
    assert history["median_change"].iloc[-1] == pytest.approx(0.0)

    # the data changes (another split of the digits): a new mosaic set, said so, no paired comparison
    fourth = audit_module.audit({"lineages": ["digits-prod"], "methods": [{"name": "gradcam"}],
                                 "dataset": {"kind": "digits", "tile_size": TILE, "seed": 3},
                                 "mosaics": {"per_class": 3, "seed": 5}, "run": {"database_url": url}})
    result, reference = fourth["results"]
    assert (result["kind"], result["same_checkpoint"]) == ("previous", True) and result["mosaic_set_changed"]
    assert result["previous_evaluation_id"] is None and result["median_change"] is None and result["n_paired"] == 0
    # the reference (version 1) had no audit on the new mosaics: this audit evaluated it there, and compares
    assert reference["kind"] == "reference" and reference["compared_with_version"] == 1
    assert reference["n_paired"] > 0 and not reference["mosaic_set_changed"]
    assert all(r["kind"] == "reference" for r in fourth["regressions"])
    listed = json.loads(_focus(capsys, "checkpoint", "list", "--lineage", "digits-prod", "--format", "json",
                               "--database-url", url)[1])
    assert [(row["version"], row["sha256"]) for row in listed] == [(1, trained["final_sha256"]), (2, worse_sha)]


def test_lineages_with_and_without_labels_are_audited_with_labels_or_none(url, tmp_path, capsys):
    """A frame of lineages where some newest versions have a label and some none gives NaN for the missing
    ones; the audit must see None there (NaN reached ModelSpec(label=...) and failed every lineage's audit)."""
    for seed, (lineage, label) in enumerate([("labelled", ["--label", "retrained"]), ("bare", []),
                                             ("bare-too", [])]):
        torch.manual_seed(seed)
        weights = tmp_path / f"{lineage}.pt"
        models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), weights)
        code, _, err = _focus(capsys, "checkpoint", "register", "--lineage", lineage, "--weights", str(weights),
                              "--arch", "digits_cnn", "--num-classes", "10", "--in-channels", "1", *label,
                              "--audit", "--database-url", url)
        assert code == 0, err
    targets = audit_module._targets(store.engine_for(url), audit_module.AuditParams(methods=[{"name": "gradcam"}]))
    assert {t.lineage: t.label for t in targets} == {"labelled": "retrained", "bare": None, "bare-too": None}
    for target in targets:  # what the audit builds for each lineage's evaluation
        audit_module.ModelSpec(architecture=target.architecture, weights=target.path, label=target.label)
