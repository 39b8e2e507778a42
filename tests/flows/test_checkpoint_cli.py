"""``focus checkpoint register`` / ``list``, ``focus train --lineage``: idempotent, one-line refusals, no stray rows."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

import db
from flows import cli
from flows.worker import store


def _focus(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _register(url: str, weights: str, *extra: str) -> list[str]:
    return ["checkpoint", "register", "--lineage", "digits-prod", "--weights", weights, "--arch", "digits_cnn",
            "--num-classes", "10", "--in-channels", "1", *extra, "--database-url", url]


def _rows(url: str) -> dict[str, int]:
    engine = store.engine_for(url)
    with engine.connect() as connection:
        return {t: connection.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
                for t in ("model_checkpoint", "lineage", "training_run")}


def test_register_records_a_version_once_and_list_shows_it(capsys, sqlite_url, digits_weights):
    code, out, err = _focus(capsys, *_register(sqlite_url, digits_weights, "--label", "nightly", "--audit"))
    assert code == 0, err
    (row,) = db.lineage_checkpoints(store.engine_for(sqlite_url)).to_dict("records")
    assert out.strip() == f"Registered checkpoint {row['sha256'][:12]} as version 1 of lineage 'digits-prod'."
    assert (row["version"], row["label"], row["lineage_audit"], row["path"]) == (1, "nightly", True, digits_weights)
    code, out, _ = _focus(capsys, *_register(sqlite_url, digits_weights))
    assert code == 0 and out.strip().endswith("is already version 1 of lineage 'digits-prod': nothing to do.")
    assert _rows(sqlite_url)["model_checkpoint"] == 1

    code, out, _ = _focus(capsys, "checkpoint", "list", "--format", "json", "--database-url", sqlite_url)
    (listed,) = json.loads(out)
    assert code == 0 and (listed["lineage"], listed["version"], listed["sha256"]) == ("digits-prod", 1, row["sha256"])
    assert digits_weights in out and "\\/" not in out  # paths as written, not pandas' escaped slashes
    code, out, _ = _focus(capsys, "checkpoint", "list", "--database-url", sqlite_url)
    assert code == 0 and "digits-prod" in out and row["sha256"][:12] in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "/no/such/w.pt"], "does not exist: pass a local file or an fsspec URL"),
        (["--num-classes", "3"], ""),  # the weights do not fit a 3-class head
        (["--version", "0"], "expected a number of at least 1"),
        (["--lineage", "../x"], "may hold only letters"),
    ],
    ids=["missing file", "weights for another head", "version 0", "bad name"],
)
def test_a_bad_registration_is_one_line_and_writes_nothing(capsys, sqlite_url, digits_weights, extra, message):
    argv = _register(sqlite_url, digits_weights)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv[-2:-2] = [flag, value]
    code, out, err = _focus(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert _rows(sqlite_url) == {"model_checkpoint": 0, "lineage": 0, "training_run": 0}


def test_a_lineage_refuses_another_model_and_a_taken_version(capsys, sqlite_url, digits_weights, tmp_path):
    engine = store.engine_for(sqlite_url)
    other = db.register_checkpoint(engine, "ab" * 32, "digits_cnn", 3, path="three.pt", in_channels=1)
    db.register_lineage_checkpoint(engine, "three-classes", other)
    db.register_lineage_checkpoint(engine, "digits-prod", db.register_checkpoint(
        engine, "cd" * 32, "digits_cnn", 10, path="v1.pt", in_channels=1))
    before = _rows(sqlite_url)
    argv = _register(sqlite_url, digits_weights)
    argv[argv.index("--lineage") + 1] = "three-classes"
    code, _, err = _focus(capsys, *argv)
    assert code == 2 and "Lineage 'three-classes' holds digits_cnn with 3 classes" in err
    code, _, err = _focus(capsys, *_register(sqlite_url, digits_weights, "--version", "1"))
    assert code == 2 and "Version 1 of lineage 'digits-prod' is checkpoint cdcdcdcdcdcd" in err
    assert len(err.strip().splitlines()) == 1
    assert _rows(sqlite_url) == before  # the weights were not recorded either
    code, _, err = _focus(capsys, "checkpoint", "list", "--lineage", "nope", "--database-url", sqlite_url)
    assert code == 2 and "No lineage named 'nope'" in err


def test_train_into_a_lineage_of_another_model_is_refused_before_training(capsys, prefect_api, sqlite_url, tmp_path):
    engine = store.engine_for(sqlite_url)
    other = db.register_checkpoint(engine, "ab" * 32, "digits_cnn", 3, path="three.pt", in_channels=1)
    db.register_lineage_checkpoint(engine, "three-classes", other)
    checkpoints = tmp_path / "checkpoints"
    code, _, err = _focus(capsys, "train", "--epochs", "1", "--lineage", "three-classes", "--checkpoint-dir",
                          str(checkpoints), "--database-url", sqlite_url)
    assert code == 2, err
    assert "Lineage 'three-classes' holds digits_cnn with 3 classes" in err and "another --lineage name" in err
    assert _rows(sqlite_url)["training_run"] == 0 and not checkpoints.exists()


def test_the_list_shows_a_missing_label_as_a_dash_not_nan(capsys, sqlite_url, digits_weights, tmp_path):
    import torch

    from focus_core import models

    torch.manual_seed(7)
    other = tmp_path / "other.pt"
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), other)
    assert _focus(capsys, *_register(sqlite_url, digits_weights, "--label", "nightly"))[0] == 0
    assert _focus(capsys, *_register(sqlite_url, str(other)))[0] == 0  # no label: NaN beside a labelled row
    code, out, _ = _focus(capsys, "checkpoint", "list", "--database-url", sqlite_url)
    assert code == 0 and "NaN" not in out and "None" not in out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[1], row[6], row[7]) for row in rows] == [("1", "nightly", "-"), ("2", "-", "-")]
