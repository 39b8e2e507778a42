"""``focus demo --quick`` end to end on a real Prefect API, in a temporary working directory.

The demo trains the digits CNN (one epoch in --quick), evaluates five methods on the test mosaics,
runs the full and cascading randomization, writes everything to the SQLite file ``focus.db`` of
the working directory and builds the report. The test checks the record, the report, that the
printed medians are the store's, and that a second run adds no row and says what it reused.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from flows import cli
from flows.worker import store
from flows.cli import demo as cli_demo

pytestmark = pytest.mark.timeout(300)

QUICK_PER_CLASS = cli_demo.QUICK_PER_CLASS
N_MOSAICS = QUICK_PER_CLASS * 10


def _row_counts(url: str) -> dict[str, int]:
    engine = store.engine_for(url)
    with engine.connect() as connection:
        tables = [t for t in inspect(connection).get_table_names() if t != "alembic_version"]
        return {t: connection.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one() for t in tables}


def _printed_table(out: str, header: str) -> dict[str, list[str]]:
    """The rows of a table printed by the demo: {method: [cell, ...]}, plus the header row under ''."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method") and header in line)
    table = {"": lines[start].split()[1:]}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("("):
            break
        method, *cells = line.split()
        table[method] = cells
    return table


def _readme_demo_block() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"## What the demo produced.*?```text\n(.*?)```", readme, flags=re.S)
    assert found, "README.md has no ```text block of the demo's output"
    return found.group(1)


def _shape(text: str) -> list[str]:
    """The lines with paths, durations and numbers replaced: what a fresh demo and the README must share."""
    shapes = []
    for line in text.strip().splitlines():
        line = re.sub(r"/\S+", "PATH", line)
        line = re.sub(r"\d+(\.\d+)?", "#", line)
        line = re.sub(r"(# min )?# s\b", "DURATION", line)
        shapes.append(" ".join(line.split()))
    return shapes


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FOCUS_DATABASE_URL", raising=False)
    yield tmp_path
    store.dispose_engines()


@pytest.mark.demo
def test_quick_demo_records_everything_and_reuses_it(prefect_api, demo_dir: Path, capsys: pytest.CaptureFixture):
    import db

    assert cli.main(["demo", "--quick"]) == 0
    out, err = capsys.readouterr()
    url = f"sqlite:///{demo_dir / 'focus.db'}"
    engine = store.engine_for(url)

    # the record: a training run with its epoch, and every evaluation finished with one row per mosaic
    summary = db.evaluation_summary(engine)
    assert (summary["status"] == "finished").all()
    test_set = summary.groupby("mosaic_set_id").size().idxmax()  # the test set has every method and stage
    final = summary[summary["mosaic_set_id"] == test_set]
    assert final["checkpoint_id"].nunique() == 1
    stages = 5  # digits_cnn: classifier and four convolutions
    expected = {("none", m): 1 for m in cli_demo.DEMO_METHODS}
    expected |= {("full", m): 1 for m in cli_demo.DEMO_METHODS}
    expected |= {("cascading", m): stages for m in cli_demo.CASCADING_METHODS}
    found = final.groupby(["randomization", "method"]).size().to_dict()
    assert found == expected
    assert (final["n"] == N_MOSAICS).all()
    counts = _row_counts(url)
    assert counts["mosaic_result"] == int(summary["n"].sum())
    assert counts["training_epoch"] == 2  # epoch 0 (the untrained model) and epoch 1

    # the report and the paths
    report = demo_dir / "focus-report" / "index.html"
    assert report.is_file() and report.stat().st_size > 1000
    assert f"Report:   {report}" in out
    assert f"Database: {demo_dir / 'focus.db'}" in out
    assert "[5/5]" in err

    # the printed medians are the store's
    table = _printed_table(out, "fully random")
    assert table[""] == ["trained", "fully", "random"]
    for method in cli_demo.DEMO_METHODS:
        for kind, cell in zip(("none", "full"), table[method]):
            median = final[(final["method"] == method) & (final["randomization"] == kind)]["median_focus"].item()
            assert cell == f"{median:.3f}", (method, kind)
    cascade = _printed_table(out, "classifier")
    layers = final[final["randomization"] == "cascading"].sort_values("stage")["layer"].drop_duplicates().tolist()
    assert cascade[""] == ["trained", *layers]
    for method in cli_demo.CASCADING_METHODS:
        rows = final[(final["method"] == method) & (final["randomization"] == "cascading")].sort_values("stage")
        assert cascade[method][1:] == [f"{m:.3f}" for m in rows["median_focus"]]

    # the README's sample output has the structure of a fresh demo's (its numbers come from a real, full run)
    assert _shape(_readme_demo_block()) == _shape(out)

    # the SQL cookbook (docs/sql-cookbook.md) is written for what the demo records: every query returns rows on its store
    from tests.test_readme import sql_blocks

    with engine.connect() as connection:
        empty = [sql.splitlines()[0] for sql in sql_blocks() if not connection.execute(text(sql)).fetchall()]
    assert not empty, f"cookbook queries without rows on the demo's store: {empty}"

    # a second run: no new row, nothing recomputed, and it says so
    assert cli.main(["demo", "--quick"]) == 0
    out2, err2 = capsys.readouterr()
    assert _row_counts(url) == counts
    assert "reused: all 1 epoch(s)" in err2
    assert len(re.findall(r"reused: all \d+ mosaic results", err2)) == 3
    assert f"Reused (recorded by an earlier run, not redone): 1 of 1 training epoch(s), {int(final['n'].sum())} of " \
           f"{int(final['n'].sum())} mosaic results." in out2
    assert _printed_table(out2, "fully random") == table


