"""Mistakes that need no model and no data end in one sentence before anything heavy is imported or written.

A mistyped method or parameter is refused without importing an explainer (torch, captum, torchvision), target
classes are counted against the ImageFolder before Prefect starts, a missing database or SQLite file says so (and
no read creates one), a GradCAM layer or an architecture the model does not have names the ones it has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows import cli
from focus_core.explainers.specs import METHODS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "captum", "torchvision", "zennit")


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_the_light_method_table_is_the_registry():
    """:data:`METHODS` (read without torch) lists the registry's classes, in order, with their own specs."""
    from focus_core.explainers import registry

    built_in = [name for name in registry.EXPLAINERS if name in METHODS]
    assert built_in == list(METHODS)
    assert set(METHODS) <= set(registry.EXPLAINERS)
    for name, schema in METHODS.items():
        cls = registry.EXPLAINERS[name]
        assert (cls.spec, cls.runtime_spec) == (schema.spec, schema.runtime_spec), name


def _focus_in_a_fresh_process(tmp_path: Path, *argv: str) -> dict:
    """Run ``focus argv`` in a new interpreter; its exit status, stderr and which heavy modules it imported."""
    script = (
        "import json, sys\n"
        "from flows.cli import main\n"
        f"code = main({list(argv)!r})\n"
        f"print(json.dumps({{'code': code, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "DO_NOT_TRACK": "1",
           "FOCUS_DATABASE_URL": f"sqlite:///{tmp_path / 'work' / 'focus.db'}"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "work", env=env, capture_output=True,
                          text=True, timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "err": done.stderr}


@pytest.mark.parametrize(
    ("method", "says"),
    [("gradcm", "Unknown method 'gradcm'"), ("gradcam:bogus=1", "has no parameter 'bogus'"),
     ("smoothgrad:n_samples=x", "pass an integer")],
    ids=["name", "parameter", "kind"],
)
def test_a_mistyped_method_is_refused_without_importing_an_explainer(tmp_path: Path, method: str, says: str):
    """A misspelt method is refused without importing captum, torch's compiler or torchvision ops."""
    (tmp_path / "work").mkdir()
    weights = tmp_path / "work" / "w.pt"
    weights.write_bytes(b"only its existence is checked first")
    result = _focus_in_a_fresh_process(tmp_path, "evaluate", "--weights", str(weights), "--method", method)
    assert result["code"] == 2, result["err"]
    assert says in result["err"] and len(result["err"].strip().splitlines()) == 1, result["err"]
    assert result["heavy"] == [], result
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["w.pt"]  # nothing written, not even the store


def test_a_mistyped_method_names_the_closest_one():
    from focus_core.errors import FocusError
    from focus_core.explainers import get_explainer

    with pytest.raises(FocusError, match=r"Unknown explainer 'gradcm' \(did you mean 'gradcam'\?\): choose one of"):
        get_explainer("gradcm")
    with pytest.raises(FocusError, match=r"no parameter 'n_sample' \(did you mean 'n_samples'\?\)"):
        get_explainer("smoothgrad", n_sample=3)


@pytest.mark.parametrize("argv", [["results"], ["results", "compare", "--mosaic-set", "1"], ["report", "--out", "r"],
                                  ["checkpoint", "list"]],
                         ids=["results", "compare", "report", "checkpoint-list"])
def test_a_read_of_a_misspelt_sqlite_file_says_so_and_creates_nothing(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str]
):
    """A read names the missing file in one line and leaves no empty database behind."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv, "--database-url", "sqlite:///misspelt.db")
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1, err
    assert f"There is no SQLite file '{tmp_path / 'misspelt.db'}'" in err
    assert list(tmp_path.iterdir()) == []


def test_db_current_of_a_missing_sqlite_file_creates_nothing(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "db", "current", "--database-url", "sqlite:///misspelt.db")
    assert code == 0 and "no focus-audit schema" in out and "no file at" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["results"], ["db", "upgrade"]], ids=["results", "db upgrade"])
def test_a_missing_postgresql_database_gets_the_createdb_command(capsys: pytest.CaptureFixture, argv: list[str]):
    """A missing PostgreSQL database is named with the createdb command that makes it, in one sentence."""
    from sqlalchemy.engine import make_url

    from tests import postgres

    url = make_url(postgres.create_database("focus_gone"))  # skips (locally) when no server answers
    postgres.drop_database(url.render_as_string(hide_password=False))
    code, out, err = run(capsys, *argv, "--database-url", url.render_as_string(hide_password=False))
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and "FATAL" not in err, err
    assert f"has no database {url.database!r}: create it with `createdb -h {url.host} -p {url.port}" in err
    assert f"{url.database}`, then run `focus db upgrade`" in err


@pytest.fixture
def untrained_digits(tmp_path: Path) -> str:
    """An untrained digits CNN's weights (its layers are what the checks read, not its numbers)."""
    from focus_core import models

    path = tmp_path / "digits.pt"
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), path)
    return str(path)


