"""Which model factories an architecture string may name, and whether its keywords fit the factory (standard library).

An architecture ``package.module:factory`` imports a module and calls a callable: on your own machine that is your
own code, but a process that builds models for strangers (a worker serving a deployment, whose parameters anyone
who can fill the form chose) must not import or call whatever a form names. A :class:`FactoryPolicy` says which
import paths may be built: :data:`ANY_FACTORY` (the command line's trust: every one) or a fixed set the operator
allowed. :meth:`FactoryPolicy.check` judges the string alone, **before any import**; built-in names and ``timm:``
models are always allowed (they import only torchvision and timm).

:func:`check_keywords` then holds an allowed factory's keywords to its signature: every keyword a parameter of it
(unless it takes ``**kwargs``), and every value of the type its annotation names where that is a plain type.

Examples
--------
>>> from focus_core.arch_string import parse_architecture
>>> FactoryPolicy(frozenset({"my.nets:small"})).check(parse_architecture("my.nets:small(width=8)"))
>>> FactoryPolicy(frozenset()).check(parse_architecture("os:system(command='id')"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
focus_core.errors.FocusError: This worker builds no model factory 'os:system' (only built-in names, timm: ...
>>> ANY_FACTORY.check(parse_architecture("my.nets:small"))
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from focus_core.arch_string import Architecture
from focus_core.errors import FocusError

__all__ = ["ANY_FACTORY", "FILE_KEYWORDS", "FactoryPolicy", "check_keywords"]

#: Builder keywords that name files or folders (timm's download cache): a confined process refuses them, since its
#: reads and writes stay in the folders its operator set up.
FILE_KEYWORDS = frozenset({"cache_dir"})
_PLAIN_TYPES = (bool, int, float, str, tuple, list, type(None))


@dataclass(frozen=True)
class FactoryPolicy:
    """The import paths an architecture string may name in this process.

    Attributes
    ----------
    allowed : frozenset of str or None
        The ``package.module:factory`` paths that may be built; ``None``: every one (your own machine).
    """

    allowed: frozenset[str] | None = None

    @property
    def confined(self) -> bool:
        """Whether this policy limits what may be built (a worker's)."""
        return self.allowed is not None

    def check(self, arch: Architecture) -> None:
        """Refuse, in one sentence and before any import, an architecture this policy does not allow.

        Raises
        ------
        FocusError
            For a ``package.module:factory`` outside :attr:`allowed`, or (when confined) a keyword of
            :data:`FILE_KEYWORDS`.
        """
        if self.allowed is None:
            return
        if arch.kind == "factory" and arch.name not in self.allowed:
            raise FocusError(
                f"This worker builds no model factory {arch.name!r} (only built-in names, timm: models and the "
                "factories its operator allowed): use one of those, or ask the operator to add it to "
                "FOCUS_ALLOWED_FACTORIES."
            )
        named = sorted(FILE_KEYWORDS & set(arch.kwargs))
        if named:
            raise FocusError(
                f"The architecture {arch.canonical()!r} sets {', '.join(named)}, a folder, which a worker does not "
                "take from a form: leave it out."
            )


#: The command line's policy: every import path may be built (you run your own code).
ANY_FACTORY = FactoryPolicy(None)


def check_keywords(arch: Architecture, factory: Callable[..., Any], fixed: Collection[str] = ()) -> None:
    """Refuse keywords ``factory`` does not take, or values not of the plain type their parameter is annotated with.

    ``fixed`` names the keywords the caller passes itself (``num_classes``, ``in_channels``). A factory whose
    signature cannot be read, or that takes ``**kwargs``, is held to the annotations it has.

    Raises
    ------
    FocusError
        One sentence naming the factory and the keyword.

    Examples
    --------
    >>> from focus_core.arch_string import parse_architecture
    >>> def small(num_classes: int, width: int = 8): ...
    >>> check_keywords(parse_architecture("m:small(width=4)"), small, fixed=("num_classes",))
    >>> check_keywords(parse_architecture("m:small(depth=4)"), small)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The model factory 'm:small' takes no keyword depth (it takes num_classes, width)...
    >>> check_keywords(parse_architecture("m:small(width='8')"), small)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The model factory 'm:small' expects width as int but got str '8'...
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    hints = _hints(factory)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [name for name, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for key, value in arch.kwargs.items():
        if key not in named:
            if takes_any:
                continue
            raise FocusError(
                f"The model factory {arch.name!r} takes no keyword {key} (it takes {', '.join(named) or 'none'}): "
                "fix the architecture's keywords."
            )
        if key in fixed:
            continue
        expected = hints.get(key, parameters[key].annotation)
        if not _fits(value, expected):
            raise FocusError(
                f"The model factory {arch.name!r} expects {key} as {_type_name(expected)} but got "
                f"{type(value).__name__} {value!r}: fix the architecture's keywords."
            )


def _hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The factory's resolved annotations (a class's ``__init__``'s); empty when they cannot be resolved."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation naming what cannot be imported: held to nothing
        return {}


def _fits(value: Any, expected: Any) -> bool:
    """Whether a literal fits a plain annotation; an annotation that is no plain type (or a union of them) fits all."""
    if expected is inspect.Parameter.empty or expected is Any:
        return True
    options = typing.get_args(expected) if _is_union(expected) else (expected,)
    plain = [typing.get_origin(o) or o for o in options]
    if not all(isinstance(o, type) and issubclass(o, _PLAIN_TYPES) for o in plain):
        return True  # a class, a Literal, a protocol...: the factory judges the value itself
    for kind in plain:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind in (tuple, list) and isinstance(value, tuple):
            return True  # the architecture string writes lists as tuples
        if kind is int and isinstance(value, bool):
            continue
        if isinstance(value, kind):
            return True
    return False


def _is_union(annotation: Any) -> bool:
    import types

    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
