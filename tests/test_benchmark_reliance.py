"""benchmarks/reliance.py runs end to end on the CPU in its quick mode and reports every figure (not how fast)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # runs the script
def test_the_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "reliance.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reliance.py"), "--quick", "--threads", "1",
                                "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(out.read_text())
    figures = result["figures"]
    expected = {"limit_mosaics_per_s", "limit_forward_rows_per_s"} | {
        f"{b}.{part}" for b in ("mean", "blur") for part in ("mosaics_per_s", "ratio", "ratio_paired")}
    assert set(figures) == expected
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures
    assert result["config"]["variants_per_mosaic"] == 5 and result["config"]["forward_rows"] == 20
    assert set(result["targets"]) == {"mean_ratio>=0.8", "blur_ratio>=0.8"}
    assert {name: len(s) for name, s in result["seconds"].items()} == {
        "limit": 1, "mean": 1, "blur": 1, "blur_tiles_only": 1}