def test_a_gradcam_layer_the_model_lacks_names_layers_it_has(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, untrained_digits: str
):
    """A wrong GradCAM layer is answered with layers the model has."""
    from focus_core import models

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out, err = run(capsys, "evaluate", "--weights", untrained_digits, "--gradcam-layer", "features.99",
                         "--database-url", sqlite_url)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "'features.99' is not a submodule of DigitsCNN" in err and "--gradcam-layer" in err
    named = dict(models.build_model("digits_cnn", num_classes=10, in_channels=1).named_modules())
    suggested = err.split("(did you mean ")[1].split("?")[0].strip("'")
    listed = err.rsplit("(", 1)[1].split(")")[0].split(", ")
    assert suggested in named and listed and all(name in named for name in listed), err


def test_an_unknown_architecture_on_recorded_weights_says_it_is_unknown(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, untrained_digits: str
):
    """An unknown architecture is named as unknown, with the closest known one, whatever the store knows."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, _, err = run(capsys, "checkpoint", "register", "--lineage", "digits", "--weights", untrained_digits,
                       "--arch", "digits_cnn", "--num-classes", "10", "--in-channels", "1", "--database-url", sqlite_url)
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", "--weights", untrained_digits, "--arch", "digits_cnm",
                         "--database-url", sqlite_url)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "Unknown architecture 'digits_cnm' (did you mean 'digits_cnn'?): pass --arch with one of" in err
    assert "recorded" not in err


@pytest.fixture
def six_classes(tmp_path: Path) -> Path:
    """An ImageFolder of 6 classes x 3 images of 8 x 8 pixels."""
    from PIL import Image

    root = tmp_path / "six"
    for label in range(6):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * label, 10 * i, 0)).save(root / f"class{label}" / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["evaluate", "--weights", "{weights}", "--classes", "1,9"],
      "--classes 9 is not a class of the ImageFolder '{root}', which has 6 classes: pass indices from 0 to 5."),
     (["randomize", "--weights", "{weights}", "--classes", "6"], "--classes 6 is not a class"),
     (["train", "--num-classes", "4"],
      "--num-classes 4 is fewer than the 6 classes of the ImageFolder '{root}': pass --num-classes 6 or leave it out.")],
    ids=["evaluate", "randomize", "train"],
)
def test_classes_the_folder_lacks_are_refused_before_prefect_starts(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, six_classes: Path,
    argv: list[str], says: str,
):
    """A class the folder lacks is refused before Prefect starts, without its ERROR lines on stderr."""
    import flows.cli.local_api as local_api

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(local_api, "ensure_started", lambda: pytest.fail("Prefect was started"))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"only its existence is checked first")
    store = tmp_path / "focus.db"
    argv = [a.replace("{weights}", str(weights)) for a in argv]
    code, out, err = run(capsys, *argv, "--data", str(six_classes), "--tile-size", "8", "--resize", "8",
                         "--database-url", f"sqlite:///{store}")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert says.replace("{root}", str(six_classes)) in err
    assert not store.exists()  # refused before the store is opened


def test_class_names_read_the_listing_of_either_layout(tmp_path: Path, six_classes: Path):
    from focus_core.folder_classes import class_names
    from focus_core.image_folder import load_image_folder

    assert class_names(six_classes) == list(load_image_folder(six_classes, tile_size=8, resize=8).classes)
    for split, name in [("train", "a"), ("train", "b"), ("val", "b"), ("val", "c")]:
        (tmp_path / "split" / split / name).mkdir(parents=True)
    assert class_names(tmp_path / "split") == ["a", "b", "c"]
