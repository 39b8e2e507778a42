"""Bad parameters are rejected before any work: by the form's schema, by the models, and on a worker without the device."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import ValidationError, validate

from flows.worker import record
from flows.audit import audit
from flows.evaluate import evaluate
from flows.params import AuditParams, EvaluateParams, TrainParams
from flows.randomization import randomization
from flows.sweep import sweep
from flows.train import train
from focus_core.errors import FocusError

GOOD = {"model": {"architecture": "digits_cnn", "weights": "digits.pt"}, "methods": [{"name": "lrp"}]}


def _server_validates(flow, parameters: dict) -> None:
    """What the Prefect server does to a run's parameters when the deployment enforces its schema."""
    schema = parameter_schema(flow).model_dump_for_openapi()
    validate(parameters, schema, raise_on_error=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"run": {"device": "gpu"}}, "device"),
        ({"run": {"batch_size": 0}}, "batch_size"),
        ({"mosaics": {"per_class": 0}}, "per_class"),
        ({"mosaics": {"split": "train"}}, "split"),
        ({"mosaics": {"layout": "spiral"}}, "layout"),
        ({"methods": [{"name": "saliency-of-my-dreams"}]}, "name"),
        ({"methods": []}, "methods"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_the_form_schema_rejects_a_bad_parameter(change, field):
    _server_validates(evaluate, {"params": GOOD})
    with pytest.raises(ValidationError, match=field):
        _server_validates(evaluate, {"params": {**GOOD, **change}})


def test_every_flow_publishes_a_schema_with_descriptions():
    for flow in (evaluate, randomization, train, audit, sweep):
        schema = parameter_schema(flow).model_dump_for_openapi()
        assert list(schema["properties"])[0] == "params", flow.name
        definitions = schema.get("definitions", {})
        assert definitions, flow.name
        run = definitions.get("RunSpec", {}).get("properties", {})
        if run:
            assert "cuda" in run["device"]["description"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**GOOD, "methods": [{"name": "lrp", "params": {"epsilon_typo": 1}}]}, "no parameter 'epsilon_typo'"),
        ({"model": {"architecture": "digits_cnn"}}, "weights file"),
        ({**GOOD, "dataset": {"kind": "image_folder"}}, "needs root"),
        ({**GOOD, "model": {"architecture": "my.module:", "weights": "w.pt"}}, "import path"),
    ],
)
def test_a_bad_parameter_fails_the_run_before_any_work(prefect_api, tmp_path, monkeypatch, params, message):
    def no_work(*args, **kwargs):
        raise AssertionError("work started despite a bad parameter")

    monkeypatch.setattr(record, "register_inputs", no_work)
    url = f"sqlite:///{tmp_path / 'never.db'}"
    params = {**params, "run": {"database_url": url}}
    with pytest.raises(Exception, match=message) as raised:
        evaluate(params=params)
    assert "AssertionError" not in repr(raised.value)
    assert not (tmp_path / "never.db").exists()


def test_training_focus_on_the_test_split_is_refused():
    with pytest.raises(ValueError, match="'val' split"):
        TrainParams(focus_mosaics={"split": "test"})


