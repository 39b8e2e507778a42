"""What a worker process caches: datasets, tiles on a device, manifests, models, fitting batch sizes.

Tasks receive specs (small pydantic models), never tensors; they call these functions, which
cache by the spec's canonical JSON, so a process loads a dataset, moves its tiles to the device
and reads a weights file once however many chunks and checks it runs. :func:`build_model` and
:func:`make_explainer` turn a spec into a fresh model or explainer (uncached). Everything here is thread-safe: Prefect's
default task runner runs tasks in threads. Where the work runs: :mod:`flows.worker.devices`.

Examples
--------
>>> remember_fitting_batch_size("doctest: a work key", 16)  # this process ran out of memory above 16
>>> fitting_batch_size("doctest: a work key", 64), fitting_batch_size("doctest: a work key", 8)
(16, 8)
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from typing import Any, NamedTuple

import torch
from torch import nn

from flows.worker import confinement
from flows.weights import weight_store
from flows.params import (
    DatasetSpec,
    MethodSpec,
    ModelSpec,
    MosaicSetSpec,
    RandomizationSpec,
    spec_key,
)
from focus_core import confident, data, explainers, image_folder, models, mosaics, randomize
from focus_core.disconnected import GRADCAM_LAYER, DisconnectedModel
from focus_core.errors import FocusError

__all__ = [
    "load_dataset",
    "device_tiles",
    "load_manifest",
    "ManifestTensors",
    "manifest_tensors",
    "build_model",
    "checked_model",
    "weights_sha256",
    "load_model",
    "disconnect",
    "make_explainer",
    "fitting_batch_size",
    "remember_fitting_batch_size",
    "clear_caches",
]

_LOAD_LOCK = threading.RLock()
_FITTING_BATCH: dict[str, int] = {}


def load_dataset(spec: DatasetSpec) -> data.TileDataset:
    """The dataset of ``spec``, loaded once per process.

    ``spec`` is loaded as it is: a flow passes the spec it resolved for its model
    (:func:`flows.specs.effective_dataset`), whose tile size and normalisation may be the model's.
    """
    return _load_dataset(spec_key(spec), spec)


@functools.lru_cache(maxsize=4)
def _load_dataset_cached(key: str) -> data.TileDataset:
    spec = DatasetSpec.model_validate_json(key)
    if spec.kind == "digits":
        return data.load_digits(seed=spec.seed, tile_size=spec.tile_size or 32)
    return image_folder.load_image_folder(
        spec.root,
        seed=spec.seed,
        tile_size=spec.tile_size or 224,
        resize=spec.resize or 256,
        cache_dir=spec.cache_dir,
        mean=spec.mean,
        std=spec.std,
    )


def _load_dataset(key: str, spec: DatasetSpec) -> data.TileDataset:
    with _LOAD_LOCK:
        return _load_dataset_cached(key)


@functools.lru_cache(maxsize=4)
def _device_tiles(key: str, device: str) -> torch.Tensor:
    dataset = _load_dataset_cached(key)
    return dataset.tiles.to(device)


def device_tiles(spec: DatasetSpec, device: torch.device | str) -> torch.Tensor:
    """The dataset's uint8 tiles, moved to ``device`` once per process."""
    with _LOAD_LOCK:
        return _device_tiles(spec_key(spec), str(device))


@functools.lru_cache(maxsize=16)
def _load_manifest(dataset_key: str, mosaics_key: str, chooser: tuple[str, str] | None) -> mosaics.MosaicManifest:
    spec = MosaicSetSpec.model_validate_json(mosaics_key)
    dataset = _load_dataset_cached(dataset_key)
    eligible, sha = None, None
    if chooser is not None:  # the grid pointing game: the checkpoint's confident, correct images only
        model_key, sha = chooser
        model = checked_model(ModelSpec.model_validate_json(model_key), DatasetSpec.model_validate_json(dataset_key))
        eligible = confident.confident_indices(model, dataset, spec.split, spec.confident)
    return mosaics.build_manifest(
        dataset,
        split=spec.split,
        per_class=spec.per_class,
        seed=spec.seed,
        layout=spec.layout,
        classes=spec.classes,
        grid=spec.grid,
        targets=spec.targets,
        eligible=eligible,
        confident=spec.confident,
        confident_model=sha,
        probe=spec.probe,
    )


