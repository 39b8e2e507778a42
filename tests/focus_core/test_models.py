"""Architectures, head and stem replacement, safe weight files, GradCAM's default layer."""

from __future__ import annotations

import sys
import textwrap
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from focus_core.errors import FocusError
from focus_core.models import (
    ARCHITECTURES,
    DigitsCNN,
    build_model,
    default_gradcam_layer,
    load_weights,
    save_weights,
    weights_sha256,
)


def test_registry_names_the_paper_networks_and_the_digits_cnn():
    assert {"digits_cnn", "alexnet", "vgg16", "resnet18"} <= set(ARCHITECTURES)


@pytest.mark.parametrize(
    ("arch", "head"),
    [("alexnet", "classifier.6"), ("vgg16", "classifier.6"), ("resnet18", "fc"), ("digits_cnn", "classifier")],
)
def test_head_is_replaced_for_the_class_count(arch, head):
    model = build_model(arch, num_classes=7, in_channels=3)
    assert model.get_submodule(head).out_features == 7


@pytest.mark.parametrize(("arch", "stem"), [("alexnet", "features.0"), ("resnet18", "conv1"), ("vgg16", "features.0")])
def test_first_conv_is_replaced_for_other_channel_counts(arch, stem):
    model = build_model(arch, num_classes=2, in_channels=1)
    assert model.get_submodule(stem).in_channels == 1


def test_any_torchvision_classifier_by_name():
    model = build_model("mobilenet_v3_small", num_classes=4, in_channels=1)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_unknown_architecture_is_one_actionable_sentence():
    with pytest.raises(FocusError, match="Unknown architecture 'lenet'.*: use one of"):
        build_model("lenet", num_classes=2)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_class_count(bad):
    with pytest.raises(FocusError, match="num_classes"):
        build_model("digits_cnn", num_classes=bad)


