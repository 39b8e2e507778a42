"""LRP speed: zennit's hook-based reference vs the batched fast path, against the model's own limits.

For each architecture, on the same random-weight model and the same inputs, it times (median of ``--repeats``
after one warm-up): the forward pass, the forward + backward pass to the input (the limit of any method that
needs one backward), zennit LRP (:class:`focus_core.explainers.lrp.LRP`) and the fast path
(:class:`focus_core.explainers.fast_lrp.FastLRP`); prints mosaics per second and each LRP's ratio to the
forward + backward limit, checks that both LRPs give the same maps, and writes everything as JSON.

Usage::

    python benchmarks/lrp_speed.py --size 64 --batch 8 --repeats 3 --out lrp_speed.json
    python benchmarks/lrp_speed.py --device cuda --size 448 --batch 64 --out lrp_speed_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from focus_core.explainers.fast_lrp import FastLRP
from focus_core.explainers.lrp import LRP
from focus_core.models import build_model

ARCHS = ("vgg16", "alexnet", "resnet18", "digits_cnn")


def timed(methods: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each method over ``repeats`` rounds, after one warm-up each.

    The methods run in turn within each round, so that load from other processes (a shared CPU) falls on all
    of them alike.
    """
    for fn in methods.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def bench_arch(arch: str, size: int, batch: int, device: torch.device, repeats: int, classes: int) -> dict:
    """Time forward, forward+backward, zennit LRP and fast LRP of one architecture."""
    channels = 1 if arch == "digits_cnn" else 3
    torch.manual_seed(0)
    model = build_model(arch, num_classes=classes, in_channels=channels).to(device).eval()
    inputs = torch.randn(batch, channels, size, size, device=device)
    targets = torch.arange(batch, device=device) % classes

    def forward() -> None:
        with torch.no_grad():
            model(inputs)

    def forward_backward() -> None:
        x = inputs.detach().requires_grad_()
        logits = model(x)
        torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)

    zennit, fast = LRP(), FastLRP()
    reference, ours = zennit(model, inputs, targets), fast(model, inputs, targets)
    seconds = timed({"forward": forward, "forward_backward": forward_backward,
                     "zennit_lrp": lambda: zennit(model, inputs, targets),
                     "fast_lrp": lambda: fast(model, inputs, targets)}, device, repeats)
    limit = seconds["forward_backward"]
    return {
        "arch": arch,
        "mosaics_per_second": {key: batch / value for key, value in seconds.items()},
        "seconds_per_batch": seconds,
        "ratio_to_forward_backward": {"zennit_lrp": limit / seconds["zennit_lrp"],
                                      "fast_lrp": limit / seconds["fast_lrp"]},
        "fast_speedup_over_zennit": seconds["zennit_lrp"] / seconds["fast_lrp"],
        "relative_l1_fast_vs_zennit": float((ours - reference).abs().sum() / reference.abs().sum()),
    }


def machine(device: torch.device) -> dict:
    """Where the numbers came from."""
    info = {"device": str(device), "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated architectures")
    parser.add_argument("--size", type=int, default=64, help="mosaic side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                        help="let CUDA convolutions and matrix products use TF32 (PyTorch's default for cuDNN)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
    results = {"machine": machine(device), "size": args.size, "batch": args.batch, "repeats": args.repeats,
               "dtype": "float32", "tf32": args.tf32 and device.type == "cuda", "weights": "random", "archs": []}
    print(f"{results['machine']}  {args.size}x{args.size}, batch {args.batch}, median of {args.repeats}")
    print(f"{'arch':<11}{'fwd/s':>10}{'fwd+bwd/s':>11}{'zennit/s':>10}{'fast/s':>10}"
          f"{'zennit/lim':>11}{'fast/lim':>9}{'speed-up':>9}{'rel L1':>10}")
    for arch in args.archs.split(","):
        row = bench_arch(arch.strip(), args.size, args.batch, device, args.repeats, args.classes)
        results["archs"].append(row)
        rate, ratio = row["mosaics_per_second"], row["ratio_to_forward_backward"]
        print(f"{arch:<11}{rate['forward']:>10.1f}{rate['forward_backward']:>11.1f}{rate['zennit_lrp']:>10.1f}"
              f"{rate['fast_lrp']:>10.1f}{ratio['zennit_lrp']:>11.2f}{ratio['fast_lrp']:>9.2f}"
              f"{row['fast_speedup_over_zennit']:>9.2f}{row['relative_l1_fast_vs_zennit']:>10.1e}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
