"""What an option of ``focus`` reads from the flow's pydantic model: its help, default, type and choices.

The models of :mod:`flows.params` are the one source of every parameter's description and default; an option
that sets a field (:func:`flows.cli.params.option`) shows that field's description as its help, with the
default the flow's model gives it (``empty: X`` in a description reads ``default: X`` on the command line), and
takes the field's type (``int``, ``float``) and, for a ``Literal``, its choices.

Examples
--------
>>> from flows.params import EvaluateParams, TrainParams
>>> field_help(EvaluateParams, "mosaics.per_class")
'Mosaics per target class (default 20).'
>>> field_help(TrainParams, "focus_mosaics.per_class")
'Mosaics per target class (default 10).'
>>> field_help(EvaluateParams, "model.num_classes")
"Number of classes; default: the dataset's."
>>> field_argument(EvaluateParams, "mosaics.split")
{'choices': ('val', 'test')}
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["field_argument", "field_default", "field_help", "field_info"]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field's annotation holds (``X``, ``X | None``), else ``None``."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def field_info(model: type[BaseModel], path: str) -> tuple[FieldInfo, Any]:
    """The :class:`~pydantic.fields.FieldInfo` of the dotted ``path`` in ``model`` and its default there.

    The default is the one the flow's model gives: ``focus_mosaics.per_class`` of ``TrainParams`` is 10 (its
    ``focus_mosaics`` default), not ``MosaicSetSpec``'s 20. ``None`` when the field has no default.

    Raises
    ------
    KeyError
        When ``path`` names no field of ``model``.
    """
    cls: type[BaseModel] | None = model
    holder: BaseModel | None = None
    info: FieldInfo | None = None
    default: Any = None
    for name in path.split("."):
        if cls is None:
            raise KeyError(path)
        info = cls.model_fields[name]
        if holder is not None:
            default = getattr(holder, name)
        elif info.is_required():
            default = None
        else:
            default = info.get_default(call_default_factory=True)
        holder = default if isinstance(default, BaseModel) else None
        cls = _model_of(info.annotation)
    assert info is not None
    return info, default


def field_default(model: type[BaseModel], path: str) -> Any:
    """The default of the dotted ``path`` in ``model`` (see :func:`field_info`)."""
    return field_info(model, path)[1]


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, BaseModel) and hasattr(value, "name"):
        return str(value.name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def field_help(model: type[BaseModel], path: str, default: Any = None) -> str:
    """The help of the option that sets ``path``: the field's description, with its default when it has one.

    ``default`` replaces the model's default in the text (for an option whose value differs from the field's).
    """
    info, model_default = field_info(model, path)
    text = " ".join((info.description or "").split()).replace("empty: ", "default: ")
    shown = default if default is not None else model_default
    if shown is not None and shown != [] and not isinstance(shown, bool) and "default" not in text:
        text = f"{text.rstrip('.')} (default {_shown(shown)})."
    return text


def field_argument(model: type[BaseModel], path: str) -> dict[str, Any]:
    """``add_argument`` keywords the field's type implies: ``type`` for an int or float, ``choices`` for a
    ``Literal`` (also inside a list or an optional)."""
    info, _ = field_info(model, path)
    annotation = info.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        plain = [a for a in args if a is not type(None)]
        annotation = plain[0] if len(plain) == 1 else annotation
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return {"choices": typing.get_args(annotation)}
    if annotation in (int, float):
        return {"type": annotation}
    return {}
