"""``focus sweep``: the paper's grid, checkpoints x methods, one evaluate run per cell."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "The paper's grid (checkpoints x methods), one evaluate run per cell."
DESCRIPTION = (
    "Evaluate every checkpoint with every method, one evaluate run per cell. With --deployment the cells are "
    "fanned out onto the work pool (run_deployment), so several GPU workers share the grid; the workers then "
    "write to their own FOCUS_DATABASE_URL. Without it the cells run here, one after the other."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.run import cmd_sweep
    from flows.params import SweepParams

    opts.use_model(p, SweepParams)
    opts.add_params_file_option(p)
    p.add_argument(
        "--checkpoint", dest="checkpoints", action="append", metavar="[ARCH=]WEIGHTS",
        help="A checkpoint of the grid, repeatable: a weights file or URL, optionally prefixed by its architecture "
        "(e.g. resnet18=/models/r18.pt or resnet18=s3://models/r18.pt; default architecture: --arch).",
    )
    p.add_argument("--arch", metavar="NAME", help="Architecture of checkpoints given without one (default digits_cnn).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p, None)
    opts.add_run_options(p)
    opts.option(p, "--deployment", field="deployment", metavar="FLOW/NAME")
    opts.option(p, "--timeout", field="timeout_seconds", metavar="SECONDS")
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_sweep)
