"""The training recipe: augmentation, determinism, metrics, callbacks, resume, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from focus_core.data import TileDataset
from focus_core.errors import FocusError
from focus_core.models import DigitsCNN
from focus_core.train import EpochMetrics, TrainConfig, _augment, evaluate_accuracy, train_model


@pytest.fixture(scope="module")
def digits(digits_at) -> TileDataset:
    return digits_at(16)


@pytest.fixture(scope="module")
def small_digits(digits):
    """Every 4th image: a quick dataset with all three splits and all classes."""
    keep = torch.arange(0, len(digits), 4)
    return replace(
        digits,
        tiles=digits.tiles[keep],
        labels=digits.labels[keep],
        splits=tuple(digits.splits[i] for i in keep.tolist()),
        relpaths=tuple(digits.relpaths[i] for i in keep.tolist()),
    )


def _tiny(seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN(num_classes=10, in_channels=1, width=4)


CONFIG = TrainConfig(epochs=1, batch_size=32, lr=3e-3, rotation=15.0, crop_padding=2, hflip=False)


def test_defaults_are_the_papers_recipe():
    config = TrainConfig()
    assert (config.rotation, config.hflip, config.batch_size, config.lr) == (30.0, True, 64, 1e-3)
    assert TrainConfig.digits().hflip is False and TrainConfig.digits(epochs=2).epochs == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"epochs": 0}, {"batch_size": -1}, {"lr": 0.0}, {"crop_padding": -2}, {"lr_schedule": "step"}, {"cutmix": -1.0}],
)
def test_bad_config(kwargs):
    with pytest.raises(FocusError):
        TrainConfig(**kwargs)


def test_same_seed_same_metrics_and_weights(small_digits):
    a, b = _tiny(), _tiny()
    first, second = train_model(a, small_digits, CONFIG), train_model(b, small_digits, CONFIG)
    strip = lambda h: [replace(m, seconds=0.0) for m in h]  # noqa: E731
    assert strip(first) == strip(second)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = train_model(_tiny(), small_digits, replace(CONFIG, seed=1))
    assert strip(other) != strip(first)


def test_cutmix_pastes_a_box_of_the_batchs_next_tile_and_is_seeded(small_digits):
    """No rotation, crop or flip: without CutMix every training input is a tile; with it, most are two tiles, one
    pasted into the other (torchvision's CutMix pairs each image with the one before it in the batch)."""
    config = replace(CONFIG, rotation=0.0, crop_padding=0, cutmix=1.0)
    assert TrainConfig().cutmix == 0.0  # off by default: every recipe so far trains as it did
    seen: list[torch.Tensor] = []
    model = _tiny()
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()) if module.training
                                           else None)
    history = train_model(model, small_digits, config)
    hook.remove()
    tiles = small_digits.normalize(small_digits.tiles[small_digits.indices("train")])
    flat, mixed = tiles.flatten(1), 0
    for batch in seen:
        for image in batch:
            if (flat == image.flatten()).all(1).any():  # a box of zero area, or two tiles alike there
                continue
            agree = (tiles == image).all(1)  # (N, h, w): where the image is each tile
            first = agree.flatten(1).sum(1).argmax()
            rest = ~agree[first]
            second = (agree & rest).flatten(1).sum(1).argmax()
            assert (agree[first] | agree[second]).all()  # two tiles, each over its own part of the image
            mixed += 1
    assert mixed > len(seen) * len(seen[0]) // 2
    again = _tiny()
    assert [replace(m, seconds=0.0) for m in train_model(again, small_digits, config)] == \
        [replace(m, seconds=0.0) for m in history]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_metrics_callback_and_eval_mode(small_digits):
    seen = []
    history = train_model(
        _tiny(), small_digits, replace(CONFIG, epochs=2), on_epoch=lambda m, model: seen.append((m, model.training))
    )
    assert [m.epoch for m in history] == [1, 2] and [m for m, _ in seen] == history
    assert all(training is False for _, training in seen)
    for m in history:
        assert isinstance(m, EpochMetrics) and m.seconds > 0
        assert 0 <= m.train_accuracy <= 1 and 0 <= m.val_accuracy <= 1 and 0 <= m.val_mean_class_accuracy <= 1
        assert math.isfinite(m.train_loss) and math.isfinite(m.val_loss)


def test_resuming_trains_the_remaining_epochs_deterministically(small_digits):
    config = replace(CONFIG, epochs=2, lr_schedule="cosine")
    first = _tiny()
    train_model(first, small_digits, replace(config, epochs=1))
    weights = {k: v.clone() for k, v in first.state_dict().items()}
    runs = []
    for _ in range(2):
        model = _tiny()
        model.load_state_dict(weights)
        optimizer = torch.optim.Adam(model.parameters(), amsgrad=True)
        runs.append(train_model(model, small_digits, config, start_epoch=1, optimizer_state=optimizer.state_dict()))
    assert [m.epoch for m in runs[0]] == [2]
    assert [replace(m, seconds=0.0) for m in runs[0]] == [replace(m, seconds=0.0) for m in runs[1]]
    with pytest.raises(FocusError, match="start_epoch 3 is outside"):
        train_model(_tiny(), small_digits, config, start_epoch=3)


