"""Command-line options of the ``focus`` command, and how they become a flow's parameters.

Every option that sets a parameter names its field once, where it is declared (:func:`option`):
a dotted path into the flow's pydantic model (:mod:`flows.params`), e.g. ``--device`` sets
``run.device``. :func:`given` collects the fields of the options a user gave; everything else keeps
the model's default, or the value in a ``--params`` file (the JSON the Prefect UI shows for a flow
run), which options override.

Examples
--------
>>> import argparse
>>> from flows.params import EvaluateParams
>>> parser = argparse.ArgumentParser()
>>> use_model(parser, EvaluateParams)
>>> add_model_options(parser)
>>> add_run_options(parser)
>>> given(parser.parse_args(["--arch", "resnet18", "--weights", "/models/r18.pt", "--device", "cuda"]))
{'model': {'architecture': 'resnet18', 'weights': '/models/r18.pt'}, 'run': {'device': 'cuda'}}
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from focus_core.errors import FocusError
from focus_core.layouts import GRIDS

__all__ = [
    "add_dataset_options",
    "add_grid_options",
    "add_method_options",
    "add_model_options",
    "add_mosaic_options",
    "add_run_options",
    "METHODS_PLACEHOLDER",
    "RegistryHelpFormatter",
    "deep_merge",
    "given",
    "given_flags",
    "has_secret",
    "load_params_file",
    "method_specs",
    "option",
    "parse_method",
    "run_fields",
    "seed_list",
    "use_model",
]

#: The namespace attribute that maps each option's dest to its field and converter (set by :func:`option`).
FIELDS = "_param_fields"


#: The namespace attribute that holds the flow's parameter model of a command (set by :func:`use_model`).
MODEL = "_param_model"


def use_model(parser: argparse.ArgumentParser, model: type[Any]) -> None:
    """Make ``model`` (a ``*Params`` class) the source of the help, type and choices of ``parser``'s options."""
    parser.set_defaults(**{MODEL: model})


def option(parser: Any, *flags: str, field: str | None = None, convert: Callable[[Any], Any] | None = None,
           **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)`` for the option that sets the parameter ``field`` (dotted).

    ``convert`` turns the given value into the field's (an absolute path, ...); a dict it returns is
    merged into ``field``, ``None`` leaves the field out. ``parser`` may be an argument group. Under a parser
    with a model (:func:`use_model`), an option without ``help`` shows the field's description and default
    (:func:`flows.cli.fields.field_help`; ``default_shown`` overrides the default in that text), and one without
    ``type``, ``choices``, ``action`` or ``convert`` takes the field's type or choices.
    """
    model = parser.get_default(MODEL)
    shown = kwargs.pop("default_shown", None)
    if model is not None and field is not None:
        from flows.cli.fields import field_argument, field_help

        if kwargs.get("help") is None:
            kwargs["help"] = field_help(model, field, shown)
        if convert is None and not {"type", "choices"} & set(kwargs) and kwargs.get("action") in (None, "append"):
            kwargs.update(field_argument(model, field))
    action = parser.add_argument(*flags, **kwargs)
    if field is not None:
        parser.set_defaults(**{FIELDS: {**(parser.get_default(FIELDS) or {}), action.dest: (field, convert, flags[0])}})
    return action


def given(namespace: argparse.Namespace) -> dict[str, Any]:
    """The nested parameter fields of every option the user gave (``None``: not given)."""
    fields: dict[str, Any] = {}
    for dest, (field, convert, _) in (getattr(namespace, FIELDS, None) or {}).items():
        value = getattr(namespace, dest, None)
        if value is not None and convert is not None:
            value = convert(value)
        if value is None:
            continue
        *parents, name = field.split(".")
        node = fields
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = deep_merge(node.get(name, {}), value) if isinstance(value, dict) else value
    return fields


def given_flags(namespace: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """``{field: (flag, value)}`` of every option the user gave that sets a parameter: what an error about
    ``field`` names instead of its path (:func:`flows.cli.errors.one_line`).

    Examples
    --------
    >>> from flows.params import EvaluateParams
    >>> parser = argparse.ArgumentParser()
    >>> use_model(parser, EvaluateParams)
    >>> add_mosaic_options(parser)
    >>> given_flags(parser.parse_args(["--per-class", "0"]))
    {'mosaics.per_class': ('--per-class', 0)}
    """
    flags = {}
    for dest, (field, _, flag) in (getattr(namespace, FIELDS, None) or {}).items():
        value = getattr(namespace, dest, None)
        if value is not None:
            flags[field] = (flag, value)
    return flags


def absolute(path: str) -> str:
    """The path, with ``~`` expanded, made absolute (flows may run in another working directory); a URL as it is.

    Examples
    --------
    >>> absolute("s3://models/r18.pt"), absolute("/models/../models/r18.pt")
    ('s3://models/r18.pt', '/models/r18.pt')
    """
    from flows.weights.weight_store import canonical, is_url

    return path if is_url(path) else canonical(path)  # a registry alias stays one: the flow pins what it read


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices such as 0,3,7, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected one number per channel such as 0.5,0.5,0.5, got {text!r}") from None


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_method(text: str) -> dict[str, Any]:
    """``"smoothgrad:n_samples=10,sigma=0.2"`` -> ``{"name": "smoothgrad", "params": {...}}``.

    Values are read as JSON when they parse (numbers, true/false, null), else as strings.

    Examples
    --------
    >>> parse_method("smoothgrad:n_samples=10")
    {'name': 'smoothgrad', 'params': {'n_samples': 10}}
    >>> parse_method("gradcam")
    {'name': 'gradcam', 'params': {}}
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise argparse.ArgumentTypeError(f"expected a method such as gradcam or smoothgrad:n_samples=10, got {text!r}")
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"method parameter {item!r} in {text!r} is not key=value (e.g. smoothgrad:n_samples=10)"
            )
        params[key.strip()] = _json_value(value.strip())
    return {"name": name, "params": params}


