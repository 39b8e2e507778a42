"""The ``focus`` argument parser: one sub-command per flow, the results, the report and the schema.

Each sub-command's parser names its handler (``handler``), which :func:`flows.cli.main` calls
with the parsed options.

Examples
--------
>>> args = build_parser().parse_args(["results", "compare", "--mosaic-set", "3"])
>>> args.table, args.mosaic_set, args.handler.__name__
('compare', 3, 'cmd_results')
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from flows.cli import demo
from flows.cli.checkpoint import add_checkpoint_command
from flows.cli import params as opts
from flows.cli.run import (
    cmd_audit,
    cmd_evaluate,
    cmd_randomize,
    cmd_sweep,
    cmd_train,
)
from flows.cli.errors import EXIT_USAGE, PROG
from flows.cli.summary import add_output_options
from flows.cli.results import (
    RESULT_TABLES,
    cmd_db_current,
    cmd_db_upgrade,
    cmd_report,
    cmd_results,
)

__all__ = ["CommandParser", "SUMMARY_COMMANDS", "add_command", "build_parser"]

#: The commands that end with a summary or ``--format json`` (:mod:`flows.cli.summary`).
SUMMARY_COMMANDS = ("train", "evaluate", "randomize", "sweep", "audit")


class CommandParser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block), exit status 2, no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 3` must not quietly mean `--epochs 3`
        kwargs.setdefault("formatter_class", opts.RegistryHelpFormatter)  # --method's help lists the registry
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_command(subparsers: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name, help=help, description=description or help
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback when something fails.")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``focus`` parser with one sub-command per flow and the store's commands."""
    parser = CommandParser(
        prog=PROG,
        description="Measure how faithful feature-attribution explanations are with the Focus metric. "
        "Without PREFECT_API_URL the flows run in Prefect's local mode; with it, on that server.",
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback when something fails.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    commands.required = True

    # train
    p = add_command(
        commands,
        "train",
        "Train a classifier with the paper's recipe, recording loss, accuracy and Focus every epoch.",
        "Train a classifier with the paper's recipe (rotation, random crop, flip, AMSGrad), checkpointing every "
        "epoch (an interrupted run resumes) and measuring Focus on a fixed validation mosaic set after each epoch.",
    )
    opts.add_params_file_option(p)
    opts.option(p, "--name", field="name",
                help="Name of the training run and of its checkpoint folder (default digits): letters, "
                "digits, '.', '_' and '-', starting with a letter or digit.")
    opts.add_model_options(p, weights_help="Weights to start from (default: a fresh initialisation).")
    opts.add_dataset_options(p)
    opts.option(p, "--epochs", field="epochs", type=int, metavar="N", help="Number of epochs (default 10).")
    opts.option(p, "--batch-size", field="batch_size", type=int, metavar="N",
                help="Images per optimisation step (default 64).")
    opts.option(p, "--lr", field="lr", type=float, metavar="RATE",
                help="AMSGrad learning rate (default 0.003 for digits, 0.001 else).")
    opts.option(p, "--rotation", field="rotation", type=float, metavar="DEG",
                help="Maximum random rotation (default 15 for digits, the paper's 30 else).")
    opts.option(p, "--crop-padding", field="crop_padding", type=int, metavar="PX",
                help="Random-crop padding (default 2 for digits, 1/8 of the tile else).")
    opts.option(p, "--hflip", field="hflip", action=argparse.BooleanOptionalAction, default=None,
                help="Random horizontal flips (default off for digits, on else).")
    opts.option(p, "--cutmix", field="cutmix", type=float, metavar="ALPHA",
                help="CutMix with this Beta alpha (1.0 in the DeiT/timm ViT recipe; default 0: off).")
    opts.option(p, "--retries", field="retries", type=int, metavar="N",
                help="Retries of a failed epoch, from the last checkpoint (default 1).")
    opts.option(p, "--figures-dir", field="figures_dir", convert=opts.absolute, metavar="DIR",
                help="Write the training-curve figures here (default: none).")
    opts.option(p, "--seed", field="seed", type=int, metavar="N",
                help="Seed of initialisation, augmentation and batch order (default 0).")
    opts.option(p, "--focus-per-class", field="focus_mosaics",
                convert=lambda n: {"split": "val", "per_class": n}, type=int, metavar="N",
                help="Validation mosaics per class for Focus per epoch (default 10).")
    opts.add_grid_options(p, "focus_mosaics")
    opts.add_method_options(p, default="gradcam", dest="focus_methods")
    opts.option(p, "--checkpoint-dir", field="checkpoint_dir", convert=opts.absolute, metavar="DIR_OR_URL",
                help="Where per-epoch checkpoints go: a folder or a URL such as s3://bucket/prefix, written with the "
                "worker's own credentials (default checkpoints).")
    opts.option(p, "--device", field="device", metavar="DEV",
                help="cpu, cuda, cuda:N or mps (default cpu); a machine without it fails at once.")
    opts.option(p, "--audit", field="audit", action="store_true", default=None,
                help="Mark the final checkpoint (with --lineage: the lineage) for the nightly audit.")
    opts.option(p, "--lineage", field="lineage", metavar="NAME",
                help="Register every epoch's checkpoint into this lineage, in epoch order (created when new).")
    opts.add_database_option(p, field="database_url")
    p.set_defaults(handler=cmd_train)

    # evaluate
    p = add_command(
        commands,
        "evaluate",
        "Evaluate attribution methods on one checkpoint with the Focus metric.",
        "Evaluate attribution methods on one checkpoint: build (or reuse) a seeded mosaic set, explain every mosaic "
        "in batches and record one row per mosaic. Running the same command again finishes missing chunks only.",
    )
    opts.add_params_file_option(p)
    opts.add_model_options(p, weights_help="Weights (a state_dict) of the checkpoint to explain: a path or a URL "
                           "such as s3://bucket/w.pt, read with the worker's credentials (required).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p)
    group = p.add_argument_group("randomization")
    opts.option(group, "--randomization", field="randomization.kind",
                choices=("none", "full", "cascading", "independent"),
                help="Evaluate a randomized copy of the checkpoint instead (default none).")
    opts.option(group, "--stage", field="randomization.stage", type=int, metavar="N",
                help="Cascading: re-initialise layers 0..N from the top.")
    opts.option(group, "--layer", field="randomization.layer", metavar="MODULE",
                help="Independent: the one layer to re-initialise.")
    opts.option(group, "--randomization-seed", field="randomization.seed", type=int, metavar="N",
                help="Seed of the re-initialisation (default 0).")
    opts.add_run_options(p)
    opts.option(p, "--figures-dir", field="figures_dir", convert=opts.absolute, metavar="DIR",
                help="Write the summary figures here (default: none).")
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_evaluate)

    # randomize
    p = add_command(
        commands,
        "randomize",
        "The randomization sanity check: Focus of a checkpoint, its random copy and cascading randomization.",
        "Evaluate a trained checkpoint, its fully random copy and cascading (and independent) layer randomization "
        "from the top layer down (Adebayo et al.), one evaluation per stage: a faithful method falls to about 0.5.",
    )
    opts.add_params_file_option(p)
    opts.add_model_options(p, weights_help="Weights file of the trained checkpoint (required).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p)
    opts.option(p, "--kind", field="kinds", dest="kinds", action="append", choices=("full", "cascading", "independent"),
                help="Randomization to run, repeatable (default: full and cascading).")
    opts.option(p, "--max-stages", field="max_stages", type=int, metavar="N",
                help="Cascading/independent: only the top N layers (default all).")
    seeds = p.add_mutually_exclusive_group()
    opts.option(seeds, "--seed", field="seed", type=int, metavar="N",
                help="Seed of the re-initialisations (default 0).")
    opts.option(seeds, "--seeds", field="seeds", type=opts.seed_list, metavar="N,N,...",
                help="Several seeds, each its own evaluations, e.g. 0,1,2,3,4: the report shows their mean and spread.")
    opts.add_run_options(p)
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_randomize)

    # sweep
    p = add_command(
        commands,
        "sweep",
        "The paper's grid (checkpoints x methods), one evaluate run per cell.",
        "Evaluate every checkpoint with every method, one evaluate run per cell. With --deployment the cells are "
        "fanned out onto the work pool (run_deployment), so several GPU workers share the grid; the workers then "
        "write to their own FOCUS_DATABASE_URL. Without it the cells run here, one after the other.",
    )
    opts.add_params_file_option(p)
    p.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        metavar="[ARCH=]WEIGHTS",
        help="A checkpoint of the grid, repeatable: a weights file or URL, optionally prefixed by its architecture "
        "(e.g. resnet18=/models/r18.pt or resnet18=s3://models/r18.pt; default architecture: --arch).",
    )
    p.add_argument("--arch", metavar="NAME", help="Architecture of checkpoints given without one (default digits_cnn).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p)
    opts.add_run_options(p)
    opts.option(p, "--deployment", field="deployment", metavar="FLOW/NAME",
                help="The evaluate deployment to fan out to, e.g. evaluate/evaluate (default: run here).")
    opts.option(p, "--timeout", field="timeout_seconds", type=float, metavar="SECONDS",
                help="Give up waiting for a cell after this long (default: wait).")
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_sweep)

    # audit
    p = add_command(
        commands,
        "audit",
        "Audit every checkpoint marked for auditing; emit focus.audit.regressed when Focus falls.",
        "Evaluate the standard methods on each audited checkpoint's audit mosaic set, compare with its previous "
        "audit and with its lineage's reference on the same mosaics (paired test) and emit the Prefect event "
        "focus.audit.regressed when median Focus falls by more than the threshold, significantly at alpha (an "
        "automation in deployments/automations.yaml turns it into a notification).",
    )
    opts.add_params_file_option(p)
    opts.add_method_options(p, default="gradcam, lrp and smoothgrad")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.option(p, "--threshold", field="threshold", type=float, metavar="DROP",
                help="Regression: median Focus falls by more than this (default 0.05).")
    opts.option(p, "--alpha", field="alpha", type=float, metavar="P",
                help="Significance level of the paired test: a fall alerts only when significant (default 0.05).")
    opts.option(p, "--alert-on", field="alert_on", dest="alert_on", action="append", choices=("previous", "reference"),
                help="Emit focus.audit.regressed for this comparison, repeatable (default: previous and reference, "
                "the lineage's pinned or first audited version).")
    opts.option(
        p,
        "--checkpoint",
        field="checkpoints",
        dest="checkpoints",
        action="append",
        metavar="SHA256",
        help="Audit only this checkpoint (sha256 of its weights), repeatable (default: every one marked for auditing).",
    )
    opts.option(p, "--lineage", field="lineages", dest="lineages", action="append", metavar="NAME",
                help="Audit the newest checkpoint of this lineage, repeatable (default: every lineage marked for "
                "auditing, and every marked checkpoint outside a lineage).")
    opts.option(p, "--follow-alias", field="follow_alias", metavar="ALIAS",
                help="First register the version this MLflow alias (e.g. champion) points at now into each audited "
                "lineage from the registry (needs MLFLOW_TRACKING_URI; default: follow none).")
    opts.option(p, "--name", field="name",
                help="Name of the audit run, e.g. nightly (letters, digits, '.', '_' and '-').")
    opts.add_run_options(p)
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_audit)

    add_checkpoint_command(commands, add_command, CommandParser)

    # results
    p = add_command(
        commands,
        "results",
        "Print recorded results as a text table, CSV or JSON.",
        "Print a table from the store. evaluations: median, quartiles and mosaic accuracy of every evaluation; "
        "compare: the methods side by side on one mosaic set; epochs: loss, accuracy and Focus per epoch of a "
        "training run; regressions: audits whose median Focus fell, with the paired test; checkpoints: those "
        "marked for the nightly audit.",
    )
    p.add_argument(
        "table",
        nargs="?",
        default="evaluations",
        choices=RESULT_TABLES,
        help="Which table to print (default evaluations).",
    )
    p.add_argument("--evaluation", dest="evaluations", action="append", type=int, metavar="ID",
                   help="evaluations: only this evaluation, repeatable (default all).")
    p.add_argument("--mosaic-set", type=int, metavar="ID", help="evaluations, compare: only this mosaic set.")
    p.add_argument("--randomization", choices=("none", "full", "cascading", "independent"),
                   help="compare: the randomization kind to compare (default none).")
    p.add_argument("--training-run", metavar="ID|NAME",
                   help="epochs: the training run, by id or name (default: the latest; the demo's is demo-digits).")
    p.add_argument("--threshold", type=float, metavar="DROP", help="regressions: a fall in median Focus larger than this (default 0.05).")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="Output format (default text).")
    p.add_argument("--output", "-o", metavar="FILE", help="Write to this file instead of standard output.")
    p.add_argument("--limit", type=int, metavar="N", help="Print at most N rows (default all).")
    p.add_argument("--columns", metavar="A,B,...",
                   help="Only these columns, by their names in the store, in this order.")
    p.add_argument("--wide", action="store_true", help="text: every column, cells uncut (default: fit 100 columns).")
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_results)

    # report
    p = add_command(
        commands,
        "report",
        "Build a static HTML report (figures and tables) from the store.",
        "Build a static HTML page from the store: figures and summary tables of the selected evaluations.",
    )
    p.add_argument("--out", metavar="DIR", default="focus-report", help="Directory of the report (index.html and figures).")
    p.add_argument(
        "--evaluation", dest="evaluations", action="append", type=int, metavar="ID", help="Only this evaluation, repeatable (default all)."
    )
    opts.add_database_option(p)
    p.set_defaults(handler=cmd_report)

    # db
    p = add_command(commands, "db", "Create or migrate focus-audit's database schema.")
    db_commands = p.add_subparsers(dest="db_command", metavar="ACTION", parser_class=CommandParser)
    db_commands.required = True
    q = add_command(db_commands, "upgrade", "Create the schema, or migrate it to this version's head (idempotent).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_db_upgrade)
    q = add_command(db_commands, "current", "Print the schema revision of the database (and whether it is at head).")
    opts.add_database_option(q)
    q.set_defaults(handler=cmd_db_current)

    # demo
    p = add_command(
        commands,
        "demo",
        "A short end-to-end run on the bundled digits: train, evaluate, randomize, report.",
        "Train the small digits CNN with Focus per epoch, evaluate GradCAM, LRP, SmoothGrad, Integrated Gradients and "
        "the random control on test mosaics, run the full and cascading randomization tests, record everything in "
        "the store (default: the SQLite file focus.db here) and build the HTML report. A few minutes on a CPU; "
        "running it again reuses what is recorded and says so.",
    )
    demo.add_demo_options(p)
    opts.add_database_option(p)
    p.set_defaults(handler=demo.run_demo)

    # what the flow commands print: a summary, or --format json; Prefect's log lines with --verbose
    for name in SUMMARY_COMMANDS:
        add_output_options(commands.choices[name])
    return parser
