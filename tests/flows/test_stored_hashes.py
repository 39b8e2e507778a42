"""Every stored identity hash keeps its bytes: an existing store must keep matching new runs.

The expected values below were computed with the code before the hashes shared one implementation
(``focus_core.hashing``); a change that alters any of them orphans every row already recorded under the
old key (a dataset, a mosaic set, a method, an evaluation, a training run, a tile cache). The record layer
keeps its own copy of the formula (``db`` imports nothing from ``focus_core``); the two are checked to agree.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from sqlalchemy import select

import db
from db.models import XaiMethod
from flows.worker import record, store
from flows.params import DatasetSpec, MethodSpec, ModelSpec, MosaicSetSpec, RandomizationSpec, TrainParams, spec_key
from focus_core import data, image_folder, mosaics
from focus_core.errors import FocusError
from focus_core.explainers import get_explainer
from focus_core.hashing import canonical_hash

DIGITS_12 = "1b52e948f81f2985972780bba96c25f1279189e26eeec09fc7f496dd216f3894"
DIGITS_32 = "1ea38d5a29f9cbd935510081356b4b02297e70d35c816ef2eb8e6c3ae977a6b8"
GRADCAM = "fa8162906cb0bcfa131c1352b041cd35af652c34389cdec0074f44c749b79c1b"
GRADCAM_BF16 = "11445debc0f8e68ff91fc31a487318da12d36e16b4a0b30a0613a902af48aef6"
METHODS = {
    "gradcam": GRADCAM,
    "smoothgrad": "7262218e9ed895eb2f12cf461b3cc12b2802d7caed8bcfa1334a3d071eae812f",
    "lrp": "10f898e2c10495f6201c171e7f4b94529b45acb0211d26197258bdd35000dd02",
    "random": "739d387ef08a26003f432174c195c9f4dadfe109b967d91e80180cd6ec2abb04",
}
LRP_BF16 = "242c32ff104069e862f6dd437c04df34dab36d3bdc6da93249b18dc12f8eabbe"
JSON_VALUES = [
    None, 0, -7, 2**70, 0.1, -1.5e-300, 1e16, True, "", "é ü 漢 \u2028 \"quoted\"", [], {},
    {"b": {"z": [1, None, 2.5], "a": "x"}, "a": [{"d": 1, "c": 2}]},
    {"name": "lrp", "params": {"epsilon": 1e-06, "low": None, "high": None, "canonizer": "auto"}},
]


@pytest.mark.parametrize("value", JSON_VALUES)
def test_focus_core_and_the_store_hash_with_one_formula(value: object) -> None:
    assert canonical_hash(value) == db.keys.canonical_hash(value)


def test_neither_hashes_a_nan() -> None:
    with pytest.raises(FocusError):
        canonical_hash({"x": math.nan})
    with pytest.raises(db.StoreError):
        db.keys.canonical_hash({"x": math.nan})


def test_dataset_fingerprints_are_pinned() -> None:
    assert data.load_digits(seed=0, tile_size=12).fingerprint == DIGITS_12
    assert data.load_digits().fingerprint == DIGITS_32


def test_manifest_hashes_are_pinned() -> None:
    digits = data.load_digits(seed=0, tile_size=12)
    assert mosaics.build_manifest(digits, per_class=2, seed=3).hash == (
        "8bbd14aba5344c0a92cdc17ebf3e33aa3b2390805d9b9478ad74434e3f3ea6fb"
    )
    assert mosaics.build_manifest(digits, per_class=1, seed=0, layout="top").hash == (
        "9b5fe1cf5dc5f3394e6955a24ec6abcef9f63ad97f9af8f68a9474b75e286dc0"
    )
    fixed = mosaics.MosaicManifest("abc", "test", 1, 0, "top", (mosaics.Mosaic((4, 8, 1, 2), 3, (0, 1)),))
    assert fixed.hash == "cb042a8a95eae3ca4dab14950276e5bc1d1d772f912e2295f822442eef828ec6"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_params_hashes_are_pinned_and_the_store_agrees(name: str) -> None:
    explainer = get_explainer(name)
    assert explainer.params_hash == METHODS[name]
    assert db.params_hash(explainer.name, explainer.params) == METHODS[name]


def test_bf16_method_hashes_are_pinned() -> None:
    for name, expected in (("gradcam", GRADCAM_BF16), ("lrp", LRP_BF16)):
        explainer = get_explainer(name)
        assert db.params_hash(name, {**explainer.params, "precision": "bf16"}) == expected


def test_evaluation_keys_are_pinned() -> None:
    assert db.evaluation_key(1, 2, 3) == "3f53996f1781791423a6a7543d0acf295baee0b16a8cd9ced6082042163d02aa"
    assert db.evaluation_key(7, 4, 9, "cascading", stage=2, layer="fc", audit_run_id=5, seed=11) == (
        "131d7e4e1f439312db0e48017ba0badba65410442e67eb60421f063c584c7f4d"
    )


def test_training_run_config_hashes_are_pinned() -> None:
    assert TrainParams().config_hash() == "a69bdcd6641fe4ae0c0539c1e9ba9cca4e9244ecd6444c8de28d2623ebe3b087"
    # a run recorded before names were restricted to NAME_PATTERN: its stored key must still come out the same
    recorded = TrainParams.model_construct(**{**TrainParams().model_dump(), "name": "ü", "lr": 0.001, "rotation": 12.5})
    recorded = recorded.model_copy(update={"model": TrainParams().model, "dataset": TrainParams().dataset})
    assert recorded.config_hash() == (
        "c3f7ca5b207c41e83995389ceee5f0b28483a6b9631e473d0b358051591cb6bb"
    )


def test_spec_keys_are_pinned() -> None:
    assert spec_key(MosaicSetSpec()) == '{"classes":null,"layout":"random","per_class":20,"seed":0,"split":"test"}'
    assert spec_key(DatasetSpec()) == (
        '{"cache_dir":null,"kind":"digits","resize":null,"root":null,"seed":0,"tile_size":null}'
    )


def test_the_tile_cache_key_is_pinned(tmp_path: Path) -> None:
    paths = []
    for i, relpath in enumerate(["cat/a.png", "dog/b.jpg"]):
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (10 + i))
        os.utime(path, ns=(1_700_000_000_000_000_000 + i,) * 2)
        paths.append(path)
    assert image_folder._cache_key(tmp_path, paths, 224, 256) == (
        "c6ce0c84d525a49b8d1516628a1c83771b0d521556ec9698d9112ad54cbe68df"
    )


def test_open_evaluation_stores_the_pinned_method_hashes(sqlite_url: str, digits_weights: str) -> None:
    engine = store.engine_for(sqlite_url)
    model = ModelSpec(architecture="digits_cnn", weights=digits_weights)
    inputs = record.register_inputs(engine, DatasetSpec(), MosaicSetSpec(per_class=1), model)
    for precision in ("fp32", "bf16"):
        record.open_evaluation(engine, inputs, MethodSpec(name="gradcam"), model, RandomizationSpec(),
                               precision=precision)
    with engine.connect() as connection:
        stored = set(connection.scalars(select(XaiMethod.params_hash)))
    assert stored == {GRADCAM, GRADCAM_BF16}
