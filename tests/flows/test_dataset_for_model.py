"""A model's own input size and normalisation on an ImageFolder: :func:`flows.specs.effective_dataset`.

A timm model whose pretrained config defines them gets its input size as the tile size and its mean and std instead
of ImageNet's; a torchvision model (or a factory) keeps the ImageFolder defaults (224 px, ImageNet), as do the
bundled digits with any model; a given tile size, mean and std are kept. The normalisation is part of the dataset's
fingerprint, so an evaluation with another normalisation is another dataset, mosaic set and evaluation, never the
same rows. The ImageFolder is a few PNGs written here; timm builds with ``pretrained=False`` (its pretrained configs
are part of the package: no network).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flows.worker import caches, record, store
from flows import cli
from flows.specs import DatasetSpec, ModelSpec, MosaicSetSpec, effective_dataset, spec_key, with_effective_dataset
from focus_core import models
from focus_core.errors import FocusError
from focus_core.image_folder import IMAGENET_MEAN, IMAGENET_STD

pytest.importorskip("timm")
pytestmark = pytest.mark.timeout(300)

#: The tiny ViT of tests/focus_core/test_timm_models.py (img_size 32, patch 8); its config's mean and std are 0.5.
TINY_VIT = ("timm:vit_tiny_patch16_224(class_token=False,depth=4,embed_dim=64,global_pool='avg',img_size=32,"
            "num_heads=4,patch_size=8)")
HALF = [0.5, 0.5, 0.5]
CLASSES = ("blue", "green", "red")
IMAGES_PER_CLASS = 10


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of noisy single-colour 48x40 PNGs, ten each."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for channel, name in enumerate(CLASSES[::-1]):  # red = channel 0
        (root / name).mkdir()
        for i in range(IMAGES_PER_CLASS):
            image = rng.integers(0, 90, (40, 48, 3))
            image[..., channel] += 150
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def _folder(root: Path, **fields) -> DatasetSpec:
    return DatasetSpec(kind="image_folder", root=str(root), **fields)


def test_a_timm_model_with_its_own_config_gets_its_size_and_normalisation(image_folder: Path):
    vit = effective_dataset(_folder(image_folder), ModelSpec(architecture="timm:vit_tiny_patch16_224"))
    assert (vit.tile_size, vit.resize, vit.mean, vit.std) == (224, 256, HALF, HALF)  # its pretrained config
    tiny = effective_dataset(_folder(image_folder), ModelSpec(architecture=TINY_VIT))
    assert (tiny.tile_size, tiny.resize, tiny.mean, tiny.std) == (32, 36, HALF, HALF)  # img_size; 8/7 of it
    assert effective_dataset(tiny, ModelSpec(architecture=TINY_VIT)) is tiny  # resolved once: idempotent
    loaded = caches.load_dataset(tiny)
    assert loaded.mean == loaded.std == (0.5, 0.5, 0.5) and loaded.tile_size == 32
    x = loaded.normalize(loaded.tiles[:1])
    assert torch.allclose(x, (loaded.tiles[:1].float() / 255 - 0.5) / 0.5)


def test_a_torchvision_model_or_a_factory_keeps_imagenet(image_folder: Path):
    folder = _folder(image_folder, tile_size=32, resize=36)
    for arch in ("resnet18", "digits_cnn", "tests.flows.test_bring_your_own:make_model"):
        assert effective_dataset(folder, ModelSpec(architecture=arch)) is folder  # same spec, key and caches
        default = _folder(image_folder, tile_size=224)
        assert effective_dataset(default, ModelSpec(architecture=arch)) is default  # 256 stays empty
    loaded = caches.load_dataset(folder)
    assert loaded.mean == IMAGENET_MEAN and loaded.std == IMAGENET_STD
    assert effective_dataset(_folder(image_folder), ModelSpec(architecture="resnet18")).tile_size is None  # 224
    resnet = effective_dataset(folder, ModelSpec(architecture="timm:resnet18"))
    assert resnet.mean == list(IMAGENET_MEAN) and resnet.std == list(IMAGENET_STD)  # timm's are ImageNet's too
    assert caches.load_dataset(resnet).fingerprint == loaded.fingerprint  # the same normalisation: the same dataset


def test_a_given_tile_size_or_normalisation_is_kept(image_folder: Path):
    sized = effective_dataset(_folder(image_folder, tile_size=40), ModelSpec(architecture=TINY_VIT))
    assert (sized.tile_size, sized.resize, sized.mean) == (40, 45, HALF)  # your tile, 8/7 of it, the model's statistics
    own = _folder(image_folder, mean=[0.4, 0.4, 0.4], std=[0.2, 0.3, 0.2])
    normalised = effective_dataset(own, ModelSpec(architecture=TINY_VIT))
    assert (normalised.tile_size, normalised.mean, normalised.std) == (32, [0.4, 0.4, 0.4], [0.2, 0.3, 0.2])
    assert caches.load_dataset(normalised).std == (0.2, 0.3, 0.2)
    given = _folder(image_folder, tile_size=32, resize=36, mean=HALF, std=HALF)
    assert effective_dataset(given, ModelSpec(architecture="timm:no_such_model_at_all")) is given  # timm not asked


def test_the_digits_keep_their_own_size_and_statistics():
    digits = DatasetSpec()
    for arch in ("timm:vit_tiny_patch16_224", TINY_VIT, "timm:resnet18"):
        assert effective_dataset(digits, ModelSpec(architecture=arch)) is digits
    with pytest.raises(ValueError, match="digits take no root, resize, cache_dir, mean or std"):
        DatasetSpec(mean=HALF, std=HALF)


def test_a_spec_without_normalisation_is_the_json_of_before(image_folder: Path):
    assert spec_key(_folder(image_folder)) == json.dumps(
        {"cache_dir": None, "kind": "image_folder", "resize": None, "root": str(image_folder), "seed": 0,
         "tile_size": None}, separators=(",", ":"), sort_keys=True)
    assert "mean" not in spec_key(DatasetSpec())
    resolved = effective_dataset(_folder(image_folder), ModelSpec(architecture=TINY_VIT))
    assert DatasetSpec.model_validate_json(spec_key(resolved)) == resolved


def test_mistakes_in_the_normalisation_or_size_are_one_sentence(image_folder: Path):
    with pytest.raises(ValueError, match="both mean and std"):
        _folder(image_folder, mean=HALF)
    with pytest.raises(ValueError, match="greater than 0"):
        _folder(image_folder, mean=HALF, std=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="at least 3 items"):
        _folder(image_folder, mean=[0.5], std=[0.5])
    with pytest.raises(FocusError, match="takes 224-pixel tiles but the dataset's resize is 100: pass a resize"):
        effective_dataset(_folder(image_folder, resize=100), ModelSpec(architecture="timm:vit_tiny_patch16_224"))
    with pytest.raises(FocusError, match="three finite mean values"):
        from focus_core.image_folder import load_image_folder

        load_image_folder(image_folder, tile_size=16, resize=20, mean=(0.5,), std=(0.5,))


def test_another_normalisation_is_another_dataset_and_mosaic_set(image_folder: Path, sqlite_url: str):
    model = ModelSpec(architecture=TINY_VIT)
    timm_own = effective_dataset(_folder(image_folder), model)
    imagenet = effective_dataset(_folder(image_folder, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)), model)
    a, b = caches.load_dataset(timm_own), caches.load_dataset(imagenet)
    assert torch.equal(a.tiles, b.tiles)  # the same pixels ...
    assert a.fingerprint != b.fingerprint  # ... normalised otherwise: another dataset
    engine = store.engine_for(sqlite_url)
    mosaics = MosaicSetSpec(per_class=1)
    first, second = (record.register_mosaics(engine, spec, mosaics) for spec in (timm_own, imagenet))
    assert first.dataset_id != second.dataset_id and first.manifest_hash != second.manifest_hash
    assert first.mosaic_set_id != second.mosaic_set_id and not set(first.mosaic_ids) & set(second.mosaic_ids)
    assert record.register_mosaics(engine, timm_own, mosaics) == first  # and the same one again


def test_with_effective_dataset_resolves_a_flows_parameters(image_folder: Path):
    from flows.params import EvaluateParams

    params = EvaluateParams(model={"architecture": TINY_VIT, "weights": "w.pt"}, dataset=_folder(image_folder))
    resolved = with_effective_dataset(params)
    assert resolved.dataset.tile_size == 32 and resolved.dataset.mean == HALF and resolved.model == params.model
    assert params.dataset.tile_size is None  # the request itself is not changed
    digits = EvaluateParams(model={"architecture": TINY_VIT, "weights": "w.pt"})
    assert with_effective_dataset(digits) is digits


def test_focus_evaluate_of_a_timm_model_on_an_image_folder(prefect_api, capsys: pytest.CaptureFixture,
                                                           sqlite_url: str, image_folder: Path, tmp_path: Path):
    """`focus evaluate` records the resolved size and normalisation; another normalisation writes other rows."""
    import db
    from db.report_reads import evaluation_records

    torch.manual_seed(0)
    weights = tmp_path / "tiny-vit.pt"
    models.save_weights(models.build_model(TINY_VIT, num_classes=3, in_channels=3), weights)
    args = ["evaluate", "--dataset", str(image_folder), "--arch", TINY_VIT, "--weights", str(weights),
            "--method", "gradient", "--per-class", "1", "--retries", "0", "--database-url", sqlite_url,
            "--format", "json"]

    def evaluate(*extra: str) -> dict:
        code = cli.main([*args, *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    first = evaluate()
    engine = store.engine_for(sqlite_url)
    (evaluation,) = first["evaluations"]
    assert evaluation["rows_written"] == len(CLASSES)
    (stored,) = evaluation_records(engine, [evaluation["evaluation_id"]])
    assert stored["dataset_tile_size"] == 32
    recorded = stored["metadata"]["request"]["dataset"]
    assert (recorded["tile_size"], recorded["resize"], recorded["mean"], recorded["std"]) == (32, 36, HALF, HALF)
    assert stored["dataset_fingerprint"] == caches.load_dataset(DatasetSpec.model_validate(recorded)).fingerprint

    assert evaluate()["evaluations"][0]["rows_written"] == 0  # the same request: its rows are found

    code = cli.main([*args, "--mean", "0.5,0.5"])  # two values for three channels, without --std
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    other = evaluate("--mean", ",".join(map(str, IMAGENET_MEAN)), "--std", ",".join(map(str, IMAGENET_STD)))
    (evaluation_b,) = other["evaluations"]
    assert evaluation_b["evaluation_id"] != evaluation["evaluation_id"]
    assert other["mosaic_set_id"] != first["mosaic_set_id"]
    assert evaluation_b["rows_written"] == len(CLASSES)  # computed with ImageNet's statistics, not shared
    (stored_b,) = evaluation_records(engine, [evaluation_b["evaluation_id"]])
    assert stored_b["dataset_fingerprint"] != stored["dataset_fingerprint"]
    rows_a, rows_b = (db.evaluation_results(engine, e["evaluation_id"]) for e in (evaluation, evaluation_b))
    assert not set(rows_a["mosaic_id"]) & set(rows_b["mosaic_id"])


def test_a_sweep_resolves_the_dataset_for_each_checkpoint(image_folder: Path):
    from flows.params import SweepParams
    from flows.sweep import sweep_cells

    params = SweepParams(checkpoints=[{"architecture": TINY_VIT, "weights": "vit.pt"},
                                      {"architecture": "resnet18", "weights": "r18.pt"}],
                         methods=[{"name": "gradient"}], dataset=_folder(image_folder))
    vit, resnet = sweep_cells(params)
    assert (vit.dataset.tile_size, vit.dataset.mean) == (32, HALF)
    assert resnet.dataset == params.dataset  # 224 px and ImageNet's statistics, as before


def test_an_empty_resize_is_8_7_of_the_tile_for_every_architecture(image_folder: Path):
    for arch in ("resnet18", TINY_VIT):
        for tile, resize in ((64, 73), (32, 36), (300, 342)):
            given = _folder(image_folder, tile_size=tile, mean=HALF, std=HALF)
            resolved = effective_dataset(given, ModelSpec(architecture=arch))
            assert (resolved.tile_size, resolved.resize) == (tile, resize)
            assert effective_dataset(resolved, ModelSpec(architecture=arch)) is resolved  # idempotent
            bare = _folder(image_folder, tile_size=tile)
            assert effective_dataset(bare, ModelSpec(architecture=arch)).resize == resize
    # 224-pixel tiles keep an empty resize (the loader's 256): the specs, keys and runs of the default are unchanged
    assert effective_dataset(_folder(image_folder), ModelSpec(architecture="resnet18")).resize is None
    assert caches.load_dataset(_folder(image_folder, tile_size=16, resize=18)).resize == 18
