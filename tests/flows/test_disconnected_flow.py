"""``focus evaluate --disconnected``: the evaluate flow explains (and measures) the disconnected model.

The rows of a disconnected GradCAM evaluation of the digits CNN are focus_core's Focus of GradCAM on the laid-out map
of :class:`~focus_core.disconnected.DisconnectedModel` (1e-6, SQLite and PostgreSQL); the evaluation and its
reliance pass have keys of their own, while the connected ones keep theirs; a re-run computes nothing; a model that
cannot be disconnected (a ViT) is refused in one sentence naming it, with nothing written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sqlalchemy import text
from torch import nn

import db
from flows import cli
from flows.evaluate import evaluate
from flows.params import EvaluateParams
from flows.worker import caches, preflight, store
from focus_core import models, reliance
from focus_core.disconnected import GRADCAM_LAYER, DisconnectedModel
from focus_core.errors import FocusError
from focus_core.explainers import get_explainer
from focus_core.metric import focus_score
from focus_core.mosaics import compose_normalized

pytestmark = pytest.mark.timeout(300)

VIT = "timm:vit_tiny_patch16_224(depth=1,embed_dim=32,img_size=32,num_heads=2,patch_size=16)"
PLAIN = f"{__name__}:make_plain"


def make_plain(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The factory ``--arch PLAIN`` calls: a small CNN whose feature extractor and head the wrapper does not know."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


def _params(weights: str, url: str, *, disconnected: bool, methods: tuple[str, ...] = ("gradcam",),
            model_reliance: bool = False, architecture: str = "digits_cnn") -> EvaluateParams:
    return EvaluateParams(
        model={"architecture": architecture, "weights": weights}, mosaics={"split": "test", "per_class": 2, "seed": 5},
        methods=[{"name": m} for m in methods], disconnected=disconnected, model_reliance=model_reliance,
        run={"device": "cpu", "batch_size": 8, "chunk_size": 8, "retries": 0, "retry_delay_seconds": 0,
             "database_url": url},
    )


def _inputs(params: EvaluateParams) -> tuple[DisconnectedModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The disconnected digits CNN and the request's mosaics, targets and masks, built by focus_core alone."""
    dataset = caches.load_dataset(params.dataset)
    table = caches.manifest_tensors(params.dataset, params.mosaics, params.model)
    model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
    model = DisconnectedModel(models.load_weights(model, params.model.weights).eval(), params.mosaics.grid)
    return model, compose_normalized(dataset.tiles, table.indices, dataset), table.targets, table.masks


def _rows(url: str) -> tuple[int, int]:
    with store.engine_for(url).connect() as connection:
        return tuple(connection.execute(text(
            "SELECT (SELECT COUNT(*) FROM evaluation), (SELECT COUNT(*) FROM mosaic_result)")).one())


def _evaluation(url: str, evaluation_id: int) -> tuple[str, dict, dict]:
    """``(natural key, method parameters, recorded request)`` of an evaluation."""
    with store.engine_for(url).connect() as connection:
        key, params, metadata = connection.execute(text(
            "SELECT e.natural_key, m.params, e.metadata FROM evaluation e JOIN xai_method m ON m.id = e.method_id "
            "WHERE e.id = :id"), {"id": evaluation_id}).one()
    def as_dict(value: dict | str) -> dict:
        return value if isinstance(value, dict) else json.loads(value)

    return key, as_dict(params), as_dict(metadata)["request"]


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url"])
def test_a_disconnected_gradcam_evaluation_is_focus_core_s_and_an_evaluation_of_its_own(
        prefect_api, digits_weights, url_fixture, request):
    url = request.getfixturevalue(url_fixture)
    connected = evaluate(_params(digits_weights, url, disconnected=False))
    params = _params(digits_weights, url, disconnected=True)
    first = evaluate(params)
    assert first["disconnected"] is True and "disconnected" not in connected
    (entry,), (plain,) = first["evaluations"], connected["evaluations"]
    assert entry["status"] == "finished" and entry["rows_written"] == 20
    assert entry["evaluation_id"] != plain["evaluation_id"]

    key, method_params, recorded = _evaluation(url, entry["evaluation_id"])
    plain_key, plain_params, plain_recorded = _evaluation(url, plain["evaluation_id"])
    assert key != plain_key
    assert method_params == {"layer": GRADCAM_LAYER, "disconnected": True} and "disconnected" not in plain_params
    assert recorded["disconnected"] is True and "disconnected" not in plain_recorded  # off: recorded as before

    model, x, targets, masks = _inputs(params)
    expected = focus_score(get_explainer("gradcam", layer=GRADCAM_LAYER)(model, x, targets), masks).double().numpy()
    stored = db.evaluation_results(store.engine_for(url), entry["evaluation_id"])["focus"].to_numpy(dtype=float)
    assert np.isfinite(expected).all() and stored == pytest.approx(expected, abs=1e-6)
    connected_focus = db.evaluation_results(store.engine_for(url), plain["evaluation_id"])["focus"].to_numpy(float)
    assert np.abs(connected_focus - stored).max() > 1e-3  # the connected model's maps are other maps

    rows = _rows(url)
    again = evaluate(params)  # the same request: found, nothing computed
    (same,) = again["evaluations"]
    assert same["evaluation_id"] == entry["evaluation_id"] and same["chunks_run"] == [] and same["rows_written"] == 0
    assert _rows(url) == rows == (2, 40)


