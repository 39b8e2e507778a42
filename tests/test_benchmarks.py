"""benchmarks/throughput.py runs end to end on the CPU and reports every figure (not how fast).

The script is run once as a subprocess, as a user runs it, at a tiny size: digits_cnn, 64x64 mosaics, batch 4,
two batches (two flow chunks of 4 mosaics), one timed repetition after the warm-up, a SQLite store in a temporary
folder, with ``--profile``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput.py"
METHODS = ("gradcam", "gradient", "smoothgrad", "lrp")
HAS_QUANTUS = importlib.util.find_spec("quantus") is not None


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The script's JSON and its ``--profile`` folder."""
    tmp = tmp_path_factory.mktemp("throughput")
    out, profiles = tmp / "throughput.json", tmp / "profiles"
    command = [
        sys.executable, str(SCRIPT), "--arch", "digits_cnn", "--size", "64", "--batch", "4", "--batches", "2",
        "--chunk", "4", "--repeats", "1", "--device", "cpu", "--methods", "gradcam,gradient,smoothgrad:n_samples=2,lrp",
        "--db", str(tmp / "bench.db"), "--profile", str(profiles), "--out", str(out),
    ]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # keeps a Quantus found there
    env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}
    completed = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text()), profiles


@pytest.fixture(scope="module")
def result(run: tuple[dict, Path]) -> dict:
    return run[0]


@pytest.fixture(scope="module")
def module():
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("throughput_under_test", SCRIPT)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


@pytest.mark.slow  # runs the script
def test_every_figure_is_positive_and_finite(result: dict) -> None:
    assert result["errors"] == {}
    expected = {"forward_mosaics_per_s", "forward_backward_mosaics_per_s"}
    for method in METHODS:
        expected |= {f"{method}.{part}" for part in (
            "explainer_mosaics_per_s", "pipeline_mosaics_per_s", "pipeline_with_db_mosaics_per_s",
            "db_write_mosaics_per_s", "db_rewrite_mosaics_per_s", "flow_mosaics_per_s", "flow_with_db_mosaics_per_s",
            "pipeline_over_limit", "pipeline_over_limit_paired", "db_write_share", "db_cost_in_flow",
            "db_cost_in_flow_paired")}
    if HAS_QUANTUS:
        expected |= {"quantus_focus_mosaics_per_s", "pipeline_over_quantus", "quantus_ceiling"}
    figures = result["figures"]
    assert expected <= set(figures), sorted(expected - set(figures))
    # the write's cost in a flow run is a difference of two timings: noise may make it slightly negative
    bad = {name: value for name, value in figures.items()
           if not (_positive(value) or name.endswith((".db_cost_in_flow", ".db_cost_in_flow_paired"))
                   and math.isfinite(value) and value < 1)}
    assert not bad, bad
    assert all(0 < share < 1 for share in result["ratios"]["db_write_share"].values())
    for method in METHODS:
        for ratio in ("db_write_share", "db_cost_in_flow"):
            assert f"{method}_{ratio}<0.05" in result["targets"]


@pytest.mark.slow  # runs the script
def test_flow_runs_the_chunks_and_every_write_ends_in_the_store(result: dict) -> None:
    assert (result["config"]["chunk"], result["config"]["chunks"]) == (4, 2)
    for name in METHODS:
        m = result["methods"][name]
        assert (m["chunk"], m["chunks"], m["chunk_threads"]) == (4, 2, 2)
        for part in ("pipeline_with_db", "db_write", "db_rewrite", "flow", "flow_with_db"):
            assert m[part]["mosaics"] == 8 and len(m[part]["seconds"]) == 1
        assert {key: len(value) for key, value in m["flow_paired"].items()} == {"flow_s": 1, "flow_with_db_s": 1}


@pytest.mark.slow  # runs the script
def test_profile_writes_one_file_per_method(run: tuple[dict, Path]) -> None:
    result, profiles = run
    assert not any(key.startswith("profile:") for key in result["errors"])
    for name in METHODS:
        path = profiles / f"profile_digits_cnn_{name}.txt"
        assert result["methods"][name]["profile"] == str(path)
        text = path.read_text()
        assert "## pipeline: flows.tasks.explain_chunk" in text and "## explainer alone" in text
        assert text.count("Self CPU %") == 2, text[:2000]


