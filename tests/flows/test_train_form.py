"""The ``train`` deployment's form trains the run ``focus train`` trains: same recipe, same config hash."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.cli.parser import build_parser
from flows.cli.run import training_params
from flows.params import TrainParams

PREFECT_YAML = Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"


def test_the_train_forms_default_is_focus_trains_recipe():
    (train,) = [d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if d["name"] == "train"]
    form = TrainParams(**train["parameters"]["params"])
    cli = training_params(build_parser().parse_args(["train", "--name", form.name]))
    assert form.recipe() == cli.recipe()  # the learning rate included (digits: 3e-3)
    assert form.config_hash() == cli.config_hash()  # the same training run and checkpoint folder
