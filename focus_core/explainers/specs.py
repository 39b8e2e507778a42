"""The registered methods' names and parameter specs, checked without importing any explainer (nor torch).

:data:`METHODS` lists every built-in method of :mod:`.registry`, in registry order, with the ``spec`` (parameters
that are part of the hash) and ``runtime_spec`` (execution knobs) of its class: parameter -> ``(kind, default)``.
A test keeps it equal to the classes' own specs. :func:`check_method` refuses an unknown name (naming the closest
one) or parameter, and a value of the wrong kind, in the sentences the explainers use (they check with
:func:`canonical_params` too), so the command line finds such a mistake in milliseconds, before torch, captum or
torchvision are imported. Ranges (``n_samples >= 1``, a canonizer's name) are checked where the class is built.

Examples
--------
>>> check_method("smoothgrad", {"n_samples": 8})
>>> check_method("gradcm", {})
Traceback (most recent call last):
...
focus_core.errors.FocusError: Unknown explainer 'gradcm' (did you mean 'gradcam'?): choose one of gradcam, \
gradcam++, lrp, lrp_fast, smoothgrad, integrated_gradients, gradient, input_x_gradient, lime, random, attnlrp.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from focus_core.errors import FocusError

__all__ = ["METHODS", "MethodSchema", "canonical_params", "check_method", "close_match", "unknown_method"]

#: A parameter's kind and default: ``("int", 10)``, ``("optional_str", None)``; the kinds are
#: ``float``, ``int``, ``str``, ``bounds`` (a number or one per channel), each optionally ``optional_``.
Spec = dict[str, tuple[str, Any]]


class MethodSchema(NamedTuple):
    """A method's parameters: ``spec`` (in ``params`` and its hash) and ``runtime_spec`` (not in either)."""

    spec: Spec
    runtime_spec: Spec


_BOUNDS: Spec = {"low": ("optional_bounds", None), "high": ("optional_bounds", None)}
_LRP: Spec = {"epsilon": ("float", 1e-6), **_BOUNDS, "canonizer": ("str", "auto")}
_INTERNAL_BATCH: Spec = {"internal_batch_size": ("optional_int", None)}

METHODS: dict[str, MethodSchema] = {
    "gradcam": MethodSchema({"layer": ("optional_str", None)}, {}),
    "gradcam++": MethodSchema({"layer": ("optional_str", None)}, {}),
    "lrp": MethodSchema(_LRP, {}),
    "lrp_fast": MethodSchema(_LRP, {}),
    "smoothgrad": MethodSchema({"n_samples": ("int", 10), "sigma": ("float", 0.2), "seed": ("int", 0)},
                               _INTERNAL_BATCH),
    "integrated_gradients": MethodSchema({"n_steps": ("int", 32)}, _INTERNAL_BATCH),
    "gradient": MethodSchema({}, {}),
    "input_x_gradient": MethodSchema({}, {}),
    "lime": MethodSchema(
        {"n_samples": ("int", 500), "mask": ("str", "grid"), "segments": ("int", 16),
         "compactness": ("optional_float", None), "kernel_width": ("float", 1.0), "alpha": ("float", 1.0),
         "seed": ("int", 0), "grid": ("int", 2)},
        {"internal_batch_size": ("optional_int", 64)},
    ),
    "random": MethodSchema({"seed": ("int", 0)}, {}),
    "attnlrp": MethodSchema({"attention": ("str", "cp"), **_BOUNDS, "linear_gamma": ("optional_float", None)}, {}),
}
"""The built-in methods of :mod:`.registry`, in its order: name -> :class:`MethodSchema`."""


def close_match(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, or ``""`` when none is close.

    Examples
    --------
    >>> close_match("resnet181", ["alexnet", "resnet18", "vgg16"])
    " (did you mean 'resnet18'?)"
    >>> close_match("xyz", ["alexnet"])
    ''
    """
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""


def unknown_method(name: str, names: Iterable[str] | None = None) -> FocusError:
    """The error for a method ``name`` that is not one of ``names`` (default: :data:`METHODS`)."""
    names = list(METHODS if names is None else names)
    return FocusError(f"Unknown explainer {name!r}{close_match(name, names)}: choose one of {', '.join(names)}.")


def _canonical(explainer: str, key: str, kind: str, value: Any) -> Any:
    """Check one parameter against its kind and return it in canonical (JSON) form."""
    base = kind.removeprefix("optional_")
    if kind != base and value is None:
        return None
    if kind == "optional_bounds" and value == "sample":  # z^B per sample: the same identity as None
        return None
    if base == "float" or base == "bounds" and not isinstance(value, (list, tuple)):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif base == "bounds" and value:  # one number per input channel
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            return [float(v) for v in value]
    elif base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    elif base == "str" and isinstance(value, str):
        return value
    expected = {"float": "a finite number", "int": "an integer", "str": "a string",
                "bounds": "a number or a list of per-channel numbers"}[base]
    if kind == "optional_bounds":
        expected += ', "sample"'

    if kind != base:
        expected += " or None"
    raise FocusError(f"Parameter '{key}' of explainer '{explainer}' got {value!r}: pass {expected}.")


def canonical_params(explainer: str, spec: Spec, runtime_spec: Spec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``spec`` and ``runtime_spec`` in canonical form, ``params`` over the defaults.

    Raises
    ------
    FocusError
        For a parameter neither spec has, or a value of the wrong kind.
    """
    known = {**spec, **runtime_spec}
    unknown = sorted(set(params) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        raise FocusError(
            f"Explainer '{explainer}' has no parameter '{unknown[0]}'{close_match(unknown[0], known)}: use one of "
            f"its parameters ({names})."
        )
    return {key: _canonical(explainer, key, kind, params.get(key, default)) for key, (kind, default) in known.items()}


def check_method(name: str, params: Mapping[str, Any]) -> None:
    """Refuse a built-in method ``name`` with ``params`` that no explainer could take: an unknown name or
    parameter, or a value of the wrong kind (:class:`FocusError`, one sentence).

    Imports nothing heavy; the values' ranges are checked when the explainer is built
    (:func:`focus_core.explainers.get_explainer`).
    """
    schema = METHODS.get(name)
    if schema is None:
        raise unknown_method(name)
    canonical_params(name, schema.spec, schema.runtime_spec, params)
