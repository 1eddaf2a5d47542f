"""Which engine dissects (freezeframe.dissect.choice) when the compiled core is missing or installed but broken.

The compiled core was built for glibc 2.34, and its symbol versions say it would not load on the python3.11 Lambda
runtime (Amazon Linux 2, glibc 2.26): the import would fail with "GLIBC_2.34 not found", the default engine would
fall back to Python without a word, and the dissect function would run about 12 times slower than it should. A core
that is installed but does not load is now a warning with the loader's reason, and with
FREEZEFRAME_DISSECT_ENGINE=native an error that gives it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from freezeframe.contracts.errors import ConfigError
from freezeframe.dissect import choice

LOADER_ERROR = ("/opt/python/freezeframe_native/freezeframe_native.abi3.so: /lib64/libc.so.6: version `GLIBC_2.34' "
                "not found (required by /opt/python/freezeframe_native/freezeframe_native.abi3.so)")


@pytest.fixture
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """choice decides anew (the real extension, once imported, stays in sys.modules: PyO3 initialises a module once
    per process)."""
    monkeypatch.delenv("FREEZEFRAME_DISSECT_ENGINE", raising=False)
    choice._load.cache_clear()
    yield
    choice._load.cache_clear()


def _installed_but_broken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: str) -> None:
    """A freezeframe_native package ahead on sys.path whose import fails as the dynamic loader's does; the real one
    (package and extension submodule) is out of sys.modules until the test ends."""
    for name in [n for n in sys.modules if n == "freezeframe_native" or n.startswith("freezeframe_native.")]:
        monkeypatch.delitem(sys.modules, name)
    package = tmp_path / "site" / "freezeframe_native"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


def test_a_core_that_does_not_load_is_a_warning_with_the_reason_and_python_dissects(
        fresh_choice: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _installed_but_broken(monkeypatch, tmp_path, f"ImportError({LOADER_ERROR!r})")
    with caplog.at_level(logging.WARNING, logger="freezeframe.dissect.choice"):
        assert choice.extension() is None
        assert choice.selected() == "python"
        assert choice.extension() is None
    warnings = [r for r in caplog.records if r.name == "freezeframe.dissect.choice"]
    assert len(warnings) == 1  # once per process, not once per segment
    assert warnings[0].levelno == logging.WARNING
    assert "does not load" in warnings[0].getMessage()
    assert warnings[0].reason == LOADER_ERROR  # type: ignore[attr-defined]


def test_a_core_that_does_not_load_is_an_error_naming_the_reason_when_native_is_asked_for(
        fresh_choice: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _installed_but_broken(monkeypatch, tmp_path, f"ImportError({LOADER_ERROR!r})")
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "native")
    with pytest.raises(ConfigError) as raised:
        choice.selected()
    assert str(raised.value) == f"FREEZEFRAME_DISSECT_ENGINE=native, but the freezeframe_native extension does not " \
                                f"load: {LOADER_ERROR}"


def test_a_dependency_missing_inside_the_core_is_not_taken_for_a_core_not_installed(
        fresh_choice: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _installed_but_broken(monkeypatch, tmp_path, "ModuleNotFoundError(\"No module named 'gone'\", name='gone')")
    with caplog.at_level(logging.WARNING, logger="freezeframe.dissect.choice"):
        assert choice.extension() is None
    assert [r.reason for r in caplog.records] == ["No module named 'gone'"]  # type: ignore[attr-defined]


def test_a_core_not_installed_is_silent_under_auto_and_an_error_under_native(
        fresh_choice: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "freezeframe_native", None)  # import raises ModuleNotFoundError for it
    with caplog.at_level(logging.DEBUG, logger="freezeframe.dissect.choice"):
        assert choice.selected() == "python"
    assert [r for r in caplog.records if r.name == "freezeframe.dissect.choice"] == []
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "native")
    with pytest.raises(ConfigError, match="extension is not installed"):
        choice.selected()


def test_the_built_core_loads_and_is_the_default(fresh_choice: None) -> None:
    module = choice.extension()
    assert module is not None and module.__name__ == "freezeframe_native"
    assert choice.selected() == "native"


@pytest.mark.parametrize("engines, expected", [(["native", "native"], "native"), (["python"], "python"),
                                               (["native", "python", "native"], "mixed"), ([], ""),
                                               (["", "native"], "native")])
def test_a_result_made_of_chunks_names_their_engine_or_mixed(engines: list[str], expected: str) -> None:
    from freezeframe.dissect.engine import mixed_engine

    assert mixed_engine(engines) == expected
