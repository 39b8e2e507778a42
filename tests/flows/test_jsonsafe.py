"""flows.results.artifacts: the one NaN-to-None, checked against the helpers each flow had before it (kept here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from flows.results.artifacts import json_safe, number

VALUES = [0.0, -0.0, 0.123456789, 1 / 3, 0.99995, -2.5, 7, np.float64(0.56789), np.float32(0.25), np.int64(3),
          math.nan, np.nan, np.float32("nan"), None, math.inf, -math.inf]


def _evaluate_rounded(value):  # flows/evaluate.py and flows/sweep.py before
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else round(value, 4)


def _randomization_round(value):
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _audit_float(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _train_plain(value):
    return None if np.isnan(value) else float(value)


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a == b and type(a) is type(b))


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_number_is_what_each_flow_wrote(value) -> None:
    assert _same(number(value, digits=4), _evaluate_rounded(value))
    assert _same(number(value, digits=4), _randomization_round(value))
    assert _same(number(value), _audit_float(value))
    if isinstance(value, (float, np.floating)):
        assert _same(number(value), _train_plain(value))


def test_number_of_what_is_not_a_number_is_none() -> None:
    assert number(pd.NA) is None and number("0.5x") is None and number([1.0]) is None


def test_json_safe_makes_any_result_valid_json() -> None:
    result = {"evaluations": [{"summary": {"median": np.float64("nan"), "q1": np.float64(0.25)}, "ci": (0.1, math.inf)}],
              "n": np.int64(4), "name": "gradcam", "ok": True, "none": None}
    safe = json_safe(result)
    assert safe == {"evaluations": [{"summary": {"median": None, "q1": 0.25}, "ci": [0.1, None]}],
                    "n": 4, "name": "gradcam", "ok": True, "none": None}
    json.dumps(safe, allow_nan=False, default=str)
