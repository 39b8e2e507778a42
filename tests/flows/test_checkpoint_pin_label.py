"""``focus checkpoint register --label`` on weights recorded before says why the label is not taken, and
``focus checkpoint pin`` records a lineage's reference or refuses in one sentence."""

from __future__ import annotations

import db
from flows.params import DatasetSpec, ModelSpec
from flows.worker import record, store
from tests.flows.test_checkpoint_cli import _focus, _register


def test_a_label_on_weights_recorded_before_is_not_dropped_silently(capsys, sqlite_url, digits_weights):
    engine = store.engine_for(sqlite_url)
    record.register_checkpoint(engine, ModelSpec(weights=digits_weights, label="trained-digits"), DatasetSpec())
    code, out, err = _focus(capsys, *_register(sqlite_url, digits_weights, "--label", "prod-v1"))
    assert code == 0 and "as version 1 of lineage 'digits-prod'" in out
    assert "--label 'prod-v1' was not recorded" in err and "'trained-digits'" in err
    assert db.lineage_checkpoints(engine)["label"].tolist() == ["trained-digits"]
    code, _, err = _focus(capsys, *_register(sqlite_url, digits_weights, "--label", "trained-digits"))
    assert code == 0 and "not recorded" not in err  # the label it has: nothing to say


def test_pin_records_the_reference_or_refuses_in_one_sentence(capsys, sqlite_url, digits_weights):
    assert _focus(capsys, *_register(sqlite_url, digits_weights))[0] == 0
    pin = ["checkpoint", "pin", "--lineage", "digits-prod", "--database-url", sqlite_url]
    code, out, err = _focus(capsys, *pin, "--version", "1")
    assert code == 0 and "version 1" in out, err
    (row,) = db.lineages_to_audit(store.engine_for(sqlite_url), ["digits-prod"]).to_dict("records")
    assert row["reference_version"] == 1 and row["reference_alias"] is None
    code, _, err = _focus(capsys, *pin, "--version", "4")
    assert code == 2 and "has no version 4" in err and err.count("\n") == 1
    code, _, err = _focus(capsys, *pin, "--alias", "champion")
    assert code == 2 and "does not come from the MLflow Model Registry" in err
    code, _, err = _focus(capsys, "checkpoint", "pin", "--lineage", "nope", "--first", "--database-url", sqlite_url)
    assert code == 2 and "No lineage named 'nope'" in err
    code, out, _ = _focus(capsys, *pin, "--first")
    assert code == 0 and "first audited version" in out
    (row,) = db.lineages_to_audit(store.engine_for(sqlite_url), ["digits-prod"]).to_dict("records")
    assert row["reference_version"] is None or row["reference_version"] != row["reference_version"]  # NULL
