"""Registering checkpoints into lineages: the weights checked once, the store's record, the lineage's one model.

A lineage (:mod:`db.lineages`) holds one model; :func:`check_lineage_model` refuses another one in one
sentence before anything is written, and :func:`register_into_lineage` records a checkpoint trained
elsewhere: its weights are hashed once and loaded once into the architecture (through :mod:`flows.caches`,
which also reads URLs), then the checkpoint is registered and put into the lineage. The same weights again
change nothing and say so.

Examples
--------
>>> spec = ModelSpec(architecture="digits_cnn", weights="w.pt", num_classes=10, in_channels=1)
>>> register_into_lineage(engine, "digits-prod", spec)["version"]  # doctest: +SKIP
1
"""

from __future__ import annotations

from typing import Any

import db
from db import Engine
from flows import caches, record
from flows.params import DatasetSpec, ModelSpec
from focus_core.errors import FocusError

__all__ = ["check_lineage_model", "check_lineage_spec", "register_into_lineage"]


def check_lineage_model(
    engine: Engine, name: str, architecture: str, num_classes: int, in_channels: int | None
) -> None:
    """Refuse, in one sentence, a model other than the one the lineage ``name`` holds (nothing when it is new).

    Raises
    ------
    FocusError
        When the lineage exists with another architecture, class count or input channel count.
    """
    lineage = db.find_lineage(engine, name)
    if lineage is None:
        return
    same = (lineage["architecture"], lineage["num_classes"]) == (architecture, int(num_classes)) and (
        lineage["in_channels"] is None or in_channels is None or lineage["in_channels"] == int(in_channels)
    )
    if not same:
        channels = "" if lineage["in_channels"] is None else f", {lineage['in_channels']} input channel(s)"
        raise FocusError(
            f"Lineage {name!r} holds {lineage['architecture']} with {lineage['num_classes']} classes{channels}, not "
            f"{architecture} with {num_classes} classes and {in_channels} input channel(s): "
            "use another --lineage name for this model."
        )


def check_lineage_spec(engine: Engine, name: str, model: ModelSpec, dataset: DatasetSpec) -> None:
    """:func:`check_lineage_model` for a model spec sized by its dataset (``focus train --lineage``)."""
    tiles = caches.load_dataset(dataset)
    check_lineage_model(engine, name, model.architecture, model.num_classes or len(tiles.classes),
                        model.in_channels or int(tiles.tiles.shape[1]))


def register_into_lineage(
    engine: Engine,
    name: str,
    model: ModelSpec,
    *,
    version: int | None = None,
    audit: bool | None = None,
    source: str = "registered",
) -> dict[str, Any]:
    """Record the weights of ``model`` (trained elsewhere) as a checkpoint and put it into the lineage ``name``.

    ``model`` names the architecture, ``num_classes`` and ``in_channels`` (all required: there is no dataset
    to take them from) and the weights' location, a path or a URL, kept as given. The weights are hashed
    once and, when the store does not know them yet, loaded once into the architecture; nothing is written
    before those checks and the lineage's.

    Returns
    -------
    dict
        ``lineage``, ``lineage_id``, ``checkpoint_id``, ``sha256``, ``version`` and ``added`` (``False``:
        these weights were that version already, nothing changed but ``audit``).

    Raises
    ------
    FocusError
        When the weights do not fit the architecture, the store records them as another model, or the
        lineage holds another model; :class:`db.StoreError` for a taken version or another lineage.
    """
    if model.num_classes is None or model.in_channels is None or not model.weights:
        raise FocusError("Registering a checkpoint needs its weights, architecture, number of classes and input "
                         "channels: pass --weights, --arch, --num-classes and --in-channels.")
    check_lineage_model(engine, name, model.architecture, model.num_classes, model.in_channels)
    if version is not None:  # a version another checkpoint holds: refused before the checkpoint is recorded
        sha = caches.weights_sha256(model.weights)
        held = db.lineage_checkpoints(engine, name)
        holder = held[held["version"] == int(version)]["sha256"].tolist()
        if holder and holder[0] != sha:
            raise FocusError(f"Version {version} of lineage {name!r} is checkpoint {holder[0][:12]}: pick another "
                             "--version, or leave it out for the next one.")
    # the dataset only sizes a model whose classes or channels are unknown; here both are given
    checkpoint_id, sha = record.register_checkpoint(engine, model, DatasetSpec())
    entry = db.register_lineage_checkpoint(engine, name, checkpoint_id, version=version, source=source, audit=audit)
    return {"lineage": name, "lineage_id": entry.lineage_id, "checkpoint_id": checkpoint_id, "sha256": sha,
            "version": entry.version, "added": entry.added}