def load_params_file(path: str | None) -> dict[str, Any]:
    """The parameters in a JSON file (``{"params": {...}}`` as in the UI, or the bare ``{...}``)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FocusError(f"The parameters file {path!r} does not exist: pass the path of a JSON file.")
    try:
        loaded = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FocusError(f"The parameters file {path!r} is not valid JSON ({error}): fix it or leave --params out.") from None
    if not isinstance(loaded, dict):
        raise FocusError(f"The parameters file {path!r} must hold a JSON object, not {type(loaded).__name__}.")
    if set(loaded) == {"params"} and isinstance(loaded["params"], dict):
        loaded = loaded["params"]
    return loaded


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, merging nested dictionaries.

    Examples
    --------
    >>> deep_merge({"run": {"device": "cpu", "batch_size": 8}}, {"run": {"device": "cuda"}})
    {'run': {'device': 'cuda', 'batch_size': 8}}
    """
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- option groups ------------------------------------------------------------------------------


def add_params_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        metavar="FILE",
        help="JSON file with the flow's parameters (as the Prefect UI shows them); options given here override it.",
    )


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    option(group, "--data", "--dataset", dest="data", metavar="DIR", field="dataset",
           convert=lambda root: {"kind": "image_folder", "root": absolute(root)},
           help="ImageFolder directory (one sub-folder per class; train/val/test sub-folders are used as splits). "
           "Default: the bundled digits.")
    option(group, "--tile-size", metavar="PX", field="dataset.tile_size")
    option(group, "--resize", metavar="PX", field="dataset.resize")
    option(group, "--mean", type=_float_list, metavar="R,G,B", field="dataset.mean")
    option(group, "--std", type=_float_list, metavar="R,G,B", field="dataset.std")
    option(group, "--data-seed", metavar="N", field="dataset.seed")
    option(group, "--cache-dir", metavar="DIR", field="dataset.cache_dir")


def add_model_options(parser: argparse.ArgumentParser, weights_help: str | None = None) -> None:
    group = parser.add_argument_group("model")
    option(group, "--arch", metavar="NAME", field="model.architecture")
    option(group, "--weights", metavar="PATH_OR_URL", field="model.weights", convert=absolute, help=weights_help)
    option(group, "--num-classes", metavar="N", field="model.num_classes")
    option(group, "--in-channels", metavar="N", field="model.in_channels")
    option(group, "--gradcam-layer", metavar="MODULE", field="model.gradcam_layer")
    option(group, "--label", metavar="TEXT", field="model.label")


def add_mosaic_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mosaics")
    option(group, "--split", field="mosaics.split")
    option(group, "--per-class", metavar="N", field="mosaics.per_class")
    option(group, "--max-mosaics", metavar="N", field="run.max_mosaics")
    option(group, "--mosaic-seed", metavar="N", field="mosaics.seed")
    option(group, "--layout", field="mosaics.layout")
    option(group, "--classes", type=_int_list, metavar="I,J,...", field="mosaics.classes")
    add_grid_options(group, "mosaics")
    option(group, "--confident", metavar="P", field="mosaics.confident")


