"""``focus audit``: the nightly audit of every checkpoint marked for it, with its regression event."""

from __future__ import annotations

import argparse

from flows.cli import params as opts

__all__ = ["HELP", "DESCRIPTION", "add_options"]

HELP = "Audit every checkpoint marked for auditing; emit focus.audit.regressed when Focus falls."
DESCRIPTION = (
    "Evaluate the standard methods on each audited checkpoint's audit mosaic set, compare with its previous "
    "audit and with its lineage's reference on the same mosaics (paired test) and emit the Prefect event "
    "focus.audit.regressed when median Focus falls by more than the threshold, significantly at alpha (an "
    "automation in deployments/automations.yaml turns it into a notification)."
)


def add_options(p: argparse.ArgumentParser) -> None:
    from flows.cli.run import cmd_audit
    from flows.params import STANDARD_METHODS, AuditParams

    opts.use_model(p, AuditParams)
    opts.add_params_file_option(p)
    opts.add_method_options(p, ", ".join(STANDARD_METHODS))
    opts.add_dataset_options(p)
    opts.add_mosaic_options(p)
    opts.option(p, "--threshold", field="threshold", metavar="DROP")
    opts.option(p, "--alpha", field="alpha", metavar="P")
    opts.option(p, "--alert-on", field="alert_on", dest="alert_on", action="append", choices=("previous", "reference"))
    opts.option(p, "--checkpoint", field="checkpoints", dest="checkpoints", action="append", metavar="SHA256")
    opts.option(p, "--lineage", field="lineages", dest="lineages", action="append", metavar="NAME")
    opts.option(p, "--follow-alias", field="follow_alias", metavar="ALIAS")
    opts.option(p, "--name", field="name")
    opts.add_run_options(p)
    opts.add_database_option(p, field="run.database_url")
    p.set_defaults(handler=cmd_audit)
