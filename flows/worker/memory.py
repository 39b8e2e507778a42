"""How many mosaics one batch may hold: a memory budget and the model's measured cost per mosaic.

On the CPU a batch too large for the machine does not raise: the kernel kills the process (exit 137) and leaves
its evaluations ``running``. So the hot path never starts a batch above :func:`memory_budget`: it measures the
model's activations once per work (:func:`activation_bytes`, one forward pass of a single mosaic with a hook on
every module), and :func:`batch_for_budget` takes the largest batch whose activations, times
:data:`COST_FACTOR` (what an explainer's forward and backward pass hold beyond the forward outputs), fit the
budget. Memory then follows the budget, never the number of mosaics: a chunk holds one batch at a time, and on the
CPU a large batch's blocks are mapped on their own and its freed memory goes back to the system
(:func:`steady_heap`, :func:`release_freed`), so no batch piles up on the allocator's leftovers of the last.

The budget is ``FOCUS_MEMORY_BUDGET`` (``2G``, ``1500M``, ``800000000``: bytes, or K/M/G/T with an optional
``B``/``iB``, binary multiples) where set, else ``min(2 GiB, a quarter of the memory available)``. On CUDA the
budget applies only where ``FOCUS_MEMORY_BUDGET`` is set: the device raises when it runs out of memory, and the
hot path halves the batch then (:mod:`flows.tasks`). The measurement behind :data:`COST_FACTOR`:
``benchmarks/README.md``, section "peak_memory.py".

Examples
--------
>>> parse_bytes("2G"), parse_bytes("1.5 GiB"), parse_bytes("512m"), parse_bytes("800000000")
(2147483648, 1610612736, 536870912, 800000000)
>>> batch_for_budget(per_mosaic=100 * 2**20, budget=2**30, requested=64)  # 100 MiB a mosaic, 1 GiB budget
10
>>> batch_for_budget(per_mosaic=100 * 2**20, budget=2**30, requested=8), batch_for_budget(2**31, 2**30, 64)
(8, 1)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import re
import threading
from collections.abc import Callable

import torch
from torch import nn

from focus_core.errors import FocusError

__all__ = [
    "BUDGET_ENV",
    "DEFAULT_BUDGET_BYTES",
    "COST_FACTOR",
    "parse_bytes",
    "available_memory",
    "memory_budget",
    "activation_bytes",
    "mosaic_cost",
    "batch_for_budget",
    "TRIM_MIN_BYTES",
    "MMAP_THRESHOLD_BYTES",
    "steady_heap",
    "release_freed",
]

BUDGET_ENV = "FOCUS_MEMORY_BUDGET"
DEFAULT_BUDGET_BYTES = 2 * 1024**3
COST_FACTOR = 4.0  # bytes a batch holds per byte of the forward pass's module outputs (benchmarks/README.md)
TRIM_MIN_BYTES = 64 * 2**20  # a CPU batch that may hold this much runs on a steady heap (steady_heap, release_freed)
MMAP_THRESHOLD_BYTES = 2**20  # blocks this large or larger are mapped on their own (glibc's M_MMAP_THRESHOLD)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_COSTS: dict[str, int] = {}
_COSTS_LOCK = threading.Lock()


def parse_bytes(text: str) -> int:
    """A size in bytes from ``text``: a number, optionally followed by K, M, G or T (binary), ``B`` or ``iB``.

    Raises
    ------
    FocusError
        For anything else, or a size below one mebibyte.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, flags=re.IGNORECASE)
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else 0
    if size < 2**20:
        raise FocusError(
            f"{BUDGET_ENV}={text!r} is not a memory size of at least 1M: set it to bytes or a size such as 2G or 1500M."
        )
    return size


def available_memory() -> int | None:
    """Bytes this process may still use: the machine's available memory, or its cgroup's room if smaller."""
    candidates = []
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as current:
            text = limit.read().strip()
            if text != "max":
                candidates.append(max(0, int(text) - int(current.read().strip())))
    if not candidates:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(candidates) if candidates else None


