"""The explainer protocol and the little every explainer shares: parameters, their hash, a safe call.

An explainer is a small object with a ``name``, explicit ``params`` (defaults filled in, JSON-serialisable),
a ``params_hash`` and a ``__call__(model, inputs, targets) -> (B, H, W)`` relevance map. Explainers built on
:class:`ExplainerBase` also offer ``explain(model, inputs, targets) -> Explanation``: the same map and, where the
method ran the model on the clean inputs anyway, its logits (so a caller that needs the predicted class does not
pay for a second forward pass). The families live in their own modules (:mod:`.gradcam`, :mod:`.lrp`,
:mod:`.gradients`, :mod:`.control`); this module only holds what they have in common.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.specs import canonical_params
from focus_core.hashing import canonical_hash

__all__ = ["Explainer", "ExplainerBase", "Explanation", "CheckedForward", "params_hash", "checked_forward"]

#: ``(targets on the device, largest target)`` while :meth:`ExplainerBase.explain` runs ``_attribute``: the targets
#: were range-checked where they arrived (the CPU on the hot path), so :func:`checked_forward` needs no device read.
_CHECKED_TARGETS: ContextVar[tuple[torch.Tensor, int] | None] = ContextVar("_CHECKED_TARGETS", default=None)


@runtime_checkable
class Explainer(Protocol):
    """What every explainer offers (see ``docs/architecture.md``)."""

    name: str
    params: dict[str, Any]
    params_hash: str

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the ``(B, H, W)`` relevance of ``inputs`` ``(B, C, H, W)`` for the classes ``targets`` ``(B,)``."""
        ...


class Explanation:
    """What :meth:`ExplainerBase.explain` returns.

    Attributes
    ----------
    relevance : torch.Tensor
        Float ``(B, H, W)`` relevance, detached, on the inputs' device (what ``__call__`` returns). A method may
        give a function instead, called on first access: GradCAM upsamples its map only when someone reads it,
        since the hot path takes ``quadrant_sums`` and never does.
    logits : torch.Tensor or None
        ``(B, K)`` logits of the model on the clean inputs, detached, when the method computed them anyway
        (GradCAM, GradCAM++, gradient, input x gradient, ``lrp_fast``, ``attnlrp`` (up to float rounding), and
        zennit's ``lrp`` on models without a merged BatchNorm); ``None`` for methods that never run the model on the clean inputs (SmoothGrad,
        integrated gradients, the random control) or cannot return its exact logits.
    quadrant_sums : torch.Tensor or None
        ``(B, 4, 2)`` float32 :func:`focus_core.metric.quadrant_sums` of ``relevance``, where the method has a
        cheaper way to them than reducing the map (GradCAM and GradCAM++: from the small map before upsampling,
        :func:`focus_core.metric.upsampled_quadrant_sums`); ``None`` otherwise. For 2x2 mosaics only: the
        tiles of an N x N mosaic are ``focus_core.metric.tile_sums(relevance, N)``.

    Examples
    --------
    >>> out = Explanation(lambda: torch.ones(1, 2, 2), quadrant_sums=torch.ones(1, 4, 2))
    >>> tuple(out.relevance.shape)  # computed here, once
    (1, 2, 2)
    """

    __slots__ = ("_relevance", "logits", "quadrant_sums")

    def __init__(
        self,
        relevance: torch.Tensor | Callable[[], torch.Tensor],
        logits: torch.Tensor | None = None,
        quadrant_sums: torch.Tensor | None = None,
    ) -> None:
        self._relevance = relevance
        self.logits = logits
        self.quadrant_sums = quadrant_sums

    @property
    def relevance(self) -> torch.Tensor:
        if not isinstance(self._relevance, torch.Tensor):
            self._relevance = self._relevance()
        return self._relevance

    def detached(self) -> Explanation:
        """The same explanation with its tensors detached; a relevance not yet computed is detached when it is."""
        relevance = self._relevance
        if isinstance(relevance, torch.Tensor):
            relevance = relevance.detach()
        else:
            relevance = functools.partial(_detached, relevance)
        return Explanation(
            relevance,
            None if self.logits is None else self.logits.detach(),
            None if self.quadrant_sums is None else self.quadrant_sums.detach(),
        )

    def __repr__(self) -> str:
        state = "computed" if isinstance(self._relevance, torch.Tensor) else "not computed yet"
        has = f"logits={self.logits is not None}, sums={self.quadrant_sums is not None}"
        return f"Explanation(relevance {state}, {has})"


