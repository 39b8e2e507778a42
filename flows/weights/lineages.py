"""Registering checkpoints into lineages: the weights checked once, the store's record, the lineage's one model.

A lineage (:mod:`db.lineages`) holds one model; :func:`check_lineage_model` refuses another one in one
sentence before anything is written, and :func:`register_into_lineage` records a checkpoint trained
elsewhere: its weights are hashed once and loaded once into the architecture (through :mod:`flows.worker.caches`,
which also reads URLs), then the checkpoint is registered and put into the lineage. The same weights again
change nothing and say so.

Weights given as an MLflow Model Registry URI (``models:/<name>@<alias>`` or ``models:/<name>/<version>``)
are resolved first (:mod:`flows.weights.mlflow_source`): the checkpoint records the pinned ``models:/<name>/<version>``
URI of the version found (any worker fetches it again from there) and the sha256 of its ``state_dict``; a
lineage created so says where it comes from, ``mlflow:<name>`` (``mlflow:<name>@<alias>`` when reached through
an alias). :func:`follow_alias` registers, into each such lineage, the version an alias points at now.

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
from flows.worker import caches, record
from flows.weights import weight_store
from flows.params import DatasetSpec, ModelSpec
from focus_core.errors import FocusError

__all__ = ["REGISTRY_SOURCE", "check_lineage_model", "check_lineage_spec", "follow_alias", "register_into_lineage",
           "registered_model_of"]

#: The prefix of a lineage's source when its checkpoints come from the MLflow Model Registry.
REGISTRY_SOURCE = "mlflow:"


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
    source: str | None = None,
) -> dict[str, Any]:
    """Record the weights of ``model`` (trained elsewhere) as a checkpoint and put it into the lineage ``name``.

    ``model`` names the architecture, ``num_classes`` and ``in_channels`` (all required: there is no dataset
    to take them from) and the weights' location, a path or a URL, kept as given, or a registry URI, recorded
    as the pinned URI of the version it names now. The weights are hashed once and, when the store does not
    know them yet, loaded once into the architecture; nothing is written before those checks and the lineage's.
    ``source`` is recorded when the lineage is created (default ``registered``, or ``mlflow:<name>[@<alias>]``
    for a registry URI).

    Returns
    -------
    dict
        ``lineage``, ``lineage_id``, ``checkpoint_id``, ``sha256``, ``version``, ``added`` (``False``:
        these weights were that version already, nothing changed but ``audit``) and ``weights`` (the location
        recorded: for a registry URI, ``models:/<name>/<version>``).

    Raises
    ------
    FocusError
        When the weights do not fit the architecture, the store records them as another model, or the
        lineage holds another model; for a registry URI, as :func:`flows.weights.mlflow_source.resolve` (no tracking
        server, an unknown model, alias or version); :class:`db.StoreError` for a taken version or another
        lineage.
    """
    if model.num_classes is None or model.in_channels is None or not model.weights:
        raise FocusError("Registering a checkpoint needs its weights, architecture, number of classes and input "
                         "channels: pass --weights, --arch, --num-classes and --in-channels.")
    check_lineage_model(engine, name, model.architecture, model.num_classes, model.in_channels)
    if weight_store.is_registry(model.weights):
        from flows.weights import mlflow_source  # mlflow is an optional extra

        found = mlflow_source.resolve(model.weights)
        model = model.model_copy(update={"weights": found.uri})  # the version found, pinned
        source = source or f"{REGISTRY_SOURCE}{found.name}" + (f"@{found.alias}" if found.alias else "")
    if version is not None:  # a version another checkpoint holds: refused before the checkpoint is recorded
        sha = caches.weights_sha256(model.weights)
        held = db.lineage_checkpoints(engine, name)
        holder = held[held["version"] == int(version)]["sha256"].tolist()
        if holder and holder[0] != sha:
            raise FocusError(f"Version {version} of lineage {name!r} is checkpoint {holder[0][:12]}: pick another "
                             "--version, or leave it out for the next one.")
    # the dataset only sizes a model whose classes or channels are unknown; here both are given
    checkpoint_id, sha = record.register_checkpoint(engine, model, DatasetSpec())
    entry = db.register_lineage_checkpoint(engine, name, checkpoint_id, version=version,
                                           source=source or "registered", audit=audit)
    return {"lineage": name, "lineage_id": entry.lineage_id, "checkpoint_id": checkpoint_id, "sha256": sha,
            "version": entry.version, "added": entry.added, "weights": model.weights}


def registered_model_of(source: str | None) -> str | None:
    """The MLflow registered model a lineage's ``source`` names (``mlflow:<name>[@<alias>]``), else ``None``.

    Examples
    --------
    >>> registered_model_of("mlflow:resnet18-prod@champion"), registered_model_of("training")
    ('resnet18-prod', None)
    """
    if not source or not source.startswith(REGISTRY_SOURCE):
        return None
    return source[len(REGISTRY_SOURCE):].partition("@")[0] or None


def follow_alias(engine: Engine, alias: str, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Register the version the MLflow alias ``alias`` points at now into each lineage from the registry.

    The lineages are those named in ``names`` (each must come from the registry), else every lineage marked
    for auditing whose source is an MLflow registered model (the others are left alone). Every alias is
    resolved before anything is written; a version already in its lineage changes nothing (``added`` is
    ``False``).

    Returns
    -------
    list of dict
        One :func:`register_into_lineage` result per lineage, by lineage name, with ``registered_model``
        and ``registry_version`` added.

    Raises
    ------
    FocusError
        One sentence: a named lineage that does not exist or does not come from the registry, no tracking
        server, a registered model or an alias that is gone.
    """
    chosen = _registry_lineages(engine, names)
    from flows.weights import mlflow_source  # mlflow is an optional extra

    found = [(lineage, mlflow_source.version_for_alias(model_name, alias)) for lineage, model_name in chosen]
    entries = []
    for lineage, version in found:
        spec = ModelSpec(architecture=lineage["architecture"], weights=version.uri,
                         num_classes=lineage["num_classes"], in_channels=lineage["in_channels"])
        entry = register_into_lineage(engine, lineage["name"], spec)
        entries.append({**entry, "registered_model": version.name, "registry_version": version.version})
    return entries


def _registry_lineages(engine: Engine, names: list[str] | None) -> list[tuple[dict[str, Any], str]]:
    """``(lineage, registered model)`` of the lineages :func:`follow_alias` follows."""
    if names is None:
        frame = db.lineage_checkpoints(engine)
        names = sorted(set(frame[frame["lineage_audit"]]["lineage"]))
        lineages = [db.find_lineage(engine, name) for name in names]
        return [(lineage, model) for lineage in lineages if lineage is not None
                for model in [registered_model_of(lineage["source"])] if model is not None]
    chosen = []
    for name in sorted(set(names)):
        lineage = db.find_lineage(engine, name)
        if lineage is None:
            raise FocusError(f"No lineage named {name!r} to follow an alias into: register its first version with "
                             "focus checkpoint register --lineage NAME --weights models:/<name>@<alias>.")
        model = registered_model_of(lineage["source"])
        if model is None:
            raise FocusError(f"Lineage {name!r} does not come from the MLflow Model Registry (its source is "
                             f"{lineage['source']!r}): leave it out of --lineage, or leave --follow-alias out.")
        chosen.append((lineage, model))
    return chosen