def test_pretrained_download_failure_says_to_connect(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(FocusError, match="Could not download.*'resnet18'.*connect to the network"):
        build_model("resnet18", num_classes=2, pretrained=True)


def test_pretrained_uses_torchvision_default_weights(monkeypatch):
    seen = {}

    def fake(name, weights=None):
        seen[name] = weights
        return torchvision.models.resnet18()

    monkeypatch.setattr(torchvision.models, "get_model", fake)
    build_model("resnet18", num_classes=2, pretrained=True)
    assert seen == {"resnet18": "DEFAULT"}


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny(num_classes, in_channels):
                return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(4, num_classes))

            def fixed():
                return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(4, 1000))

            def not_a_model(num_classes):
                return 42

            def boom(num_classes):
                raise RuntimeError("factory boom")
            """
        )
    )
    (tmp_path / "broken_at_import.py").write_text("raise RuntimeError('import boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_nets"
    sys.modules.pop("my_nets", None)
    sys.modules.pop("broken_at_import", None)


def test_user_factory_gets_class_and_channel_counts(user_module):
    model = build_model(f"{user_module}:tiny", num_classes=3, in_channels=1)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


def test_user_factory_without_arguments_is_adapted(user_module):
    model = build_model(f"{user_module}:fixed", num_classes=5, in_channels=1)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 5)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz:f", "Cannot import 'no_such_module_xyz'"),
        ("my_nets:missing", "has no callable 'missing'"),
        ("my_nets:not_a_model", "returned int, not an nn.Module"),
        ("my_nets:boom", r"^The model factory my_nets:boom\(num_classes=2\) failed \(RuntimeError: factory boom\)"),
        ("broken_at_import:f", r"^Importing 'broken_at_import' for '\S+' failed \(RuntimeError: import boom\)"),
    ],
)
def test_broken_import_paths(user_module, path, message):
    with pytest.raises(FocusError, match=message) as info:
        build_model(path, num_classes=2)
    assert "\n" not in str(info.value)


def test_digits_cnn_is_fully_convolutional_with_relu_modules():
    model = DigitsCNN(num_classes=10, in_channels=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)
    relus = [m for m in model.features if isinstance(m, nn.ReLU)]
    assert len(relus) == 4 and not any(m.inplace for m in relus)
    assert isinstance(model.features[-1], nn.ReLU)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 4


def test_digits_cnn_receptive_field_covers_a_tile():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    model.features(x)[0, :, 1, 1].sum().backward()  # one position of the 4x4 output map
    rows, cols = (x.grad[0, 0].abs() > 0).nonzero(as_tuple=True)
    assert rows.min() == 0 and cols.min() == 0 and rows.max() >= 16 and cols.max() >= 16


def test_save_and_load_round_trip(tmp_path):
    model = DigitsCNN(num_classes=3)
    sha = save_weights(model, tmp_path / "sub" / "w.pt")
    assert sha == weights_sha256(tmp_path / "sub" / "w.pt") and len(sha) == 64
    assert save_weights(model, tmp_path / "again.pt") == sha  # same weights, same hash
    other = load_weights(DigitsCNN(num_classes=3), tmp_path / "sub" / "w.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)


def test_wrapped_state_dict_is_accepted(tmp_path):
    model = DigitsCNN(num_classes=3)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    load_weights(DigitsCNN(num_classes=3), tmp_path / "ckpt.pt")


def test_class_count_mismatch_names_it(tmp_path):
    save_weights(build_model("resnet18", num_classes=2), tmp_path / "x.pt")
    with pytest.raises(FocusError, match=r"has 2 classes in 'fc.weight' but the model has 10: pass"):
        load_weights(build_model("resnet18", num_classes=10), tmp_path / "x.pt")


def test_architecture_mismatch_names_it(tmp_path):
    save_weights(DigitsCNN(num_classes=10), tmp_path / "x.pt")
    with pytest.raises(FocusError, match="another architecture: pass the matching architecture"):
        load_weights(build_model("resnet18", num_classes=10), tmp_path / "x.pt")


def test_channel_mismatch_names_the_tensor(tmp_path):
    save_weights(DigitsCNN(in_channels=3), tmp_path / "x.pt")
    with pytest.raises(FocusError, match=r"shape \(16, 3, 3, 3\) for 'features.0.weight'.*--in-channels"):
        load_weights(DigitsCNN(in_channels=1), tmp_path / "x.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FocusError, match="does not exist"):
        load_weights(DigitsCNN(), tmp_path / "nope.pt")
    with pytest.raises(FocusError, match="does not exist"):
        weights_sha256(tmp_path / "nope.pt")


def test_a_directory_is_not_said_to_be_missing(tmp_path):
    for call in (lambda: load_weights(DigitsCNN(), tmp_path), lambda: weights_sha256(tmp_path)):
        with pytest.raises(FocusError, match="is a directory, not a file") as info:
            call()
        assert "does not exist" not in str(info.value)


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(FocusError, match="does not hold a state_dict"):
        load_weights(DigitsCNN(), tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FocusError, match="cannot be read safely"):
        load_weights(DigitsCNN(), tmp_path / "junk.pt")
    (tmp_path / "notes.txt").write_text("hello world, these are notes\n")  # torch.load: "KeyError: 101"
    with pytest.raises(FocusError, match=r"notes.txt' cannot be read safely \(KeyError\)"):
        load_weights(DigitsCNN(), tmp_path / "notes.txt")


def test_pickled_module_is_refused(tmp_path):
    torch.save(DigitsCNN(), tmp_path / "module.pt")  # a whole pickled module: unsafe to load
    with pytest.raises(FocusError, match="cannot be read safely"):
        load_weights(DigitsCNN(), tmp_path / "module.pt")


def test_load_leaves_model_untouched_on_mismatch(tmp_path):
    save_weights(DigitsCNN(num_classes=2), tmp_path / "x.pt")
    model = DigitsCNN(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FocusError):
        load_weights(model, tmp_path / "x.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("arch", "layer"),
    [("alexnet", "features.12"), ("vgg16", "features.30"), ("resnet18", "layer4.1"), ("digits_cnn", "features.14")],
)
def test_default_gradcam_layer_follows_the_official_code(arch, layer):
    model = build_model(arch, num_classes=2)
    assert default_gradcam_layer(model) == layer
    model.get_submodule(layer)  # it resolves


def test_default_gradcam_layer_unknown_model_asks_for_the_flag():
    with pytest.raises(FocusError, match="pass --gradcam-layer"):
        default_gradcam_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))


def test_models_gathers_the_architectures_and_the_weight_files():
    from focus_core import architectures, models, weights

    exported = {"default_gradcam_layer"}
    for module in (architectures, weights):
        for name in set(module.__all__) - {"last_linear"}:  # last_linear is there for weights only
            assert getattr(models, name) is getattr(module, name)
            exported.add(name)
    assert exported == set(models.__all__)
