"""``focus train --arch timm:...`` then ``focus evaluate`` of its checkpoint, end to end on a SQLite store.

The tiny ViT of :mod:`tests.focus_core.test_timm_models` is trained for a few epochs through the train flow (each
epoch's Focus measured with the gradient, since GradCAM's ViT layer is another module's business), stored with its
canonical architecture string, and its final checkpoint evaluated with the architecture spelt another way: the
store knows the checkpoint by that one string, so the evaluation is of the recorded checkpoint, not a new one.
"""

from __future__ import annotations

import json

import pytest

from flows import cli
from flows.worker import store
from tests.focus_core.test_timm_models import TINY_VIT, TINY_VIT_SPELT

pytest.importorskip("timm")
pytestmark = [pytest.mark.timeout(300), pytest.mark.training]

PER_CLASS = 2  # mosaics per class: 20 mosaics on the 10 digits
EPOCHS = 4


def _focus(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_evaluate_a_timm_vit(prefect_api, capsys: pytest.CaptureFixture, sqlite_url: str, tmp_path):
    import db

    code, out, err = _focus(
        capsys, "train", "--arch", TINY_VIT_SPELT, "--epochs", str(EPOCHS), "--lr", "1e-3", "--batch-size", "32",
        "--rotation", "0", "--crop-padding", "0", "--method", "gradient", "--focus-per-class", str(PER_CLASS),
        "--name", "tiny-vit", "--checkpoint-dir", str(tmp_path / "checkpoints"), "--retries", "0",
        "--database-url", sqlite_url, "--format", "json",
    )
    assert code == 0, err
    trained = json.loads(out)
    accuracy = [e["val_accuracy"] for e in trained["epochs"]]
    with capsys.disabled():
        print("tiny ViT via `focus train`: val accuracy", [round(a, 3) for a in accuracy], "gradient Focus",
              [round(e["focus"]["gradient"], 3) for e in trained["epochs"]])
    assert [e["epoch"] for e in trained["epochs"]] == list(range(EPOCHS + 1))
    assert accuracy[-1] > accuracy[0] + 0.3  # it learns (measured: 0.09 untrained, 0.69 after 4 epochs)

    code, out, err = _focus(
        capsys, "evaluate", "--arch", TINY_VIT_SPELT, "--weights", trained["final_weights"], "--method", "gradient",
        "--method", "smoothgrad:n_samples=4", "--per-class", str(PER_CLASS), "--retries", "0",
        "--database-url", sqlite_url,
    )
    assert code == 0, err
    engine = store.engine_for(sqlite_url)
    summary = db.evaluation_summary(engine)
    finals = summary[summary["checkpoint_id"] == trained["final_checkpoint_id"]]
    assert (summary["architecture"] == TINY_VIT).all()  # the canonical string, however it was spelt
    assert set(finals["method"]) >= {"gradient", "smoothgrad"} and (finals["status"] == "finished").all()
    for evaluation_id in finals["evaluation_id"]:
        rows = db.evaluation_results(engine, int(evaluation_id))
        assert len(rows) == 10 * PER_CLASS and rows["predicted_class"].between(0, 9).all()
        assert rows["focus"].dropna().between(0, 1).all()
    with capsys.disabled():
        print("final checkpoint:", finals[["method", "median_focus"]].to_dict("records"))
