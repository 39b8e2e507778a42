"""``focus checkpoint``: register checkpoints trained elsewhere into lineages, and list them.

``focus checkpoint register`` hashes the weights once and loads them once into the architecture
(:mod:`flows.weights.lineages`); a second registration of the same weights changes nothing and says so.
``focus checkpoint list`` prints the lineages' checkpoints, by lineage and version. ``focus checkpoint pin``
pins the lineage's reference, the version every audit also compares the newest one with (default: the first
audited version): ``--version V``, ``--alias champion`` (an MLflow alias of a lineage from the registry, resolved
at each audit) or ``--first`` (back to the default).

``--weights`` also takes an MLflow Model Registry URI, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``:
the version is resolved through ``MLFLOW_TRACKING_URI`` and the checkpoint records its pinned URI
``models:/<name>/<version>`` (see :mod:`flows.weights.lineages`).

Examples
--------
::

    focus checkpoint register --lineage resnet18-prod --weights s3://models/r18-2026-12-01.pt \\
        --arch resnet18 --num-classes 10 --in-channels 3 --audit
    focus checkpoint register --lineage resnet18-prod --weights models:/resnet18-prod@champion \\
        --arch resnet18 --num-classes 10 --audit
    focus checkpoint list --lineage resnet18-prod --format json
    focus checkpoint pin --lineage resnet18-prod --version 3
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flows.cli import params as opts
from flows.cli.errors import UsageError, info

__all__ = ["add_checkpoint_command", "cmd_checkpoint_list", "cmd_checkpoint_pin", "cmd_checkpoint_register",
           "weights_location"]


def weights_location(text: str) -> str:
    """A URL (``scheme://...``) or a registry URI (``models:/...``) as given, a local path made absolute.

    Examples
    --------
    >>> weights_location("s3://models/r18.pt"), weights_location("models:/r18@champion")
    ('s3://models/r18.pt', 'models:/r18@champion')
    """
    return opts.absolute(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 3, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def add_checkpoint_command(commands: Any, add_command: Any, parser_class: type) -> None:
    """``focus checkpoint register``, ``list`` and ``pin`` under ``commands``."""
    p = add_command(commands, "checkpoint", "Register checkpoints trained elsewhere into lineages, and list them.",
                    "A lineage is a named, ordered series of checkpoints of one model (one architecture, class count "
                    "and input channels), e.g. resnet18-prod; the nightly audit follows its newest checkpoint.")
    actions = p.add_subparsers(dest="checkpoint_command", metavar="ACTION", parser_class=parser_class)
    actions.required = True

    q = add_command(actions, "register", "Record a checkpoint trained elsewhere as the next version of a lineage.",
                    "Record a weights file (a state_dict; a local path or an fsspec URL such as s3://...) as a "
                    "version of a lineage: the hash is computed once, the weights are loaded once to check that "
                    "they fit the architecture, and the lineage is created on its first checkpoint. Registering "
                    "the same weights again changes nothing and says so. An MLflow Model Registry URI "
                    "(models:/NAME@ALIAS or models:/NAME/VERSION, with MLFLOW_TRACKING_URI set) is resolved to the "
                    "version it names now, and that pinned models:/NAME/VERSION is recorded.")
    q.add_argument("--lineage", required=True, metavar="NAME", type=_name, help="The lineage, e.g. resnet18-prod.")
    q.add_argument("--weights", required=True, metavar="PATH_OR_URL", type=weights_location,
                   help="The weights file: a local path, an fsspec URL (s3://, gs://, az://, file://) or an MLflow "
                   "registry URI (models:/NAME@ALIAS, models:/NAME/VERSION).")
    q.add_argument("--arch", required=True, metavar="ARCH",
                   help="Architecture: digits_cnn, alexnet, vgg16, resnet18, another torchvision name, or "
                   "'package.module:factory'.")
    q.add_argument("--num-classes", required=True, type=_positive, metavar="N", help="Number of classes.")
    q.add_argument("--in-channels", type=_positive, default=3, metavar="C", help="Input channels (default 3).")
    q.add_argument("--version", type=_positive, metavar="V",
                   help="Its version in the lineage (default: one more than the highest there).")
    q.add_argument("--label", metavar="TEXT", help="A human name for this checkpoint.")
    q.add_argument("--audit", action=argparse.BooleanOptionalAction, default=None,
                   help="Mark (or unmark) the lineage for the nightly audit (default: leave it as it is).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_checkpoint_register)

    q = add_command(actions, "list", "List the checkpoints of the lineages, by lineage and version.")
    q.add_argument("--lineage", metavar="NAME", help="Only this lineage (default: every lineage).")
    q.add_argument("--format", choices=("table", "json"), default="table", help="Output format (default table).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_checkpoint_list)

    q = add_command(actions, "pin", "Pin the reference of a lineage: the version every audit also compares with.",
                    "The nightly audit compares a lineage's newest checkpoint with the previous audited one and with "
                    "the lineage's reference: by default its first audited version. Pin another version (e.g. once "
                    "a regression is understood and accepted), an MLflow alias of a lineage from the registry "
                    "(resolved at each audit), or go back to the first audited version with --first.")
    q.add_argument("--lineage", required=True, metavar="NAME", help="The lineage, e.g. resnet18-prod.")
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=_positive, metavar="V", help="Pin this version of the lineage.")
    which.add_argument("--alias", metavar="ALIAS", type=_alias, help="Pin the version this MLflow alias (e.g. "
                       "champion) names at each audit.")
    which.add_argument("--first", action="store_true", help="Unpin: the first audited version is the reference.")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_checkpoint_pin)


def _name(text: str) -> str:
    from flows.params import check_name

    try:
        return check_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _alias(text: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", text):
        raise argparse.ArgumentTypeError(f"expected an MLflow alias such as champion (letters, digits, '_' and "
                                         f"'-'), got {text!r}")
    return text


def _check_local_weights(location: str) -> None:
    from pathlib import Path

    from flows.weights.weight_store import is_url

    if is_url(location):  # read (and checked) through the cache or the registry by the registration
        return
    path = Path(location)
    if path.is_dir():
        raise UsageError(f"The weights file {location!r} is a directory, not a file: pass the state_dict file.")
    if not path.is_file():
        raise UsageError(f"The weights file {location!r} does not exist: pass a local file or an fsspec URL.")


def cmd_checkpoint_register(args: argparse.Namespace) -> dict[str, Any]:
    from flows.weights import lineages
    from flows.worker import store
    from flows.params import ModelSpec

    _check_local_weights(args.weights)
    model = ModelSpec(architecture=args.arch, weights=args.weights, num_classes=args.num_classes,
                      in_channels=args.in_channels, label=args.label)
    engine = store.engine_for(opts.database_url(args))
    entry = lineages.register_into_lineage(engine, args.lineage, model, version=args.version, audit=args.audit)
    found = f" ({entry['weights']})" if entry["weights"] != args.weights else ""  # the registry version found
    if entry["added"]:
        print(f"Registered checkpoint {entry['sha256'][:12]}{found} as version {entry['version']} of lineage "
              f"{args.lineage!r}.")
    else:
        print(f"Checkpoint {entry['sha256'][:12]}{found} is already version {entry['version']} of lineage "
              f"{args.lineage!r}: nothing to do.")
    if args.label:
        _say_when_label_kept(engine, args.lineage, entry, args.label)
    return entry


def _say_when_label_kept(engine: Any, lineage: str, entry: dict[str, Any], label: str) -> None:
    """One sentence when ``--label`` did not become the checkpoint's label (the store kept its first record's)."""
    import db
    from flows.results.names import names_of

    frame = db.lineage_checkpoints(engine, lineage)
    labels = frame[frame["checkpoint_id"] == entry["checkpoint_id"]]["label"].tolist()
    kept = labels[0] if labels and isinstance(labels[0], str) else None
    if kept == label:
        return
    name = names_of(engine, {int(entry["checkpoint_id"]): kept})[int(entry["checkpoint_id"])]
    recorded = f"as {name!r}" if name else "without a label"
    info(f"--label {label!r} was not recorded: these weights were recorded before ({recorded}), and a checkpoint "
         "keeps the name its first record gave it (see `focus checkpoint list`).")


def cmd_checkpoint_list(args: argparse.Namespace) -> None:
    import db
    from flows.worker import store
    from flows.cli import result_text

    from db.engine import require_existing

    require_existing(opts.database_url(args))  # a read never creates the store (a misspelt SQLite path)
    frame = db.lineage_checkpoints(store.engine_for(opts.database_url(args)), args.lineage)
    if args.lineage is not None and frame.empty:
        raise UsageError(f"No lineage named {args.lineage!r}: see `focus checkpoint list` for the lineages there are.")
    if args.format == "json":
        sys.stdout.write(result_text.records_json(frame))
        return
    if frame.empty:
        info("no lineage recorded yet: register a checkpoint with `focus checkpoint register --lineage NAME ...`")
        return
    # a column with some values missing would show NaN (and epochs as 1.0): missing shows as '-'
    shown = frame.assign(sha256=frame["sha256"].str[:12], epoch=frame["epoch"].astype("Int64").astype(str),
                         label=frame["label"].astype(object).where(frame["label"].notna(), None))
    shown = shown.astype({"epoch": object, "label": object}).replace({"<NA>": "-"}).fillna("-")[
        ["lineage", "version", "sha256", "architecture", "num_classes", "in_channels", "label", "epoch",
         "registered_at", "lineage_audit", "path"]
    ]
    sys.stdout.write(shown.rename(columns={"lineage_audit": "audit"}).to_string(index=False) + "\n")


def cmd_checkpoint_pin(args: argparse.Namespace) -> None:
    import db
    from flows.weights.lineages import registered_model_of
    from flows.worker import store

    engine = store.engine_for(opts.database_url(args))
    lineage = db.find_lineage(engine, args.lineage)
    if lineage is None:
        raise UsageError(f"No lineage named {args.lineage!r}: see `focus checkpoint list` for the lineages there are.")
    if args.alias and registered_model_of(lineage["source"]) is None:
        raise UsageError(f"Lineage {args.lineage!r} does not come from the MLflow Model Registry (its source is "
                         f"{lineage['source']!r}): pin one of its versions with --version.")
    try:
        db.pin_lineage_reference(engine, args.lineage, version=args.version, alias=args.alias)
    except db.StoreError as error:
        raise UsageError(str(error)) from None
    if args.version is not None:
        print(f"The reference of lineage {args.lineage!r} is version {args.version}: each audit compares the newest "
              "version with it.")
    elif args.alias:
        print(f"The reference of lineage {args.lineage!r} is the version MLflow alias {args.alias!r} names at each "
              "audit.")
    else:
        print(f"The reference of lineage {args.lineage!r} is its first audited version.")
