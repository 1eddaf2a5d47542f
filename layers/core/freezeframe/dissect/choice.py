"""Which dissection engine runs: the compiled core (``freezeframe_native``) or the Python reference.

Apart from ``dissect.native`` because that module loads pyarrow: a process that decides before pyarrow loads (the
`freezeframe dissect` command, which then goes without numpy, ``config.forgo_numpy``) asks here.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

from freezeframe.contracts.config import dissect_engine
from freezeframe.contracts.errors import ConfigError


@cache
def extension() -> ModuleType | None:
    """The extension module, or None when it is not built."""
    try:
        import freezeframe_native  # noqa: PLC0415 - optional compiled module
    except ImportError:
        return None
    return freezeframe_native


def selected() -> str:
    """'native' or 'python', per FREEZEFRAME_DISSECT_ENGINE (default: native when the extension imports)."""
    wanted = dissect_engine()
    if wanted == "python":
        return "python"
    if extension() is None:
        if wanted == "native":
            raise ConfigError("FREEZEFRAME_DISSECT_ENGINE=native, but the freezeframe_native extension is not "
                              "installed (pip install -e . builds it)")
        return "python"
    return "native"
