"""Bring your own model and data through ``focus evaluate``: a model defined here, images written here.

The model (:func:`make_model`) has no ``features`` attribute, so GradCAM's layer cannot be inferred:
without ``--gradcam-layer`` the command ends with one line and exit status 2, with it every mosaic
gets one row per method. Weights saved for another architecture, and a weights file recorded as
another architecture, end with one line too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import text
from torch import nn

from flows import cli
from flows.worker import store
from focus_core import models

pytestmark = pytest.mark.timeout(240)

FACTORY = f"{__name__}:make_model"
CLASSES = ("horizontal", "vertical", "checker")
IMAGES_PER_CLASS = 12
PER_CLASS = 2  # mosaics per target class: 6 mosaics


class TinyNet(nn.Module):
    """Two convolutions and a linear head; its blocks are named attributes, not ``features``."""

    def __init__(self, num_classes: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.pool(self.act1(self.conv1(x)))))
        return self.head(torch.flatten(self.gap(x), 1))


def make_model(num_classes: int = 3, in_channels: int = 3) -> nn.Module:
    """The factory ``focus evaluate --arch tests.flows.test_bring_your_own:make_model`` calls."""
    return TinyNet(num_classes=num_classes, in_channels=in_channels)


def _pattern(kind: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    period = int(rng.integers(4, 9))
    phase = int(rng.integers(0, period))
    y, x = np.mgrid[0:size, 0:size]
    if kind == "horizontal":
        on = ((y + phase) // (period // 2 + 1)) % 2
    elif kind == "vertical":
        on = ((x + phase) // (period // 2 + 1)) % 2
    else:
        on = (((x + phase) // period) + ((y + phase) // period)) % 2
    colour = rng.integers(80, 256, size=3)
    image = on[..., None] * colour[None, None, :] + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree: three classes of synthetic stripes and checkers, 12 PNGs each."""
    root = tmp_path_factory.mktemp("patterns")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir()
        for i in range(IMAGES_PER_CLASS):
            Image.fromarray(_pattern(kind, rng)).save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    models.save_weights(make_model(num_classes=3, in_channels=3), path)
    return str(path)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _evaluate_args(folder: Path, weights: str, url: str, *extra: str) -> list[str]:
    return [
        "evaluate", "--dataset", str(folder), "--tile-size", "32", "--resize", "32",
        "--arch", FACTORY, "--weights", weights, "--method", "gradcam", "--method", "lrp",
        "--per-class", str(PER_CLASS), "--retries", "0", "--database-url", url, *extra,
    ]


def test_own_model_and_image_folder(prefect_api, capsys: pytest.CaptureFixture, sqlite_url: str,
                                    image_folder: Path, tiny_weights: str):
    import db

    # GradCAM's layer cannot be inferred: one clear line, exit 2, nothing recorded
    code, out, err = run(capsys, *_evaluate_args(image_folder, tiny_weights, sqlite_url))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--gradcam-layer" in err and "TinyNet" in err and "act2" in err
    engine = store.engine_for(sqlite_url)
    assert db.evaluation_summary(engine).empty

    # with the layer: one row per mosaic per method
    code, out, err = run(capsys, *_evaluate_args(image_folder, tiny_weights, sqlite_url, "--gradcam-layer", "act2"))
    assert code == 0, err
    summary = db.evaluation_summary(engine)
    assert sorted(summary["method"]) == ["gradcam", "lrp"]
    assert (summary["architecture"] == FACTORY).all()
    assert (summary["status"] == "finished").all()
    n_mosaics = PER_CLASS * len(CLASSES)
    for evaluation_id in summary["evaluation_id"]:
        rows = db.evaluation_results(engine, int(evaluation_id))
        assert len(rows) == n_mosaics and rows["mosaic_id"].is_unique
        assert rows["predicted_class"].between(0, len(CLASSES) - 1).all()

    # `focus results` prints them
    code, out, err = run(capsys, "results", "--wide", "--database-url", sqlite_url)  # the whole factory path
    assert code == 0, err
    lines = out.splitlines()
    for method, median in zip(summary["method"], summary["median_focus"]):
        row = next(line for line in lines[1:] if f" {method} " in f" {line} ")
        assert FACTORY in row and str(n_mosaics) in row.split()
    code, out, err = run(capsys, "results", "--format", "csv", "--database-url", sqlite_url)
    assert code == 0 and out.count(FACTORY) == 2