def _chooser(dataset: DatasetSpec, spec: MosaicSetSpec, model: ModelSpec | None) -> tuple[str, str] | None:
    """``(model key, sha256 of its weights)`` of the checkpoint that chooses a confident set's tiles, else ``None``.

    A confident set depends on the weights, so it is cached (and identified, in its manifest) by their sha256.
    """
    if spec.confident is None:
        return None
    if model is None or not model.weights:
        raise FocusError(
            "A confident mosaic set is chosen by a checkpoint's predictions: pass the checkpoint (its weights) that "
            "is evaluated, or leave confident out."
        )
    return spec_key(model), weights_sha256(model.weights)


def load_manifest(
    dataset: DatasetSpec, spec: MosaicSetSpec, model: ModelSpec | None = None
) -> mosaics.MosaicManifest:
    """The seeded manifest of ``spec`` over ``dataset`` (same spec, same mosaics, in any process).

    With ``spec.confident`` the tiles are the images ``model`` (a checkpoint with weights; required then)
    classifies correctly with at least that softmax probability (:func:`focus_core.confident.confident_indices`,
    on the CPU, once per process and weights), and the manifest records the weights' sha256.
    """
    with _LOAD_LOCK:
        return _load_manifest(spec_key(dataset), spec_key(spec), _chooser(dataset, spec, model))


class ManifestTensors(NamedTuple):
    """A manifest as CPU tensors, row ``p`` for manifest position ``p``: what a chunk slices."""

    indices: torch.Tensor  # int64 (M, N²) tile indices, row-major (2x2: TL, TR, BL, BR)
    targets: torch.Tensor  # int64 (M,) target classes
    masks: torch.Tensor  # bool (M, N²) target tiles
    stamps: torch.Tensor | None = None  # int8 (M, N²) a probe set's corner per tile (focus_core.probes), else None


def manifest_tensors(dataset: DatasetSpec, spec: MosaicSetSpec, model: ModelSpec | None = None) -> ManifestTensors:
    """The manifest of ``spec`` as tensors, built once per process, so a chunk takes its rows without a loop.

    ``model`` as for :func:`load_manifest` (needed for a confident set only).
    """
    with _LOAD_LOCK:
        return _manifest_tensors(spec_key(dataset), spec_key(spec), _chooser(dataset, spec, model))


@functools.lru_cache(maxsize=16)
def _manifest_tensors(dataset_key: str, mosaics_key: str, chooser: tuple[str, str] | None) -> ManifestTensors:
    manifest = _load_manifest(dataset_key, mosaics_key, chooser)
    return ManifestTensors(manifest.index_tensor(), manifest.target_classes(), mosaics.target_mask(manifest),
                           manifest.probe_codes())


def build_model(spec: ModelSpec, dataset: DatasetSpec, weights_file: str | None = None) -> nn.Module:
    """A fresh model of ``spec`` sized for ``dataset``, with the spec's weights when it has some (yours to change).

    The weights are read from ``weights_file`` when given (a local copy of ``spec.weights``), else from
    ``spec.weights``: a local path, or a URL read through :func:`flows.weights.weight_store.local_copy`.
    """
    ds = load_dataset(dataset)
    model = models.build_model(
        spec.architecture,
        num_classes=spec.num_classes or len(ds.classes),
        in_channels=spec.in_channels or int(ds.tiles.shape[1]),
        factories=confinement.factory_policy(),  # a worker builds only the factories its operator allowed
    )
    if spec.weights:
        local = weights_file or weight_store.local_copy(spec.weights)
        model = models.load_weights(model, local, name=weight_store.redact(spec.weights))
    return model


def _weights_file(location: str | None) -> tuple[str | None, tuple[Any, ...] | None]:
    """``(local file, identity)`` of a weights location: a URL's verified cached copy (named by its sha256), or
    a registry version's downloaded ``state_dict`` (named by the version, so the file's size and time too)."""
    if location and weight_store.is_registry(location):
        local = str(weight_store.local_copy(location))
        return local, ("registry", local, _file_identity(local))
    if location and weight_store.is_url(location):
        local = str(weight_store.local_copy(location))
        return local, ("sha256", local)
    return location, _file_identity(location)


