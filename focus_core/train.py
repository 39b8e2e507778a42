"""The paper's training recipe: augmented mini-batches, AMSGrad, cross-entropy, per-epoch metrics.

Augmentation runs batched on the uint8 tiles, on the training device, with one random draw per
sample: a rotation in ``[-rotation, rotation]`` degrees about the tile's centre, a random crop
(the tile padded with zeros by ``crop_padding`` pixels on each side, then cropped back at a
random offset: a whole-pixel shift) and, when ``hflip``, a horizontal flip with p = 0.5. All
three are one affine resampling (``affine_grid`` + ``grid_sample``, bilinear, zeros outside).
With ``cutmix > 0`` every augmented batch then goes through torchvision's ``transforms.v2.CutMix``
(Yun et al. 2019, as in the DeiT/timm ViT recipe): a box of the batch's next image is pasted in,
its area drawn from Beta(cutmix, cutmix), and the label mixed by area; the loss is the
cross-entropy on those soft labels, and the training accuracy counts the label with the larger share.

Training is seeded: batch order, augmentation and dropout of epoch ``e`` come from
``(config.seed, e)`` alone, so a run resumed at ``start_epoch`` continues exactly like an
uninterrupted one (given the same weights and optimizer state), and two runs with the same
seed on the CPU give identical metrics. The model's initial weights are the caller's: seed
them (``torch.manual_seed``) before :func:`focus_core.models.build_model`.

Examples
--------
>>> import torch
>>> from focus_core.data import load_digits
>>> from focus_core.models import DigitsCNN
>>> from focus_core.train import TrainConfig, train_model
>>> dataset = load_digits(tile_size=16)
>>> _ = torch.manual_seed(0)
>>> history = train_model(DigitsCNN(width=4), dataset, TrainConfig(epochs=1, hflip=False))
>>> history[0].epoch, 0.0 <= history[0].val_accuracy <= 1.0
(1, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from focus_core.data import TileDataset
from focus_core.errors import FocusError

__all__ = ["EpochMetrics", "TrainConfig", "evaluate_accuracy", "make_optimizer", "train_model"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run; the defaults are the paper's recipe.

    For the bundled digits use :meth:`TrainConfig.digits`: no flips (a mirrored digit is another
    digit), rotation 15, crop padding 2, 8 epochs at lr 3e-3 with cosine decay (``DigitsCNN`` reaches >= 97 %
    validation accuracy with it, held by ``tests/focus_core/test_science.py``; the measured figures:
    benchmarks/README.md, section "The digits training recipe").

    Parameters
    ----------
    epochs : int
        Total number of epochs (a resumed run trains ``epochs - start_epoch`` more).
    batch_size : int
        Mini-batch size for training and evaluation.
    lr : float
        AMSGrad learning rate.
    weight_decay : float
        L2 penalty of the optimizer.
    rotation : float
        Maximum absolute rotation in degrees (the paper: 30).
    crop_padding : int
        Zero padding, in pixels per side, before the random crop back to the tile size
        (0 disables the crop). ``None`` takes 1/8 of the tile side, as the paper's
        resize-to-0.875-then-crop does.
    hflip : bool
        Flip horizontally with probability 0.5.
    seed : int
        Seed of batch order, augmentation and dropout.
    device : str
        Torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    num_workers : int
        Kept for configuration compatibility; tiles are in memory and augmented on the
        device, so batches are drawn without worker processes.
    lr_schedule : str
        ``"constant"`` or ``"cosine"`` (cosine decay to 0 over ``epochs``, stepped per batch).
    progress : bool
        Show a tqdm progress bar per epoch.
    cutmix : float
        CutMix's Beta parameter alpha (1.0 in DeiT's recipe); 0 turns CutMix off.

    Examples
    --------
    >>> TrainConfig(epochs=2).rotation
    30.0
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    rotation: float = 30.0
    crop_padding: int | None = None
    hflip: bool = True
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    lr_schedule: str = "constant"
    progress: bool = False
    cutmix: float = 0.0

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FocusError(f"Expected {key} to be a positive integer but got {value!r}: pass one.")
        if not self.lr > 0 or self.weight_decay < 0 or self.rotation < 0 or not self.cutmix >= 0:
            raise FocusError(
                f"Expected lr > 0, weight_decay >= 0, rotation >= 0 and cutmix >= 0 but got {self.lr}, "
                f"{self.weight_decay}, {self.rotation} and {self.cutmix}: pass valid values."
            )
        if self.crop_padding is not None and self.crop_padding < 0:
            raise FocusError(
                f"Expected crop_padding >= 0 but got {self.crop_padding}: pass 0 to disable the crop."
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise FocusError(f"Unknown lr_schedule {self.lr_schedule!r}: use 'constant' or 'cosine'.")

    @classmethod
    def digits(cls, **overrides: Any) -> TrainConfig:
        """The measured recipe for ``DigitsCNN`` on the bundled digits; keywords override it.

        The training flow (``focus train``, the demo) takes this recipe with ``lr_schedule="constant"``
        (:meth:`flows.params.TrainParams.recipe`): its runs are keyed without ``epochs`` so that more epochs
        continue a run, and a cosine rate at epoch ``e`` depends on how many epochs follow (the two measured:
        benchmarks/README.md, section "The digits training recipe").

        Examples
        --------
        >>> TrainConfig.digits(seed=2).hflip
        False
        """
        recipe: dict[str, Any] = dict(
            epochs=8, lr=3e-3, lr_schedule="cosine", rotation=15.0, crop_padding=2, hflip=False
        )
        return cls(**(recipe | overrides))

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict."""
        return asdict(self)


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured; ``epoch`` counts from 1, ``seconds`` is its wall time."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_mean_class_accuracy: float
    seconds: float


