"""``focus evaluate``: attribution methods on one checkpoint, scored with the Focus metric."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "Evaluate attribution methods on one checkpoint with the Focus metric."
DESCRIPTION = (
    "Evaluate attribution methods on one checkpoint: build (or reuse) a seeded mosaic set, explain every mosaic "
    "in batches and record one row per mosaic. Running the same command again finishes missing chunks only."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.run import cmd_evaluate
    from flows.params import EvaluateParams

    opts.use_model(p, EvaluateParams)
    opts.add_params_file_option(p)
    opts.add_model_options(p, weights_help="Weights (a state_dict) of the checkpoint to explain: a path or a URL "
                           "such as s3://bucket/w.pt, read with the worker's credentials (required).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p, "gradcam")
    group = p.add_argument_group("randomization")
    opts.option(group, "--randomization", field="randomization.kind")
    opts.option(group, "--stage", field="randomization.stage", metavar="N")
    opts.option(group, "--layer", field="randomization.layer", metavar="MODULE")
    opts.option(group, "--randomization-seed", field="randomization.seed", metavar="N")
    opts.add_run_options(p)
    opts.option(p, "--figures-dir", field="figures_dir", convert=opts.absolute, metavar="DIR")
    opts.option(p, "--model-reliance", field="model_reliance", action="store_const", const=True)
    opts.option(p, "--reliance-baseline", field="reliance_baseline")
    opts.option(p, "--disconnected", field="disconnected", action="store_const", const=True)
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_evaluate)
