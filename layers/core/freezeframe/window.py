"""Freeze-window math: pure functions of the alert's start, the clock and the configured margins."""

from __future__ import annotations

from datetime import datetime, timedelta

from freezeframe.errors import WindowError

MAX_WINDOW = timedelta(days=2)


def freeze_window(alert_start: datetime, now: datetime, lookback_s: int, lookahead_s: int) -> tuple[datetime, datetime]:
    """[alert start - look-back, max(now, alert start) + look-ahead].

    An alert that has been firing for longer than MAX_WINDOW (a re-notification days later) keeps the most recent
    MAX_WINDOW: the raw bucket's lifecycle has expired older unlocked segments by then anyway.
    """
    if lookback_s < 0 or lookahead_s < 0:
        raise WindowError(f"look-back and look-ahead must not be negative ({lookback_s}, {lookahead_s})")
    end = max(now, alert_start) + timedelta(seconds=lookahead_s)
    start = max(alert_start - timedelta(seconds=lookback_s), end - MAX_WINDOW)
    return check_window(start, end)


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if end <= start:
        raise WindowError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    if end - start > MAX_WINDOW:
        raise WindowError(f"window of {end - start} is longer than the maximum {MAX_WINDOW}")
    return start, end
