"""Command-line options of the ``focus`` command, and how they become a flow's parameters.

Every option that sets a parameter names its field once, where it is declared (:func:`option`):
a dotted path into the flow's pydantic model (:mod:`flows.params`), e.g. ``--device`` sets
``run.device``. :func:`given` collects the fields of the options a user gave; everything else keeps
the model's default, or the value in a ``--params`` file (the JSON the Prefect UI shows for a flow
run), which options override.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
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
from focus_core.layouts import GRIDS, all_names
from focus_core.mosaic_limits import MAX_MOSAICS

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
    "has_secret",
    "load_params_file",
    "method_specs",
    "option",
    "parse_method",
    "run_fields",
    "seed_list",
]

#: The namespace attribute that maps each option's dest to its field and converter (set by :func:`option`).
FIELDS = "_param_fields"


def option(parser: Any, *flags: str, field: str | None = None, convert: Callable[[Any], Any] | None = None,
           **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)`` for the option that sets the parameter ``field`` (dotted).

    ``convert`` turns the given value into the field's (an absolute path, ...); a dict it returns is
    merged into ``field``, ``None`` leaves the field out. ``parser`` may be an argument group.
    """
    action = parser.add_argument(*flags, **kwargs)
    if field is not None:
        parser.set_defaults(**{FIELDS: {**(parser.get_default(FIELDS) or {}), action.dest: (field, convert)}})
    return action


def given(namespace: argparse.Namespace) -> dict[str, Any]:
    """The nested parameter fields of every option the user gave (``None``: not given)."""
    fields: dict[str, Any] = {}
    for dest, (field, convert) in (getattr(namespace, FIELDS, None) or {}).items():
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
    option(group, "--tile-size", type=int, metavar="PX", field="dataset.tile_size",
           help="Tile side in pixels (default: 32 digits; an ImageFolder: the model's input size where timm defines "
           "one, else 224).")
    option(group, "--resize", type=int, metavar="PX", field="dataset.resize",
           help="ImageFolder: shorter side before the centre crop (default 256; 8/7 of a timm model's input size "
           "when the tiles take that size).")
    option(group, "--mean", type=_float_list, metavar="R,G,B", field="dataset.mean",
           help="ImageFolder: per-channel mean on the [0, 1] scale, with --std (default: the timm model's, else "
           "ImageNet's).")
    option(group, "--std", type=_float_list, metavar="R,G,B", field="dataset.std",
           help="ImageFolder: per-channel standard deviation, with --mean (default: the timm model's, else ImageNet's).")
    option(group, "--data-seed", type=int, metavar="N", field="dataset.seed",
           help="Seed of the stratified train/val/test split (default 0).")
    option(group, "--cache-dir", metavar="DIR", field="dataset.cache_dir",
           help="ImageFolder: cache decoded tiles here (default: no cache).")


def add_model_options(parser: argparse.ArgumentParser, weights_help: str | None = None) -> None:
    group = parser.add_argument_group("model")
    option(group, "--arch", metavar="NAME", field="model.architecture",
           help="Architecture: digits_cnn, alexnet, vgg16, resnet18, another torchvision name, "
           "a timm model 'timm:<name>' (extra timm), or your own 'package.module:factory'; keywords in brackets, "
           "e.g. 'timm:vit_tiny_patch16_224(patch_size=16,img_size=32)' (default digits_cnn).")
    option(group, "--weights", metavar="PATH_OR_URL", field="model.weights", convert=absolute,
           help=weights_help or "Weights file (a state_dict) of the checkpoint.")
    option(group, "--num-classes", type=int, metavar="N", field="model.num_classes",
           help="Number of classes (default: the dataset's).")
    option(group, "--in-channels", type=int, metavar="N", field="model.in_channels",
           help="Input channels (default: the dataset's).")
    option(group, "--gradcam-layer", metavar="MODULE", field="model.gradcam_layer",
           help="Dotted module name for GradCAM when it cannot be inferred (e.g. features.11).")
    option(group, "--label", metavar="TEXT", field="model.label", help="A human name for this checkpoint.")