def test_every_list_of_layouts_is_focus_core_layouts():
    """A layout added to ``focus_core.layouts.LAYOUTS`` is at once a flow parameter, a CLI choice and a report one."""
    code = (
        "from focus_core import layouts\n"
        "layouts.LAYOUTS['corners'] = (0, 3)\n"
        "from flows.cli.parser import build_parser\n"
        "from flows.params import EvaluateParams, MosaicSetSpec\n"
        "from flows.report.figures import LAYOUT_ORDER\n"
        "enum = EvaluateParams.model_json_schema()['$defs']['MosaicSetSpec']['properties']['layout']['enum']\n"
        "print(MosaicSetSpec(layout='corners').layout, build_parser().parse_args(['evaluate', '--layout', 'corners'])"
        ".layout, enum == list(layouts.all_names()) == [*layouts.LAYOUTS, 'contiguous', 'scattered'], LAYOUT_ORDER)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    order = "('top', 'bottom', 'left', 'right', 'diagonal', 'antidiagonal', 'corners', 'random')"
    assert result.stdout.split(maxsplit=3) == ["corners", "corners", "True", order + "\n"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("flow_name", ["evaluate", "train"])
def test_cuda_on_a_worker_without_a_gpu_fails_at_once(prefect_api, tmp_path, flow_name):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    if flow_name == "evaluate":
        run = lambda: evaluate(EvaluateParams(**GOOD, run={"device": "cuda", "database_url": url}))  # noqa: E731
    else:
        run = lambda: train(TrainParams(device="cuda:1", database_url=url, checkpoint_dir=str(tmp_path)))  # noqa: E731
    with pytest.raises(FocusError, match="no CUDA GPU") as raised:
        run()  # at once: before the store is opened (checked below), so before any chunk or epoch
    assert "run on a GPU worker or pass device 'cpu'" in str(raised.value)
    assert not (tmp_path / "never.db").exists()


BAD_NAMES = ["../../../../tmp/x", "x y", "a/b", ".hidden", "-x", "nightly\n", "Zürich", "n" * 101, ""]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_name_that_becomes_a_path_or_a_key_follows_one_rule(name):
    """The form (the server's schema check) and the models refuse the same names, before any work."""
    with pytest.raises(ValueError, match="name"):
        TrainParams(name=name)
    with pytest.raises(ValueError, match="name"):
        AuditParams(name=name)
    for flow, params in ((train, {"name": name}), (audit, {"name": name})):
        if name != "nightly\n":  # JSON schema's '$' lets one trailing newline through; the model refuses it
            with pytest.raises(ValidationError):
                _server_validates(flow, {"params": params})


def test_good_names_pass_the_form_and_the_models():
    for name in ("digits", "resnet18_v2.1", "2024-06-nightly"):
        assert TrainParams(name=name).name == name and AuditParams(name=name).name == name
        _server_validates(train, {"params": {"name": name}})
        _server_validates(audit, {"params": {"name": name}})
    assert AuditParams().name is None


def test_the_audit_form_shows_neither_the_store_url_nor_an_internal_id():
    """The worker's FOCUS_DATABASE_URL names the store; the form refuses one, in-process callers may pass one."""
    schema = parameter_schema(audit).model_dump_for_openapi()
    fields = {name for definition in schema["definitions"].values() for name in definition.get("properties", {})}
    assert "lineages" in fields and "device" in fields
    assert not fields & {"database_url", "audit_run_id"}
    _server_validates(audit, {"params": {"lineages": ["resnet18-prod"], "run": {"device": "cuda"}}})
    with pytest.raises(ValidationError):
        _server_validates(audit, {"params": {"run": {"database_url": "sqlite:///focus.db"}}})
    assert AuditParams(run={"database_url": "sqlite:///x.db"}).run.as_run_spec().database_url == "sqlite:///x.db"
    with pytest.raises(ValueError, match="password"):
        AuditParams(run={"database_url": "postgresql://me:secret@db/focus"})


def test_a_training_run_takes_focus_core_recipe_at_a_constant_rate():
    """One recipe: the flow's differs from focus_core's only in its schedule (the reason: TrainParams.recipe)."""
    from dataclasses import replace

    from focus_core.train import TrainConfig

    digits = TrainParams(epochs=3)
    folder = TrainParams(dataset={"kind": "image_folder", "root": "data/shapes"}, epochs=3)
    assert TrainConfig(**digits.recipe()) == replace(TrainConfig.digits(), epochs=3, lr_schedule="constant")
    assert TrainConfig(**folder.recipe()) == replace(TrainConfig(), epochs=3)
    given = TrainParams(lr=0.01, rotation=5.0, crop_padding=0, hflip=True, seed=4, batch_size=32)
    assert TrainConfig(**given.recipe()) == TrainConfig.digits(
        epochs=10, lr=0.01, rotation=5.0, crop_padding=0, hflip=True, seed=4, batch_size=32, lr_schedule="constant")


def test_cutmix_is_a_training_option_that_leaves_every_run_without_it_keyed_as_before():
    from flows.cli.params import given
    from flows.cli.parser import build_parser

    plain, mixed = TrainParams(), TrainParams(cutmix=1.0)
    assert "cutmix" not in plain.recipe() and mixed.recipe()["cutmix"] == 1.0
    assert plain.config_hash() == TrainParams(cutmix=0.0).config_hash() != mixed.config_hash()
    assert given(build_parser().parse_args(["train", "--cutmix", "1"]))["cutmix"] == 1.0
    with pytest.raises(ValueError, match="cutmix"):
        TrainParams(cutmix=-1.0)


def test_audit_probes_are_checked_in_one_sentence_each() -> None:
    import pydantic

    probe = {"name": "corner", "patch": {"kind": "corner_patch", "size": 3}}
    params = AuditParams(probes=[probe])
    assert params.probes[0].patch == {"kind": "corner_patch", "size": 3, "seed": 0, "corner": "random"}
    assert params.probes[0].mosaic_set(params.mosaics).probe == params.probes[0].patch
    assert AuditParams().probes == [] and "probe" not in AuditParams().mosaics.model_dump()
    for bad, words in (([probe, probe], "more than once"), ([{"name": "clean", "patch": probe["patch"]}], "clean"),
                       ([{"name": "x"}], "changes nothing"), ([{"name": "x", "patch": {"kind": "blur"}}], "blur")):
        with pytest.raises(pydantic.ValidationError, match=words):
            AuditParams(probes=bad)


def test_train_nests_its_run_settings_like_every_flow_and_reads_the_flat_form():
    nested = TrainParams(run={"device": "cuda:1", "retries": 0, "database_url": "sqlite:///f.db"}, epochs=2)
    flat = TrainParams(device="cuda:1", retries=0, database_url="sqlite:///f.db", epochs=2)
    assert flat == nested and (flat.run.device, flat.run.retries, flat.run.database_url) == ("cuda:1", 0, "sqlite:///f.db")
    assert TrainParams(device="cuda", run={"device": "cpu"}).run.device == "cpu"  # the nested value wins
    assert flat.config_hash() == TrainParams(epochs=2).config_hash()  # how it runs is no part of the run's key
    assert "device" not in TrainParams().model_dump() and TrainParams().model_dump()["run"] == {"device": "cpu",
                                                                                              "retries": 1}
    for params in (nested, EvaluateParams(model={"weights": "w.pt"}), AuditParams()):
        assert params.run.device  # one way to read a flow's device
    with pytest.raises(ValueError, match="retries"):
        TrainParams(retries=11)


def test_a_chunk_request_carries_its_evaluations_specs_and_run_settings():
    from flows.params import MethodSpec, RunSpec
    from flows.tasks import ChunkRequest

    params = EvaluateParams(model={"weights": "w.pt"}, run={"device": "cpu", "batch_size": 8, "dtype": "bf16"})
    request = ChunkRequest.of(params, MethodSpec(name="gradcam"), 7, [11, 12], chunk=3, positions=[30, 31])
    assert (request.run, request.mosaics, request.model) == (params.run, params.mosaics, params.model)
    assert (request.device, request.batch_size, request.dtype, request.lease_seconds) == ("cpu", 8, "bf16", 300.0)
    flat = ChunkRequest(evaluation_id=7, chunk=3, positions=[30, 31], mosaic_ids=[11, 12], dataset=params.dataset,
                        mosaics=params.mosaics, model=params.model, method=MethodSpec(name="gradcam"),
                        device="cpu", batch_size=8, dtype="bf16")
    assert flat == request and flat.run == RunSpec(batch_size=8, dtype="bf16")
    focus = TrainParams(batch_size=16, device="cuda").focus_specs(params.model)
    assert (focus.run.batch_size, focus.run.device, focus.mosaics.split) == (16, "cuda", "val")