def _file_identity(path: str | None) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, so a cache entry of a weights file rewritten in place is not reused."""
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # loading says what is wrong with it
    return status.st_size, status.st_mtime_ns


def checked_model(spec: ModelSpec, dataset: DatasetSpec) -> nn.Module:
    """The model of ``spec`` with its weights, on the CPU, built and loaded once per process: shared, never modify it.

    The checks before any work (the weights fit the architecture, the randomization's layers exist, GradCAM's
    layer is found) and the chunks' device copies (:func:`load_model`) all start from this one model, so an
    evaluation reads its weights file once. A weights file rewritten in place is loaded again. ``spec.weights``
    may be a URL: it is read through the worker's cache (:func:`flows.weights.weight_store.local_copy`), one metadata
    request per call, a download only when the object changed; or a registry URI (``models:/<name>/<version>``),
    resolved through the MLflow tracking server on each call, downloaded once per machine.

    Raises
    ------
    FocusError
        When the weights are missing or do not fit the architecture.
    """
    with _LOAD_LOCK:
        local, identity = _weights_file(spec.weights)
        return _checked_model(spec_key(spec), spec_key(dataset), identity, local)


@functools.lru_cache(maxsize=2)  # an evaluation needs one; a training run registers one per epoch
def _checked_model(
    model_key: str, dataset_key: str, weights: tuple[Any, ...] | None, local: str | None
) -> nn.Module:
    return build_model(ModelSpec.model_validate_json(model_key), DatasetSpec.model_validate_json(dataset_key), local)


def weights_sha256(path: str) -> str:
    """The sha256 of the weights at a local path (read once per process, again when rewritten) or a URL.

    A URL's hash comes from the worker's cache (:func:`flows.weights.weight_store.sha256_of`): a metadata request,
    and a download only when the object changed.
    """
    if weight_store.is_url(path):
        return weight_store.sha256_of(path)
    with _LOAD_LOCK:
        return _weights_sha256(str(path), _file_identity(path))


@functools.lru_cache(maxsize=32)
def _weights_sha256(path: str, identity: tuple[int, int] | None) -> str:
    return models.weights_sha256(path)


def disconnect(model: nn.Module, grid: int, architecture: str) -> DisconnectedModel:
    """``model`` in the disconnected setting (:class:`focus_core.disconnected.DisconnectedModel`) for ``grid`` x
    ``grid`` mosaics: its tiles pass through its feature extractor on their own. Holds ``model``'s modules.

    Raises
    ------
    FocusError
        For an architecture that cannot be disconnected (a vision transformer, a network whose feature extractor
        and head are unknown): one sentence naming ``architecture``.
    """
    return DisconnectedModel(model, grid, name=f"{architecture} ({type(model).__name__})")


@functools.lru_cache(maxsize=2)  # a chunk needs one model; a randomization run's stages need one each, in turn
def _load_model(model_key: str, dataset_key: str, randomization_key: str, device: str,
                disconnected_grid: int | None = None) -> nn.Module:
    spec = ModelSpec.model_validate_json(model_key)
    rnd = RandomizationSpec.model_validate_json(randomization_key)
    shared = checked_model(spec, DatasetSpec.model_validate_json(dataset_key))
    model = copy.deepcopy(shared) if rnd.kind == "none" else shared  # randomizing copies the model itself
    if rnd.kind == "full":
        model = randomize.randomize_full(model, seed=rnd.seed)
    elif rnd.kind == "cascading":
        model = randomize.randomize_cascading(model, rnd.stage, seed=rnd.seed)
    elif rnd.kind == "independent":
        model = randomize.randomize_independent(model, rnd.layer, seed=rnd.seed)
    if disconnected_grid is not None:  # randomized first: the randomization names the model's own layers
        model = disconnect(model, disconnected_grid, spec.architecture)
    model = model.to(device).eval()
    if torch.device(device).type == "cuda":
        # cuDNN picks the fastest kernels for each input shape (a chunk repeats one shape), and channels-last
        # weights let convolutions run without layout transposes; the CPU path stays as it is
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def load_model(
    spec: ModelSpec,
    dataset: DatasetSpec,
    device: torch.device | str,
    randomization: RandomizationSpec | None = None,
    *,
    disconnected: bool = False,
    grid: int = 2,
) -> nn.Module:
    """The (optionally randomized) model in eval mode on ``device``, built once per process.

    With ``disconnected`` it is wrapped for ``grid`` x ``grid`` mosaics (:func:`disconnect`), after the
    randomization.

    Parameters are frozen (``requires_grad=False``): explainers take gradients with respect to
    the input and the activations only. On CUDA the weights are stored channels-last and
    ``torch.backends.cudnn.benchmark`` is switched on for the process.
    """
    with _LOAD_LOCK:
        rnd = randomization or RandomizationSpec()
        return _load_model(spec_key(spec), spec_key(dataset), spec_key(rnd), str(device),
                           grid if disconnected else None)


def make_explainer(
    method: MethodSpec,
    model: ModelSpec,
    batch_size: int | None = None,
    requested_batch_size: int | None = None,
    grid: int = 2,
    disconnected: bool = False,
) -> explainers.Explainer:
    """The explainer of ``method``; GradCAM methods take the model spec's layer when they name none, and with
    ``disconnected`` the laid-out tile maps (:data:`focus_core.disconnected.GRADCAM_LAYER`) when neither names one.

    ``grid`` is the mosaics' tiles per side: LIME, whose features never cross a tile edge, is given it when it is
    not 2 and the method names none (so its ``params`` and hash say which grid its features followed).

    ``batch_size`` (the hot path's batch) bounds the passes of methods with an ``internal_batch_size``
    (SmoothGrad, integrated gradients, LIME): left unset, it becomes ``batch_size``, so each pass holds one
    batch of noisy copies or steps instead of all ``B x n`` at once; set, it shrinks by the same factor as
    ``batch_size`` below ``requested_batch_size`` (after running out of memory). It bounds memory and does
    not change the maps, their parameters or their hash.
    """
    params = dict(method.params)
    if method.name.startswith("gradcam") and model.gradcam_layer and params.get("layer") is None:
        params["layer"] = model.gradcam_layer
    if method.name.startswith("gradcam") and disconnected and params.get("layer") is None:
        params["layer"] = GRADCAM_LAYER
    if "grid" in getattr(explainers.EXPLAINERS.get(method.name), "spec", {}):
        if params.get("grid", grid) != grid:
            raise FocusError(
                f"The method {method.name!r} was given grid {params['grid']} but the mosaics have {grid} tiles per "
                "side: leave its grid out, the mosaic set gives it."
            )
        if grid != 2:
            params["grid"] = grid
    if batch_size is not None and "internal_batch_size" in getattr(
        explainers.EXPLAINERS.get(method.name), "runtime_spec", {}
    ):
        chosen = params.get("internal_batch_size")
        if chosen is None:
            params["internal_batch_size"] = batch_size
        elif requested_batch_size and batch_size < requested_batch_size:
            params["internal_batch_size"] = max(1, chosen * batch_size // requested_batch_size)
    return explainers.get_explainer(method.name, **params)


def fitting_batch_size(key: str, requested: int) -> int:
    """``requested``, or less where this process already ran out of memory with ``key``'s work."""
    with _LOAD_LOCK:
        return min(requested, _FITTING_BATCH.get(key, requested))


def remember_fitting_batch_size(key: str, batch_size: int) -> None:
    """Remember that ``key``'s work (model, method, mosaic size, device, dtype) fits ``batch_size`` at most."""
    with _LOAD_LOCK:
        _FITTING_BATCH[key] = min(batch_size, _FITTING_BATCH.get(key, batch_size))


def clear_caches() -> None:
    """Forget every cached dataset, tile tensor, manifest, model and fitting batch size (tests, memory pressure)."""
    with _LOAD_LOCK:
        for cached in (_load_dataset_cached, _device_tiles, _load_manifest, _manifest_tensors, _checked_model,
                       _weights_sha256, _load_model):
            cached.cache_clear()
        _FITTING_BATCH.clear()
