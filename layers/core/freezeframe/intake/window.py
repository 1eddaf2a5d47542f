"""Freeze-window math: pure functions of the alert's start, the clock and the configured margins.

Alert times are the sender's text, so the math must hold for any date Python can represent (0001-01-01 to
9999-12-31): it never adds to or subtracts from an alert time more than it has checked there is room for, and
refuses what no real alert carries (a start more than MAX_LEAD in the future) with a WindowError, a 400.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezeframe.contracts.errors import WindowError

MAX_WINDOW = timedelta(days=2)
# How far ahead of our clock an alert may start (clock skew between senders and us) or a manual window may end.
MAX_LEAD = timedelta(days=1)
# Segment keys and records count nanoseconds since the Unix epoch, so no window can hold anything before it.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def freeze_window(alert_start: datetime, now: datetime, lookback_s: int, lookahead_s: int) -> tuple[datetime, datetime]:
    """[alert start - look-back, max(now, alert start) + look-ahead].

    An alert that has been firing for longer than MAX_WINDOW (a re-notification days later) keeps the most recent
    MAX_WINDOW: the raw bucket's lifecycle has expired older unlocked segments by then anyway.
    """
    if lookback_s < 0 or lookahead_s < 0:
        raise WindowError(f"look-back and look-ahead must not be negative ({lookback_s}, {lookahead_s})")
    if alert_start - now > MAX_LEAD:
        raise WindowError(f"the alert starts at {alert_start.isoformat()}, more than {MAX_LEAD} after now "
                          f"({now.isoformat()}); a sender's clock is wrong")
    # Neither margin can matter beyond MAX_WINDOW: the start is clamped to end - MAX_WINDOW below.
    lookback = min(timedelta(seconds=lookback_s), MAX_WINDOW)
    end = max(now, alert_start) + min(timedelta(seconds=lookahead_s), MAX_WINDOW)
    earliest = end - MAX_WINDOW
    # max(alert_start - lookback, earliest) without computing alert_start - lookback, which would fall below
    # datetime.min for an alert of 0001-01-01.
    start = earliest if alert_start - earliest <= lookback else alert_start - lookback
    return check_window(start, end)


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if end <= start:
        raise WindowError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    if end - start > MAX_WINDOW:
        raise WindowError(f"window of {end - start} is longer than the maximum {MAX_WINDOW}")
    return start, end


def check_requested_window(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """An explicit window (the manual freeze): ordered, at most MAX_WINDOW long, after the epoch, and ending at most
    MAX_LEAD after now (a freeze holds its window open until the end, so a window years ahead would hold forever)."""
    start, end = check_window(start, end)
    if start < EPOCH:
        raise WindowError(f"window start {start.isoformat()} is before {EPOCH.isoformat()}: nothing can be in it")
    if end - now > MAX_LEAD:
        raise WindowError(f"window end {end.isoformat()} is more than {MAX_LEAD} after now ({now.isoformat()})")
    return start, end