def test_demo_options(demo_dir: Path):
    """Explicit options win over --quick, which wins over the real demo's defaults."""
    parser = cli.build_parser()
    plan = cli_demo.plan_demo(parser.parse_args(["demo"]))
    assert (plan.epochs, plan.per_class) == (cli_demo.DEMO_EPOCHS, cli_demo.DEMO_PER_CLASS)
    assert [m["name"] for m in plan.methods] == list(cli_demo.DEMO_METHODS)
    assert plan.database_url == f"sqlite:///{demo_dir / 'focus.db'}"
    quick = cli_demo.plan_demo(parser.parse_args(["demo", "--quick", "--epochs", "2"]))
    assert (quick.epochs, quick.per_class) == (2, cli_demo.QUICK_PER_CLASS)
    own = cli_demo.plan_demo(parser.parse_args(["demo", "--method", "gradcam", "--method", "random"]))
    assert [m["name"] for m in own.cascading_methods] == ["gradcam"]


@pytest.mark.filterwarnings("ignore:Logger 'prefect.flow_runs' attempted to send logs to the API")  # no flow run here
def test_the_bars_move_on_the_flows_log_lines():
    """The demo's progress comes from what the train and evaluate flows log, not from polling the store."""
    import io
    import logging

    from flows.cli.console import progress
    from flows.evaluate import LOG_CHUNK_DONE, LOG_PLANNED
    from flows.train import LOG_EPOCH, LOG_RESUMED

    logger = logging.getLogger("prefect.flow_runs")
    with progress("chunks", "chunk", None, cli_demo._chunk_moves(), stream=io.StringIO()) as bar:
        logger.info(LOG_PLANNED, 0, 5)  # a randomization's trained stage: every chunk recorded
        logger.info(LOG_PLANNED, 2, 0)  # the next stage: two chunks to run
        logger.info(LOG_CHUNK_DONE, 1, 2)
        logger.info("Stage %s: median Focus %s", "full", {})  # another line of the flow: no move
        assert (bar.n, bar.total) == (6, 7)
    logger.info(LOG_CHUNK_DONE, 2, 2)  # after the step: the bar is gone, nothing listens
    assert bar.n == 6
    with progress("epochs", "epoch", 5, cli_demo._epoch_moves(), stream=io.StringIO()) as bar:
        logger.info(LOG_RESUMED, 1, 3, "epoch-0003.pt")
        logger.info(LOG_EPOCH, 4, 0.9, {"gradcam": 0.8})
        assert (bar.n, bar.total) == (4, 5)
