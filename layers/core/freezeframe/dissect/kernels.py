"""Arrow's compute kernels called by name, without importing ``pyarrow.compute``.

``pyarrow.compute`` builds a Python wrapper, with its docstring, for each of Arrow's several hundred compute functions
when it is imported: about 0.05 CPU s, several per cent of a local ``freezeframe dissect`` on the compiled core, for
the dozen kernels the one-observer views use. Those go through ``call``, Arrow's own dispatch by function name
(``call_function``, which ``pyarrow.compute``'s wrappers call in turn and which it re-exports), so the command never
loads the wrappers. Code that uses many kernels, or that runs where this cost does not matter, keeps
``pyarrow.compute``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

try:
    from pyarrow._compute import (  # the module pyarrow.compute re-exports these from (pyarrow 26, and for years)
        CastOptions,
        CumulativeOptions,
        SortOptions,
        call_function,
    )
except ImportError:  # a pyarrow that moved them: the public names, at the cost of loading the wrappers
    from pyarrow.compute import CastOptions, CumulativeOptions, SortOptions, call_function

__all__ = ["CastOptions", "CumulativeOptions", "SortOptions", "call", "cast"]


def call(name: str, *args: Any, options: Any = None) -> Any:
    """The Arrow compute function ``name`` on ``args`` (arrays, chunked arrays, tables or scalars), as
    ``pyarrow.compute.<name>(*args)`` would run it; Python values are not converted, pass ``pa.scalar``."""
    return call_function(name, list(args), options)


def cast(values: pa.Array | pa.ChunkedArray, type_: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """``values`` as ``type_`` with a safe cast (``values.cast(type_)``, which imports ``pyarrow.compute``); the values
    themselves when already of that type."""
    return values if values.type == type_ else call("cast", values, options=CastOptions.safe(type_))
