"""layers/native/mirror.py: the copy of the compiled core's crate that cargo builds, so a fresh clone of unchanged
sources is not recompiled. cargo takes a path crate for stale when a file's mtime is newer than its last build, so the
mirror must keep an unchanged file's mtime and give a changed file a new one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "layers" / "native" / "mirror.py"
OLD_NS = 1_000_000_000_000_000_000  # 2001: older than any build


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("native_mirror", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _crate(root: Path) -> Path:
    for relative, body in {"Cargo.toml": "[package]\n", "Cargo.lock": "# lock\n", "src/lib.rs": "mod a;\n",
                           "src/a.rs": "fn a() {}\n", "target/release/libx.so": "built", "fuzz/Cargo.toml": "fuzz",
                           ".git": "hidden", "src/.a.rs.swp": "editor"}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return root


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_mirror_holds_the_crates_sources_and_nothing_else(tmp_path: Path) -> None:
    mirror = _module()
    crate = _crate(tmp_path / "crate")
    changed = mirror.sync(crate, tmp_path / "mirror")
    assert _files(tmp_path / "mirror") == {"Cargo.toml", "Cargo.lock", "src/lib.rs", "src/a.rs"}
    assert sorted(changed) == ["Cargo.lock", "Cargo.toml", "src/a.rs", "src/lib.rs"]
    assert (tmp_path / "mirror" / "src" / "a.rs").read_text() == "fn a() {}\n"


def test_unchanged_files_keep_their_mtime_and_changed_ones_get_a_new_one(tmp_path: Path) -> None:
    mirror = _module()
    crate = _crate(tmp_path / "crate")
    into = tmp_path / "mirror"
    mirror.sync(crate, into)
    for path in into.rglob("*"):
        os.utime(path, ns=(OLD_NS, OLD_NS))
    # A fresh clone: every file of the crate is new, one has new content, one is gone and one was added.
    for path in crate.rglob("*"):
        path.touch()
    (crate / "src" / "lib.rs").write_text("mod a;\nmod b;\n")
    (crate / "src" / "b.rs").write_text("fn b() {}\n")
    (crate / "Cargo.lock").unlink()

    changed = mirror.sync(crate, into)

    assert sorted(changed) == ["Cargo.lock", "src/b.rs", "src/lib.rs"]
    assert _files(into) == {"Cargo.toml", "src/lib.rs", "src/a.rs", "src/b.rs"}
    assert (into / "Cargo.toml").stat().st_mtime_ns == OLD_NS
    assert (into / "src" / "a.rs").stat().st_mtime_ns == OLD_NS
    assert (into / "src" / "lib.rs").stat().st_mtime_ns > OLD_NS
    assert (into / "src" / "lib.rs").read_text() == "mod a;\nmod b;\n"


def test_the_command_runs_in_the_mirror_and_its_exit_status_is_returned(tmp_path: Path) -> None:
    into = tmp_path / "mirror"
    command = [sys.executable, str(SCRIPT), str(into), "--", sys.executable, "-c",
               "import sys; print(open(sys.argv[1]).read().splitlines()[0]); sys.exit(7)", "{}/Cargo.toml"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 7, result.stderr
    assert result.stdout.strip() == '[package]'
    assert (into / "src" / "lib.rs").read_bytes() == (SCRIPT.parent / "src" / "lib.rs").read_bytes()
    assert not (into / "target").exists() and not (into / "fuzz").exists()


@pytest.mark.parametrize("arguments", [[], ["somewhere"], ["somewhere", "true"]])
def test_a_call_without_a_command_is_a_usage_error(tmp_path: Path, arguments: list[str]) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 2 and "usage: python mirror.py INTO -- COMMAND" in result.stderr
    assert not (tmp_path / "somewhere").exists()


def test_a_mirror_inside_the_crate_is_refused() -> None:
    inside = SCRIPT.parent / "target" / "mirror"
    result = subprocess.run([sys.executable, str(SCRIPT), str(inside), "--", "true"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "inside the crate it mirrors" in result.stderr
    assert not inside.exists()
