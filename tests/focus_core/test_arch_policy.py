"""focus_core.arch_policy: the factories a confined process builds (before any import); keywords vs signature."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from focus_core.arch_policy import ANY_FACTORY, FactoryPolicy, check_keywords
from focus_core.arch_string import parse_architecture
from focus_core.errors import FocusError
from focus_core.models import build_model

WORKER = FactoryPolicy(frozenset({"allowed_nets:small"}))


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """Two importable modules: an allowed factory, and one whose import leaves a mark on disk."""
    mark = tmp_path / "imported"
    (tmp_path / "allowed_nets.py").write_text(textwrap.dedent(
        """
        from torch import nn

        def small(num_classes: int, in_channels: int, width: int = 4, bias: bool = True) -> nn.Module:
            return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(width, num_classes, bias=bias))
        """
    ))
    (tmp_path / "marking_nets.py").write_text(f"open({str(mark)!r}, 'w').close()\ndef make(**kw): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield mark
    for name in ("allowed_nets", "marking_nets"):
        sys.modules.pop(name, None)


def test_the_os_system_attack_is_refused_before_anything_runs(tmp_path):
    target = tmp_path / "x"
    with pytest.raises(FocusError, match=r"^This worker builds no model factory 'os:system'") as info:
        build_model(f"os:system(command='id > {target}')", num_classes=2, factories=WORKER)
    assert not target.exists()
    assert "\n" not in str(info.value)


def test_a_refused_factory_is_never_imported(nets):
    with pytest.raises(FocusError, match="FOCUS_ALLOWED_FACTORIES"):
        build_model("marking_nets:make", num_classes=2, factories=WORKER)
    assert not nets.exists() and "marking_nets" not in sys.modules


def test_builtin_and_timm_names_and_allowed_factories_pass_a_worker(nets):
    for arch in ("digits_cnn(width=4)", "resnet18", "timm:vit_tiny_patch16_224(depth=1)", "allowed_nets:small"):
        WORKER.check(parse_architecture(arch))
    model = build_model("allowed_nets:small(width=3)", num_classes=5, in_channels=1, factories=WORKER)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 5)


def test_the_command_line_still_imports_its_own_code(nets):
    with pytest.raises(FocusError, match="returned NoneType"):  # imported and called: the user's own code
        build_model("marking_nets:make", num_classes=2, factories=ANY_FACTORY)
    assert nets.exists()


def test_a_worker_refuses_a_folder_keyword():
    with pytest.raises(FocusError, match="cache_dir, a folder"):
        WORKER.check(parse_architecture("timm:resnet18(cache_dir='/root/.ssh')"))
    ANY_FACTORY.check(parse_architecture("timm:resnet18(cache_dir='/tmp/c')"))


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("allowed_nets:small(depth=3)", r"takes no keyword depth \(it takes num_classes, in_channels, width, bias\)"),
        ("allowed_nets:small(width='3')", r"expects width as int but got str '3'"),
        ("allowed_nets:small(width=True)", r"expects width as int but got bool True"),
        ("allowed_nets:small(bias=1)", r"expects bias as bool but got int 1"),
    ],
)
def test_keywords_are_checked_against_the_signature_before_the_call(nets, arch, message):
    with pytest.raises(FocusError, match=message):
        build_model(arch, num_classes=2, factories=WORKER)


def test_keywords_fit_floats_unions_and_unannotated_parameters():
    def factory(num_classes, rate: float = 0.1, size: int | tuple = 3, anything=None, **extra): ...

    check_keywords(parse_architecture("m:f(rate=1,size=(2,2),anything='x',other=5)"), factory)
    with pytest.raises(FocusError, match="expects rate as float"):
        check_keywords(parse_architecture("m:f(rate='fast')"), factory)
