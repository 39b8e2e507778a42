"""``focus train``: train a classifier with the paper's recipe, Focus measured after every epoch."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "Train a classifier with the paper's recipe, recording loss, accuracy and Focus every epoch."
DESCRIPTION = (
    "Train a classifier with the paper's recipe (rotation, random crop, flip, AMSGrad), checkpointing every "
    "epoch (an interrupted run resumes) and measuring Focus on a fixed validation mosaic set after each epoch."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.run import cmd_train
    from flows.cli.fields import field_default
    from flows.params import TrainParams

    opts.use_model(p, TrainParams)
    opts.add_params_file_option(p)
    opts.option(p, "--name", field="name")
    opts.add_model_options(p, weights_help="Weights to start from (default: a fresh initialisation).")
    opts.add_dataset_options(p)
    opts.option(p, "--epochs", field="epochs", metavar="N")
    opts.option(p, "--batch-size", field="batch_size", metavar="N")
    opts.option(p, "--lr", field="lr", metavar="RATE")
    opts.option(p, "--rotation", field="rotation", metavar="DEG")
    opts.option(p, "--crop-padding", field="crop_padding", metavar="PX")
    opts.option(p, "--hflip", field="hflip", action=argparse.BooleanOptionalAction, default=None)
    opts.option(p, "--cutmix", field="cutmix", metavar="ALPHA")
    opts.option(p, "--retries", field="run.retries", metavar="N")
    opts.option(p, "--figures-dir", field="figures_dir", convert=opts.absolute, metavar="DIR")
    opts.option(p, "--seed", field="seed", metavar="N")
    opts.option(p, "--focus-per-class", field="focus_mosaics.per_class", metavar="N",
                help="Validation mosaics per class Focus is measured on after every epoch (default "
                f"{field_default(TrainParams, 'focus_mosaics.per_class')}).")
    opts.add_grid_options(p, "focus_mosaics")
    opts.add_method_options(p, "gradcam", dest="focus_methods")
    opts.option(p, "--checkpoint-dir", field="checkpoint_dir", convert=opts.absolute, metavar="DIR_OR_URL")
    opts.option(p, "--device", field="run.device", metavar="DEV")
    opts.option(p, "--audit", field="audit", action="store_true", default=None)
    opts.option(p, "--lineage", field="lineage", metavar="NAME")
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_train)
