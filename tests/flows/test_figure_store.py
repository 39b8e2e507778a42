"""Figures go where ``figures_dir`` says, a folder or an object store URL, and the flow run links to them.

The evaluate flow on a real Prefect API with ``figures_dir`` an ``s3://`` URL on the S3 server the tests start:
the figure is an object in the bucket, no folder named ``s3:`` appears where the flow ran, and the run carries a
link artifact to the object's address on the store's endpoint (read back from the Prefect API).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flows.evaluate import evaluate
from flows.params import EvaluateParams
from flows.results import figure_store
from tests.s3 import ACCESS_KEY, SECRET_KEY


def _artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return asyncio.run(read())


def test_figures_dir_as_an_s3_url_writes_the_object_and_links_to_it(
    prefect_api, s3_env, sqlite_url, digits_weights, tmp_path, monkeypatch
):
    s3_env.make_bucket("figures")
    monkeypatch.chdir(tmp_path)
    params = EvaluateParams(
        model={"architecture": "digits_cnn", "weights": digits_weights},
        mosaics={"split": "test", "per_class": 1, "seed": 2}, methods=[{"name": "gradcam"}],
        run={"device": "cpu", "batch_size": 32, "chunk_size": 64, "database_url": sqlite_url},
        figures_dir="s3://figures/nightly",
    )
    state = evaluate(params, return_state=True)
    assert state.is_completed()
    (key,) = s3_env.keys("figures", "nightly/")
    assert key.startswith("nightly/focus-") and key.endswith(".png")
    assert s3_env.get("figures", key)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.name.startswith("s3") for p in Path(tmp_path).iterdir())  # no local folder named s3:

    (link,) = [a for a in _artifacts(state.state_details.flow_run_id) if "figures/" in str(a.data)]
    assert link.data == f"[s3://figures/{key}]({s3_env.endpoint}/figures/{key})"  # what the UI renders as a link
    assert ACCESS_KEY not in str(link.data) and SECRET_KEY not in str(link.data)


def test_a_local_figures_dir_is_a_folder_named_with_its_host(tmp_path):
    drawn = figure_store.save_figure(str(tmp_path / "figs"), "a.png", lambda path: path.write_bytes(b"png"))
    assert Path(drawn).read_bytes() == b"png"
    url = figure_store.save_figure(f"file://{tmp_path}/by-url", "b.png", lambda path: path.write_bytes(b"png"))
    assert url == f"file://{tmp_path}/by-url/b.png" and (tmp_path / "by-url" / "b.png").read_bytes() == b"png"


@pytest.mark.training
def test_training_figures_at_an_s3_url_are_objects_linked_from_the_run(prefect_api, s3_env, sqlite_url, tmp_path,
                                                                       monkeypatch):
    from flows.params import TrainParams
    from flows.train import train

    s3_env.make_bucket("figures")
    monkeypatch.chdir(tmp_path)
    params = TrainParams(name="figs", dataset={"kind": "digits", "tile_size": 16}, epochs=1, batch_size=128,
                         focus_mosaics={"split": "val", "per_class": 1, "seed": 1}, focus_methods=[{"name": "gradcam"}],
                         checkpoint_dir=str(tmp_path / "checkpoints"), figures_dir="s3://figures/train",
                         run={"device": "cpu", "retries": 0, "database_url": sqlite_url})
    state = train(params, return_state=True)
    assert state.is_completed()
    keys = sorted(s3_env.keys("figures", "train/"))
    assert keys == ["train/focus-vs-metrics-figs.png", "train/training-figs.png"]
    assert all(s3_env.get("figures", key)[:8] == b"\x89PNG\r\n\x1a\n" for key in keys)
    assert not any(p.name.startswith("s3") for p in Path(tmp_path).iterdir())
    links = {str(a.data) for a in _artifacts(state.state_details.flow_run_id) if "figures/" in str(a.data)}
    assert links == {f"[s3://figures/{key}]({s3_env.endpoint}/figures/{key})" for key in keys}
