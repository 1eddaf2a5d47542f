"""The one way the core runs work side by side: store requests in a bounded thread pool (`Tasks`, `run_all`), and
CPU-bound work such as a node's dissection time chunks in a pool of processes (`run_in_processes`). In both, every
task submitted runs to its end, and the first error (in submission order) is raised once all of them have finished.

That is what each call site's `with ThreadPoolExecutor(...) as pool: list(pool.map(...))` did before: `map` submits
every item at once, the error of the first failing item surfaces when its result is reached, and leaving the `with`
block waits for the rest. A freeze that fails part-way has therefore still attempted every lock it listed, so a retry
finds as much evidence locked as possible. The one exception is a function's own deadline (`contracts.deadline`):
once it has passed, the tasks not yet started are dropped, so that the function can record its failure before Lambda
stops it; the tasks under way still finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, TypeVar

from freezeframe.contracts.errors import DeadlineExceeded

T = TypeVar("T")
A = TypeVar("A")

LOCK_LIMIT = 16  # retention, legal-hold, node-state and copy requests in flight per pool


class Tasks:
    """A bounded pool of threads for store requests, used as a context manager: leaving it waits for every task (when
    the block ends in `DeadlineExceeded`, for the tasks under way only: those not started are dropped)."""

    def __init__(self, limit: int = LOCK_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._pool = ThreadPoolExecutor(max_workers=limit)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def __enter__(self) -> Tasks:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._pool.shutdown(wait=True, cancel_futures=isinstance(error, DeadlineExceeded))


def gather(futures: Iterable[Future[T]]) -> list[T]:
    """Waits for every future, then returns their results in order, or raises the first one's error (in order)."""
    pending = list(futures)
    wait(pending)
    for future in pending:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in pending]


def run_all(fn: Callable[[A], T], items: Iterable[A], limit: int = LOCK_LIMIT) -> list[T]:
    """`fn` over every item, at most `limit` at a time; results in the items' order (see `gather` for errors)."""
    with Tasks(limit) as tasks:
        futures = [tasks.submit(fn, item) for item in items]
    return gather(futures)


def run_in_processes(fn: Callable[[A], T], items: Iterable[A], limit: int | None = None) -> list[T]:
    """`fn` over every item in a pool of at most `limit` processes (by default one per item, no more than the CPUs);
    results and errors as `run_all`, so `fn` and the items must pickle. With one item or a limit of 1 the items run
    here, one after the other, and the first error stops them (nothing runs beside it that would need waiting for)."""
    jobs = list(items)
    if not jobs:
        return []
    if limit == 1 or len(jobs) == 1:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=limit or min(len(jobs), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
    return gather(futures)