def memory_budget(device: torch.device | str) -> int | None:
    """Bytes one batch may hold on ``device``; ``None``: no budget (CUDA without ``FOCUS_MEMORY_BUDGET``).

    Raises
    ------
    FocusError
        When ``FOCUS_MEMORY_BUDGET`` is set to something that is not a size.
    """
    configured = os.environ.get(BUDGET_ENV, "").strip()
    if configured:
        return parse_bytes(configured)
    if torch.device(device).type == "cuda":
        return None
    available = available_memory()
    return DEFAULT_BUDGET_BYTES if available is None else min(DEFAULT_BUDGET_BYTES, available // 4)


def activation_bytes(model: nn.Module, x: torch.Tensor, context: Callable[[], contextlib.AbstractContextManager]
                     = contextlib.nullcontext) -> int:
    """Bytes of every module's output, and of ``x``, in one forward pass of ``x`` under ``no_grad`` (per ``x``).

    ``x`` is a batch of one mosaic for the cost of one; ``context`` is the precision the explainer runs under
    (bf16 autocast halves the outputs). Outputs a module hands on unchanged (the same storage) count once: below,
    the input's 256 bytes and two outputs of 512, then one output of 512 that the in-place ReLU writes over.

    Examples
    --------
    >>> activation_bytes(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()), torch.zeros(1, 1, 8, 8))
    1280
    >>> activation_bytes(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True)), torch.zeros(1, 1, 8, 8))
    768
    """
    seen: set[int] = set()
    kept: list[torch.Tensor] = []  # alive until the pass ends, so that no freed output's address is seen again
    total = [x.numel() * x.element_size()]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in seen:
                seen.add(tensor.untyped_storage().data_ptr())
                kept.append(tensor)
                total[0] += tensor.numel() * tensor.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad(), context():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        kept.clear()
    return total[0]


def mosaic_cost(work: str, measure: Callable[[], int]) -> int:
    """Bytes one mosaic of ``work`` holds in a batch: ``measure()`` (:func:`activation_bytes` of one mosaic) times
    :data:`COST_FACTOR`, measured once per work key in this process."""
    with _COSTS_LOCK:
        cost = _COSTS.get(work)
    if cost is None:
        cost = max(1, math.ceil(measure() * COST_FACTOR))
        with _COSTS_LOCK:
            _COSTS[work] = cost
    return cost


def batch_for_budget(per_mosaic: int, budget: int, requested: int) -> int:
    """The largest batch of at most ``requested`` mosaics of ``per_mosaic`` bytes that fits ``budget``; at least 1."""
    return max(1, min(requested, budget // max(1, per_mosaic)))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, if it is glibc (it has ``malloc_trim`` and ``mallopt``); ``None`` elsewhere (musl, macOS)."""
    with contextlib.suppress(OSError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
            return libc
    return None


@functools.cache
def _fix_mmap_threshold() -> bool:
    libc = _libc()
    if libc is None or os.environ.get("MALLOC_MMAP_THRESHOLD_"):  # the operator's own setting stands
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _large_cpu_batch(device: torch.device | str, held: int) -> bool:
    return torch.device(device).type == "cpu" and held >= TRIM_MIN_BYTES and _libc() is not None


def steady_heap(device: torch.device | str, held: int) -> bool:
    """Before a CPU batch that may hold ``held`` bytes (at least :data:`TRIM_MIN_BYTES`), fix glibc's mmap
    threshold at :data:`MMAP_THRESHOLD_BYTES`, once per process (not where ``MALLOC_MMAP_THRESHOLD_`` sets it);
    return whether it is fixed.

    glibc raises the threshold each time a mapped block is freed (up to 32 MiB), so after a batch's first large
    tensors the middling ones (a MiB to 32 MiB) go to its arenas, where each batch leaves them scattered among live
    blocks and the next batch's land beside them: the process's peak grows with the number of batches. Fixed, every
    block of a MiB or more is mapped on its own and unmapped when freed (``benchmarks/README.md``, "The steady heap").
    """
    return _large_cpu_batch(device, held) and _fix_mmap_threshold()


def release_freed(device: torch.device | str, held: int) -> bool:
    """After a CPU batch that may have held ``held`` bytes (at least :data:`TRIM_MIN_BYTES`), give the heap's freed
    pages back to the system (glibc's ``malloc_trim(0)``: about a millisecond); return whether it did.
    """
    if not _large_cpu_batch(device, held):
        return False
    _libc().malloc_trim(0)
    return True
