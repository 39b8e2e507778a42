"""The grid pointing game's protocol: confidently, correctly classified images only, in the identity."""

from __future__ import annotations

import json

import pytest
import torch

from focus_core.confident import confident_indices
from focus_core.data import TileDataset
from focus_core.errors import FocusError
from focus_core.mosaics import MosaicManifest, build_manifest


@pytest.fixture(scope="module")
def digits(digits_at) -> TileDataset:
    return digits_at(8)


@pytest.fixture(scope="module")
def model(digits: TileDataset) -> torch.nn.Module:
    """A linear classifier of the 8x8 tiles, fitted in a second: confident on some images, not on others."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    train = digits.indices("train")
    x, y = digits.normalize(digits.tiles[train]), digits.labels[train]
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def test_confident_indices_are_the_images_classified_right_with_enough_probability(digits, model) -> None:
    chosen = confident_indices(model, digits, "test", 0.99, batch_size=50)
    test = digits.indices("test")
    with torch.no_grad():
        probability = model(digits.normalize(digits.tiles[test])).softmax(dim=1)
    truth = digits.labels[test]
    expected = test[(probability.argmax(1) == truth) & (probability[torch.arange(len(test)), truth] >= 0.99)]
    assert torch.equal(chosen, expected) and chosen.dtype == torch.int64
    assert 0 < len(chosen) < len(test)  # the threshold chooses: some images are left out
    looser = confident_indices(model, digits, "test", 0.5)
    assert set(chosen.tolist()) < set(looser.tolist())
    assert set(confident_indices(model, digits, "val", 0.99).tolist()) <= set(digits.indices("val").tolist())


def test_confident_indices_refuse_what_they_cannot_use(digits, model) -> None:
    for threshold in (0.0, 1.5, float("nan"), True):
        with pytest.raises(FocusError, match=r"threshold in \(0, 1\]"):
            confident_indices(model, digits, "test", threshold)
    with pytest.raises(FocusError, match="held-out split"):
        confident_indices(model, digits, "train", 0.99)
    with pytest.raises(FocusError, match=r"logits of shape \(B, 10\)"):
        confident_indices(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), digits, "test", 0.9)


def test_confident_changes_the_mosaic_sets_identity(digits, model) -> None:
    eligible = confident_indices(model, digits, "test", 0.9)
    plain = build_manifest(digits, per_class=3, seed=0, grid=3, targets=1)
    confident = build_manifest(digits, per_class=3, seed=0, grid=3, targets=1, eligible=eligible, confident=0.9,
                               confident_model="a" * 64)
    assert set(i for m in confident.mosaics for i in m.image_indices) <= set(eligible.tolist())
    assert set(i for m in plain.mosaics for i in m.image_indices) - set(eligible.tolist())  # the plain set is not
    payload = json.loads(confident.to_json())
    assert (payload["confident"], payload["confident_model"]) == (0.9, "a" * 64)
    other_model = build_manifest(digits, per_class=3, seed=0, grid=3, targets=1, eligible=eligible, confident=0.9,
                                 confident_model="b" * 64)
    # the same images, chosen by other weights: another mosaic set
    assert other_model.mosaics == confident.mosaics and other_model.hash != confident.hash
    assert len({plain.hash, confident.hash, other_model.hash}) == 3
    again = MosaicManifest.from_json(confident.to_json())
    assert again == confident and again.hash == confident.hash
    two = build_manifest(digits, per_class=3, seed=0)
    two_confident = build_manifest(digits, per_class=3, seed=0, eligible=eligible, confident=0.9,
                                   confident_model="a" * 64)
    assert two.hash != two_confident.hash


def test_a_confident_set_needs_its_threshold_model_and_images(digits, model) -> None:
    eligible = confident_indices(model, digits, "test", 0.9)
    for kwargs in (dict(confident=0.9), dict(confident=0.9, confident_model="a" * 64),
                   dict(eligible=eligible, confident_model="a" * 64)):
        with pytest.raises(FocusError, match="together"):
            build_manifest(digits, per_class=1, **kwargs)
    with pytest.raises(FocusError, match="eligible"):
        build_manifest(digits, per_class=1, grid=4, targets=15, eligible=eligible[:20], confident=0.9,
                       confident_model="a" * 64)
