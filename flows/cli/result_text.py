"""``focus results`` as text: the columns that matter first, fitted to 100 columns, integers as integers, blanks.

Each table has an order of importance (:data:`COLUMNS`); the text format shows them under short headers
and leaves out the least important ones that would not fit in ``width`` characters (a note on stderr
names them). ``--wide`` shows every column at full length; ``--columns a,b`` picks columns by their
store names in every format. Whole numbers (ids, ``n``, a cascading ``stage``) stay integers, missing
values are blank, other numbers have three decimals.

What a user wrote (a label, a class or checkpoint name) is shown, never obeyed: the text format prints control
characters (C0, DEL, C1: ESC among them) as ``\\xNN`` escapes (:func:`visible`), JSON escapes them itself, and
CSV text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return) get a leading ``'`` (:func:`csv_safe`, OWASP's rule); numbers stay numbers.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"evaluation_id": [1, 2], "method": ["gradcam", "lrp"], "stage": [None, 2.0],
...                       "median_focus": [0.91234, float("nan")]})
>>> print(render(integers(frame), "evaluations").text)
id  method   stage  median
 1  gradcam          0.912
 2  lrp          2
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "HEADERS", "Rendered", "csv_safe", "integers", "records_json", "render", "select", "visible"]

#: Control characters (C0, DEL, C1): a terminal obeys them (ESC starts an escape sequence that can clear it).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: First characters that make a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: The columns of each table, most important first (the rest of a table's columns follow in store order).
COLUMNS: dict[str, tuple[str, ...]] = {
    "evaluations": ("evaluation_id", "method", "randomization", "stage", "n", "n_defined", "median_focus",
                    "checkpoint_name", "architecture", "dataset", "tile_size", "resize", "q1_focus",
                    "q3_focus", "mosaic_accuracy", "status", "checkpoint_id", "checkpoint_label", "mosaic_set_id", "audit_run_id"),
    "compare": ("evaluation_id", "checkpoint_id", "method", "n", "n_defined", "median_focus", "checkpoint_name",
                "architecture", "dataset", "tile_size", "resize", "q1_focus", "q3_focus", "mosaic_accuracy", "status",
                "checkpoint_label", "audit_run_id"),
    "epochs": ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_mean_class_accuracy",
               "focus_median", "focus_mean", "seconds", "training_run_id", "training_run_name"),
    "regressions": ("audit_run_id", "checkpoint_id", "method_name", "median_focus", "previous_median_focus",
                    "median_change", "p_value", "n_paired", "checkpoint_label", "audit_started_at"),
    "checkpoints": ("checkpoint_id", "label", "architecture", "training_run_id", "epoch", "sha256", "path"),
}
#: Short headers of the text format (the store's names elsewhere).
HEADERS = {
    "evaluation_id": "id", "checkpoint_id": "checkpoint", "checkpoint_label": "label", "checkpoint_name": "checkpoint",
    "tile_size": "tile", "architecture": "arch",
    "randomization": "randomized", "n_defined": "defined", "median_focus": "median", "q1_focus": "q1",
    "q3_focus": "q3", "mosaic_accuracy": "accuracy", "mosaic_set_id": "mosaic set", "audit_run_id": "audit",
    "train_loss": "train loss", "train_accuracy": "train acc", "val_loss": "val loss", "val_accuracy": "val acc",
    "val_mean_class_accuracy": "val class acc", "focus_median": "Focus median", "focus_mean": "Focus mean",
    "training_run_id": "run", "training_run_name": "run name", "method_name": "method",
    "previous_median_focus": "previous", "median_change": "change", "p_value": "p", "n_paired": "paired",
    "audit_started_at": "started", "median_model_focus": "model Focus", "median_explainer_gap": "gap",
}
#: Whole-number columns: shown without decimals even when a missing value made pandas store them as floats.
INTEGER_COLUMNS = frozenset({"stage", "seed", "n", "n_defined", "n_paired", "epoch", "num_classes", "in_channels",
                             "tile_size", "resize"})
#: Text cells longer than this are cut (``--wide`` shows them whole).
MAX_CELL = 40


@dataclass
class Rendered:
    text: str
    left_out: list[str] = field(default_factory=list)


def integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Ids, counts and stages as nullable integers (pandas made them floats or objects around a missing value)."""
    frame = frame.copy()
    for column in frame.columns:
        if column in INTEGER_COLUMNS or column.endswith("_id"):
            values = pd.to_numeric(frame[column], errors="coerce")
            if frame[column].notna().sum() == values.notna().sum() and (values.dropna() % 1 == 0).all():
                frame[column] = values.astype("Int64")
    return frame


