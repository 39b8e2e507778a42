"""A vision transformer through ``focus evaluate``: what the worker refuses before it writes a row.

The ViT is a timm model named by its architecture string (``--arch "timm:vit_tiny_patch16_224(...)"``, patch 16)
on the bundled digits: tiles of 24 pixels cut its patches, ``lrp`` has CNN rules only; each ends with one line, exit 2, and an
empty store. Tiles of 32 pixels and ``attnlrp`` give one row per mosaic.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flows import cli
from flows.worker import store
from focus_core import models

pytestmark = pytest.mark.timeout(240)

ARCH = "timm:vit_tiny_patch16_224(depth=1,embed_dim=32,img_size=32,num_heads=2,patch_size=16)"


def make_vit(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The model ``--arch ARCH`` builds (timm's ``dynamic_img_size``: 32-pixel tiles and 64-pixel mosaics)."""
    return models.build_model(ARCH, num_classes=num_classes, in_channels=in_channels)


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit.pt"
    models.save_weights(make_vit(), path)
    return str(path)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_vit_requests_are_checked_before_any_row(prefect_api, capsys: pytest.CaptureFixture, sqlite_url: str,
                                                 vit_weights: str):
    import db

    common = ["evaluate", "--arch", ARCH, "--weights", vit_weights, "--per-class", "1", "--retries", "0",
              "--database-url", sqlite_url]
    engine = store.engine_for(sqlite_url)
    for extra, message in [
        (["--tile-size", "24", "--method", "attnlrp"], "multiple of 16"),
        (["--method", "lrp"], "use 'attnlrp'"),
    ]:
        code, _, err = run(capsys, *common, *extra)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert message in err, err
        assert db.evaluation_summary(engine).empty

    code, _, err = run(capsys, *common, "--method", "attnlrp", "--method", "gradcam")
    assert code == 0, err
    summary = db.evaluation_summary(engine)
    assert sorted(summary["method"]) == ["attnlrp", "gradcam"] and (summary["status"] == "finished").all()
    for evaluation_id in summary["evaluation_id"]:
        assert len(db.evaluation_results(engine, int(evaluation_id))) == 10
