"""Where a chunk runs: the device check and the turns a process takes on each device.

:func:`require_device` refuses a device this machine lacks; :func:`device_turn` runs one piece of device work at a
time per device (a model lives on one device, and explainers hook into it); on CUDA the turns run in one thread per
device for the life of the process (:func:`device_worker`). Everything here is thread-safe: Prefect's default task
runner runs tasks in threads.

Examples
--------
>>> require_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from focus_core.errors import FocusError

__all__ = ["require_device", "device_turn", "device_worker"]

_REGISTRY_LOCK = threading.Lock()  # guards the two registries below, never held during a turn
_DEVICE_WORKERS: dict[str, ThreadPoolExecutor] = {}
_DEVICE_LOCKS: dict[str, threading.Lock] = {}
T = TypeVar("T")


def require_device(device: str) -> torch.device:
    """Return ``torch.device(device)`` if this machine has it, else fail with one clear sentence.

    Called on the first line of every flow, so that a worker without a GPU given ``cuda`` fails
    at once instead of running on the CPU unnoticed.

    Raises
    ------
    FocusError
        For a malformed device or one this machine lacks.

    Examples
    --------
    >>> require_device("cuda:99") if not torch.cuda.is_available() else None  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The device 'cuda:99' was requested but this worker has no CUDA GPU ...
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise FocusError(f"The device {device!r} is not a torch device: pass 'cpu', 'cuda' or 'cuda:N'.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise FocusError(
                f"The device {device!r} was requested but this worker has no CUDA GPU "
                "(torch.cuda.is_available() is False): run on a GPU worker or pass device 'cpu'."
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise FocusError(
                f"The device {device!r} was requested but this worker has {count} GPU(s): "
                f"pass cuda:0 to cuda:{count - 1}."
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise FocusError(f"The device {device!r} was requested but this worker has no MPS device: pass device 'cpu'.")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise FocusError(f"The device {device!r} is not supported: pass 'cpu', 'cuda' or 'cuda:N'.")
    return parsed


def device_turn(device: torch.device | str, work: Callable[[], T]) -> T:
    """Run ``work`` as one turn on ``device`` and return its result; turns on one device never overlap.

    A model lives on one device, so a turn also holds the model: explainers register hooks on it, and two
    threads must not explain with it at once. On CUDA every turn runs in :func:`device_worker`'s thread for the
    device (``"cuda"`` and the current ``"cuda:N"`` are one device); elsewhere it runs in the calling thread under
    the device's lock.

    Why turns: the hot path takes one turn per chunk, so the chunks of the flow's threads run whole, one after the
    other, and a finished chunk's database write overlaps the next chunk's compute. Why one long-lived thread on
    CUDA: cuDNN keeps its benchmarked convolution plans per thread, so fresh task threads would search for them
    again. Why not on the CPU: torch computing in one more thread makes the OpenMP threads sleep between parallel
    regions, which slows small batches. The measurements behind each choice: ``benchmarks/README.md``, section
    "Figures behind the code", "Device turns".

    Examples
    --------
    >>> device_turn("cpu", lambda: 2 + 2)
    4
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" are one device, one thread
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        return device_worker(device).submit(work).result()
    with _REGISTRY_LOCK:
        lock = _DEVICE_LOCKS.setdefault(str(device), threading.Lock())
    with lock:
        return work()


def device_worker(device: torch.device) -> ThreadPoolExecutor:
    """The one thread of this process that runs :func:`device_turn`'s turns on the CUDA device ``device``.

    Created on first use and kept for the life of the process; it makes ``device`` its current CUDA device.

    Examples
    --------
    >>> device_worker(torch.device("cpu")).submit(lambda: 2 + 2).result()  # any device; the hot path: CUDA only
    4
    """
    key = str(device)
    with _REGISTRY_LOCK:
        worker = _DEVICE_WORKERS.get(key)
        if worker is None:
            # the current CUDA device is per thread: the worker makes its own device current (streams, cache)
            own_device = functools.partial(torch.cuda.set_device, device) if device.type == "cuda" else None
            worker = ThreadPoolExecutor(1, thread_name_prefix=f"focus-{key}", initializer=own_device)
            _DEVICE_WORKERS[key] = worker
        return worker
