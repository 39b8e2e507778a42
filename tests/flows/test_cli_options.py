"""The command line reads the flows' pydantic models: help and defaults come from them, and help pages are light."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser
from flows.cli.fields import field_default, field_help
from flows.params import STANDARD_METHODS, AuditParams, EvaluateParams, RandomizationParams, TrainParams
from flows.specs import BUILT_IN_METHODS

ROOT = Path(__file__).resolve().parents[2]


def _options(command: str) -> dict[str, argparse.Action]:
    parser = build_parser({command})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {flag: action for action in sub._actions for flag in action.option_strings}


def test_the_built_in_method_names_are_the_registry() -> None:
    from focus_core.explainers import available_explainers

    assert list(BUILT_IN_METHODS) == available_explainers()


@pytest.mark.parametrize(("command", "model", "dest"), [
    ("train", TrainParams, "focus_methods"), ("evaluate", EvaluateParams, "methods"),
    ("randomize", RandomizationParams, "methods"), ("audit", AuditParams, "methods"),
])
def test_the_method_help_states_the_models_default(command: str, model: type, dest: str) -> None:
    default = ", ".join(m.name for m in field_default(model, dest))
    assert f"(default {default})" in _options(command)["--method"].help
    assert default != ", ".join(STANDARD_METHODS) or command == "audit"


@pytest.mark.parametrize(("command", "flag", "model", "field"), [
    ("evaluate", "--per-class", EvaluateParams, "mosaics.per_class"),
    ("train", "--device", TrainParams, "run.device"),
    ("train", "--epochs", TrainParams, "epochs"),
    ("randomize", "--max-stages", RandomizationParams, "max_stages"),
    ("audit", "--threshold", AuditParams, "threshold"),
])
def test_an_options_help_is_its_fields_description(command: str, flag: str, model: type, field: str) -> None:
    action = _options(command)[flag]
    assert action.help == field_help(model, field)
    assert (model.model_fields[field.split(".")[0]].description or action.help)  # a described field


def test_options_take_the_fields_type_and_choices() -> None:
    evaluate = _options("evaluate")
    assert evaluate["--per-class"].type is int and evaluate["--confident"].type is float
    assert evaluate["--split"].choices == ("val", "test")
    assert evaluate["--randomization"].choices == ("none", "full", "cascading", "independent")
    assert _options("randomize")["--kind"].choices == ("full", "cascading", "independent")


def test_train_options_set_the_nested_run_settings() -> None:
    from flows.cli.params import given

    args = build_parser({"train"}).parse_args(["train", "--device", "cuda", "--retries", "0", "--batch-size", "8"])
    assert given(args) == {"run": {"device": "cuda", "retries": 0}, "batch_size": 8}
    params = TrainParams.model_validate(given(args))
    assert (params.run.device, params.run.retries, params.batch_size) == ("cuda", 0, 8)


def _heavy_modules(argv: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``focus argv`` in a fresh interpreter; its output and which heavy libraries it imported."""
    code = (
        "import sys\nfrom flows.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'prefect', 'captum', 'focus_core.explainers.base', 'sqlalchemy') "
        "if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return done, eval(done.stderr.strip().splitlines()[-1])  # noqa: S307 - our own printed list


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["train", "--help"], ["audit", "--help"]])
def test_a_help_page_imports_neither_torch_nor_prefect(argv: list[str]) -> None:
    done, heavy = _heavy_modules(argv)
    assert "--debug" in done.stdout and heavy == []


def test_a_misspelt_method_is_refused_before_torch_or_prefect_loads(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"only its name matters here")
    done, heavy = _heavy_modules(["evaluate", "--weights", str(weights), "--method", "gradcm"])
    assert "--method gradcm: Unknown method 'gradcm'" in done.stderr and heavy == []
