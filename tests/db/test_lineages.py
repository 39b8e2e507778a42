"""Lineages: ordered versions of one model, idempotent registration, one-sentence refusals, what the audit reads."""

from __future__ import annotations

import pytest

import db


def _checkpoint(engine, tag: str, architecture: str = "digits_cnn", num_classes: int = 2, in_channels=1) -> int:
    return db.register_checkpoint(engine, tag * 64, architecture, num_classes, path=f"{tag}.pt",
                                  in_channels=in_channels)


def test_versions_follow_registration_order_and_a_second_registration_changes_nothing(engine):
    first, second = _checkpoint(engine, "a"), _checkpoint(engine, "b")
    one = db.register_lineage_checkpoint(engine, "digits-prod", first, audit=True)
    two = db.register_lineage_checkpoint(engine, "digits-prod", second)
    again = db.register_lineage_checkpoint(engine, "digits-prod", first)
    assert (one.version, one.added, two.version, two.added) == (1, True, 2, True)
    assert again == one._replace(added=False)
    frame = db.lineage_checkpoints(engine, "digits-prod")
    assert frame["version"].tolist() == [1, 2] and frame["checkpoint_id"].tolist() == [first, second]
    assert frame["lineage_audit"].tolist() == [True, True] and frame["registered_at"].notna().all()
    (newest,) = db.lineages_to_audit(engine).to_dict("records")
    assert (newest["lineage"], newest["version"], newest["checkpoint_id"]) == ("digits-prod", 2, second)


def test_an_explicit_version_is_kept_and_the_next_one_follows_the_highest(engine):
    ids = [_checkpoint(engine, t) for t in "abc"]
    assert db.register_lineage_checkpoint(engine, "l", ids[0], version=5).version == 5
    assert db.register_lineage_checkpoint(engine, "l", ids[1]).version == 6
    with pytest.raises(db.StoreError, match=r"^Version 5 of lineage 'l' is checkpoint aaaaaaaaaaaa: pick another"):
        db.register_lineage_checkpoint(engine, "l", ids[2], version=5)
    with pytest.raises(db.StoreError, match=r"already version 5 of lineage 'l'"):
        db.register_lineage_checkpoint(engine, "l", ids[0], version=7)


def test_a_lineage_holds_one_model(engine):
    db.register_lineage_checkpoint(engine, "l", _checkpoint(engine, "a"))
    for other in (_checkpoint(engine, "b", "alexnet"), _checkpoint(engine, "c", num_classes=3),
                  _checkpoint(engine, "d", in_channels=3)):
        with pytest.raises(db.StoreError) as refused:
            db.register_lineage_checkpoint(engine, "l", other)
        message = str(refused.value)
        assert message.startswith("Lineage 'l' holds digits_cnn with 2 classes, 1 input channel(s), not ")
        assert message.count(".") == 1 and "another --lineage name" in message  # one sentence
    assert db.lineage_checkpoints(engine, "l")["version"].tolist() == [1]  # nothing written


def test_a_checkpoint_belongs_to_one_lineage(engine):
    checkpoint = _checkpoint(engine, "a")
    db.register_lineage_checkpoint(engine, "first", checkpoint)
    with pytest.raises(db.StoreError, match="version 1 of lineage 'first'"):
        db.register_lineage_checkpoint(engine, "second", checkpoint)


def test_lineages_to_audit_follows_the_flag_or_the_names_asked_for(engine):
    db.register_lineage_checkpoint(engine, "watched", _checkpoint(engine, "a"), audit=True)
    db.register_lineage_checkpoint(engine, "quiet", _checkpoint(engine, "b"))
    assert db.lineages_to_audit(engine)["lineage"].tolist() == ["watched"]
    assert db.lineages_to_audit(engine, ["quiet"])["lineage"].tolist() == ["quiet"]
    with pytest.raises(db.StoreError, match="No lineage with checkpoints named 'nope'"):
        db.lineages_to_audit(engine, ["nope"])
    db.set_lineage_audit(engine, "quiet", True)
    db.set_lineage_audit(engine, "watched", False)
    assert db.lineages_to_audit(engine)["lineage"].tolist() == ["quiet"]
    with pytest.raises(db.StoreError, match="No lineage named 'nope'"):
        db.set_lineage_audit(engine, "nope")


def test_previous_audited_checkpoint_skips_versions_no_audit_evaluated(engine, world, build_sums):
    ids = [world.checkpoint_id] + [db.register_checkpoint(engine, t * 64, "digits_cnn", 2, path="w.pt")
                                   for t in "de"]
    lineage = [db.register_lineage_checkpoint(engine, "prod", c) for c in ids]
    audit_run = db.start_audit_run(engine, name="nightly")
    method = world.method_ids["gradcam"]
    evaluation = db.get_or_create_evaluation(engine, ids[0], method, world.mosaic_set_id, audit_run_id=audit_run)
    focus = [0.9, 0.8, 0.7, 0.6]
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(focus, world.masks), focus, [0] * 4)
    db.finish_evaluation(engine, evaluation)
    lineage_id = lineage[0].lineage_id
    previous = db.previous_audited_checkpoint(engine, lineage_id, 3)
    assert previous is not None and previous["checkpoint_id"] == ids[0] and previous["version"] == 1
    assert db.previous_audited_checkpoint(engine, lineage_id, 1) is None
    (stored,) = db.audit_evaluations(engine, ids[0], method)
    assert stored.evaluation_id == evaluation and stored.median_focus == pytest.approx(0.75)
    assert db.audit_evaluations(engine, ids[0], method, before_audit_run=audit_run) == []
    history = db.checkpoint_history(engine, ids[0])
    assert history[["lineage", "checkpoint_version"]].values.tolist() == [["prod", 1]]


def test_a_run_whose_weights_an_earlier_run_produced_finds_its_epochs(engine):
    """A second run with the same seed puts its own epochs into its lineage."""
    runs = [db.register_training_run(engine, tag * 64, "digits_cnn", {}, name=name) for tag, name in (("a", "x"),
                                                                                                       ("b", "y"))]
    ids = [db.register_checkpoint(engine, tag * 64, "digits_cnn", 2, training_run_id=run, epoch=epoch)
           for run in runs for tag, epoch in (("c", 1), ("d", 2))][:2]
    first = db.register_training_epochs(engine, "digits", runs[0], last_epoch=2)
    second = db.register_training_epochs(engine, "digits", runs[1], last_epoch=2)
    assert [e.checkpoint_id for e in second] == [e.checkpoint_id for e in first] == ids
    assert [e.added for e in second] == [False, False]
