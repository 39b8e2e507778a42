"""How many mosaics one request may ask for: ``per_class x target classes``, at most :data:`MAX_MOSAICS` by default.

A mosaic set is registered whole (one row per mosaic) before its first result is computed, so a typo such as
``per_class=100000`` would register a million mosaics first. :func:`check_request_size` refuses such a request
in one sentence; a caller that means it raises the limit. This module imports only the standard library, so the
flow parameters and the command line take the default from it without loading torch.

Examples
--------
>>> check_request_size(20, 10)
200
>>> check_request_size(100_000, 10)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
focus_core.errors.FocusError: The request asks for 1,000,000 mosaics (100,000 per class x 10 classes), more than ...
"""

from __future__ import annotations

from focus_core.errors import FocusError

__all__ = ["MAX_MOSAICS", "check_request_size"]

#: The most mosaics one request may ask for unless its caller raises the limit (a hundred mosaics per class of
#: ImageNet-1k fits; the paper's sets are far smaller).
MAX_MOSAICS = 100_000


def check_request_size(per_class: int, classes: int, limit: int = MAX_MOSAICS) -> int:
    """The number of mosaics a request asks for, ``per_class x classes``.

    Raises
    ------
    FocusError
        When that number exceeds ``limit``: one sentence that says how to lower it or raise the limit.
    """
    total = int(per_class) * int(classes)
    if total > limit:
        raise FocusError(
            f"The request asks for {total:,} mosaics ({int(per_class):,} per class x {int(classes)} classes), more "
            f"than the limit of {int(limit):,}: lower the mosaics per class or list fewer classes, or raise the limit "
            "(focus: --max-mosaics N; a flow's parameters: run.max_mosaics)."
        )
    return total
