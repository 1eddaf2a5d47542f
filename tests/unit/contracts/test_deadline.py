"""freezeframe.contracts.deadline: the block is stopped a margin before the Lambda context's time runs out, the
previous SIGALRM handler and an idle timer are restored, and outside the main thread nothing is armed. The waits are
bounded by WAIT_S, far beyond the budgets, so a slow machine can only make these tests slower, never wrong."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import pytest

from freezeframe.contracts.deadline import MARGIN_S, MARGIN_SHARE, deadline
from freezeframe.contracts.errors import DeadlineExceeded

WAIT_S = 10.0
# pytest-timeout's default method arms SIGALRM for every test, which `deadline` leaves alone (the last test): these
# tests watch the suite with a thread instead.
pytestmark = pytest.mark.timeout(600, method="thread")


@dataclass
class Context:
    left_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


def test_a_block_that_outlives_its_budget_is_stopped_short_of_the_timeout_while_it_waits() -> None:
    before = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"^the freeze did not finish in 0\.9 s; stopped 0\.1 s before"), \
            deadline(Context(1000), "the freeze"):
        threading.Event().wait(WAIT_S)  # a wait on a lock, as a freeze waits on its futures
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < WAIT_S
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_block_that_finishes_in_time_leaves_no_timer_behind() -> None:
    before = signal.getsignal(signal.SIGALRM)
    with deadline(Context(60_000), "the freeze"):
        assert signal.getitimer(signal.ITIMER_REAL)[0] == pytest.approx(60 * (1 - MARGIN_SHARE), abs=0.05)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before
    time.sleep(0.01)  # nothing fires afterwards


def test_the_margin_is_a_share_of_a_short_timeout_and_at_most_the_cap_of_a_long_one() -> None:
    with deadline(Context(2_000), "short"):
        assert signal.getitimer(signal.ITIMER_REAL)[0] == pytest.approx(2 * (1 - MARGIN_SHARE), abs=0.05)
    with deadline(Context(300_000), "long"):
        assert signal.getitimer(signal.ITIMER_REAL)[0] == pytest.approx(300 - MARGIN_S, abs=0.05)


def test_no_time_left_stops_before_the_block_runs() -> None:
    ran = []
    with pytest.raises(DeadlineExceeded, match="not started"), deadline(Context(0), "the freeze"):
        ran.append(True)
    assert ran == []


def test_outside_the_main_thread_or_without_a_context_nothing_is_armed() -> None:
    seen: list[tuple[float, float]] = []

    def worker() -> None:
        with deadline(Context(100), "in a thread"):
            time.sleep(0.2)  # past the budget: no error, no timer
            seen.append(signal.getitimer(signal.ITIMER_REAL))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(WAIT_S)
    assert seen == [(0.0, 0.0)]
    with deadline(object(), "no context"):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_timer_already_running_is_left_alone() -> None:
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, WAIT_S)
        with deadline(Context(100), "the freeze"):
            assert signal.getitimer(signal.ITIMER_REAL)[0] > 1  # the caller's timer, not ours
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired == []
