"""timm models through the project: ``timm:<name>(key=value,...)`` built, sized, named, saved, loaded and trained.

The tiny ViT of these tests (and of the CLI test) is :data:`TINY_VIT`: patch 8 on the 32x32 digits tiles (a 4x4 grid
of tokens), 4 blocks of width 64 with 4 heads, global average pooling instead of a class token. Trained with
:data:`VIT_RECIPE` (15 epochs, AMSGrad lr 1e-3, batches of 32, no rotation or crop) it reaches about 94 % validation
accuracy on the bundled digits in 10-25 s on one CPU thread (measured 0.939, seed 0); the test asks for 90 %.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from flows.specs import ModelSpec
from focus_core import models
from focus_core.arch_string import canonical_architecture
from focus_core.data import load_digits
from focus_core.errors import FocusError
from focus_core.train import TrainConfig, evaluate_accuracy, train_model

pytest.importorskip("timm")

TINY_VIT = ("timm:vit_tiny_patch16_224(class_token=False,depth=4,embed_dim=64,global_pool='avg',img_size=32,"
            "num_heads=4,patch_size=8)")
#: The same model, spelt as a person might: other order, spaces, a list for a tuple-free value.
TINY_VIT_SPELT = ("timm:vit_tiny_patch16_224( patch_size=8, depth=4, embed_dim=64, num_heads=4, img_size=32, "
                  "global_pool=\"avg\", class_token=False )")
VIT_RECIPE = dict(epochs=15, lr=1e-3, batch_size=32, rotation=0.0, crop_padding=0)
VIT_MIN_VAL_ACCURACY = 0.9


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_canonical_string_is_one_per_model_and_what_the_spec_stores():
    assert canonical_architecture(TINY_VIT_SPELT) == TINY_VIT
    assert canonical_architecture(TINY_VIT) == TINY_VIT  # a canonical string is a fixed point
    assert ModelSpec(architecture=TINY_VIT_SPELT).architecture == TINY_VIT
    assert ModelSpec(architecture="timm:resnet18()").architecture == "timm:resnet18"
    assert ModelSpec(architecture="timm:vit_tiny_patch16_224.augreg_in21k").architecture == (
        "timm:vit_tiny_patch16_224.augreg_in21k")
    assert canonical_architecture("timm:x(img_size=[32, 48])") == "timm:x(img_size=(32,48))"
    for plain in ("digits_cnn", "resnet18", "tests.flows.test_bring_your_own:make_model"):
        assert ModelSpec(architecture=plain).architecture == plain  # stored strings of before are unchanged


@pytest.mark.parametrize(("arch", "message"), [
    ("timm:vit_tiny_patch16_224(num_classes=3)", "--num-classes"),
    ("timm:vit_tiny_patch16_224(in_chans=3)", "--in-channels"),
    ("timm:vit_tiny_patch16_224(pretrained=True)", "not its weights"),
    ("timm:vit_tiny_patch16_224(depth=four)", "literal"),
    ("timm:vit_tiny_patch16_224(8)", "key=value"),
    ("timm:vit_tiny_patch16_224(depth=4", "close"),
    ("timm:vit_tiny_patch16_224(depth=4,depth=5)", "twice"),
    ("timm:vit tiny", "timm model"),
    (f"timm:vit_tiny_patch16_224(img_size={tuple(range(80))})", "characters long"),
])
def test_a_malformed_architecture_is_one_sentence_in_focus_core_and_in_the_spec(arch, message):
    with pytest.raises(FocusError) as raised:
        models.build_model(arch, num_classes=10, in_channels=1)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ValueError) as invalid:
        ModelSpec(architecture=arch)
    assert message in str(invalid.value)


def test_a_vit_is_sized_by_timm_and_takes_tiles_and_mosaics():
    model = models.build_model(TINY_VIT_SPELT, num_classes=7, in_channels=1)
    assert model.training
    assert model.get_classifier().out_features == 7 and model.patch_embed.proj.in_channels == 1
    assert model.patch_embed.proj.kernel_size == (8, 8) and len(model.blocks) == 4 and model.embed_dim == 64
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)  # a tile (training)
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 7)  # a 2x2 mosaic (evaluation): dynamic_img_size
    fixed = models.build_model(TINY_VIT.replace("class_token", "dynamic_img_size=False,class_token"), 7, 1)
    with pytest.raises(Exception, match="Input height"):  # timm's own check: the default is what makes it work
        fixed(torch.zeros(1, 1, 64, 64))


def test_a_timm_cnn_gets_its_head_and_stem_from_timm():
    model = models.build_model("timm:resnet10t", num_classes=3, in_channels=1)  # takes no dynamic_img_size
    assert model.get_classifier().out_features == 3 and model.conv1[0].in_channels == 1
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3)


def test_timm_errors_are_one_sentence():
    with pytest.raises(FocusError, match="'vit_nosuch' is not a timm model"):
        models.build_model("timm:vit_nosuch", num_classes=10)
    with pytest.raises(FocusError, match=r"timm could not build .*\(TypeError: .*fix its keyword") as raised:
        models.build_model("timm:resnet10t(no_such_option=1)", num_classes=10)
    assert "\n" not in str(raised.value)
    with pytest.raises(FocusError, match="Invalid pretrained tag"):
        models.build_model("timm:resnet10t.nosuchtag", num_classes=10)
    with pytest.raises(FocusError, match="no pretrained config 'resnet10t.nosuchtag'"):
        models.model_data_config("timm:resnet10t.nosuchtag")


def test_without_timm_a_timm_arch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError, as where it is not installed
    for call in (lambda: models.build_model(TINY_VIT, num_classes=10, in_channels=1),
                 lambda: models.model_data_config(TINY_VIT)):
        with pytest.raises(FocusError, match=r"pip install 'focus-audit\[timm\]'"):
            call()
    assert ModelSpec(architecture=TINY_VIT).architecture == TINY_VIT  # validating needs no timm
    assert models.build_model("digits_cnn", num_classes=10, in_channels=1) is not None


def test_timm_is_imported_only_for_a_timm_model():
    probe = ("import sys; from focus_core import models; models.build_model('digits_cnn', 10, 1); "
             "assert 'timm' not in sys.modules; models.build_model('timm:resnet10t', 10, 1); "
             "assert 'timm' in sys.modules")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_pretrained_weights_offline_fail_in_one_sentence(monkeypatch, tmp_path):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network here; offline mode fails without retries
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing downloaded before
    with pytest.raises(FocusError, match="Could not download timm's pretrained weights for 'resnet10t'") as raised:
        models.build_model("timm:resnet10t", num_classes=10, in_channels=3, pretrained=True)
    assert "pretrained=False" in str(raised.value) and "\n" not in str(raised.value)


def test_the_data_config_is_timms_where_it_defines_one():
    vit = models.model_data_config(TINY_VIT, in_channels=1)
    assert vit == models.DataConfig(input_size=(32, 32), mean=(0.5,), std=(0.5,))  # img_size; one channel
    assert models.model_data_config("timm:vit_tiny_patch16_224", in_channels=3) == models.DataConfig(
        (224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    resnet = models.model_data_config("timm:resnet10t", in_channels=3)
    assert resnet.mean == pytest.approx((0.485, 0.456, 0.406)) and resnet.std == pytest.approx((0.229, 0.224, 0.225))
    assert models.model_data_config("timm:resnet10t", in_channels=2).mean is None  # neither 1 nor 3 channels
    assert models.model_data_config("resnet18") == models.DataConfig(None, None, None)  # the dataset's own


def test_weights_round_trip_through_the_weight_files(tmp_path):
    torch.manual_seed(0)
    model = models.build_model(TINY_VIT, num_classes=10, in_channels=1).eval()
    path = tmp_path / "vit.pt"
    sha = models.save_weights(model, path)
    assert sha == models.weights_sha256(path)
    rebuilt = models.load_weights(models.build_model(TINY_VIT_SPELT, num_classes=10, in_channels=1), path).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    other = TINY_VIT.replace("depth=4", "depth=3")
    with pytest.raises(FocusError, match="vit.pt"):
        models.load_weights(models.build_model(other, num_classes=10, in_channels=1), path)


@pytest.mark.training
def test_a_tiny_vit_learns_the_digits():
    dataset = load_digits(tile_size=32)
    torch.manual_seed(0)
    model = models.build_model(TINY_VIT, num_classes=10, in_channels=1)
    history = train_model(model, dataset, TrainConfig.digits(**VIT_RECIPE))
    print("tiny ViT val accuracy per epoch:", [round(h.val_accuracy, 3) for h in history])
    assert history[0].val_accuracy < 0.6  # it learns over the epochs, not from the start
    assert history[-1].val_accuracy >= VIT_MIN_VAL_ACCURACY
    assert evaluate_accuracy(model, dataset, "test")[1] >= VIT_MIN_VAL_ACCURACY - 0.05
