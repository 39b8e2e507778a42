"""Peak memory of ``focus evaluate`` against the number of mosaics (a benchmark, not a test).

For each N in ``--mosaics`` it runs ``focus evaluate`` as a user runs it, in a child process, on a synthetic
ImageFolder (6 classes of random RGB photographs, ``--image-size`` px, as a researcher's own crops), with
``--methods`` (default LRP and GradCAM) on a freshly initialised ``--arch`` (default the small ``digits_cnn``, 3
channels, 6 classes) at ``--tile-size`` (default 224: 448 px mosaics), into a SQLite store of its own. It reports
the child's peak resident set size (``ru_maxrss`` from ``os.wait4``: the ``focus`` process, not the Prefect API
server it starts as its own child), the seconds it took and the batch sizes its chunks ran at.

Each N runs under the memory budget the command finds (``FOCUS_MEMORY_BUDGET`` unset: ``min(2 GiB, a quarter
of the available memory)``, :mod:`flows.worker.memory`) and, for the N in ``--unbounded``, once more with the
budget lifted (``FOCUS_MEMORY_BUDGET=1T``: the requested batch of 64 whatever it costs), to show what the budget
holds back. Peak RSS should stay flat in N under the budget; without it, it grows with the batch until N reaches
the batch size.

Usage::

    .venv/bin/python benchmarks/peak_memory.py --mosaics 12,48,120 --unbounded 6,12 --out /tmp/peak.json
    .venv/bin/python benchmarks/peak_memory.py --quick --out /tmp/peak.json   # 64 px mosaics, N = 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 6


def make_folder(root: Path, images_per_class: int, size: int) -> Path:
    """A synthetic ImageFolder: ``CLASSES`` classes of ``images_per_class`` random RGB PNGs of ``size`` px."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def make_weights(path: Path, arch: str) -> Path:
    """A freshly initialised checkpoint of ``arch`` for 3-channel, ``CLASSES``-class images."""
    import torch

    sys.path.insert(0, str(ROOT))
    from focus_core import models

    torch.manual_seed(0)
    torch.save(models.build_model(arch, num_classes=CLASSES, in_channels=3).state_dict(), path)
    return path


def run_evaluate(work: Path, folder: Path, weights: Path, args: argparse.Namespace, mosaics: int,
                 budget: str | None) -> dict[str, Any]:
    """One ``focus evaluate`` of ``mosaics`` mosaics in a child process: its peak RSS, seconds and batch sizes."""
    store = work / f"store-{mosaics}-{budget or 'default'}.db"
    command = [str(Path(sys.executable).with_name("focus")), "evaluate", "--data", str(folder), "--arch", args.arch,
               "--weights", str(weights), "--in-channels", "3", "--num-classes", str(CLASSES),
               "--tile-size", str(args.tile_size), "--resize", str(args.tile_size), "--per-class",
               str(mosaics // CLASSES), "--batch-size", str(args.batch_size), "--database-url", f"sqlite:///{store}",
               "--format", "json", "--device", "cpu"]
    for method in args.methods.split(","):
        command += ["--method", method]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("FOCUS_MEMORY_BUDGET", None)
    if budget:
        env["FOCUS_MEMORY_BUDGET"] = budget
    started = time.perf_counter()
    with open(work / "stdout.txt", "w+") as out, open(work / "stderr.txt", "w+") as err:
        child = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise SystemExit(f"focus evaluate of {mosaics} mosaics exited {child.returncode}:\n{stderr[-3000:]}")
    result = json.loads(stdout)
    batches = {e["method"]: sorted(set(e.get("batch_sizes", {}).values())) for e in result["evaluations"]}
    rows = sum(e["rows_written"] for e in result["evaluations"])
    return {"mosaics": mosaics, "budget": budget or "default", "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "seconds": round(seconds, 1), "batch_sizes": batches, "rows_written": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mosaics", default="12,48,120", help="Numbers of mosaics, multiples of 6 (comma-separated).")
    parser.add_argument("--unbounded", default="", help="Numbers of mosaics to run again without a budget.")
    parser.add_argument("--arch", default="digits_cnn")
    parser.add_argument("--methods", default="lrp,gradcam")
    parser.add_argument("--tile-size", type=int, default=224, help="Tile side: mosaics are twice it.")
    parser.add_argument("--image-size", type=int, default=64, help="Side of the synthetic photographs.")
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64, help="The requested batch (focus's default).")
    parser.add_argument("--quick", action="store_true", help="32 px tiles (64 px mosaics), one run of N = 6 under "
                        "the budget: the run tests/test_benchmarks.py makes.")
    parser.add_argument("--out", type=Path, help="Write the figures here as JSON.")
    args = parser.parse_args(argv)
    if args.quick:
        args.mosaics, args.unbounded, args.tile_size, args.images_per_class = "6", "", 32, 14
    sizes = [int(n) for n in args.mosaics.split(",") if n]
    unbounded = [int(n) for n in args.unbounded.split(",") if n]
    if any(n % CLASSES for n in sizes + unbounded):
        parser.error(f"--mosaics and --unbounded take multiples of {CLASSES} (one mosaic per class and more)")
    with tempfile.TemporaryDirectory(prefix="focus-peak-memory-") as tmp:
        work = Path(tmp)
        folder = make_folder(work / "photos", args.images_per_class, args.image_size)
        weights = make_weights(work / "weights.pt", args.arch)
        runs = []
        for n, budget in [(n, None) for n in sizes] + [(n, "1T") for n in unbounded]:
            runs.append(run_evaluate(work, folder, weights, args, n, budget))
            print(json.dumps(runs[-1]), flush=True)  # each figure as soon as it is measured
    result = {
        "config": {"arch": args.arch, "methods": args.methods, "tile_size": args.tile_size,
                   "mosaic_px": 2 * args.tile_size, "batch_size": args.batch_size, "mosaics": sizes,
                   "unbounded": unbounded},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    print(f"{'mosaics':>8} {'budget':>8} {'peak RSS MB':>12} {'seconds':>8}  batch sizes")
    for run in runs:
        print(f"{run['mosaics']:>8} {run['budget']:>8} {run['peak_rss_mb']:>12.0f} {run['seconds']:>8.1f}  "
              f"{run['batch_sizes']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
