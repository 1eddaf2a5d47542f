"""The 10,000-input fuzz run of the dissection input (`make bench-fuzz-ci`), moved out of the unit tier, which keeps
a 500-input sample (tests/unit/dissect/test_fuzz_capture.py holds the machinery: bases, mutations, checks)."""

from __future__ import annotations

import time

from tests.unit.dissect.test_fuzz_capture import run

CI_INPUTS = 10_000


def test_ten_thousand_mutated_inputs() -> None:
    started = time.monotonic()
    # Building the tables costs more than reading and tracking a small input; every 4th input builds them.
    totals = run(CI_INPUTS, seed=20261121, tables_every=4)
    assert totals["inputs"] == CI_INPUTS
    # The corpus really exercises damage: most inputs carry a counted problem or lose their header.
    assert totals["with_problems"] + totals["rejected"] > CI_INPUTS // 3, totals
    print(f"fuzz: {totals} in {time.monotonic() - started:.1f} s")
