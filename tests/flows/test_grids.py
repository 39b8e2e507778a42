"""N x N mosaic sets through the flows: specs, command line, caches and the chunk's per-tile sums.

The store (migration 0007) that records sums of (M, T, 2) with T != 4 is another change: until it lands, these
tests follow a grid != 2 request up to the sums a chunk computes (``flows.tasks.explain_chunk``), and the one
full flow run on a 3x3 set is an expected failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from flows.worker import caches
from flows import tasks
from flows.cli import run as cli_run
from flows.cli.errors import one_line
from flows.cli.parser import build_parser
from flows.params import (
    AuditParams,
    DatasetSpec,
    EvaluateParams,
    MethodSpec,
    ModelSpec,
    MosaicSetSpec,
    RandomizationParams,
    RunSpec,
    TrainParams,
    spec_key,
)
from focus_core import metric, models, mosaics
from focus_core.confident import confident_indices
from focus_core.errors import FocusError

DATASET = DatasetSpec()
NINE = MosaicSetSpec(split="test", per_class=2, seed=3, grid=3, targets=1)  # 20 mosaics of 3x3 tiles


@pytest.fixture(autouse=True)
def fresh_resources():
    caches.clear_caches()
    yield
    caches.clear_caches()


def _request(weights: str, method: str, spec: MosaicSetSpec = NINE, **params) -> tasks.ChunkRequest:
    return tasks.ChunkRequest(
        evaluation_id=1, chunk=0, positions=list(range(20)), mosaic_ids=list(range(1, 21)),
        dataset=DATASET, mosaics=spec, model=ModelSpec(architecture="digits_cnn", weights=weights),
        method=MethodSpec(name=method, params=params), run=RunSpec(device="cpu", batch_size=8),
    )


# --- specs ------------------------------------------------------------------------------------------------------

def test_a_two_by_two_spec_keeps_its_key_and_a_grid_spec_has_its_own() -> None:
    assert spec_key(MosaicSetSpec()) == '{"classes":null,"layout":"random","per_class":20,"seed":0,"split":"test"}'
    assert spec_key(MosaicSetSpec(grid=2, targets=2, confident=None)) == spec_key(MosaicSetSpec())
    nine = MosaicSetSpec(grid=3, targets=1, confident=0.99)
    assert nine.model_dump() | {} == {**MosaicSetSpec().model_dump(), "grid": 3, "targets": 1, "confident": 0.99}
    assert MosaicSetSpec.model_validate_json(spec_key(nine)) == nine
    assert (MosaicSetSpec().chance_level(), nine.chance_level()) == (0.5, 1 / 9)
    assert EvaluateParams(model=ModelSpec(weights="w.pt")).model_dump()["mosaics"] == MosaicSetSpec().model_dump()


@pytest.mark.parametrize(("fields", "sentence"), [
    ({"grid": 3, "targets": 9}, "A 3x3 mosaic has 9 tiles: pass between 1 and 8 target tiles, not 9."),
    ({"grid": 3, "layout": "top"}, "The layout 'top' does not fit 3x3 mosaics with 2 target tile(s): use one of "
                                   "random, contiguous, scattered."),
    ({"targets": 1, "layout": "diagonal"}, "does not fit 2x2 mosaics with 1 target tile(s)"),
    ({"grid": 4, "targets": 9, "layout": "scattered"}, "use one of random, contiguous."),
    ({"layout": "contiguous"}, "does not fit 2x2 mosaics with 2 target tile(s): use one of random, top,"),
    ({"grid": 5}, "less than or equal to 4"),
    ({"confident": 1.5}, "less than or equal to 1"),
])
def test_a_grid_that_does_not_fit_is_refused_in_one_sentence(fields, sentence) -> None:
    with pytest.raises(ValidationError) as caught:
        MosaicSetSpec(**fields)
    line = one_line(caught.value)
    assert sentence in line and "\n" not in line


def test_training_measures_focus_on_a_fixed_grid_set_never_a_confident_one() -> None:
    params = TrainParams.model_validate({"focus_mosaics": {"grid": 3, "targets": 1}})
    assert params.focus_mosaics == MosaicSetSpec(split="val", per_class=10, grid=3, targets=1)
    assert TrainParams().model_dump()["focus_mosaics"] == {"split": "val", "per_class": 10, "seed": 0,
                                                           "layout": "random", "classes": None}
    with pytest.raises(ValidationError, match="confident set would change with every epoch"):
        TrainParams.model_validate({"focus_mosaics": {"confident": 0.99}})
    with pytest.raises(ValidationError, match="'val' split"):
        TrainParams.model_validate({"focus_mosaics": {"split": "test", "grid": 3}})


# --- command line -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "model", "field"), [
    (["evaluate", "--weights", "w.pt"], "EvaluateParams", "mosaics"),
    (["randomize", "--weights", "w.pt"], "RandomizationParams", "mosaics"),
    (["audit"], "AuditParams", "mosaics"),
    (["train"], "TrainParams", "focus_mosaics"),
])
def test_grid_and_targets_on_every_flow_command(argv, model, field) -> None:
    parser = build_parser()
    params = cli_run._parameters(parser.parse_args([*argv, "--grid", "3", "--targets", "1"]), model)
    spec = getattr(params, field)
    assert (spec.grid, spec.targets) == (3, 1)
    default = cli_run._parameters(parser.parse_args(argv), model)
    assert getattr(default, field) == {"EvaluateParams": EvaluateParams, "RandomizationParams": RandomizationParams,
                                       "AuditParams": AuditParams, "TrainParams": TrainParams}[model].model_fields[
        field].get_default(call_default_factory=True)
    if field == "mosaics":
        confident = cli_run._parameters(parser.parse_args([*argv, "--confident", "0.99"]), model)
        assert confident.mosaics.confident == 0.99
        scattered = cli_run._parameters(parser.parse_args([*argv, "--grid", "4", "--layout", "scattered"]), model)
        assert scattered.mosaics.layout == "scattered"
    else:
        both = cli_run._parameters(parser.parse_args([*argv, "--grid", "4", "--focus-per-class", "3"]), model)
        assert (both.focus_mosaics.grid, both.focus_mosaics.per_class, both.focus_mosaics.split) == (4, 3, "val")


def test_a_grid_that_does_not_fit_fails_the_command_in_one_line(capsys) -> None:
    from flows.cli import main

    status = main(["evaluate", "--weights", "w.pt", "--grid", "3", "--targets", "9"])
    err = capsys.readouterr().err
    assert status == 2 and "pass between 1 and 8 target tiles" in err and len(err.strip().splitlines()) == 1


# --- the chunk's per-tile sums ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "params"), [("gradcam", {}), ("gradient", {}), ("lrp_fast", {}),
                                                ("lime", {"n_samples": 8, "segments": 4})])
def test_a_chunk_of_a_grid_set_gives_per_tile_sums_and_their_focus(digits_weights, method, params) -> None:
    request = _request(digits_weights, method, **params)
    sums, focus, predicted = tasks.explain_chunk(request)
    assert sums.shape == (20, 9, 2) and focus.shape == (20,) and predicted.shape == (20,)

    dataset = caches.load_dataset(DATASET)
    manifest = caches.load_manifest(DATASET, NINE)
    assert (manifest.grid, manifest.targets) == (3, 1)
    model = caches.load_model(request.model, DATASET, "cpu")
    explainer = caches.make_explainer(request.method, request.model, grid=3)
    if method == "lime":
        assert explainer.params["grid"] == 3  # its features follow the 3x3 tiles
    x = mosaics.compose_normalized(dataset.tiles, manifest.index_tensor(), dataset)
    assert x.shape == (20, 1, 96, 96)
    relevance = torch.cat([explainer(model, x[i:i + 8], manifest.target_classes()[i:i + 8]) for i in (0, 8, 16)])
    expected = metric.tile_sums(relevance, 3)
    np.testing.assert_allclose(sums, expected.double().numpy(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    expected_focus = metric.focus_score(relevance, mosaics.target_mask(manifest)).double().numpy()
    np.testing.assert_allclose(focus, expected_focus, rtol=1e-4, atol=1e-6, equal_nan=True)
    with torch.no_grad():
        np.testing.assert_array_equal(predicted, model(x).argmax(1).numpy())


def test_lime_given_another_grid_than_the_mosaics_is_refused(digits_weights) -> None:
    with pytest.raises(FocusError, match="given grid 2 but the mosaics have 3"):
        caches.make_explainer(MethodSpec(name="lime", params={"grid": 2}), ModelSpec(), grid=3)
    assert "grid" not in caches.make_explainer(MethodSpec(name="lime"), ModelSpec()).params


# --- the confident protocol -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def confident_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A digits CNN trained for four epochs: confident (p >= 0.5) about some test images of every class."""
    from focus_core import data, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
        train.train_model(model, data.load_digits(seed=0, tile_size=32), train.TrainConfig(
            epochs=4, batch_size=64, lr=3e-3, rotation=15.0, crop_padding=2, hflip=False, seed=0))
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("confident") / "digits-4.pt"
    models.save_weights(model, path)
    return str(path)


