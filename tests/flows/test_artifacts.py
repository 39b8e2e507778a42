"""Artifact keys derived from any name are valid Prefect keys, so a name never fails a finished run."""

from __future__ import annotations

import pytest
from prefect.artifacts import Artifact

from flows.results.artifacts import MAX_KEY_LENGTH, artifact_key

NAMES = ["digits", "x y", "My_Run.v2", "../../tmp/x", "Zürich", "n" * 500, "--", "a\nb"]


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_a_key_from_any_name_is_a_valid_prefect_key(name):
    key = artifact_key("training", name, "0f1819c26eca")
    Artifact(type="table", key=key, data=[])  # Prefect's own check: lowercase letters, digits and dashes
    assert key.startswith("training-") and len(key) <= MAX_KEY_LENGTH and "--" not in key
    if len(name) < 50:
        assert key.endswith("-0f1819c26eca")


def test_long_names_keep_distinct_keys():
    assert artifact_key("training", "n" * 500 + "a") != artifact_key("training", "n" * 500 + "b")


def test_nothing_to_make_a_key_of_is_refused():
    with pytest.raises(ValueError, match="No artifact key"):
        artifact_key("--", " ")