def train_model(
    model: nn.Module,
    dataset: TileDataset,
    config: TrainConfig,
    on_epoch: Callable[[EpochMetrics, nn.Module], None] | None = None,
    start_epoch: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[EpochMetrics]:
    """Train ``model`` in place on ``dataset``'s ``"train"`` split; validate on ``"val"``.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; it is moved to ``config.device`` and left there in eval mode.
    dataset : TileDataset
        Tiles, labels and splits (see :mod:`focus_core.data`).
    config : TrainConfig
        Hyper-parameters.
    on_epoch : callable, optional
        Called as ``on_epoch(metrics, model)`` after every epoch, with the model in eval mode
        (checkpoint it or measure Focus there; the model is put back in training mode after).
    start_epoch : int
        Epochs already done (resuming): trains epochs ``start_epoch + 1 .. config.epochs``.
    optimizer_state : dict, optional
        An AMSGrad ``state_dict`` to resume from.
    optimizer : torch.optim.Optimizer, optional
        The optimizer to step, built by :func:`make_optimizer`; pass your own to checkpoint its
        state after training (``None`` builds one that is dropped at the end).

    Returns
    -------
    list of EpochMetrics
        One entry per epoch trained.

    Raises
    ------
    FocusError
        For a dataset without training or validation images, or labels beyond the model's outputs.
    """
    if not 0 <= start_epoch <= config.epochs:
        raise FocusError(
            f"start_epoch {start_epoch} is outside [0, {config.epochs}]: pass the epochs already done."
        )
    device = torch.device(config.device)
    train_idx = _split_indices(dataset, "train")
    _split_indices(dataset, "val")
    model.to(device)
    if optimizer is None:
        optimizer = make_optimizer(model, config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    padding = config.crop_padding if config.crop_padding is not None else dataset.tile_size // 8
    cutmix = _cutmix(config.cutmix, len(dataset.classes))
    history: list[EpochMetrics] = []
    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one sample
            batches[-2], batches = torch.cat(batches[-2:]), batches[:-1]
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        forks = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forks):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            first_step = (epoch - 1) * steps_per_epoch
            for step, batch in enumerate(_progress(batches, config.progress, epoch), start=first_step):
                x = _augment(dataset.tiles[batch], config, padding, generator, device)
                y = dataset.labels[batch].to(device)
                target = y
                if cutmix is not None:
                    x, target = cutmix(x, y)
                    y = target.argmax(1)
                _set_lr(optimizer, config, step, steps_per_epoch)
                logits = model(dataset.normalize(x))
                _check_outputs(logits, y)
                if target.ndim == 2:  # soft labels over the dataset's classes, for a model with as many outputs or more
                    target = F.pad(target, (0, logits.shape[1] - target.shape[1]))
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(batch)
        val_loss, val_acc, val_mca = evaluate_accuracy(model, dataset, "val", config.batch_size)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            val_loss=val_loss,
            val_accuracy=val_acc,
            val_mean_class_accuracy=val_mca,
            seconds=time.perf_counter() - started,
        )
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, model)
    model.eval()
    return history


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The paper's optimizer: AMSGrad (Adam with ``amsgrad=True``) over ``model``'s parameters.

    Examples
    --------
    >>> from focus_core.models import DigitsCNN
    >>> make_optimizer(DigitsCNN(), TrainConfig(epochs=1)).defaults["amsgrad"]
    True
    """
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=True)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, dataset: TileDataset, split: str, batch_size: int = 256
) -> tuple[float, float, float]:
    """Return ``(loss, accuracy, mean per-class accuracy)`` of ``model`` on one split's tiles.

    The mean per-class accuracy averages the recall of the classes present in the split. The
    model is evaluated in eval mode on its own device and left in eval mode.

    Examples
    --------
    >>> from focus_core.data import load_digits
    >>> from focus_core.models import DigitsCNN
    >>> loss, acc, mca = evaluate_accuracy(DigitsCNN(width=4), load_digits(tile_size=16), "val")
    >>> 0.0 <= acc <= 1.0 and 0.0 <= mca <= 1.0
    True
    """
    indices = _split_indices(dataset, split)
    device = next(model.parameters()).device
    model.eval()
    loss_sum, predictions = 0.0, []
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        y = dataset.labels[batch].to(device)
        logits = model(dataset.normalize(dataset.tiles[batch].to(device)))
        _check_outputs(logits, y)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        predictions.append(logits.argmax(1).cpu())
    predicted, labels = torch.cat(predictions), dataset.labels[indices]
    hits = (predicted == labels).double()
    per_class = [hits[labels == c].mean() for c in labels.unique()]
    return loss_sum / len(indices), float(hits.mean()), float(torch.stack(per_class).mean())


def _split_indices(dataset: TileDataset, split: str) -> torch.Tensor:
    indices = dataset.indices(split)
    if len(indices) == 0:
        raise FocusError(
            f"The dataset {dataset.name!r} has no {split!r} images: give that split some images."
        )
    return indices


def _check_outputs(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or int(labels.max()) >= logits.shape[1]:
        raise FocusError(
            f"The model gives {tuple(logits.shape)} outputs for labels up to {int(labels.max())}: "
            "build it with num_classes equal to the dataset's class count."
        )


def _set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, per_epoch: int) -> None:
    if config.lr_schedule == "cosine":
        lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / (config.epochs * per_epoch)))
    else:
        lr = config.lr
    for group in optimizer.param_groups:
        group["lr"] = lr


def _augment(
    tiles: torch.Tensor, config: TrainConfig, padding: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Rotate, shift (random crop) and flip uint8 tiles ``(B, C, h, w)``; return uint8 on ``device``."""
    b, _, h, w = tiles.shape
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(config.rotation)
    shift = torch.randint(-padding, padding + 1, (b, 2), generator=generator).float()
    flip = torch.rand(b, generator=generator) < 0.5
    x = tiles.to(device)
    if config.rotation == 0 and padding == 0 and not config.hflip:
        return x
    sign = torch.where(flip & config.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output pixel p samples the input at R(p) * sign_x - shift, in normalised coordinates
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, -shift[:, 0] * 2 / w], 1),
            torch.stack([sin * sign, cos, -shift[:, 1] * 2 / h], 1),
        ],
        1,
    ).to(device)
    grid = F.affine_grid(theta, list(tiles.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _cutmix(alpha: float, num_classes: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """torchvision's batch CutMix (it draws from torch's global generator, seeded per epoch), or None when off."""
    if alpha == 0:
        return None
    from torchvision.transforms import v2

    return v2.CutMix(alpha=alpha, num_classes=num_classes)


def _progress(batches: list[torch.Tensor], enabled: bool, epoch: int) -> Any:
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"epoch {epoch}", leave=False)
