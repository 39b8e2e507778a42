"""What a person sees at the end of a flow command: a short summary, or JSON alone; progress off a terminal; names.

A flow command prints a summary (not Prefect's log lines and pages of JSON), flow runs are named after what they
do, a fresh SQLite file gets its schema before Prefect starts, and progress shows when stderr is a pipe.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from flows import cli
from flows.cli import local_api
from flows.cli.console import Bar

PREFECT_LINE = ("Finished in state", "Created task run", "Beginning flow run")


def _run(capfd: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def test_evaluate_prints_one_screen_and_json_on_request(prefect_api, capfd: pytest.CaptureFixture, tmp_path: Path,
                                                         digits_weights: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FOCUS_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'new.db'}"  # does not exist yet: created without asking
    common = ["evaluate", "--weights", digits_weights, "--per-class", "2", "--method", "gradcam",
              "--method", "random", "--database-url", url]
    code, out, err = _run(capfd, *common)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) <= 40, out
    assert "{" not in out and "evaluation_id" not in out  # no JSON
    header = next(line for line in lines if line.startswith("method"))
    for column in ("n", "undefined", "median Focus", "95% mosaics", "95% classes"):
        assert column in header
    gradcam = next(line for line in lines if line.startswith("gradcam")).split()
    assert gradcam[1] == "20" and gradcam[2].endswith("%") and "-" in gradcam[4]
    assert any(line.startswith(f"Results: {tmp_path / 'new.db'}") for line in lines)
    assert any(line.startswith("Next: focus results compare --mosaic-set") for line in lines)
    assert all(len(line) <= 100 for line in lines if not line.startswith(("Next", "   ", "Results"))), out
    assert not any(marker in err for marker in PREFECT_LINE), err
    assert "created the schema" in err

    code, out, err = _run(capfd, *common, "--format", "json")
    assert code == 0, err
    result = json.loads(out)  # JSON alone on stdout
    assert [e["method"] for e in result["evaluations"]] == ["gradcam", "random"]

    # --verbose in a process of its own: Prefect's console handler keeps the stderr it was set up with, which in
    # this process may be an earlier test's capture
    code, out, err = _focus_process(*common, "--verbose", "--format", "json")
    assert code == 0 and json.loads(out)["num_mosaics"] == 20, err
    assert any(marker in err for marker in PREFECT_LINE), err
    code, out, err = _focus_process(*common)
    assert code == 0 and not any(marker in err for marker in PREFECT_LINE), err


def _focus_process(*argv: str) -> tuple[int, str, str]:
    """``focus *argv`` as a command, against this session's Prefect API."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(root)}
    done = subprocess.run([str(Path(sys.executable).with_name("focus")), *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_flow_runs_are_named_after_what_they_do(prefect_api, capfd: pytest.CaptureFixture, sqlite_url: str,
                                                digits_weights: str):
    import asyncio

    from prefect.client.orchestration import get_client

    code, _, err = _run(capfd, "randomize", "--weights", digits_weights, "--per-class", "1", "--kind", "full",
                        "--method", "gradcam", "--database-url", sqlite_url)
    assert code == 0, err

    async def names() -> list[str]:
        async with get_client() as client:
            return [run.name for run in await client.read_flow_runs(limit=50)]

    found = asyncio.run(names())
    assert "randomize digits_cnn gradcam full" in found, found
    assert "evaluate digits_cnn gradcam full" in found, found
    assert "evaluate digits_cnn gradcam" in found, found


def test_a_store_behind_head_fails_before_prefect(capfd: pytest.CaptureFixture, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    """An existing SQLite store at an old revision is never migrated silently, and Prefect never starts."""
    import db

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(url, "0001")
    code, out, err = _run(capfd, "train", "--epochs", "1", "--database-url", url,
                          "--checkpoint-dir", str(tmp_path / "ck"))
    assert code == 2 and out == "", err
    assert "focus db upgrade" in err and "running flow" not in err
    assert local_api.current_url() is None and db.current(url) == "0001"


@pytest.mark.server
def test_an_empty_postgresql_database_is_never_created_silently(capfd: pytest.CaptureFixture, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    import db
    from tests import postgres

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = postgres.create_database("focus_fresh")
    try:
        code, _, err = _run(capfd, "train", "--epochs", "1", "--database-url", url,
                            "--checkpoint-dir", str(tmp_path / "ck"))
        assert code == 2 and "focus db upgrade" in err and "running flow" not in err, err
        assert db.current(url) is None
    finally:
        from flows.worker import store

        store.dispose_engines()
        postgres.drop_database(url)


def test_create_if_fresh_touches_only_a_fresh_sqlite_file(tmp_path: Path):
    import db
    from db.migrate import create_if_fresh

    fresh, empty = tmp_path / "fresh.db", tmp_path / "empty.db"
    empty.touch()
    assert create_if_fresh(f"sqlite:///{fresh}") == db.head() and fresh.stat().st_size > 0
    assert create_if_fresh(f"sqlite:///{empty}") == db.head()
    assert create_if_fresh(f"sqlite:///{fresh}") is None  # now holds the schema: left alone
    old = tmp_path / "old.db"
    db.upgrade(f"sqlite:///{old}", "0001")
    assert create_if_fresh(f"sqlite:///{old}") is None and db.current(f"sqlite:///{old}") == "0001"


def test_plain_progress_lines_off_a_terminal():
    stream = io.StringIO()
    bar = Bar("epochs", 3, stream, "focus demo:", every=0.05).start()
    bar.update(2)
    time.sleep(0.3)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and lines[-1].startswith("focus demo: epochs: 2/3 (")



@pytest.fixture(scope="module")
def recorded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    import db
    from tests.recorded_store import build_record, write_record

    folder = tmp_path_factory.mktemp("results-store")
    url = f"sqlite:///{folder / 'focus.db'}"
    db.upgrade(url)
    write_record(url, build_record(folder), audits=True)
    return url


def test_results_fit_100_columns_with_integers_and_blanks(recorded_url: str, capfd: pytest.CaptureFixture):
    """The default table fits 100 columns, with no NaN / 0.0 stage and no ``None`` in compare."""
    code, out, err = _run(capfd, "results", "--database-url", recorded_url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "method", "randomized", "stage"]
    assert {"checkpoint", "arch", "dataset", "tile"} <= set(lines[0].split()), lines[0]  # rows a person tells apart
    assert all(" digits_cnn " in line and " digits " in line for line in lines[1:]), out
    assert max(map(len, lines)) <= 100 and "--wide" in err
    assert not any(word in out for word in ("NaN", "nan", "None", "<NA>"))
    cascading = [line.split() for line in lines if " cascading " in line]
    assert cascading and all(row[3].isdigit() for row in cascading), cascading  # stage 2, not 2.0
    trained = next(line.split() for line in lines if " none " in line)
    assert trained[3].isdigit() and not trained[3] == "0"  # no stage: blank, so n follows

    code, wide, _ = _run(capfd, "results", "--wide", "--database-url", recorded_url)
    assert code == 0 and max(map(len, wide.splitlines())) > 100 and "min_focus" in wide.splitlines()[0]
    code, picked, _ = _run(capfd, "results", "--columns", "method,stage", "--format", "csv",
                           "--database-url", recorded_url)
    assert code == 0 and picked.splitlines()[0] == "method,stage" and ",2.0" not in picked
    code, _, err = _run(capfd, "results", "--columns", "nope", "--database-url", recorded_url)
    assert code == 2 and "median_focus" in err

    code, out, err = _run(capfd, "results", "compare", "--mosaic-set", "1", "--database-url", recorded_url)
    assert code == 0 and "None" not in out and max(map(len, out.splitlines())) <= 100, out


def test_results_epochs_needs_no_id(recorded_url: str, capfd: pytest.CaptureFixture):
    """``results epochs`` shows the latest training run without an id, or one named by its name."""
    code, latest, err = _run(capfd, "results", "epochs", "--database-url", recorded_url)
    assert code == 0 and "latest training run" in err, err
    code, named, _ = _run(capfd, "results", "epochs", "--training-run", "demo-digits", "--database-url", recorded_url)
    assert code == 0 and named == latest and len(latest.splitlines()) == 4
    code, _, err = _run(capfd, "results", "epochs", "--training-run", "nosuch", "--database-url", recorded_url)
    assert code == 2 and "No training run named 'nosuch'" in err


def test_an_empty_regressions_table_says_whether_audits_ran(sqlite_url: str, capfd: pytest.CaptureFixture):
    """After audits that found no regression the table says so, not that none were recorded."""
    import db
    from flows.worker import store

    code, out, _ = _run(capfd, "results", "regressions", "--database-url", sqlite_url)
    assert code == 0 and "no audit has run yet" in out
    engine = store.engine_for(sqlite_url)
    for name in ("nightly-1", "nightly-2"):
        db.finish_audit_run(engine, db.start_audit_run(engine, name=name, threshold=0.05))
    code, out, _ = _run(capfd, "results", "regressions", "--database-url", sqlite_url)
    assert code == 0 and "2 finished audit run(s) found no median Focus that fell" in out, out


@pytest.mark.parametrize("command", ["evaluate", "train", "audit", "demo"])
def test_method_help_lists_the_registry(command: str, capsys: pytest.CaptureFixture):
    from focus_core.explainers import available_explainers

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = ", ".join(available_explainers())
    assert "lrp_fast" in listed and listed in text


@pytest.mark.training
def test_two_runs_with_the_same_weights_are_told_apart(prefect_api, capfd: pytest.CaptureFixture, sqlite_url: str,
                                                       tmp_path: Path):
    """A run keeps the name it was given even when its weights equal another run's."""
    common = ["--epochs", "1", "--focus-per-class", "1", "--tile-size", "16", "--checkpoint-dir", str(tmp_path),
              "--database-url", sqlite_url]
    code, out, err = _run(capfd, "train", "--name", "first", *common, "--format", "json")
    assert code == 0, err
    first = json.loads(out)
    assert first["same_weights_as"] is None
    code, out, err = _run(capfd, "train", "--name", "second", *common)
    assert code == 0, err
    assert f"byte-identical to training run {first['training_run_id']} (first) epoch 1" in out, out

    # Every run that produced the weights is recorded, and named wherever the checkpoint is named.
    import db
    from flows.worker import store
    from flows.audit import _marked_checkpoints
    from flows.params import AuditParams
    from flows.report import build_report

    engine = store.engine_for(sqlite_url)
    checkpoint = first["final_checkpoint_id"]
    origins = db.checkpoint_origins(engine, [checkpoint])
    assert [(r["training_run_name"], r["epoch"]) for r in origins.to_dict("records")] == [("first", 1), ("second", 1)]
    both = "first epoch 1 = second epoch 1"
    db.set_checkpoint_audit(engine, checkpoint, True)
    assert [t.name for t in _marked_checkpoints(engine, AuditParams())] == [both]
    code, out, err = _run(capfd, "results", "checkpoints", "--format", "csv", "--database-url", sqlite_url)
    assert code == 0 and both in out, err
    from flows.params import SweepParams
    from flows.sweep import sweep

    cells = sweep(SweepParams(
        checkpoints=[{"weights": first["final_weights"]}], methods=[{"name": "random"}],
        dataset={"tile_size": 16}, mosaics={"split": "test", "per_class": 1, "seed": 2},
        run={"device": "cpu", "batch_size": 16, "chunk_size": 16, "database_url": sqlite_url},
    ))["cells"]
    assert [c["checkpoint"] for c in cells] == [both]
    html_text = build_report(tmp_path / "report", database_url=sqlite_url).read_text(encoding="utf-8")
    assert both in html_text and "Training runs first and second produced the same weights" in html_text
    store.dispose_engines()
