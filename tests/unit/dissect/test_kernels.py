"""dissect.kernels: Arrow's kernels by name, from the private module pyarrow.compute re-exports, or from pyarrow.compute
when a pyarrow moves them."""

from __future__ import annotations

import importlib

import pyarrow as pa
import pyarrow._compute
import pyarrow.compute as pc
import pytest

from freezeframe.dissect import kernels


def test_kernels_fall_back_to_pyarrow_compute_when_the_private_module_lacks_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pyarrow._compute, "call_function")
    try:
        fallback = importlib.reload(kernels)
        assert fallback.call_function is pc.call_function
        values = pa.array([3, 1, 2], pa.int32())
        assert fallback.call("add", values, pa.scalar(1, pa.int32())).to_pylist() == [4, 2, 3]
        assert fallback.cast(values, pa.int64()).type == pa.int64()
    finally:
        monkeypatch.undo()
        importlib.reload(kernels)
    assert kernels.call_function is pyarrow._compute.call_function
