"""The architecture string: its syntax, its parts and its one canonical form (standard library only).

The architecture string is what a checkpoint is stored with and what rebuilds its model, so two spellings of one
model must be one string. The syntax::

    digits_cnn | resnet18 | package.module:factory | timm:<model name>        a name alone
    <any of these>(key=value,key=value,...)                                  with keyword arguments

``timm:`` names a model of timm (``timm.list_models()``; a pretrained tag such as ``vit_tiny_patch16_224.augreg_in1k``
is part of the name). The keyword arguments are given to the model's builder: Python literals only (numbers,
``True``/``False``/``None``, quoted strings, tuples and lists of them), for example
``timm:vit_tiny_patch16_224(patch_size=8,depth=4,embed_dim=64,num_heads=4,img_size=32)``. The class count and
the input channels are not among them: they come from the dataset (or ``--num-classes`` / ``--in-channels``), and
pretrained weights are asked for apart from the architecture, which names a model, not its weights.

The canonical form (:func:`canonical_architecture`) sorts the keywords by name, writes each value as its
Python literal without spaces (lists as tuples), drops empty parentheses and spaces around names: a string that
is already canonical is returned unchanged, and a name alone is canonical. The flows' ``ModelSpec`` stores it.

This module imports nothing but the standard library, so validating a flow's parameters does not load torch.

Examples
--------
>>> canonical_architecture("timm:vit_tiny_patch16_224( img_size=32, patch_size = 8, depth=4 )")
'timm:vit_tiny_patch16_224(depth=4,img_size=32,patch_size=8)'
>>> parse_architecture("timm:resnet18(drop_rate=0.1)")
Architecture(kind='timm', name='resnet18', kwargs={'drop_rate': 0.1})
>>> parse_architecture("resnet18").kind, parse_architecture("my.models:make(width=8)").name
('name', 'my.models:make')
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

from focus_core.errors import FocusError

__all__ = ["MAX_LENGTH", "RESERVED_KWARGS", "TIMM_PREFIX", "Architecture", "canonical_architecture",
           "parse_architecture"]

#: The prefix of a timm model: ``timm:<name>``.
TIMM_PREFIX = "timm:"
#: The longest architecture string the store keeps (its ``architecture`` columns are ``String(200)``).
MAX_LENGTH = 200
#: Keywords the architecture string may not set: the builder gets them from the dataset or from its own arguments.
RESERVED_KWARGS: dict[str, str] = {
    "num_classes": "pass the class count as --num-classes (num_classes), not in the architecture",
    "in_chans": "pass the input channels as --in-channels (in_channels), not in the architecture",
    "in_channels": "pass the input channels as --in-channels (in_channels), not in the architecture",
    "pretrained": "the architecture names a model, not its weights: pass --weights, or pretrained=True to "
                  "focus_core.models.build_model",
    "pretrained_cfg": "the architecture names a model, not its weights: pass a pretrained tag in the name "
                      "(timm:<model>.<tag>)",
    "pretrained_cfg_overlay": "the architecture names a model, not its weights: pass --weights",
    "checkpoint_path": "the architecture names a model, not its weights: pass --weights",
    "weights": "the architecture names a model, not its weights: pass --weights",
    "features_only": "Focus explains a classifier's logits: leave features_only out",
}

_NAME = re.compile(r"^(?:timm:[A-Za-z_]\w*(?:\.\w+)?|[A-Za-z_][\w.]*:[A-Za-z_]\w*|[A-Za-z_]\w*)$")
_LITERALS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture string.

    Attributes
    ----------
    kind : str
        ``"timm"`` (``timm:<name>``), ``"factory"`` (``package.module:factory``) or ``"name"`` (``digits_cnn``,
        ``resnet18``, another torchvision name).
    name : str
        The model's name without ``timm:`` and without keywords; a factory's whole import path.
    kwargs : dict
        The keyword arguments, in the canonical (sorted) order; tuples where lists were written.
    """

    kind: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def canonical(self) -> str:
        """The canonical architecture string of this architecture (see the module's docstring)."""
        prefix = TIMM_PREFIX if self.kind == "timm" else ""
        if not self.kwargs:
            return f"{prefix}{self.name}"
        return f"{prefix}{self.name}({','.join(f'{k}={_literal(v)}' for k, v in self.kwargs.items())})"