@pytest.mark.slow  # runs the script
def test_methods_are_held_to_their_limits(result: dict) -> None:
    methods = result["methods"]
    assert {name: methods[name]["limit"] for name in METHODS} == {
        "gradcam": "forward", "gradient": "forward_backward", "smoothgrad": "forward_backward",
        "lrp": "forward_backward"}
    assert methods["smoothgrad"]["passes_per_mosaic"] == 2
    for name in METHODS:  # the limit and the pipeline in turns, one run each per repeat after the warm-up
        assert {key: len(value) for key, value in methods[name]["paired"].items()} == {"limit_s": 1, "pipeline_s": 1}
    assert methods["smoothgrad"]["params"]["n_samples"] == 2
    for name in METHODS:
        assert methods[name]["rows_in_store"] == result["config"]["mosaics"] == 8
        assert methods[name]["pipeline"]["mosaics"] == 8
        assert len(methods[name]["pipeline"]["seconds"]) == 1


@pytest.mark.slow  # runs the script
def test_config_and_machine_are_recorded(result: dict) -> None:
    config = result["config"]
    assert (config["arch"], config["size"], config["tile"], config["batch"]) == ("digits_cnn", 64, 32, 4)
    assert (config["device"], config["dtype"], config["store"]) == ("cpu", "fp32", "sqlite")
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    if head.returncode == 0:  # the figures name the commit they measured
        assert result["machine"]["commit"].removesuffix("+dirty") == head.stdout.strip()
    if HAS_QUANTUS:
        assert result["quantus"]["mosaics"] == 4
    else:
        assert "skipped" in result["quantus"]


def test_method_parameters_parse(module) -> None:
    assert module.parse_methods("gradcam,smoothgrad:n_samples=8,sigma=0.1,lrp") == [
        ("gradcam", {}), ("smoothgrad", {"n_samples": 8, "sigma": 0.1}), ("lrp", {})]
    assert module.parse_methods("integrated_gradients:n_steps=16;internal_batch_size=32") == [
        ("integrated_gradients", {"n_steps": 16, "internal_batch_size": 32})]


def test_default_chunk_is_a_quarter_in_whole_batches(module) -> None:
    assert module.default_chunk(32, 8) == 8  # 4 chunks
    assert module.default_chunk(8, 4) == 4  # 2 chunks: a quarter rounds up to one batch
    assert module.default_chunk(4, 4) == 4  # never below one batch
    assert module.default_chunk(512, 64) == 128
    assert module.default_chunk(20, 8) == 8  # 5 of 20 rounds up to a batch: 3 chunks


def test_quantus_ratios_give_the_ceiling_any_gradcam_could_reach(module) -> None:
    timing = {"mosaics_per_s": 50.0, "median_s": 1.0}
    method = {"limit": "forward", "passes_per_mosaic": 1, "pipeline": timing, "explainer": timing,
              "db_write": timing, "flow": timing, "flow_with_db": timing,
              "pipeline_with_db": {"mosaics_per_s": 40.0, "median_s": 1.0}}
    results = {"limits": {"forward": {"mosaics_per_s": 100.0}, "forward_backward": {"mosaics_per_s": 45.0}},
               "methods": {"gradcam": method}, "quantus": {"mosaics_per_s": 20.0}}
    ratios = module.ratios(results)
    assert ratios["pipeline_over_quantus"] == 2.0  # with the write
    assert ratios["pipeline_over_limit"]["gradcam"] == 0.5
    assert "gradcam" not in ratios["pipeline_over_limit_paired"]  # no runs in turns, no ratio
    assert ratios["quantus_ceiling"] == 5.0  # forward limit / Quantus
    del results["quantus"]
    assert "quantus_ceiling" not in module.ratios(results)


def test_runs_in_turns_alternate_and_give_the_ratio_of_medians(module) -> None:
    calls = []
    turns = module.paired(lambda: calls.append("limit"), lambda: calls.append("pipeline"), torch.device("cpu"), 3)
    assert calls == ["limit", "pipeline", "limit", "pipeline", "pipeline", "limit", "limit", "pipeline"]
    calls.clear()
    module.paired(lambda: calls.append("flow"), lambda: calls.append("flow+db"), torch.device("cpu"), 2,
                  names=("flow_s", "flow_with_db_s"), setup=lambda: calls.append("clear"))
    assert calls == ["clear", "flow", "clear", "flow+db"] * 2 + ["clear", "flow+db", "clear", "flow"]
    assert {key: len(value) for key, value in turns.items()} == {"limit_s": 3, "pipeline_s": 3}
    timing = {"mosaics_per_s": 1.0, "median_s": 1.0}
    method = {"limit": "forward_backward", "passes_per_mosaic": 4, "pipeline": timing, "explainer": timing,
              "db_write": timing, "flow": timing, "flow_with_db": timing, "pipeline_with_db": timing,
              "paired": {"limit_s": [1.0, 2.0, 9.0], "pipeline_s": [10.0, 16.0, 12.0]}}
    results = {"limits": {"forward_backward": {"mosaics_per_s": 1.0}}, "methods": {"smoothgrad": method}}
    # 4 passes per mosaic x median limit time 2 s / median pipeline time 12 s
    assert module.ratios(results)["pipeline_over_limit_paired"]["smoothgrad"] == 4 * 2.0 / 12.0


