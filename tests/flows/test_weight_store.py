"""Weights by URL without a server: ``file://`` URLs through the cache, hashes, secrets, the store's record.

The S3 half (a real moto server and real s3fs) is ``test_weights_by_url.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import db
from flows.worker import caches, record, store
from flows.weights import weight_store
from flows import train as train_module
from flows.cli.params import absolute
from flows.params import DatasetSpec, EvaluateParams, ModelSpec, TrainParams
from focus_core import models
from focus_core.errors import FocusError

SECRET = "SEKRETweights42"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(weight_store.CACHE_ENV_VAR, str(folder))
    return folder


def _weights(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    return models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), path)


def test_locations_paths_and_urls():
    assert weight_store.is_url("s3://b/k.pt") and weight_store.is_url("file:///m/k.pt")
    assert not weight_store.is_url("/m/k.pt") and not weight_store.is_url("C:\\m\\k.pt")
    assert not weight_store.is_url(None) and not weight_store.is_url("checkpoints/k.pt")
    assert weight_store.redact(f"s3://AKIA:{SECRET}@b/k.pt?X-Amz-Signature={SECRET}&versionId=7") == (
        "s3://b/k.pt?X-Amz-Signature=***&versionId=7"
    )
    assert weight_store.has_secret(f"https://h/k.pt?sig={SECRET}") and not weight_store.has_secret("gs://b/k.pt")
    assert weight_store.canonical("s3://b/k.pt") == "s3://b/k.pt"
    assert weight_store.canonical("rel/k.pt") == str(Path.cwd() / "rel" / "k.pt")
    assert absolute("s3://b/x") == "s3://b/x" and absolute("~/x") == str(Path.home() / "x")


def test_a_file_url_is_read_through_the_cache_and_downloaded_once(tmp_path, cache, monkeypatch):
    sha = _weights(tmp_path / "w.pt", seed=0)
    url = (tmp_path / "w.pt").as_uri()
    first = weight_store.local_copy(url)
    assert first == cache / "sha256" / f"{sha}.pt" and models.weights_sha256(first) == sha
    assert weight_store.sha256_of(url) == sha and caches.weights_sha256(url) == sha

    def no_download(*args, **kwargs):
        raise AssertionError("the unchanged object was downloaded again")

    monkeypatch.setattr(weight_store, "_download", no_download)
    assert weight_store.local_copy(url, expected_sha256=sha) == first  # the index knows the unchanged object
    assert [p.name for p in (cache / "sha256").iterdir()] == [f"{sha}.pt"]  # no partial file left


def test_changed_bytes_at_a_url_are_refused_against_the_recorded_hash_in_one_sentence(tmp_path, cache):
    path = tmp_path / "w.pt"
    old = _weights(path, seed=0)
    url = path.as_uri()
    weight_store.local_copy(url)
    new = _weights(path, seed=1)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a rewrite a second later
    assert weight_store.sha256_of(url) == new  # the changed object is hashed anew, not taken from the index
    with pytest.raises(FocusError) as refused:
        weight_store.local_copy(url, expected_sha256=old)
    message = str(refused.value)
    assert url in message and old[:12] in message and new[:12] in message
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message


def test_a_damaged_cache_entry_is_fetched_again(tmp_path, cache):
    sha = _weights(tmp_path / "w.pt", seed=0)
    url = (tmp_path / "w.pt").as_uri()
    cached = weight_store.local_copy(url)
    cached.write_bytes(b"not the weights")
    assert models.weights_sha256(weight_store.local_copy(url)) == sha  # verified before use, not trusted


def test_upload_to_a_file_url_is_whole_and_seeds_the_cache(tmp_path, cache):
    sha = _weights(tmp_path / "w.pt", seed=0)
    target = tmp_path / "bucket" / "runs" / "w.pt"
    assert weight_store.upload(tmp_path / "w.pt", target.as_uri()) == sha
    assert models.weights_sha256(target) == sha and weight_store.exists(target.as_uri())
    assert not weight_store.exists((tmp_path / "bucket" / "nope.pt").as_uri())
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.pt"]
    assert (cache / "sha256" / f"{sha}.pt").is_file()


def test_a_missing_url_and_an_unknown_protocol_are_one_sentence(tmp_path, cache):
    with pytest.raises(FocusError, match="do not exist"):
        weight_store.local_copy((tmp_path / "nope.pt").as_uri())
    with pytest.raises(FocusError, match="protocol fsspec does not know"):
        weight_store.local_copy("nosuchproto://b/k.pt")


def test_parameters_refuse_a_url_with_credentials_without_echoing_them():
    for make in (lambda: ModelSpec(weights=f"s3://AKIA:{SECRET}@bucket/w.pt"),
                 lambda: TrainParams(checkpoint_dir=f"s3://AKIA:{SECRET}@bucket/runs"),
                 lambda: EvaluateParams(model={"weights": f"https://h/w.pt?X-Amz-Signature={SECRET}"})):
        with pytest.raises(ValidationError) as refused:
            make()
        assert SECRET not in str(refused.value) and "credentials" in str(refused.value)
    assert TrainParams(checkpoint_dir="s3://bucket/runs").checkpoint_dir == "s3://bucket/runs"


def test_a_url_run_folder_keeps_the_name_rule():
    config_hash = "0f1819c26eca" * 5
    assert train_module.run_folder("s3://b/runs/", "digits", config_hash) == "s3://b/runs/digits-0f1819c26eca"
    assert train_module.checkpoint_path("s3://b/r", 3) == "s3://b/r/epoch-0003.pt"
    for name in ("../x", "a/b", ".hidden"):
        with pytest.raises(FocusError, match="lies outside the checkpoint folder"):
            train_module.run_folder("s3://b/runs", name, config_hash)


def test_the_store_records_urls_as_given_and_local_paths_absolute(tmp_path, cache, sqlite_url, monkeypatch):
    _weights(tmp_path / "w.pt", seed=0)
    monkeypatch.chdir(tmp_path)
    engine = store.engine_for(sqlite_url)
    checkpoint_id, sha = record.register_checkpoint(engine, ModelSpec(weights="w.pt"), DatasetSpec())
    url = (tmp_path / "u.pt").as_uri()
    _weights(tmp_path / "u.pt", seed=1)
    url_id, url_sha = record.register_checkpoint(engine, ModelSpec(weights=url), DatasetSpec())
    rows = db.checkpoints_to_audit(engine)  # nothing marked: read the paths back directly
    assert rows.empty
    assert db.recorded_sha256_at(engine, str(tmp_path / "w.pt")) == sha
    assert db.recorded_sha256_at(engine, url) == url_sha and db.recorded_sha256_at(engine, "w.pt") is None

    model = caches.checked_model(ModelSpec(weights=url), DatasetSpec())  # loaded from the cached copy
    assert models.weights_sha256(cache / "sha256" / f"{url_sha}.pt") == url_sha
    assert torch.equal(model.state_dict()["classifier.weight"],
                       torch.load(tmp_path / "u.pt", weights_only=True)["classifier.weight"])

    _weights(tmp_path / "u.pt", seed=2)  # the object at the recorded URL is overwritten with other bytes
    os.utime(tmp_path / "u.pt", ns=(0, (tmp_path / "u.pt").stat().st_mtime_ns + 10**9))
    with pytest.raises(FocusError, match=f"{url_sha[:12]} was recorded"):
        record.register_checkpoint(engine, ModelSpec(weights=url), DatasetSpec())
    assert checkpoint_id != url_id


def test_a_weights_file_for_another_architecture_is_named_by_its_url(tmp_path, cache):
    torch.manual_seed(0)
    models.save_weights(models.build_model("digits_cnn", num_classes=3, in_channels=1), tmp_path / "w3.pt")
    url = (tmp_path / "w3.pt").as_uri()
    with pytest.raises(FocusError) as refused:
        caches.checked_model(ModelSpec(weights=url), DatasetSpec())
    assert url in str(refused.value) and str(cache) not in str(refused.value)


def test_the_evaluate_flow_runs_on_a_file_url(prefect_api, sqlite_url, tmp_path, cache, digits_weights):
    from flows.evaluate import evaluate

    url = Path(digits_weights).as_uri()
    result = evaluate(EvaluateParams(
        model={"weights": url}, mosaics={"per_class": 1}, methods=[{"name": "gradcam"}],
        run={"database_url": sqlite_url},
    ))
    assert result["checkpoint_sha256"] == models.weights_sha256(digits_weights)
    assert db.recorded_sha256_at(store.engine_for(sqlite_url), url) == result["checkpoint_sha256"]
