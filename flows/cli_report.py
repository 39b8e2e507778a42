"""Old import path of :func:`flows.report.build_report`: import from :mod:`flows.report` instead."""

from flows.report import build_report

__all__ = ["build_report"]
