"""``focus randomize``: the randomization sanity check (a random copy, cascading and independent layers)."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "The randomization sanity check: Focus of a checkpoint, its random copy and cascading randomization."
DESCRIPTION = (
    "Evaluate a trained checkpoint, its fully random copy and cascading (and independent) layer randomization "
    "from the top layer down (Adebayo et al.), one evaluation per stage: a faithful method falls to about 0.5."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.run import cmd_randomize
    from flows.params import RandomizationParams

    opts.use_model(p, RandomizationParams)
    opts.add_params_file_option(p)
    opts.add_model_options(p, weights_help="Weights file of the trained checkpoint (required).")
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.add_method_options(p, "gradcam")
    opts.option(p, "--kind", field="kinds", dest="kinds", action="append")
    opts.option(p, "--max-stages", field="max_stages", metavar="N")
    seeds = p.add_mutually_exclusive_group()
    opts.option(seeds, "--seed", field="seed", metavar="N")
    opts.option(seeds, "--seeds", field="seeds", type=opts.seed_list, metavar="N,N,...")
    opts.add_run_options(p)
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_randomize)