def records_json(frame: pd.DataFrame) -> str:
    """Return the rows of ``frame`` as an indented JSON array: dates in ISO 8601, missing values as null.

    Paths and URLs stay as written (pandas' own ``to_json`` escapes every ``/`` as ``\\/``).

    Examples
    --------
    >>> print(records_json(pd.DataFrame({"path": ["s3://models/a.pt"], "epoch": [None]})), end="")
    [
      {
        "path": "s3://models/a.pt",
        "epoch": null
      }
    ]
    """
    return json.dumps(json.loads(frame.to_json(orient="records", date_format="iso")), indent=2) + "\n"


def select(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The ``--columns`` of ``frame`` in that order; an unknown name raises ``ValueError`` listing the known ones."""
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise ValueError(f"no column {', '.join(map(repr, unknown))}: choose from {', '.join(frame.columns)}")
    return frame[columns]


def visible(text: str) -> str:
    r"""``text`` with every control character written as a ``\xNN`` escape, so a terminal shows it, never obeys it.

    Examples
    --------
    >>> visible("cat\x1b[2J\x9b")
    'cat\\x1b[2J\\x9b'
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``'`` before every text cell a spreadsheet would run as a formula; numbers untouched.

    Examples
    --------
    >>> csv_safe(pd.DataFrame({"label": ["=HYPERLINK(1)", "ok", "-2+3"], "n": [-1, 2, 3]})).to_dict("list")
    {'label': ["'=HYPERLINK(1)", 'ok', "'-2+3"], 'n': [-1, 2, 3]}
    """
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column].dtype):
            safe[column] = safe[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return safe


def _cell(value: Any, wide: bool) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    text = visible(str(value))
    return text if wide or len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


#: Columns shown right after ``median_focus`` when some row has a value (a model-reliance pass), else in store order.
RELIANCE_COLUMNS = ("median_model_focus", "median_explainer_gap")


def _ordered(frame: pd.DataFrame, table: str) -> list[str]:
    first = [c for c in COLUMNS.get(table, ()) if c in frame.columns]
    measured = [c for c in RELIANCE_COLUMNS if c in frame.columns and frame[c].notna().any()]
    if measured and "median_focus" in first:
        at = first.index("median_focus") + 1
        first[at:at] = measured
    return first + [c for c in frame.columns if c not in first]


def render(frame: pd.DataFrame, table: str, width: int | None = 100, wide: bool = False,
           chosen: bool = False) -> Rendered:
    """The text table; without ``wide`` or ``chosen`` columns the least important ones are left out to fit ``width``."""
    columns = list(frame.columns) if chosen else _ordered(frame, table)
    numeric = {c for c in columns if pd.api.types.is_numeric_dtype(frame[c].dtype)}
    cells = {c: [_cell(v, wide) for v in frame[c].tolist()] for c in columns}
    headers = {c: c if wide or chosen else HEADERS.get(c, c) for c in columns}
    widths = {c: max([len(headers[c])] + [len(v) for v in cells[c]]) for c in columns}
    shown = list(columns)
    if not (wide or chosen) and width:
        while len(shown) > 1 and sum(widths[c] for c in shown) + 2 * (len(shown) - 1) > width:
            shown.pop()
    left_out = [c for c in columns if c not in shown]

    def line(values: dict[str, str]) -> str:
        return "  ".join(values[c].rjust(widths[c]) if c in numeric else values[c].ljust(widths[c])
                         for c in shown).rstrip()

    rows = [line(headers)] + [line({c: cells[c][i] for c in shown}) for i in range(len(frame))]
    return Rendered("\n".join(rows), left_out)
