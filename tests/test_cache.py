"""The run-wide cache of computed test values: computed once, read back as the same tensors, never unpickled code."""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.cache import once_per_session, session_folder


def test_a_value_is_computed_once_and_read_back_equal(tmp_path_factory):
    calls = []

    def compute():
        calls.append(1)
        return {"state": {"w": torch.arange(6.0).reshape(2, 3)}, "history": [{"epoch": 1, "loss": 0.5}], "s": 1.5}

    name = "cache-test-value"
    first = once_per_session(tmp_path_factory, name, compute)
    second = once_per_session(tmp_path_factory, name, compute)
    assert calls == [1]
    assert torch.equal(second["state"]["w"], first["state"]["w"])
    assert second["history"] == first["history"] and second["s"] == 1.5


class _Payload:
    def __reduce__(self):  # what a tampered cache file could carry: code run on load
        return (print, ("unpickled",))


def test_a_file_holding_pickled_objects_is_refused(tmp_path_factory):
    name = "cache-test-tampered"
    torch.save({"payload": _Payload()}, session_folder(tmp_path_factory) / f"{name}.pt", pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        once_per_session(tmp_path_factory, name, lambda: {})
