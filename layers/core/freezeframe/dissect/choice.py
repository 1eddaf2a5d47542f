"""Which dissection engine runs: the compiled core (``freezeframe_native``) or the Python reference.

Apart from ``dissect.native`` because that module loads pyarrow: a process that decides before pyarrow loads (the
`freezeframe dissect` command, which then goes without numpy, ``config.forgo_numpy``) asks here.
"""

from __future__ import annotations

import logging
from functools import cache
from types import ModuleType

from freezeframe.contracts.config import dissect_engine
from freezeframe.contracts.errors import ConfigError

logger = logging.getLogger(__name__)


@cache
def _load() -> tuple[ModuleType | None, str | None]:
    """(the extension module, None); (None, None) when it is not installed; (None, why) when it is installed but does
    not load here (built for another glibc or architecture, a missing library), which is logged once as a warning:
    the Python engine then dissects, about 12 times slower."""
    try:
        import freezeframe_native  # noqa: PLC0415 - optional compiled module
    except ModuleNotFoundError as exc:
        if exc.name == "freezeframe_native":
            return None, None
        reason = str(exc)
    except ImportError as exc:
        reason = str(exc)
    else:
        return freezeframe_native, None
    logger.warning("the compiled dissection core is installed but does not load; the Python engine dissects instead",
                   extra={"reason": reason})
    return None, reason


def extension() -> ModuleType | None:
    """The extension module, or None when it is not built or does not load."""
    return _load()[0]


def selected() -> str:
    """'native' or 'python', per FREEZEFRAME_DISSECT_ENGINE (default: native when the extension imports)."""
    wanted = dissect_engine()
    if wanted == "python":
        return "python"
    if extension() is None:
        if wanted == "native":
            reason = _load()[1]
            if reason is not None:
                raise ConfigError(f"FREEZEFRAME_DISSECT_ENGINE=native, but the freezeframe_native extension does not "
                                  f"load: {reason}")
            raise ConfigError("FREEZEFRAME_DISSECT_ENGINE=native, but the freezeframe_native extension is not "
                              "installed (pip install -e . builds it)")
        return "python"
    return "native"