QUERY_SCALE = ROOT / "benchmarks" / "query_scale.py"


def _query_scale(tmp_path: Path, *options: str) -> tuple[dict, str]:
    """Run query_scale.py on two tiny stores; its JSON and its printed table."""
    out = tmp_path / "query_scale.json"
    command = [sys.executable, str(QUERY_SCALE), "--rows", "1200,2400", "--mosaics", "20", "--repeat", "1",
               *options, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                               check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text()), completed.stdout


def _check_query_scale(result: dict, stdout: str) -> None:
    import db

    assert {"machine", "database", "sizes", "growth"} <= set(result)
    assert result["machine"]["uptime_before"] and result["database"]["server_version"]
    names = {"cookbook_1_median_per_method", "cookbook_2_epoch_curve", "cookbook_3_lost_focus",
             "cookbook_4_disagreement", "focus_accuracy_correlation"} | (set(db.queries.__all__))
    sizes = result["sizes"]
    assert [s["requested_rows"] for s in sizes] == [1200, 2400] and sizes[0]["rows"] < sizes[1]["rows"]
    for size in sizes:
        assert _positive(size["fill_s"]) and size["partitions"] >= 1
        assert set(size["queries"]) == names
        for figures in size["queries"].values():
            assert _positive(figures["median_ms"])
            assert isinstance(figures["plan_has_seq_scan_on_mosaic_result"], bool)
    assert set(result["growth"]) == names and all(_positive(g) for g in result["growth"].values())
    assert "cookbook_1_median_per_method" in stdout  # the table


@pytest.mark.slow  # runs the script: two tiny stores on PostgreSQL
def test_query_scale_reports_every_query_at_every_size(tmp_path, postgres_database) -> None:
    from tests.postgres import SERVER_URL

    result, stdout = _query_scale(tmp_path, "--db", SERVER_URL)
    assert result["database"]["dialect"] == "postgresql"
    _check_query_scale(result, stdout)


@pytest.mark.slow  # runs the script: two tiny SQLite stores
def test_query_scale_runs_on_sqlite(tmp_path) -> None:
    result, stdout = _query_scale(tmp_path, "--sqlite")
    assert result["database"]["dialect"] == "sqlite"
    _check_query_scale(result, stdout)
    scans = {name for size in result["sizes"] for q in size["queries"].values() for name in q["seq_scans"]}
    assert "model_checkpoint" in scans  # SQLite's plans are read: checkpoints_to_audit scans the table


def test_query_scale_flags_scans_of_mosaic_result_and_its_partitions_only() -> None:
    """mosaic_result_tile (empty for 2x2 grids, so scanning it is free) is not mosaic_result."""
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("query_scale_under_test", QUERY_SCALE)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    flagged = {name: bool(loaded._MOSAIC_RESULT.fullmatch(name)) for name in (
        "mosaic_result", "mosaic_result_p000003", "mosaic_result_tile", "mosaic_result_tile_p000000", "mosaic")}
    assert flagged == {"mosaic_result": True, "mosaic_result_p000003": True, "mosaic_result_tile": False,
                       "mosaic_result_tile_p000000": False, "mosaic": False}


PEAK_MEMORY = ROOT / "benchmarks" / "peak_memory.py"


@pytest.mark.slow  # runs the script: one `focus evaluate` of 6 mosaics of 64 px in a child process
def test_peak_memory_reports_the_child_peak_and_the_batches_it_ran(tmp_path) -> None:
    out = tmp_path / "peak_memory.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, str(PEAK_MEMORY), "--quick", "--out", str(out)], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["config"]["mosaic_px"] == 64 and result["machine"]["cpus"] >= 1
    (run,) = result["runs"]
    assert (run["mosaics"], run["budget"], run["rows_written"]) == (6, "default", 12)  # 6 mosaics x 2 methods
    assert _positive(run["peak_rss_mb"]) and _positive(run["seconds"])
    assert set(run["batch_sizes"]) == {"lrp", "gradcam"}
    assert all(1 <= size <= 64 for sizes in run["batch_sizes"].values() for size in sizes)
    assert "peak RSS MB" in completed.stdout  # the table
