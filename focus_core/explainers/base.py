"""The explainer protocol and the little every explainer shares: parameters, their hash, a safe call.

An explainer is a small object with a ``name``, explicit ``params`` (defaults filled in, JSON-serialisable),
a ``params_hash`` and a ``__call__(model, inputs, targets) -> (B, H, W)`` relevance map. The families live in
their own modules (:mod:`.gradcam`, :mod:`.lrp`, :mod:`.gradients`, :mod:`.control`); this module only holds
what they have in common.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from focus_core.errors import FocusError

__all__ = ["Explainer", "ExplainerBase", "params_hash", "checked_forward"]


@runtime_checkable
class Explainer(Protocol):
    """What every explainer offers (see ``docs/architecture.md``)."""

    name: str
    params: dict[str, Any]
    params_hash: str

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the ``(B, H, W)`` relevance of ``inputs`` ``(B, C, H, W)`` for the classes ``targets`` ``(B,)``."""
        ...


def params_hash(name: str, params: Mapping[str, Any]) -> str:
    """Return the sha256 (hex) of the canonical JSON of ``{"name": name, "params": params}``.

    Parameters
    ----------
    name : str
        The explainer's registry name.
    params : Mapping[str, Any]
        Its parameters, defaults filled in.

    Returns
    -------
    str
        64 hexadecimal characters, the same in every process.

    Examples
    --------
    >>> params_hash("gradient", {}) == params_hash("gradient", {})
    True
    """
    text = json.dumps({"name": name, "params": dict(params)}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(explainer: str, key: str, kind: str, value: Any) -> Any:
    """Check one parameter against its kind and return it in canonical (JSON) form."""
    base = kind.removeprefix("optional_")
    if kind != base and value is None:
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
    if kind != base:
        expected += " or None"
    raise FocusError(f"Parameter '{key}' of explainer '{explainer}' got {value!r}: pass {expected}.")


class ExplainerBase:
    """Parameter handling and the model-safe call shared by the explainers.

    A subclass sets ``name``, ``spec`` (parameter -> ``(kind, default)``, part of the hash), optionally
    ``runtime_spec`` (execution knobs such as a memory budget that do not change the maps and so are not part of
    ``params`` or its hash), may override ``_check`` to validate values, and implements ``_attribute``.

    The call puts the model in eval mode (and leaves it there), enables gradients, detaches a copy of the inputs
    that requires grad, checks the targets and returns a detached ``(B, H, W)`` map. Gradients are taken with
    :func:`torch.autograd.grad` with respect to inputs or activations only, so no ``.grad`` of a parameter changes.
    """

    name: ClassVar[str]
    spec: ClassVar[dict[str, tuple[str, Any]]] = {}
    runtime_spec: ClassVar[dict[str, tuple[str, Any]]] = {}

    def __init__(self, **params: Any) -> None:
        known = {**self.spec, **self.runtime_spec}
        unknown = sorted(set(params) - set(known))
        if unknown:
            names = ", ".join(known) or "none"
            raise FocusError(
                f"Explainer '{self.name}' has no parameter '{unknown[0]}': use one of its parameters ({names})."
            )
        values = {key: _canonical(self.name, key, kind, params.get(key, default))
                  for key, (kind, default) in known.items()}
        self._check(values)
        self.params: dict[str, Any] = {key: values[key] for key in self.spec}
        self.runtime: dict[str, Any] = {key: values[key] for key in self.runtime_spec}
        self.params_hash: str = params_hash(self.name, self.params)

    def _check(self, values: dict[str, Any]) -> None:
        """Raise :class:`FocusError` for a value out of range (override where needed)."""

    def _attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Explain ``model`` on ``inputs`` for ``targets``.

        Parameters
        ----------
        model : torch.nn.Module
            A classifier returning logits ``(B, K)``. It is put in eval mode and left there; hooks and
            canonizers are removed and its ``state_dict`` is unchanged afterwards.
        inputs : torch.Tensor
            Float ``(B, C, H, W)`` normalised images (mosaics), on the model's device.
        targets : torch.Tensor
            Integer ``(B,)`` class index to explain for each sample.

        Returns
        -------
        torch.Tensor
            Float ``(B, H, W)`` relevance at input resolution, signed, on the inputs' device.

        Raises
        ------
        FocusError
            For inputs that are not a float 4-D batch, targets of the wrong shape or out of range.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise FocusError(f"Inputs must be a float tensor of shape (B, C, H, W), got {got}: pass a batch of images.")
        if not isinstance(targets, torch.Tensor) or targets.shape != (inputs.shape[0],) or targets.is_floating_point():
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise FocusError(
                f"Targets must be an integer tensor of shape ({inputs.shape[0]},), got {got}: "
                "pass one class per sample."
            )
        if targets.numel() and int(targets.min()) < 0:
            raise FocusError(f"Target class {int(targets.min())} is negative: pass class indices from 0.")
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            x = inputs.detach().clone().requires_grad_(True)
            relevance = self._attribute(model, x, targets.detach().to(device=inputs.device, dtype=torch.int64))
        return relevance.detach()

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"get_explainer({self.name!r}{', ' if args else ''}{args})"


def checked_forward(model: nn.Module, targets: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``model`` so that its first output tells whether the largest target is a valid class.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.
    targets : torch.Tensor
        The ``(B,)`` targets that will be selected from its logits.

    Returns
    -------
    Callable[[torch.Tensor], torch.Tensor]
        ``forward(x) -> logits``, raising :class:`FocusError` when logits are not ``(N, K)`` with ``K`` above
        every target.
    """
    largest = int(targets.max()) if targets.numel() else -1

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise FocusError("The model must return logits of shape (B, num_classes): wrap it so that it does.")
        if largest >= logits.shape[1]:
            raise FocusError(
                f"Target class {largest} is out of range for a model with {logits.shape[1]} outputs: "
                f"pass targets in [0, {logits.shape[1] - 1}]."
            )
        return logits

    return forward
