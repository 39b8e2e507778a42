"""focus_core.hashing: the one canonical-JSON sha256 behind every identity (checked against hashlib by hand)."""

from __future__ import annotations

import hashlib
import math

import pytest

from focus_core.errors import FocusError
from focus_core.hashing import canonical_hash, canonical_json


def test_the_canonical_form_is_sorted_compact_ascii_json() -> None:
    value = {"z": [1, 2.5, None, True], "a": {"y": "é", "b": -0.0}}
    text = '{"a":{"b":-0.0,"y":"\\u00e9"},"z":[1,2.5,null,true]}'
    assert canonical_json(value) == text
    assert canonical_hash(value) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert canonical_hash({"a": value["a"], "z": value["z"]}) == canonical_hash(value)


def test_the_two_legacy_formats_are_what_json_dumps_writes() -> None:
    value = {"b": 1, "a": [1, {"d": None, "c": 0.1}]}
    assert canonical_json(value, compact=False) == '{"a": [1, {"c": 0.1, "d": null}], "b": 1}'
    assert canonical_json(value, sort_keys=False) == '{"b":1,"a":[1,{"d":null,"c":0.1}]}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, {"x": -math.inf}, {"x": object()}, [{1, 2}]])
def test_what_json_cannot_write_is_one_sentence_not_a_hash(bad: object) -> None:
    with pytest.raises(FocusError, match=r"cannot be hashed .*: pass only dicts with string keys"):
        canonical_hash(bad)
