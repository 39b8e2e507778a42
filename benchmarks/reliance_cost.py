"""What the model-reliance pass costs beside a GradCAM evaluation of the same chunk: the 25% rule of its default.

Both run through the evaluate flow's own chunk functions, on the same mosaics, model, device and batch size:
``flows.tasks.explain_chunk`` (compose, GradCAM, per-tile sums, Focus, prediction, host copy: a GradCAM
evaluation's chunk without its database write) and ``flows.reliance.measure_chunk`` (compose, the ``N² + 1``
forward passes per mosaic in batches, model Focus, host copy). Leaving the writes out of both favours neither
much: the reliance write is ``N²`` small rows per mosaic. Medians of ``--repeats`` rounds after one warm-up, the
three in turns within a round (an LRP chunk, zennit's ``lrp``, the same way); ``share`` is reliance seconds /
GradCAM seconds (of the medians), ``paired`` the median of the per-round shares, ``share_of_gradcam_lrp`` reliance
seconds / (GradCAM + LRP seconds). The pass is on by default only if ``share <= 0.25``.

Usage::

    python benchmarks/reliance_cost.py --threads 1 --mosaics 128 --batch 64 --repeats 5 --out reliance_cost.json
    python benchmarks/reliance_cost.py --grid 3 --size 96 --threads 1 --out reliance_cost_3x3.json
    python benchmarks/reliance_cost.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.reliance import RelianceChunk, measure_chunk  # noqa: E402
from flows.tasks import ChunkRequest, explain_chunk  # noqa: E402
from focus_core.models import build_model, save_weights  # noqa: E402

SHARE_LIMIT = 0.25


def measure(args: argparse.Namespace, weights: str) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    mosaic_spec = {"split": "test", "per_class": -(-args.mosaics // 10), "seed": 0}
    if args.grid != 2:
        mosaic_spec.update(grid=args.grid, targets=1)
    common = {"dataset": {"kind": "digits", "tile_size": args.size // args.grid}, "mosaics": mosaic_spec,
              "model": {"architecture": "digits_cnn", "weights": weights},
              "run": {"device": args.device, "batch_size": args.batch}}
    positions = list(range(args.mosaics))
    explain = {name: ChunkRequest(evaluation_id=0, positions=positions, mosaic_ids=positions, chunk=0,
                                  method={"name": name}, **common) for name in ("gradcam", "lrp")}
    passes = RelianceChunk(pass_id=0, chunk=0, positions=positions, mosaic_ids=positions, **common)
    runs = {"gradcam": lambda: explain_chunk(explain["gradcam"]), "lrp": lambda: explain_chunk(explain["lrp"]),
            "reliance": lambda: measure_chunk(passes)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeats + 1):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if round_:
                seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    share = median["reliance"] / median["gradcam"]
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "seconds": seconds,
        "figures": {"gradcam_mosaics_per_s": args.mosaics / median["gradcam"],
                    "lrp_mosaics_per_s": args.mosaics / median["lrp"],
                    "reliance_mosaics_per_s": args.mosaics / median["reliance"], "share": share,
                    "share_paired": statistics.median(r / g for r, g in zip(seconds["reliance"], seconds["gradcam"])),
                    "share_of_gradcam_lrp": median["reliance"] / (median["gradcam"] + median["lrp"])},
        "on_by_default": share <= SHARE_LIMIT,
        "torch_threads": torch.get_num_threads(),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="mosaic side in pixels")
    parser.add_argument("--grid", type=int, default=2, choices=(2, 3, 4))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--mosaics", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks that it runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.mosaics, args.repeats = 8, 8, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        weights = str(Path(folder) / "digits.pt")
        save_weights(build_model("digits_cnn", num_classes=10, in_channels=1), weights)
        result = measure(args, weights)
    figures = result["figures"]
    print(f"digits_cnn {args.size}px {args.grid}x{args.grid}, {args.mosaics} mosaics, batch {args.batch}, "
          f"{args.device}, {result['torch_threads']} threads")
    print(f"GradCAM chunk {figures['gradcam_mosaics_per_s']:.1f} mosaics/s, reliance pass "
          f"{figures['reliance_mosaics_per_s']:.1f} mosaics/s: share {figures['share']:.3f} "
          f"(paired {figures['share_paired']:.3f}); on by default: {result['on_by_default']}")
    print(f"LRP chunk {figures['lrp_mosaics_per_s']:.1f} mosaics/s: the pass is "
          f"{figures['share_of_gradcam_lrp']:.3f} of a GradCAM + LRP evaluation")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
