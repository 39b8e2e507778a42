"""The reliance pass against the forward-only limit of the same model and batch.

:func:`focus_core.reliance.tile_reliance` runs N² + 1 forward passes per mosaic (the intact mosaic and one per
tile replaced by the baseline). Its limit is those forward passes alone: the same ``mosaics x (N² + 1)`` rows,
already built, run through ``model(x)`` under ``no_grad`` in batches of ``--batch`` rows. What the pass adds on
top is building the variants (one gather and one masked fill per batch; the blurred tiles once per call for
``blur``) and reading the target logits. Times are medians of ``--repeats`` rounds after one warm-up; within a
round the limit and each baseline run in turn, so load from other processes falls on all of them alike.
``ratio`` (limit seconds / pass seconds, of the medians) is the share of the limit the pass reaches: the
target is >= 0.8.

Inputs: ``digits_cnn`` uses the bundled digits (tiles ``size / grid``); other architectures use random
normalised mosaics (3 channels) and random targets. Random weights: speed does not depend on training.

Usage::

    python benchmarks/reliance.py --size 64 --grid 2 --batch 64 --mosaics 128 --repeats 5 --out reliance.json
    python benchmarks/reliance.py --arch resnet18 --size 448 --batch 64 --device cuda --out reliance_cuda.json
    python benchmarks/reliance.py --quick        # seconds: every figure, tiny sizes (tests run this)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from focus_core.models import build_model  # noqa: E402
from focus_core.reliance import BASELINES, baseline_mosaics, occluded_batch, tile_reliance  # noqa: E402

TARGET_RATIO = 0.8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def in_turns(runs: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Seconds of each run in each of ``repeats`` rounds, after one warm-up round; the runs alternate per round."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            _sync(device)
            started = time.perf_counter()
            run()
            _sync(device)
            if round_:
                seconds[name].append(time.perf_counter() - started)
    return seconds


def mosaics_and_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor,
                                                                                torch.Tensor]:
    torch.manual_seed(0)
    if args.arch == "digits_cnn":
        from focus_core.data import load_digits
        from focus_core.mosaics import build_manifest, compose_normalized

        digits = load_digits(seed=0, tile_size=args.size // args.grid)
        manifest = build_manifest(digits, split="test", per_class=-(-args.mosaics // len(digits.classes)), seed=0,
                                  grid=args.grid, targets=1)
        inputs = compose_normalized(digits.tiles, manifest.index_tensor()[: args.mosaics], digits)
        targets, channels, classes = manifest.target_classes()[: args.mosaics], 1, len(digits.classes)
    else:
        channels, classes = 3, 10
        inputs = torch.randn(args.mosaics, channels, args.size, args.size)
        targets = torch.randint(0, classes, (args.mosaics,))
    model = build_model(args.arch, num_classes=classes, in_channels=channels).eval().to(device)
    return model, inputs.to(device), targets.to(device)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, inputs, targets = mosaics_and_model(args, device)
    variants = args.grid**2 + 1
    rows = inputs.shape[0] * variants
    # the limit's input: every variant row, built once, in the pass's batches
    ready = [occluded_batch(inputs, None, torch.arange(s, min(s + args.batch, rows), device=device), args.grid)
             for s in range(0, rows, args.batch)]

    def limit() -> None:
        with torch.no_grad():
            for batch in ready:
                model(batch)

    runs: dict[str, Callable[[], object]] = {"limit": limit}
    for baseline in args.baselines:
        runs[baseline] = (lambda b: lambda: tile_reliance(model, inputs, targets, args.grid, baseline=b,
                                                          batch_size=args.batch))(baseline)
    runs["blur_tiles_only"] = lambda: baseline_mosaics(inputs, args.grid, "blur")
    seconds = in_turns(runs, device, args.repeats)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    figures = {"limit_mosaics_per_s": inputs.shape[0] / median["limit"],
               "limit_forward_rows_per_s": rows / median["limit"]}
    for baseline in args.baselines:
        figures[f"{baseline}.mosaics_per_s"] = inputs.shape[0] / median[baseline]
        figures[f"{baseline}.ratio"] = median["limit"] / median[baseline]
        paired = [lim / run for lim, run in zip(seconds["limit"], seconds[baseline])]
        figures[f"{baseline}.ratio_paired"] = statistics.median(paired)
    return {
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "variants_per_mosaic": variants,
                   "forward_rows": rows},
        "machine": machine(device),
        "seconds": seconds,
        "figures": figures,
        "targets": {f"{b}_ratio>={TARGET_RATIO}": figures[f"{b}.ratio"] >= TARGET_RATIO for b in args.baselines},
    }


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="digits_cnn")
    parser.add_argument("--size", type=int, default=64, help="mosaic side in pixels")
    parser.add_argument("--grid", type=int, default=2, choices=(2, 3, 4))
    parser.add_argument("--batch", type=int, default=64, help="forward rows per batch")
    parser.add_argument("--mosaics", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated: mean, blur")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    if args.quick:
        args.size, args.batch, args.mosaics, args.repeats = 64, 8, 4, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    result = measure(args)
    config, figures = result["config"], result["figures"]
    print(f"{args.arch} {args.size}px {args.grid}x{args.grid}, {config['forward_rows']} forward rows in batches of "
          f"{args.batch}, {result['machine']['device']}, {result['machine']['torch_threads']} threads")
    print(f"{'run':<10} {'mosaics/s':>10} {'of limit':>9} {'paired':>7}")
    print(f"{'limit':<10} {figures['limit_mosaics_per_s']:>10.1f} {1:>9.3f}")
    for baseline in args.baselines:
        print(f"{baseline:<10} {figures[f'{baseline}.mosaics_per_s']:>10.1f} {figures[f'{baseline}.ratio']:>9.3f} "
              f"{figures[f'{baseline}.ratio_paired']:>7.3f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
