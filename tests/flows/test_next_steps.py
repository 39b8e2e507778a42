"""The "Next:" line of ``focus train`` on a user's own folder is a command that runs as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from flows.worker import store
from tests.flows.test_bring_your_own import image_folder, run  # noqa: F401 (the folder is a fixture)

pytestmark = [pytest.mark.training, pytest.mark.timeout(240)]


def test_the_evaluate_that_train_prints_runs_as_printed(prefect_api, capsys: pytest.CaptureFixture, sqlite_url: str,
                                                        image_folder: Path, tmp_path: Path):  # noqa: F811
    import db

    code, out, err = run(capsys, "train", "--data", str(image_folder), "--arch", "digits_cnn", "--in-channels", "3",
                         "--tile-size", "32", "--resize", "36", "--epochs", "1", "--focus-per-class", "1",
                         "--name", "mine", "--checkpoint-dir", str(tmp_path / "ckpt"), "--database-url", sqlite_url)
    assert code == 0, err
    printed = next(line for line in out.splitlines() if line.startswith("Next: focus evaluate "))
    argv = shlex.split(printed.removeprefix("Next: focus "))
    for flag in ("--data", "--arch", "--in-channels", "--tile-size", "--resize", "--database-url"):
        assert flag in argv, printed
    engine = store.engine_for(sqlite_url)
    before = set(db.evaluation_summary(engine)["evaluation_id"])

    code, out, err = run(capsys, *argv)
    assert code == 0, err
    summary = db.evaluation_summary(engine)
    new = summary[~summary["evaluation_id"].isin(before)]
    assert len(new) and (new["status"] == "finished").all()
    assert set(new["dataset"]) == {image_folder.name} and set(new["tile_size"]) == {32}