def test_the_reliance_pass_of_a_disconnected_evaluation_measures_the_disconnected_model(
        prefect_api, digits_weights, sqlite_url):
    connected = evaluate(_params(digits_weights, sqlite_url, disconnected=False, methods=("random",),
                                 model_reliance=True))
    params = _params(digits_weights, sqlite_url, disconnected=True, methods=("random",), model_reliance=True)
    outcome = evaluate(params)
    pass_id = outcome["model_reliance"]["pass_id"]
    assert pass_id != connected["model_reliance"]["pass_id"] and outcome["model_reliance"]["chunks_run"] == [0, 1, 2]

    model, x, targets, masks = _inputs(params)
    found = reliance.tile_reliance(model, x, targets, 2)
    expected = reliance.model_focus(found.drops, masks).double().numpy()
    with store.engine_for(sqlite_url).connect() as connection:
        stored = np.array(connection.execute(text(
            "SELECT r.model_focus FROM mosaic_reliance r JOIN mosaic mo ON mo.id = r.mosaic_id "
            "WHERE r.pass_id = :p ORDER BY mo.position"), {"p": pass_id}).scalars().all(), dtype=float)
    assert stored == pytest.approx(expected, abs=1e-6, nan_ok=True)
    again = evaluate(params)
    assert again["model_reliance"]["pass_id"] == pass_id and again["model_reliance"]["chunks_run"] == []


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit.pt"
    models.save_weights(models.build_model(VIT, num_classes=10, in_channels=1), path)
    return str(path)


def test_a_vision_transformer_is_refused_in_one_sentence_before_any_row(prefect_api, sqlite_url, vit_weights,
                                                                      capsys):
    params = _params(vit_weights, sqlite_url, disconnected=True, architecture=VIT)
    with pytest.raises(FocusError) as refused:  # the worker's pre-flight, where a deployment's run reaches it
        preflight.check_model(params)
    message = str(refused.value)
    assert VIT in message and "vision transformer" in message and message.count(". ") == 0
    with pytest.raises(FocusError, match="vision transformer"):
        evaluate(params)
    preflight.check_model(_params(vit_weights, sqlite_url, disconnected=False, architecture=VIT))  # connected: fine

    code = cli.main(["evaluate", "--arch", VIT, "--weights", vit_weights, "--per-class", "1", "--disconnected",
                     "--retries", "0", "--database-url", sqlite_url])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and VIT in err, err
    assert _rows(sqlite_url) == (0, 0) and db.evaluation_summary(store.engine_for(sqlite_url)).empty


def test_a_network_the_wrapper_does_not_know_is_refused_by_the_pre_flight_in_one_sentence(
        prefect_api, sqlite_url, tmp_path, capsys):
    weights = tmp_path / "plain.pt"
    models.save_weights(make_plain(), weights)
    code = cli.main(["evaluate", "--arch", PLAIN, "--weights", str(weights), "--per-class", "1", "--disconnected",
                     "--retries", "0", "--database-url", sqlite_url])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"cannot be built for {PLAIN} (Sequential)" in err and "digits CNN, torchvision ResNets and VGGs" in err
    assert _rows(sqlite_url) == (0, 0)


def test_the_command_line_flag_runs_the_disconnected_evaluation_and_names_it(prefect_api, digits_weights, sqlite_url,
                                                                          capsys):
    from flows.cli import build_parser
    from flows.cli.params import given

    parser = build_parser({"evaluate"})
    assert given(parser.parse_args(["evaluate", "--weights", "w.pt", "--disconnected"]))["disconnected"] is True
    assert "disconnected" not in given(parser.parse_args(["evaluate", "--weights", "w.pt"]))

    code = cli.main(["evaluate", "--weights", digits_weights, "--per-class", "1", "--disconnected", "--retries", "0",
                     "--database-url", sqlite_url])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "disconnected (each tile through the feature extractor on its own)" in out
    assert "gradcam (disconnected)" in out
    code = cli.main(["results", "evaluations", "--database-url", sqlite_url])
    out, err = capsys.readouterr()
    assert code == 0 and "gradcam (disconnected)" in out, err


def test_a_method_that_cannot_explain_the_disconnected_model_is_refused_before_any_row(digits_weights, sqlite_url):
    params = _params(digits_weights, sqlite_url, disconnected=True, methods=("gradcam", "lrp_fast"))
    with pytest.raises(FocusError, match=r"cannot trace the disconnected model's tile split: .*explainer 'lrp'"):
        preflight.check_model(params)
    preflight.check_model(_params(digits_weights, sqlite_url, disconnected=True, methods=("gradcam", "lrp")))
    preflight.check_model(_params(digits_weights, sqlite_url, disconnected=False, methods=("lrp_fast",)))
    assert _rows(sqlite_url) == (0, 0)
