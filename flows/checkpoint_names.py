"""A checkpoint's name when several training runs produced its weights, and the sentence that says so.

A checkpoint is its weights (sha256): two runs with the same recipe and seed under two names share one
checkpoint, whose label is the first run's ("demo-digits epoch 8"). Wherever a checkpoint is named (the
report, the audit, the sweep), it is named by every run that produced it.

Examples
--------
>>> checkpoint_name("demo-digits epoch 8", [("demo-digits", 8), ("digits", 8)])
'demo-digits epoch 8 = digits epoch 8'
>>> checkpoint_name("nightly model", [("demo-digits", 8), ("digits", 8)])
'nightly model (demo-digits epoch 8 = digits epoch 8)'
>>> checkpoint_name("demo-digits epoch 8", [("demo-digits", 8)])
'demo-digits epoch 8'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import db

__all__ = ["Origins", "checkpoint_name", "origins_of", "names_of", "shared_weights_notes"]

#: ``{checkpoint_id: [(training run name, epoch), ...]}`` in training run order.
Origins = dict[int, list[tuple[str, int]]]


def checkpoint_name(label: str | None, origins: Sequence[tuple[str, int]]) -> str | None:
    """``label`` when at most one run produced the weights; else every run's "name epoch N", joined by " = ".

    A label that is not one run's own name (a human label) is kept in front of them.
    """
    if len(origins) < 2:
        return label
    names = [f"{run} epoch {epoch}" for run, epoch in origins]
    joined = " = ".join(names)
    return joined if label is None or label in names else f"{label} ({joined})"


def origins_of(engine: Any, checkpoint_ids: Iterable[int]) -> Origins:
    """The training runs and epochs that produced each checkpoint (``db.checkpoint_origins``)."""
    frame = db.checkpoint_origins(engine, [int(i) for i in checkpoint_ids])
    out: Origins = {}
    for row in frame.to_dict("records"):
        out.setdefault(int(row["checkpoint_id"]), []).append((str(row["training_run_name"]), int(row["epoch"])))
    return out


def names_of(engine: Any, labels: dict[int, str | None]) -> dict[int, str | None]:
    """``{checkpoint_id: name}`` for ``{checkpoint_id: label}``: :func:`checkpoint_name` over the store's origins."""
    origins = origins_of(engine, labels)
    return {cid: checkpoint_name(label, origins.get(cid, [])) for cid, label in labels.items()}


def shared_weights_notes(origins: Origins) -> list[str]:
    """One sentence per checkpoint that several training runs (or epochs) produced byte for byte."""
    notes = []
    for cid, found in sorted(origins.items()):
        if len(found) < 2:
            continue
        runs = list(dict.fromkeys(run for run, _ in found))
        who = (f"Training runs {', '.join(runs[:-1])} and {runs[-1]}" if len(runs) > 1
               else f"Training run {runs[0]}")
        notes.append(f"{who} produced the same weights (byte-identical): checkpoint {cid} is "
                     f"{checkpoint_name(None, found)}; the store keeps one checkpoint for them "
                     "(the same recipe and seed give the same weights).")
    return notes
