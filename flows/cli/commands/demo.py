"""``focus demo``: the end-to-end run on the bundled digits (:mod:`flows.cli.demo`)."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "A short end-to-end run on the bundled digits: train, evaluate, randomize, report."
DESCRIPTION = (
    "Train the small digits CNN with Focus per epoch, evaluate GradCAM, LRP, SmoothGrad, Integrated Gradients and "
    "the random control on test mosaics, run the full and cascading randomization tests, record everything in "
    "the store (default: the SQLite file focus.db here) and build the HTML report. A few minutes on a CPU; "
    "running it again reuses what is recorded and says so."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli import demo

    demo.add_demo_options(p)
    opts.add_database_option(p)
    p.set_defaults(handler=demo.run_demo)