def add_mosaic_options(parser: argparse.ArgumentParser, default_split: str = "test", default_per_class: int = 20) -> None:
    group = parser.add_argument_group("mosaics")
    option(group, "--split", choices=("val", "test"), field="mosaics.split",
           help=f"Held-out split the tiles come from (default {default_split}; never train: the model saw it).")
    option(group, "--per-class", type=int, metavar="N", field="mosaics.per_class",
           help=f"Mosaics per target class (default {default_per_class}).")
    option(group, "--max-mosaics", type=int, metavar="N", field="run.max_mosaics",
           help="Refuse a request of more than N mosaics (per class x target classes) before anything is written "
           f"(default {MAX_MOSAICS:,}); raise it for a deliberately large mosaic set.")
    option(group, "--mosaic-seed", type=int, metavar="N", field="mosaics.seed",
           help="Seed of the mosaic set: same seed, same mosaics (default 0).")
    option(group, "--layout", choices=all_names(), field="mosaics.layout",
           help="Where the target tiles go: random per mosaic (default) or one fixed arrangement (positional test; "
           "2x2 with two targets: top ... antidiagonal, otherwise contiguous or scattered).")
    option(group, "--classes", type=_int_list, metavar="I,J,...", field="mosaics.classes",
           help="Target classes only (default: every class).")
    add_grid_options(group, "mosaics")
    option(group, "--confident", type=float, metavar="P", field="mosaics.confident",
           help="The grid pointing game's protocol: only images the checkpoint classifies correctly with softmax "
           "probability >= P (e.g. 0.99) become tiles; a mosaic set of its own (default: every image).")


def add_grid_options(group: Any, field: str) -> None:
    """``--grid`` and ``--targets``, setting ``<field>.grid`` and ``<field>.targets`` (a mosaic set's)."""
    option(group, "--grid", type=int, choices=GRIDS, metavar="N", field=f"{field}.grid",
           help="Tiles per side of a mosaic: 2 (default, the paper's), 3 or 4.")
    option(group, "--targets", type=int, metavar="K", field=f"{field}.targets",
           help="Target tiles per mosaic, 1 to N²-1 (default 2); a method that points anywhere scores K/N².")


#: Where a help text lists the registered attribution methods (:class:`RegistryHelpFormatter` fills it in).
METHODS_PLACEHOLDER = "{registered methods}"


class RegistryHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter that lists :func:`focus_core.explainers.available_explainers` where a help says
    :data:`METHODS_PLACEHOLDER`; the registry (and torch) is imported only when a help page is printed."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and METHODS_PLACEHOLDER in text:
            from focus_core.explainers import available_explainers

            text = text.replace(METHODS_PLACEHOLDER, ", ".join(available_explainers()))
        return text


def add_method_options(parser: argparse.ArgumentParser, default: str = "gradcam", dest: str = "methods") -> None:
    option(parser, "--method", dest=dest, action="append", type=parse_method, metavar="NAME[:KEY=VALUE,...]",
           field=dest,
           help=f"Attribution method, repeatable: {METHODS_PLACEHOLDER}; parameters after a colon, e.g. "
           f"smoothgrad:n_samples=10 or lime:n_samples=500,mask=slic (default {default}).")


def method_specs(namespace: argparse.Namespace, dest: str = "methods") -> list[dict[str, Any]] | None:
    return getattr(namespace, dest, None)


def add_run_options(parser: argparse.ArgumentParser, chunks: bool = True) -> None:
    group = parser.add_argument_group("execution")
    option(group, "--device", metavar="DEV", field="run.device",
           help="cpu, cuda, cuda:N or mps (default cpu); a machine without it fails at once.")
    option(group, "--batch-size", type=int, metavar="N", field="run.batch_size",
           help="Mosaics per forward/backward pass (default 64).")
    if chunks:
        option(group, "--chunk-size", type=int, metavar="N", field="run.chunk_size",
               help="Mosaics per task: the unit of retry and of one transaction (default 512).")
        option(group, "--retries", type=int, metavar="N", field="run.retries", help="Retries of a failed chunk (default 2).")
        option(group, "--max-chunks", type=int, metavar="N", field="run.max_chunks",
               help="Run at most N chunks now; the same command later runs the rest.")


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
