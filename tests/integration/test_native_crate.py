"""The compiled core's own Rust tests (`cargo test`, layers/native/src): parts the Python tests reach only through
the engine or the export (export-pcap's k-way merge, HTTP's byte search and number parsing, the chunked row store)
are also tested where they are written. Built from a mirror of the crate (layers/native/mirror.py) into cargo's
shared cache, as the pip build is, so a CI run recompiles only the crate itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from freezeframe.contracts.config import cache_dir

CRATE = Path(__file__).resolve().parents[2] / "layers" / "native"
TIMEOUT_S = 900


def test_the_cores_rust_tests_pass() -> None:
    cargo = shutil.which("cargo")  # `make test` puts rustup's ~/.cargo/bin on PATH (the Makefile)
    if cargo is None:
        pytest.skip("needs cargo (the README's set-up installs it with rustup)")
    written = sum(len(re.findall(r"#\[test\]", path.read_text())) for path in (CRATE / "src").rglob("*.rs"))
    assert written >= 7  # merge.rs, http.rs and store.rs have tests of their own
    env = {"CARGO_TARGET_DIR": str(cache_dir() / "cargo-target"), **os.environ}
    # Without the python feature: the tests link no libpython. --release shares the dependencies the builds compiled.
    run = subprocess.run([sys.executable, str(CRATE / "mirror.py"), str(cache_dir() / "native-src" / "cargo-test"),
                          "--", cargo, "test", "--release", "--no-default-features", "--lib",
                          "--manifest-path", "{}/Cargo.toml"],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    results = re.findall(r"test result: ok\. (\d+) passed; 0 failed", log)
    assert results, log[-4000:]
    assert sum(int(n) for n in results) == written, log[-4000:]  # every test written ran, none was filtered out
