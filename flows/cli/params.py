"""Command-line options of the ``focus`` command, and how they become a flow's parameters.

Options map one to one onto fields of the pydantic models in :mod:`flows.params`. Only the
options a user gives are set; everything else keeps the model's default, or the value in a
``--params`` file (the JSON the Prefect UI shows for a flow run), which options override.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_model_options(parser)
>>> namespace = parser.parse_args(["--arch", "resnet18", "--weights", "/models/r18.pt"])
>>> model_fields(namespace)
{'architecture': 'resnet18', 'weights': '/models/r18.pt'}
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from focus_core.errors import FocusError

__all__ = [
    "add_dataset_options",
    "add_method_options",
    "add_model_options",
    "add_mosaic_options",
    "add_run_options",
    "dataset_fields",
    "deep_merge",
    "has_secret",
    "load_params_file",
    "method_specs",
    "model_fields",
    "mosaic_fields",
    "parse_method",
    "run_fields",
]

LAYOUTS = ("random", "top", "bottom", "left", "right", "diagonal", "antidiagonal")


def _given(namespace: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """``{field: value}`` for every option in ``mapping`` (field -> dest) that the user gave."""
    values = {field: getattr(namespace, dest, None) for field, dest in mapping.items()}
    return {field: value for field, value in values.items() if value is not None}


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices such as 0,3,7, got {text!r}") from None


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
    group.add_argument(
        "--data",
        "--dataset",
        dest="data",
        metavar="DIR",
        help="ImageFolder directory (one sub-folder per class; train/val/test sub-folders are used as splits). "
        "Default: the bundled digits.",
    )
    group.add_argument("--tile-size", type=int, metavar="PX", help="Tile side in pixels (default: 32 digits, 224 ImageFolder).")
    group.add_argument("--resize", type=int, metavar="PX", help="ImageFolder: shorter side before the centre crop (default 256).")
    group.add_argument("--data-seed", type=int, metavar="N", help="Seed of the stratified train/val/test split (default 0).")
    group.add_argument("--cache-dir", metavar="DIR", help="ImageFolder: cache decoded tiles here (default: no cache).")


def dataset_fields(namespace: argparse.Namespace) -> dict[str, Any]:
    fields = _given(
        namespace,
        {"root": "data", "tile_size": "tile_size", "resize": "resize", "seed": "data_seed", "cache_dir": "cache_dir"},
    )
    if "root" in fields:
        fields["kind"] = "image_folder"
        fields["root"] = str(Path(fields["root"]).expanduser().resolve())
    return fields


def add_model_options(parser: argparse.ArgumentParser, weights_help: str | None = None) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--arch",
        metavar="NAME",
        help="Architecture: digits_cnn, alexnet, vgg16, resnet18, another torchvision name, "
        "or your own 'package.module:factory' (default digits_cnn).",
    )
    group.add_argument("--weights", metavar="FILE", help=weights_help or "Weights file (a state_dict) of the checkpoint.")
    group.add_argument("--num-classes", type=int, metavar="N", help="Number of classes (default: the dataset's).")
    group.add_argument("--in-channels", type=int, metavar="N", help="Input channels (default: the dataset's).")
    group.add_argument(
        "--gradcam-layer", metavar="MODULE", help="Dotted module name for GradCAM when it cannot be inferred (e.g. features.11)."
    )
    group.add_argument("--label", metavar="TEXT", help="A human name for this checkpoint.")


def model_fields(namespace: argparse.Namespace) -> dict[str, Any]:
    fields = _given(
        namespace,
        {
            "architecture": "arch",
            "weights": "weights",
            "num_classes": "num_classes",
            "in_channels": "in_channels",
            "gradcam_layer": "gradcam_layer",
            "label": "label",
        },
    )
    if "weights" in fields:
        fields["weights"] = str(Path(fields["weights"]).expanduser().resolve())
    return fields


def add_mosaic_options(parser: argparse.ArgumentParser, default_split: str = "test", default_per_class: int = 20) -> None:
    group = parser.add_argument_group("mosaics")
    group.add_argument(
        "--split",
        choices=("val", "test"),
        help=f"Held-out split the tiles come from (default {default_split}; never train: the model saw it).",
    )
    group.add_argument("--per-class", type=int, metavar="N", help=f"Mosaics per target class (default {default_per_class}).")
    group.add_argument("--mosaic-seed", type=int, metavar="N", help="Seed of the mosaic set: same seed, same mosaics (default 0).")
    group.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="Where the two target tiles go: random per mosaic (default) or one fixed arrangement (positional test).",
    )
    group.add_argument("--classes", type=_int_list, metavar="I,J,...", help="Target classes only (default: every class).")


def mosaic_fields(namespace: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    return _given(
        namespace,
        {"split": "split", "per_class": "per_class", "seed": "mosaic_seed", "layout": "layout", "classes": "classes"},
    )


def add_method_options(parser: argparse.ArgumentParser, default: str = "gradcam", dest: str = "methods") -> None:
    parser.add_argument(
        "--method",
        dest=dest,
        action="append",
        type=parse_method,
        metavar="NAME[:KEY=VALUE,...]",
        help=f"Attribution method, repeatable: gradcam, gradcam++, lrp, smoothgrad, integrated_gradients, gradient, "
        f"input_x_gradient, random; parameters after a colon, e.g. smoothgrad:n_samples=10 (default {default}).",
    )


def method_specs(namespace: argparse.Namespace, dest: str = "methods") -> list[dict[str, Any]] | None:
    return getattr(namespace, dest, None)


def add_run_options(parser: argparse.ArgumentParser, chunks: bool = True) -> None:
    group = parser.add_argument_group("execution")
    group.add_argument(
        "--device", metavar="DEV", help="cpu, cuda, cuda:N or mps (default cpu); a machine without it fails at once."
    )
    group.add_argument("--batch-size", type=int, metavar="N", help="Mosaics per forward/backward pass (default 64).")
    if chunks:
        group.add_argument(
            "--chunk-size", type=int, metavar="N", help="Mosaics per task: the unit of retry and of one transaction (default 512)."
        )
        group.add_argument("--retries", type=int, metavar="N", help="Retries of a failed chunk (default 2).")
        group.add_argument(
            "--max-chunks", type=int, metavar="N", help="Run at most N chunks now; the same command later runs the rest."
        )


def run_fields(namespace: argparse.Namespace) -> dict[str, Any]:
    fields = _given(
        namespace,
        {
            "device": "device",
            "batch_size": "batch_size",
            "chunk_size": "chunk_size",
            "retries": "retries",
            "max_chunks": "max_chunks",
        },
    )
    url = getattr(namespace, "database_url", None)
    if url is not None and not has_secret(url):
        # Parameters are visible in the UI: a URL with a secret travels in FOCUS_DATABASE_URL only.
        fields["database_url"] = url
    return fields


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


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL of focus-audit's store, e.g. postgresql+psycopg://user@host/focus "
        "(default: $FOCUS_DATABASE_URL, else sqlite:///focus.db).",
    )


def database_url(namespace: argparse.Namespace) -> str | None:
    """``--database-url``, else ``$FOCUS_DATABASE_URL``, else ``None`` (the store's default)."""
    return getattr(namespace, "database_url", None) or os.environ.get("FOCUS_DATABASE_URL") or None
