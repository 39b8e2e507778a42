"""The ``focus`` command line: help on every command, one-line errors, the store's commands.

Runs in-process through :func:`flows.cli.main` (fast), and twice through the installed console
script, so the exit status a shell sees is checked too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows import cli
from flows.cli.params import deep_merge, parse_method

FOCUS = shutil.which("focus", path=str(Path(sys.executable).parent)) or "focus"


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub-)command path and its parser, e.g. (("db", "upgrade"), parser)."""
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, prefix + (name,))
    return found


ALL_COMMANDS = [path for path, _ in _commands(cli.build_parser())]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse: --help, usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_is_there():
    top = {path[0] for path in ALL_COMMANDS if path}
    assert top == {"train", "evaluate", "randomize", "sweep", "audit", "checkpoint", "results", "report", "db", "demo"}
    assert ("db", "upgrade") in ALL_COMMANDS and ("db", "current") in ALL_COMMANDS
    assert ("checkpoint", "register") in ALL_COMMANDS and ("checkpoint", "list") in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "focus")
def test_help_explains_every_option(capsys: pytest.CaptureFixture, path: tuple[str, ...]):
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0
    parser = dict(_commands(cli.build_parser()))[path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                assert name in out
            continue
        assert action.help and action.help.strip(), f"focus {' '.join(path)}: {action.option_strings or action.dest} has no help"
        for option in action.option_strings:
            assert option in out, f"focus {' '.join(path)} --help does not list {option}"


@pytest.fixture
def weights_file(tmp_path: Path) -> str:
    path = tmp_path / "w.pt"
    path.write_bytes(b"not really weights")  # only its existence is checked before the flow starts
    return str(path)


MISTAKES = {
    "not a number": ["evaluate", "--per-class", "x"],
    "unknown option": ["train", "--epoch", "3"],
    "missing weights file": ["evaluate", "--weights", "/nonexistent/w.pt"],
    "unknown method": ["evaluate", "--weights", "{weights}", "--method", "nosuch"],
    "bad method parameter": ["evaluate", "--weights", "{weights}", "--method", "smoothgrad:n_samples"],
    "unknown method parameter": ["evaluate", "--weights", "{weights}", "--method", "gradcam:bogus=1"],
    "bad device": ["evaluate", "--weights", "{weights}", "--device", "tpu"],
    "training split for mosaics": ["evaluate", "--weights", "{weights}", "--split", "train"],
    "zero epochs": ["train", "--epochs", "0"],
    "training run name with a path": ["train", "--name", "../../../../tmp/x", "--checkpoint-dir", "{tmp}"],
    "training run name with a space": ["train", "--name", "x y", "--checkpoint-dir", "{tmp}"],
    "audit run name with a slash": ["audit", "--name", "nightly/2024"],
    "sweep without checkpoints": ["sweep", "--method", "gradcam"],
    "sweep fan-out without a server": ["sweep", "--checkpoint", "{weights}", "--deployment", "evaluate/evaluate"],
    "missing ImageFolder": ["evaluate", "--weights", "{weights}", "--data", "/nonexistent/images"],
    "missing params file": ["evaluate", "--params", "/nonexistent/params.json"],
    "malformed database URL": ["db", "current", "--database-url", "notaurl"],
    "unreachable database": ["db", "upgrade", "--database-url", "postgresql+psycopg://focus@127.0.0.1:1/focus"],
    "no subcommand": ["db"],
}


@pytest.mark.parametrize("argv", MISTAKES.values(), ids=MISTAKES.keys())
def test_user_mistake_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, weights_file: str, argv: list[str]
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FOCUS_DEBUG", raising=False)
    tmp = str(Path(weights_file).parent)
    code, out, err = run(capsys, *[a.replace("{weights}", weights_file).replace("{tmp}", tmp) for a in argv])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("focus"), lines[0]
    assert "Traceback" not in err and out == ""
    assert [p.name for p in Path(tmp).iterdir()] == ["w.pt"]  # nothing written: refused before any work


MODEL_MISTAKES = {  # what reaches the model check (a migrated store), and what the line must say
    "text file as weights": (["--weights", "{text}"], "cannot be read safely (KeyError)"),
    "directory as weights": (["--weights", "{dir}"], "is a directory, not a file"),
    "factory that raises": (
        ["--weights", "{text}", "--arch", "boom_factory:make"],
        "The model factory boom_factory:make(num_classes=10, in_channels=1) failed (RuntimeError: factory boom)",
    ),
}


@pytest.mark.parametrize(("argv", "says"), MODEL_MISTAKES.values(), ids=MODEL_MISTAKES.keys())
def test_a_mistake_in_the_model_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str,
    argv: list[str], says: str,
):
    """A factory that raises ends in one sentence and exit 2, not the library's words and exit 1."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("FOCUS_DEBUG", raising=False)
    factory = "def make(num_classes, in_channels):\n    raise RuntimeError('factory boom')\n"
    (tmp_path / "boom_factory.py").write_text(factory)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = tmp_path / "weights.txt"
    text.write_text("hello world, these are notes and no weights\n")
    (tmp_path / "checkpoints").mkdir()
    values = {"{text}": str(text), "{dir}": str(tmp_path / "checkpoints")}
    code, out, err = run(capsys, "evaluate", *[values.get(a, a) for a in argv], "--database-url", sqlite_url)
    sys.modules.pop("boom_factory", None)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and out == "", err
    assert says in err and "does not exist" not in err and "failed:" not in err


def test_validation_error_names_the_flag(capsys: pytest.CaptureFixture, weights_file: str):
    code, _, err = run(capsys, "evaluate", "--weights", weights_file, "--per-class", "0")
    assert code == 2
    assert "--per-class 0:" in err and "mosaics.per_class" not in err
    code, _, err = run(capsys, "evaluate", "--weights", weights_file, "--method", "gradcam", "--method", "gradcm")
    assert code == 2
    assert "--method gradcm: Unknown method 'gradcm'" in err and "methods.1" not in err


def test_a_store_given_with_the_flag_is_named_by_the_flag(capsys: pytest.CaptureFixture, tmp_path: Path):
    url = f"sqlite:///{tmp_path}/no/such/folder/focus.db"
    code, _, err = run(capsys, "db", "upgrade", "--database-url", url)
    assert code == 2 and "check --database-url" in err and "FOCUS_DATABASE_URL" not in err


def test_params_file_and_options(tmp_path: Path, weights_file: str):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"params": {"model": {"weights": weights_file}, "run": {"batch_size": 8, "device": "cpu"}}}))
    args = cli.build_parser().parse_args(["evaluate", "--params", str(params), "--batch-size", "16", "--method", "lrp"])
    from flows.cli.params import load_params_file, method_specs, run_fields

    merged = deep_merge(load_params_file(args.params), {"run": run_fields(args), "methods": method_specs(args)})
    assert merged["run"] == {"batch_size": 16, "device": "cpu"}
    assert merged["methods"] == [{"name": "lrp", "params": {}}]
    assert parse_method("smoothgrad:n_samples=10,sigma=0.2,noise=gaussian") == {
        "name": "smoothgrad",
        "params": {"n_samples": 10, "sigma": 0.2, "noise": "gaussian"},
    }


SECRET_URLS = [
    "postgresql+psycopg://u:secret@db/focus",
    "postgresql+psycopg://u@db/focus?password=secret",
    "postgresql+psycopg://u@db/focus?sslmode=require&sslpassword=secret",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_database_url_with_a_secret_is_not_a_parameter(monkeypatch: pytest.MonkeyPatch, url: str):
    from flows.cli.demo import plan_demo
    from flows.cli.params import run_fields

    monkeypatch.delenv("FOCUS_DATABASE_URL", raising=False)
    for command in ("evaluate", "randomize", "audit", "sweep"):
        args = cli.build_parser().parse_args([command, "--database-url", url])
        assert "database_url" not in run_fields(args), command
    assert plan_demo(cli.build_parser().parse_args(["demo", "--database-url", url])).database_param is None
    args = cli.build_parser().parse_args(["evaluate", "--database-url", "postgresql+psycopg://u@db/focus"])
    assert run_fields(args)["database_url"] == "postgresql+psycopg://u@db/focus"


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_params_file_with_a_secret_database_url_is_refused(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights_file: str, url: str
):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"model": {"weights": weights_file}, "run": {"database_url": url}}))
    code, out, err = run(capsys, "evaluate", "--params", str(params))
    assert code == 2 and out == ""
    assert "run.database_url" in err and "FOCUS_DATABASE_URL" in err and "secret" not in err
    params.write_text(json.dumps({"database_url": url, "epochs": 1}))
    code, _, err = run(capsys, "train", "--params", str(params))
    assert code == 2 and "database_url" in err and "secret" not in err
    # --debug shows the error itself: its text names the field, never the value
    monkeypatch.setenv("FOCUS_DEBUG", "")  # so that it is restored (unset) after the test: --debug sets it
    with pytest.raises(ValueError, match="database_url") as info:
        cli.main(["train", "--params", str(params), "--debug"])
    assert "secret" not in str(info.value) and "secret" not in repr(info.value)


def test_db_upgrade_and_current_on_a_sqlite_file(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    import db

    url = f"sqlite:///{tmp_path / 'focus.db'}"
    monkeypatch.delenv("FOCUS_DATABASE_URL", raising=False)
    code, out, _ = run(capsys, "db", "current", "--database-url", url)
    assert code == 0 and "no focus-audit schema" in out
    code, out, _ = run(capsys, "db", "upgrade", "--database-url", url)
    assert code == 0 and f"to {db.head()}" in out
    code, out, _ = run(capsys, "db", "upgrade", "--database-url", url)
    assert code == 0 and "already at revision" in out
    monkeypatch.setenv("FOCUS_DATABASE_URL", url)  # the environment, as a user would set it
    code, out, _ = run(capsys, "db", "current")
    assert code == 0 and out.strip() == f"{db.head()} (head)"
    assert db.current(url) == db.head()


def test_console_script_exit_status(tmp_path: Path):
    """Through the installed `focus` script: help exits 0, a mistake exits 2 with one line."""
    ok = subprocess.run([FOCUS, "evaluate", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "--weights" in ok.stdout
    bad = subprocess.run(
        [FOCUS, "evaluate", "--weights", str(tmp_path / "missing.pt")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "missing.pt" in bad.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["--randomization", "cascading", "--stage", "99"], "Cascading stage 99 is out of range"),
     (["--randomization", "independent", "--layer", "nope"], "no parametrised layer 'nope'")],
    ids=["stage", "layer"],
)
def test_a_randomization_the_model_lacks_is_one_line_before_anything_is_written(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, digits_weights: str,
    argv: list[str], says: str,
):
    """The mistake is refused before any mosaic set or evaluation is written."""
    import db

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out, err = run(capsys, "evaluate", "--weights", digits_weights, *argv, "--database-url", sqlite_url)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and says in err and out == "", err
    engine = db.open_store(sqlite_url)
    try:
        assert db.evaluation_summary(engine).empty
        assert db.checkpoints_to_audit(engine).empty
    finally:
        engine.dispose()


def test_randomize_seeds_become_the_flow_parameter(capsys: pytest.CaptureFixture, weights_file: str):
    from flows.cli.params import given
    from flows.params import RandomizationParams

    args = cli.build_parser().parse_args(["randomize", "--weights", weights_file, "--seeds", "0,1,2,3,4"])
    params = RandomizationParams.model_validate(given(args))
    assert params.seeds == [0, 1, 2, 3, 4] and params.seed_list() == [0, 1, 2, 3, 4]
    assert RandomizationParams(model={"weights": weights_file}, seed=3).seed_list() == [3]
    code, out, err = run(capsys, "randomize", "--weights", weights_file, "--seeds", "0,x")
    assert code == 2 and "0,1,2,3,4" in err
    code, out, err = run(capsys, "randomize", "--weights", weights_file, "--seeds", "1,1")
    assert code == 2 and "each seed once" in err