def add_grid_options(group: Any, field: str) -> None:
    """``--grid`` and ``--targets``, setting ``<field>.grid`` and ``<field>.targets`` (a mosaic set's)."""
    option(group, "--grid", type=int, choices=GRIDS, metavar="N", field=f"{field}.grid")
    option(group, "--targets", metavar="K", field=f"{field}.targets")


#: Where a help text lists the registered attribution methods (:class:`RegistryHelpFormatter` fills it in).
METHODS_PLACEHOLDER = "{registered methods}"


class RegistryHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter that lists the registered attribution methods where a help says
    :data:`METHODS_PLACEHOLDER`: :data:`flows.specs.BUILT_IN_METHODS` (no import of the registry, and so of
    torch, for a help page), and every name the registry holds when this process has imported it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and METHODS_PLACEHOLDER in text:
            import sys

            from flows.specs import BUILT_IN_METHODS

            registry = sys.modules.get("focus_core.explainers")
            names = list(BUILT_IN_METHODS)
            if registry is not None:
                names += [name for name in registry.available_explainers() if name not in names]
            text = text.replace(METHODS_PLACEHOLDER, ", ".join(names))
        return text


def add_method_options(parser: argparse.ArgumentParser, default: str | None, dest: str = "methods") -> None:
    """``--method``, repeatable, setting the list ``dest``; ``default`` names the model's default methods (a test
    holds it to them: building that default would import the explainer registry, and torch, for a help page);
    ``None``: the model has none, at least one is required."""
    option(parser, "--method", dest=dest, action="append", type=parse_method, metavar="NAME[:KEY=VALUE,...]",
           field=dest,
           help=f"Attribution method, repeatable: {METHODS_PLACEHOLDER}; parameters after a colon, e.g. "
           f"smoothgrad:n_samples=10 or lime:n_samples=500,mask=slic "
           + (f"(default {default})." if default else "(at least one is required)."))


def method_specs(namespace: argparse.Namespace, dest: str = "methods") -> list[dict[str, Any]] | None:
    return getattr(namespace, dest, None)


def add_run_options(parser: argparse.ArgumentParser, chunks: bool = True) -> None:
    group = parser.add_argument_group("execution")
    option(group, "--device", metavar="DEV", field="run.device")
    option(group, "--batch-size", metavar="N", field="run.batch_size")
    if chunks:
        option(group, "--chunk-size", metavar="N", field="run.chunk_size")
        option(group, "--retries", metavar="N", field="run.retries")
        option(group, "--max-chunks", metavar="N", field="run.max_chunks")


def run_fields(namespace: argparse.Namespace) -> dict[str, Any]:
    """The ``run`` fields of the options given (``--database-url`` only when its URL carries no secret)."""
    return given(namespace).get("run", {})


def _public_url(url: str) -> str | None:
    """The URL when it may be a flow parameter (parameters are visible in the UI), else ``None``."""
    return None if has_secret(url) else url


def has_secret(url: str) -> bool:
    """Whether a database URL carries a secret (then it must not become a flow parameter).

    :func:`db.engine.has_secret`, imported when called so that ``focus --help`` stays quick: a
    user-info password, or a ``password`` / ``sslpassword`` in the query string.

    Examples
    --------
    >>> has_secret("postgresql+psycopg://focus:secret@db/focus"), has_secret("postgresql://focus@db/f?password=s")
    (True, True)
    >>> has_secret("sqlite:///focus.db")
    False
    """
    from db.engine import has_secret as url_has_secret

    return url_has_secret(url)


def add_database_option(parser: argparse.ArgumentParser, field: str | None = None) -> None:
    """``--database-url``; ``field`` makes it the flow's parameter too, unless the URL carries a secret.

    A URL with a secret travels in ``FOCUS_DATABASE_URL`` only (:func:`flows.cli.main` sets it).
    """
    option(parser, "--database-url", metavar="URL", field=field, convert=_public_url,
           help="SQLAlchemy URL of focus-audit's store, e.g. postgresql+psycopg://user@host/focus "
           "(default: $FOCUS_DATABASE_URL, else sqlite:///focus.db). Prefer FOCUS_DATABASE_URL for a URL with a "
           "password: a command line shows in the process list of every user of the machine.")


def database_url(namespace: argparse.Namespace) -> str | None:
    """``--database-url``, else ``$FOCUS_DATABASE_URL``, else ``None`` (the store's default)."""
    return getattr(namespace, "database_url", None) or os.environ.get("FOCUS_DATABASE_URL") or None


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` as ``[0, 1, 2]`` (an ``argparse`` type: a bad list is a usage error).

    Examples
    --------
    >>> seed_list("0, 1,2")
    [0, 1, 2]
    """
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of seeds: pass non-negative integers such as 0,1,2,3,4.")
    return seeds