def _detached(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    return compute().detach()


def params_hash(name: str, params: Mapping[str, Any]) -> str:
    """Return :func:`focus_core.hashing.canonical_hash` of ``{"name": name, "params": params}``.

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
    return canonical_hash({"name": name, "params": dict(params)})


class ExplainerBase:
    """Parameter handling and the model-safe call shared by the explainers.

    A subclass sets ``name``, ``spec`` (parameter -> ``(kind, default)``, part of the hash), optionally
    ``runtime_spec`` (execution knobs such as a memory budget that do not change the maps and so are not part of
    ``params`` or its hash), may override ``_check`` to validate values, and implements ``_attribute``, which
    returns the ``(B, H, W)`` relevance, or an :class:`Explanation` that also carries the logits of its forward
    pass on the clean inputs.

    :meth:`explain` (and ``__call__``, which returns only the relevance) puts the model in eval mode (and leaves it
    there), enables gradients, checks the targets where they are (on the CPU: no device read), moves them to the
    inputs' device, detaches the inputs into a leaf that requires grad (a copy only for inference-mode tensors:
    no explainer writes to its inputs) and returns detached tensors. Gradients are taken with
    :func:`torch.autograd.grad` with respect to inputs or activations only, so no ``.grad`` of a parameter changes.
    """

    name: ClassVar[str]
    spec: ClassVar[dict[str, tuple[str, Any]]] = {}
    runtime_spec: ClassVar[dict[str, tuple[str, Any]]] = {}

    def __init__(self, **params: Any) -> None:
        values = canonical_params(self.name, self.spec, self.runtime_spec, params)
        self._check(values)
        self.params: dict[str, Any] = {key: values[key] for key in self.spec}
        self.runtime: dict[str, Any] = {key: values[key] for key in self.runtime_spec}
        self.params_hash: str = params_hash(self.name, self.params)

    def _check(self, values: dict[str, Any]) -> None:
        """Raise :class:`FocusError` for a value out of range (override where needed)."""

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`FocusError` for a model this method cannot explain (override where needed).

        Cheap and without a forward pass: flows call it before they write anything (``flows/worker/preflight.py``).
        """

    def _attribute(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor | Explanation:
        raise NotImplementedError

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Explain ``model`` on ``inputs`` for ``targets``: the relevance of :meth:`explain`.

        Parameters
        ----------
        model : torch.nn.Module
            A classifier returning logits ``(B, K)``. It is put in eval mode and left there; hooks and
            canonizers are removed and its ``state_dict`` is unchanged afterwards.
        inputs : torch.Tensor
            Float ``(B, C, H, W)`` normalised images (mosaics), on the model's device.
        targets : torch.Tensor
            Integer ``(B,)`` class index to explain for each sample, on any device (the CPU saves a device read).

        Returns
        -------
        torch.Tensor
            Float ``(B, H, W)`` relevance at input resolution, signed, on the inputs' device.

        Raises
        ------
        FocusError
            For inputs that are not a float 4-D batch, targets of the wrong shape or out of range.
        """
        return self.explain(model, inputs, targets).relevance

    def explain(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Explanation:
        """Explain ``model`` on ``inputs`` for ``targets`` and return the logits of the clean forward pass too.

        Takes the arguments of ``__call__`` and raises the same errors. Targets given on the CPU are checked
        there and copied to the inputs' device without waiting for it; targets on an accelerator cost one read
        back to the host for their range check.

        Returns
        -------
        Explanation
            ``relevance`` (what ``__call__`` returns) and ``logits`` (``(B, K)``, or ``None`` where the method
            never runs the model on the clean inputs).

        Examples
        --------
        >>> import torch
        >>> from focus_core.explainers import get_explainer
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                             torch.nn.Linear(2 * 6 * 6, 3))
        >>> out = get_explainer("gradient").explain(model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> tuple(out.relevance.shape), tuple(out.logits.shape)
        ((4, 8, 8), (4, 3))
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
        smallest, largest = _target_range(targets)
        if smallest < 0:
            raise FocusError(f"Target class {smallest} is negative: pass class indices from 0.")
        model.eval()
        targets = targets.detach().to(device=inputs.device, dtype=torch.int64, non_blocking=True)
        token = _CHECKED_TARGETS.set((targets, largest))
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = inputs.detach()
                if x.is_inference():  # inference tensors cannot be recorded by autograd
                    x = x.clone()
                out = self._attribute(model, x.requires_grad_(True), targets)
        finally:
            _CHECKED_TARGETS.reset(token)
        if isinstance(out, Explanation):
            return out.detached()
        return Explanation(out.detach(), None)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"get_explainer({self.name!r}{', ' if args else ''}{args})"


def _target_range(targets: torch.Tensor) -> tuple[int, int]:
    """``(smallest, largest)`` target, read in one go (free on the CPU, one device read elsewhere)."""
    if not targets.numel():
        return 0, -1
    smallest, largest = torch.stack(torch.aminmax(targets.detach())).tolist()
    return int(smallest), int(largest)


class CheckedForward:
    """``model`` as a function whose output is checked to be ``(N, K)`` logits with ``K`` above every target, and
    finite on the model's first forward pass (NaN or Inf logits blame the model in one sentence, not the explainer).

    Made by :func:`checked_forward`. ``logits`` holds the (detached) output of the last call, so an explainer can
    hand back the logits of its forward pass on the clean inputs.
    """

    def __init__(self, model: nn.Module | Any, largest: int) -> None:
        self.model = model
        self.largest = largest
        self.logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise FocusError("The model must return logits of shape (B, num_classes): wrap it so that it does.")
        if self.largest >= logits.shape[1]:
            raise FocusError(
                f"Target class {self.largest} is out of range for a model with {logits.shape[1]} outputs: "
                f"pass targets in [0, {logits.shape[1] - 1}]."
            )
        if _unchecked(self.model):
            if not bool(torch.isfinite(logits.detach()).all()):
                raise FocusError(
                    "The model's logits are NaN or infinite (its weights hold NaN or Inf, or its forward pass "
                    "overflows): the model is at fault, not the explainer, so check the checkpoint or the model "
                    "factory."
                )
            _mark_finite(self.model)
        self.logits = logits.detach()
        return logits


#: Models whose logits were found finite once: checked on their first forward pass only (one device read each).
_FINITE: weakref.WeakSet = weakref.WeakSet()


def _unchecked(model: Any) -> bool:
    """Whether ``model``'s logits are still to be checked (always for a model that cannot be weakly referenced,
    such as a function made per batch)."""
    try:
        return model not in _FINITE
    except TypeError:
        return True


def _mark_finite(model: Any) -> None:
    try:
        _FINITE.add(model)
    except TypeError:
        pass


def checked_forward(model: nn.Module | Any, targets: torch.Tensor) -> CheckedForward:
    """Wrap ``model`` so that its output tells whether the largest target is a valid class.

    Parameters
    ----------
    model : torch.nn.Module or callable
        The classifier.
    targets : torch.Tensor
        The ``(B,)`` targets that will be selected from its logits. Inside :meth:`ExplainerBase.explain` the
        targets it passes to ``_attribute`` are already range-checked, and their largest value is not read again
        (no device-to-host copy); other targets are read once here.

    Returns
    -------
    CheckedForward
        ``forward(x) -> logits``, raising :class:`FocusError` when logits are not ``(N, K)`` with ``K`` above
        every target; ``forward.logits`` is the detached output of its last call.
    """
    known = _CHECKED_TARGETS.get()
    if known is not None and known[0] is targets:
        largest = known[1]
    else:
        largest = _target_range(targets)[1]
    return CheckedForward(model, largest)
