"""A Lambda function's own deadline, short of its timeout.

When Lambda's timeout ends an invocation, the process is stopped where it stands: no ``except`` runs. A freeze that
ran out of time on every attempt therefore left its incident with no terminal state. It stayed "freezing" for good,
and the failure alarm (`lifecycle.record_failed_attempt`) never fired. ``deadline(context, what)`` raises
`DeadlineExceeded` in the handler's thread a margin before the timeout (a tenth of the time left, at most 15 s). The
handler then records the failed attempt, and the last attempt records the terminal state, as for any other error.

The timer is SIGALRM (``setitimer``): Lambda runs a Python handler in the process's main thread, and Python runs a
signal handler there between bytecodes, also while that thread waits on a lock or a future. Outside the main thread
(the local gateway's worker threads) or with a timer already running, there is no guard and the block runs as before.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from freezeframe.contracts.errors import DeadlineExceeded

logger = logging.getLogger(__name__)

MARGIN_S = 15.0  # at most: time for the calls under way to return and for the failure to be recorded
MARGIN_SHARE = 0.1  # of the time left, for short timeouts


@contextmanager
def deadline(context: Any, what: str) -> Iterator[None]:
    """Raises `DeadlineExceeded` inside the block once the Lambda ``context`` has less than the margin left."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        logger.warning("a timer is already running: no deadline for this invocation", extra={"work": what})
        yield
        return
    left_s = remaining() / 1000
    margin_s = min(MARGIN_S, left_s * MARGIN_SHARE)
    budget_s = left_s - margin_s
    if budget_s <= 0:
        raise DeadlineExceeded(f"{what} not started: {left_s:.1f} s left before the function's timeout")

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise DeadlineExceeded(f"{what} did not finish in {budget_s:.1f} s; stopped {margin_s:.1f} s before the "
                               "function's timeout")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