def test_evaluate_accuracy_by_hand(small_digits):
    model = _tiny().eval()
    loss, accuracy, mean_class = evaluate_accuracy(model, small_digits, "test", batch_size=7)
    idx = small_digits.indices("test")
    with torch.no_grad():
        logits = model(small_digits.normalize(small_digits.tiles[idx]))
    labels = small_digits.labels[idx]
    hits = logits.argmax(1) == labels
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)
    assert accuracy == pytest.approx(float(hits.float().mean()))
    recalls = [float(hits[labels == c].float().mean()) for c in labels.unique()]
    assert mean_class == pytest.approx(sum(recalls) / len(recalls))


def test_augmentation_keeps_shape_and_type_and_is_identity_when_off(digits):
    tiles = digits.tiles[:8]
    generator = torch.Generator().manual_seed(0)
    out = _augment(tiles, CONFIG, 2, generator, torch.device("cpu"))
    assert out.shape == tiles.shape and out.dtype == torch.uint8 and not torch.equal(out, tiles)
    off = TrainConfig(rotation=0.0, crop_padding=0, hflip=False)
    assert torch.equal(_augment(tiles, off, 0, generator, torch.device("cpu")), tiles)


def test_crop_is_a_whole_pixel_shift_and_flip_mirrors():
    tile = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    tile[0, 0, 3, 1] = 200
    crop_only = TrainConfig(rotation=0.0, crop_padding=2, hflip=False)
    shifted = _augment(tile.repeat(64, 1, 1, 1), crop_only, 2, torch.Generator().manual_seed(1), torch.device("cpu"))
    positions = {tuple(torch.nonzero(s[0] == 200)[0].tolist()) for s in shifted if (s == 200).any()}
    assert len(positions) > 4 and all(1 <= r <= 5 and 0 <= c <= 3 for r, c in positions)
    flip_only = TrainConfig(rotation=0.0, crop_padding=0, hflip=True)
    flipped = _augment(tile.repeat(64, 1, 1, 1), flip_only, 0, torch.Generator().manual_seed(1), torch.device("cpu"))
    kinds = {tuple(torch.nonzero(s[0] == 200)[0].tolist()) for s in flipped}
    assert kinds == {(3, 1), (3, 6)}


def test_rotation_stays_within_bounds():
    tile = torch.zeros(1, 1, 33, 33, dtype=torch.uint8)
    tile[0, 0, 16, 16:] = 255  # a ray from the centre to the right edge
    config = TrainConfig(rotation=15.0, crop_padding=0, hflip=False)
    out = _augment(tile.repeat(32, 1, 1, 1), config, 0, torch.Generator().manual_seed(0), torch.device("cpu"))
    ys, xs = torch.nonzero(out[:, 0] > 128, as_tuple=True)[1:]
    far = (ys - 16) ** 2 + (xs - 16) ** 2 >= 10**2  # angles near the centre are too coarse
    angles = torch.rad2deg(torch.atan2((ys[far] - 16).float(), (xs[far] - 16).float()))
    assert angles.abs().max() <= 18 and angles.abs().max() >= 5


def test_label_beyond_the_head_is_one_sentence(small_digits):
    model = DigitsCNN(num_classes=3, width=4)
    with pytest.raises(FocusError, match="build it with num_classes equal to the dataset's class count"):
        train_model(model, small_digits, CONFIG)


def test_empty_split_is_refused(small_digits):
    no_val = replace(small_digits, splits=tuple("train" if s == "val" else s for s in small_digits.splits))
    with pytest.raises(FocusError, match="has no 'val' images"):
        train_model(_tiny(), no_val, CONFIG)


@pytest.mark.parametrize("schedule, same", [("constant", True), ("cosine", False)])
def test_only_a_constant_rate_trains_an_epoch_the_same_whatever_the_total(small_digits, schedule, same):
    """Why the training flow, whose runs continue when asked for more epochs, trains at a constant rate."""
    after_epoch_1 = []

    def keep_epoch_1(metrics: EpochMetrics, model: torch.nn.Module) -> None:
        if metrics.epoch == 1:
            after_epoch_1.append([p.detach().clone() for p in model.parameters()])

    for total in (1, 3):
        train_model(_tiny(), small_digits, replace(CONFIG, epochs=total, lr_schedule=schedule), on_epoch=keep_epoch_1)
    short, long = after_epoch_1
    assert all(torch.equal(a, b) for a, b in zip(short, long)) is same