def test_weights_of_another_architecture_fail_clearly(capsys: pytest.CaptureFixture, sqlite_url: str,
                                                      image_folder: Path, tmp_path: Path):
    other = tmp_path / "digits3.pt"
    models.save_weights(models.build_model("digits_cnn", num_classes=3, in_channels=3), other)
    code, _, err = run(capsys, *_evaluate_args(image_folder, str(other), sqlite_url, "--gradcam-layer", "act2"))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "digits3.pt" in err


def test_checkpoint_recorded_as_another_architecture(prefect_api, capsys: pytest.CaptureFixture, sqlite_url: str,
                                                     digits_weights: str):
    """`--arch alexnet` with weights recorded as digits_cnn is refused in one sentence: nothing is reused."""
    from flows.worker import record
    from flows.params import DatasetSpec, ModelSpec
    from focus_core.errors import FocusError

    common = ["--weights", digits_weights, "--method", "random", "--per-class", "1", "--database-url", sqlite_url]
    code, _, err = run(capsys, "evaluate", *common)
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", "--arch", "alexnet", *common)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "recorded as a digits_cnn checkpoint" in err and "--arch digits_cnn" in err
    code, _, err = run(capsys, "evaluate", "--num-classes", "5", *common)
    assert code == 2 and "with 10 classes" in err

    # the flows check it too (a run started from the UI has no command line)
    engine = store.engine_for(sqlite_url)
    with pytest.raises(FocusError, match="recorded as a digits_cnn checkpoint"):
        record.register_checkpoint(engine, ModelSpec(architecture="alexnet", weights=digits_weights), DatasetSpec())


def test_training_a_model_without_a_known_gradcam_layer_fails_before_any_row(
        prefect_api, capsys: pytest.CaptureFixture, sqlite_url: str, image_folder: Path, tmp_path: Path):
    """``focus train`` of an own model with GradCAM as its per-epoch method: the layer is checked on the model as
    built, before Prefect starts and before a training run, a checkpoint or an evaluation is recorded."""
    code, out, err = run(capsys, "train", "--dataset", str(image_folder), "--tile-size", "32", "--resize", "32",
                         "--arch", FACTORY, "--epochs", "1", "--method", "gradcam", "--checkpoint-dir",
                         str(tmp_path / "ckpt"), "--database-url", sqlite_url)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "--gradcam-layer" in err and "TinyNet" in err, err
    with store.engine_for(sqlite_url).connect() as connection:
        counts = [connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
                  for table in ("training_run", "model_checkpoint", "evaluation")]
    assert counts == [0, 0, 0]


def test_the_worker_and_the_command_refuse_with_the_same_sentence(capsys: pytest.CaptureFixture, sqlite_url: str,
                                                                   image_folder: Path, tiny_weights: str):
    """A deployment's run reaches the worker unchecked: its pre-flight is the command's, sentence for sentence."""
    import db
    from flows.cli.run import _parameters
    from flows.worker import preflight

    argv = _evaluate_args(image_folder, tiny_weights, sqlite_url)
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    params = _parameters(cli.build_parser().parse_args(argv), "EvaluateParams")
    with pytest.raises(ValueError) as refused:
        preflight.check_request(params)
    assert str(refused.value) in err and "--gradcam-layer" in str(refused.value) and "act2" in str(refused.value)
    assert db.evaluation_summary(store.engine_for(sqlite_url)).empty
