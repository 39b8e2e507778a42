"""flows.worker.confinement through the parameter models: what a form may make a worker import, read and write.

A worker is confined by its environment (``PREFECT__FLOW_RUN_ID``, which a worker sets for every flow run, or
``FOCUS_CONFINED=1``); each attack of a form is refused in one sentence by the parameter models, before any work.
The same attacks on a real server and worker: test_worker_confinement_server.py.
"""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from flows.worker import confinement
from flows.params import EvaluateParams, TrainParams

ATTACK = "os:system(command='id > {target}')"


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """A confined process whose working directory (its default output root) is tmp_path/project."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    for name in (confinement.DATA_ROOTS_ENV, confinement.OUTPUT_ROOT_ENV, confinement.ALLOWED_URLS_ENV,
                 confinement.FACTORIES_ENV, confinement.CONFINED_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "8a2f6c1e-0000-4000-8000-000000000000")
    return project


def _refused(match: str, **params) -> str:
    with pytest.raises(ValidationError, match=match) as info:
        EvaluateParams(**{"model": {"weights": "s3://models/w.pt"}, **params})
    (error,) = info.value.errors()
    assert "\n" not in error["msg"]
    return error["msg"]


def test_the_trust_level_comes_from_the_environment_only():
    assert not confinement.confined(environ={})
    assert confinement.confined(environ={"PREFECT__FLOW_RUN_ID": "x"})
    assert confinement.confined(environ={"FOCUS_CONFINED": "1"})
    assert not confinement.confined(environ={"FOCUS_CONFINED": "0"})


def test_a_worker_refuses_the_os_system_architecture(worker, tmp_path):
    target = tmp_path / "x"
    _refused("builds no model factory 'os:system'", model={"architecture": ATTACK.format(target=target),
                                                             "weights": "w.pt"})
    assert not target.exists()


def test_a_worker_builds_factories_its_operator_allowed(worker, monkeypatch):
    with pytest.raises(ValidationError, match="FOCUS_ALLOWED_FACTORIES"):
        EvaluateParams(model={"architecture": "my.nets:small", "weights": "w.pt"})
    monkeypatch.setenv(confinement.FACTORIES_ENV, "other:f, my.nets:small")
    assert EvaluateParams(model={"architecture": "my.nets:small", "weights": "w.pt"}).model.architecture
    assert EvaluateParams(model={"architecture": "timm:resnet18", "weights": "w.pt"}).model.architecture


def test_the_command_line_keeps_its_own_factories(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.delenv(confinement.CONFINED_ENV, raising=False)
    params = EvaluateParams(model={"architecture": "my.nets:small(width=4)", "weights": "/anywhere/w.pt"},
                            figures_dir=str(tmp_path / "figures"))
    assert params.model.architecture == "my.nets:small(width=4)"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"dataset": {"kind": "image_folder", "root": "/etc"}}, "dataset.root"),
        ({"dataset": {"kind": "image_folder", "root": "data", "cache_dir": "/root/.ssh"}}, "dataset.cache_dir"),
        ({"figures_dir": "/etc/cron.d"}, "figures_dir"),
        ({"figures_dir": "../../../../etc"}, "figures_dir"),
        ({"model": {"weights": "file:///etc/shadow"}}, "model.weights"),
        ({"model": {"weights": "/etc/shadow"}}, "model.weights"),
        ({"model": {"weights": "http://169.254.169.254/latest/meta-data/iam"}}, "model.weights"),
        ({"model": {"weights": "http://127.0.0.1:4200/api/w.pt"}}, "model.weights"),
        ({"model": {"weights": "https://localhost/w.pt"}}, "model.weights"),
        ({"model": {"weights": "ftp://example.com/w.pt"}}, "model.weights"),
    ],
)
def test_a_worker_refuses_paths_and_urls_outside_what_the_operator_set_up(worker, params, field):
    with pytest.raises(ValidationError) as info:
        EvaluateParams(**{"model": {"weights": "w.pt"}, **params})
    (error,) = info.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert "\n" not in error["msg"] and ("outside the folders" in error["msg"] or "URL" in error["msg"])


def test_a_worker_refuses_checkpoint_folders_outside_its_output_root(worker):
    for folder in ("/root/.ssh", "../elsewhere", "file:///etc/cron.d"):
        with pytest.raises(ValidationError, match="outside the folders this worker writes"):
            TrainParams(checkpoint_dir=folder)
    assert TrainParams().checkpoint_dir == "checkpoints"  # the deployment's default: under the working directory


def test_a_symbolic_link_out_of_the_output_root_is_refused(worker, tmp_path):
    (worker / "figures").symlink_to(tmp_path)  # inside by name, outside once resolved
    _refused("outside the folders this worker writes", figures_dir="figures/out")
    assert EvaluateParams(model={"weights": "w.pt"}, figures_dir="figures-ok/a/../b").figures_dir


def test_the_operators_roots_and_url_prefixes(worker, tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir(), out.mkdir()
    monkeypatch.setenv(confinement.DATA_ROOTS_ENV, f"{data}{os.pathsep}/srv/none")
    monkeypatch.setenv(confinement.OUTPUT_ROOT_ENV, str(out))
    ok = EvaluateParams(model={"weights": f"file://{data}/w.pt"}, figures_dir=str(out / "figs"),
                        dataset={"kind": "image_folder", "root": str(data / "shapes"), "cache_dir": str(out / "c")})
    assert ok.dataset.root.endswith("shapes")
    _refused("outside the folders this worker writes", figures_dir=str(worker / "figs"))  # not the cwd any more
    assert EvaluateParams(model={"weights": "s3://any-bucket/w.pt"}).model.weights  # an object store: worker's keys
    monkeypatch.setenv(confinement.ALLOWED_URLS_ENV, "s3://models, http://127.0.0.1:9000/weights/")
    assert EvaluateParams(model={"weights": "http://127.0.0.1:9000/weights/w.pt"}).model.weights
    _refused("under none of the prefixes", model={"weights": "s3://models-evil/w.pt"})
    _refused("under none of the prefixes", model={"weights": "https://example.com/w.pt"})
    _refused("'..' segment", model={"weights": "s3://models/../other/w.pt"})


def test_the_command_line_is_confined_only_to_roots_it_sets(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.delenv(confinement.CONFINED_ENV, raising=False)
    monkeypatch.delenv(confinement.ALLOWED_URLS_ENV, raising=False)
    monkeypatch.delenv(confinement.DATA_ROOTS_ENV, raising=False)
    monkeypatch.setenv(confinement.OUTPUT_ROOT_ENV, str(tmp_path))
    assert EvaluateParams(model={"weights": "http://127.0.0.1/w.pt"}).model.weights  # no URL rule set here
    _refused("outside the folders this worker writes", figures_dir="/etc/cron.d")


def test_opening_weights_is_checked_too(worker):
    from focus_core.errors import FocusError

    from flows.weights import weight_store

    with pytest.raises(FocusError, match="outside the folders this worker reads"):
        weight_store.local_copy("/etc/shadow")  # a location stored earlier, opened on a worker