@pytest.mark.training
def test_a_confident_set_is_chosen_by_the_checkpoints_weights_and_keyed_by_their_sha256(confident_weights, tmp_path):
    spec = MosaicSetSpec(per_class=2, grid=3, targets=1, confident=0.5)
    checkpoint = ModelSpec(architecture="digits_cnn", weights=confident_weights)
    digits_weights = confident_weights
    with pytest.raises(FocusError, match="chosen by a checkpoint's predictions"):
        caches.load_manifest(DATASET, spec)
    manifest = caches.load_manifest(DATASET, spec, checkpoint)
    sha = models.weights_sha256(digits_weights)
    assert (manifest.confident, manifest.confident_model) == (0.5, sha)
    dataset = caches.load_dataset(DATASET)
    eligible = confident_indices(caches.checked_model(checkpoint, DATASET), dataset, "test", 0.5)
    assert 0 < len(eligible) < len(dataset.indices("test"))
    assert {i for m in manifest.mosaics for i in m.image_indices} <= set(eligible.tolist())
    plain = caches.load_manifest(DATASET, spec.model_copy(update={"confident": None}))
    assert manifest.hash != plain.hash
    table = caches.manifest_tensors(DATASET, spec, checkpoint)
    assert torch.equal(table.indices, manifest.index_tensor())

    other = tmp_path / "other.pt"  # other weights: another set (their own predictions, their own sha256)
    torch.manual_seed(1)
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), other)
    untrained = ModelSpec(architecture="digits_cnn", weights=str(other))
    with pytest.raises(FocusError, match="confidently classified"):  # an untrained model is sure of nothing
        caches.load_manifest(DATASET, spec, untrained)
    copy = tmp_path / "copy.pt"
    shutil.copyfile(digits_weights, copy)  # the same bytes elsewhere: the same set
    assert caches.load_manifest(DATASET, spec, ModelSpec(architecture="digits_cnn", weights=str(copy))) == manifest


# --- the whole flow ---------------------------------------------------------------------------------------------

def test_an_evaluation_of_a_grid_set_records_every_mosaic(prefect_api, sqlite_url, digits_weights) -> None:
    from flows.evaluate import evaluate
    from flows.params import RunSpec

    outcome = evaluate(EvaluateParams(
        model=ModelSpec(architecture="digits_cnn", weights=digits_weights), dataset=DATASET, mosaics=NINE,
        methods=[MethodSpec(name="gradcam")], run=RunSpec(database_url=sqlite_url, chunk_size=8, retries=0),
    ))
    (record,) = outcome["evaluations"]
    assert record["status"] == "finished" and record["summary"]["n"] == 20