def parse_architecture(arch: str) -> Architecture:
    """Split an architecture string into its kind, name and keyword arguments, checking its syntax.

    Raises
    ------
    FocusError
        When the name or a keyword argument is malformed, a value is not a literal, a keyword appears twice or is
        reserved (:data:`RESERVED_KWARGS`), or the canonical string is longer than :data:`MAX_LENGTH`.

    Examples
    --------
    >>> parse_architecture("timm:vit_small_patch16_224.augreg_in1k").name
    'vit_small_patch16_224.augreg_in1k'
    >>> parse_architecture("timm:vit_tiny_patch16_224(num_classes=3)")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The architecture '...' sets num_classes: pass the class count as --num-classes...
    """
    if not isinstance(arch, str):
        raise FocusError(f"Expected the architecture to be a string but got {type(arch).__name__}: pass one.")
    text = arch.strip()
    head, paren, rest = text.partition("(")
    head = head.strip()
    if not _NAME.match(head):
        raise FocusError(
            f"The architecture {arch!r} is not a model name ('resnet18'), an import path ('package.module:factory') "
            "or a timm model ('timm:vit_tiny_patch16_224'), optionally followed by (key=value,...): write one."
        )
    kwargs = _parse_kwargs(arch, rest) if paren else {}
    if head.startswith(TIMM_PREFIX):
        parsed = Architecture("timm", head[len(TIMM_PREFIX):], kwargs)
    else:
        parsed = Architecture("factory" if ":" in head else "name", head, kwargs)
    canonical = parsed.canonical()
    if len(canonical) > MAX_LENGTH:
        raise FocusError(
            f"The architecture {canonical[:60]!r}... is {len(canonical)} characters long, more than the store's "
            f"{MAX_LENGTH}: give fewer keyword arguments (wrap the model in a 'package.module:factory')."
        )
    return parsed


def canonical_architecture(arch: str) -> str:
    """The canonical form of an architecture string: one string per model (see the module's docstring).

    Raises
    ------
    FocusError
        As :func:`parse_architecture`.

    Examples
    --------
    >>> canonical_architecture("timm:deit_tiny_patch16_224(img_size=[32, 32],drop_rate=0.0)")
    'timm:deit_tiny_patch16_224(drop_rate=0.0,img_size=(32,32))'
    >>> canonical_architecture("digits_cnn()")
    'digits_cnn'
    """
    return parse_architecture(arch).canonical()


def _parse_kwargs(arch: str, rest: str) -> dict[str, Any]:
    rest = rest.rstrip()
    if not rest.endswith(")"):
        raise FocusError(f"The architecture {arch!r} opens '(' but does not end with ')': close its keywords.")
    try:
        call = ast.parse(f"f({rest[:-1]})", mode="eval").body
    except SyntaxError:
        raise FocusError(
            f"The keywords of the architecture {arch!r} are not key=value pairs separated by commas: write them "
            "as (patch_size=8,depth=4)."
        ) from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise FocusError(
            f"The architecture {arch!r} passes positional arguments or **: give every argument as key=value."
        )
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg in kwargs:
            raise FocusError(f"The architecture {arch!r} sets {keyword.arg} twice: give it once.")
        if keyword.arg in RESERVED_KWARGS:
            raise FocusError(f"The architecture {arch!r} sets {keyword.arg}: {RESERVED_KWARGS[keyword.arg]}.")
        try:
            value = _tuples(ast.literal_eval(keyword.value))
        except (ValueError, TypeError, SyntaxError, RecursionError):
            literal = False
        else:
            literal = _is_plain(value)
        if not literal:
            raise FocusError(
                f"The value of {keyword.arg} in the architecture {arch!r} is not a number, True/False/None, a quoted "
                "string or a tuple of them: write it as a literal."
            )
        kwargs[keyword.arg] = value
    return dict(sorted(kwargs.items()))


def _tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _is_plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_is_plain(v) for v in value)
    return isinstance(value, _LITERALS) and not (isinstance(value, float) and not math.isfinite(value))


def _literal(value: Any) -> str:
    if isinstance(value, tuple):
        inner = ",".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)
