"""freezeframe.contracts.parallel: every task is attempted, results keep the items' order, the first error in submission
order
is raised once all tasks have finished, and no more than `limit` tasks run at once. Events and barriers order the
tasks; nothing here measures time. The timeouts only keep a broken helper from hanging the suite, except the bound
test's one-second barrier, whose breaking is the expected outcome (a slow machine can only make that test pass, never
fail it wrongly)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from freezeframe.contracts.errors import DeadlineExceeded
from freezeframe.contracts.parallel import LOCK_LIMIT, Tasks, gather, run_all, run_in_processes

CORE = Path(__file__).resolve().parents[3] / "layers" / "core" / "freezeframe"
WAIT_S = 10  # a guard against hanging on a broken helper, never reached when it works


def test_results_keep_the_items_order_even_when_tasks_finish_out_of_order() -> None:
    last_done = threading.Event()

    def task(item: int) -> int:
        if item == 0:  # the first item finishes only after the last one has
            assert last_done.wait(WAIT_S)
        if item == 4:
            last_done.set()
        return item * 10

    assert run_all(task, range(5), limit=5) == [0, 10, 20, 30, 40]


def test_every_task_is_attempted_and_the_first_error_in_submission_order_is_raised() -> None:
    attempted: list[int] = []
    guard = threading.Lock()
    later_failed = threading.Event()

    def task(item: int) -> int:
        with guard:
            attempted.append(item)
        if item == 3:
            # Fails after item 7 has failed: the error raised is still item 3's, the first in submission order.
            assert later_failed.wait(WAIT_S)
            raise ValueError("item 3")
        if item == 7:
            later_failed.set()
            raise KeyError("item 7")
        return item

    with pytest.raises(ValueError, match="item 3"):
        run_all(task, range(10), limit=LOCK_LIMIT)
    assert sorted(attempted) == list(range(10))


def test_a_failing_first_task_does_not_stop_the_rest() -> None:
    attempted: list[int] = []
    guard = threading.Lock()

    def task(item: int) -> None:
        with guard:
            attempted.append(item)
        if item == 0:
            raise RuntimeError("first")

    with pytest.raises(RuntimeError, match="first"):
        run_all(task, range(20), limit=2)  # 18 tasks are still queued when the first one fails
    assert sorted(attempted) == list(range(20))


def test_limit_tasks_run_side_by_side() -> None:
    limit = 3
    together = threading.Barrier(limit, timeout=WAIT_S)  # breaks unless `limit` tasks run side by side
    guard = threading.Lock()
    running = 0
    most = 0

    def task(_: int) -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        together.wait()
        with guard:
            running -= 1

    run_all(task, range(limit * 3), limit=limit)
    assert most == limit


def test_one_task_more_than_limit_never_runs_alongside_the_others() -> None:
    # A barrier for limit + 1 tasks: it could only open if one more than `limit` ran at once. With a bounded pool it
    # breaks after its timeout (the first `limit` tasks wait in vain, the rest find it broken); no task gets through.
    limit = 3
    crowd = threading.Barrier(limit + 1, timeout=1)
    outcomes: list[str] = []
    guard = threading.Lock()

    def task(_: int) -> None:
        try:
            crowd.wait()
            outcome = "ran alongside"
        except threading.BrokenBarrierError:
            outcome = "bounded"
        with guard:
            outcomes.append(outcome)

    run_all(task, range(limit * 3), limit=limit)
    assert outcomes == ["bounded"] * (limit * 3)


def test_leaving_tasks_waits_for_every_task_and_gather_reports_errors_in_order() -> None:
    release = threading.Event()
    with Tasks(2) as tasks:
        slow = tasks.submit(lambda: release.wait(WAIT_S) and "slow")
        broken = tasks.submit(lambda: 1 // 0)
        release.set()
    assert slow.done() and broken.done()
    with pytest.raises(ZeroDivisionError):
        gather([slow, broken])
    assert gather([slow]) == ["slow"]
    assert gather([]) == []


def test_gather_raises_only_once_every_future_is_done() -> None:
    failed: Future[int] = Future()
    failed.set_exception(OSError("first"))
    pending: Future[int] = Future()
    seen: list[tuple[str, bool]] = []  # the error raised, and whether `pending` was done when it was

    def collect() -> None:
        try:
            gather([failed, pending])
        except OSError as error:
            seen.append((str(error), pending.done()))

    waiter = threading.Thread(target=collect)
    waiter.start()
    pending.set_result(1)
    waiter.join(WAIT_S)
    assert seen == [("first", True)]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Tasks(0)


FREEZE_MODULES = ("freeze", "node_state", "consolidate", "k8s_context", "segment_index", "legal_hold", "holds")


@pytest.mark.parametrize("module", FREEZE_MODULES)
def test_the_freezes_modules_run_parallel_requests_only_through_the_helper(module: str) -> None:
    source = (CORE / "freeze" / f"{module}.py").read_text()  # every module of the freeze lives in freeze/
    assert "ThreadPoolExecutor" not in source and "threading.Thread(" not in source


def square_or_fail(item: int) -> int:
    """A process pool's task (module level, so it pickles): item 2 fails, item 5 fails too, later."""
    if item in (2, 5):
        raise ValueError(f"item {item}")
    return item * item


def test_processes_keep_the_items_order_and_raise_the_first_error_in_order() -> None:
    assert run_in_processes(square_or_fail, [0, 1, 3, 4], limit=2) == [0, 1, 9, 16]
    with pytest.raises(ValueError, match="item 2"):
        run_in_processes(square_or_fail, range(8), limit=2)
    assert run_in_processes(square_or_fail, [3], limit=4) == [9]  # one item runs here
    assert run_in_processes(square_or_fail, [], limit=2) == []


def test_a_nodes_dissection_job_runs_processes_only_through_the_helper() -> None:
    source = (CORE / "dissect" / "job.py").read_text()
    assert "ProcessPoolExecutor" not in source and "ThreadPoolExecutor" not in source
    assert "run_in_processes(" in source


def test_a_passed_deadline_drops_the_tasks_not_started_and_waits_for_those_under_way() -> None:
    started: list[int] = []
    first_running = threading.Event()
    release = threading.Event()

    def task(item: int) -> None:
        started.append(item)
        first_running.set()
        assert release.wait(WAIT_S)

    futures: list[Future[None]] = []

    def release_once_the_rest_is_dropped() -> None:  # the task under way ends only after the block has failed
        for _ in range(WAIT_S * 1000):
            if all(f.cancelled() for f in futures[1:]):
                break
            threading.Event().wait(0.001)
        release.set()

    with pytest.raises(DeadlineExceeded), Tasks(1) as tasks:
        futures = [tasks.submit(task, item) for item in range(5)]
        assert first_running.wait(WAIT_S)
        threading.Thread(target=release_once_the_rest_is_dropped).start()
        raise DeadlineExceeded("the freeze did not finish")
    assert started == [0]  # one worker: the four queued tasks never started
    assert futures[0].done() and futures[0].exception() is None  # the task under way was waited for
    assert all(f.cancelled() for f in futures[1:])


def test_any_other_error_in_the_block_still_runs_every_task() -> None:
    started: list[int] = []
    with pytest.raises(KeyError), Tasks(1) as tasks:
        for item in range(5):
            tasks.submit(started.append, item)
        raise KeyError("not a deadline")
    assert started == [0, 1, 2, 3, 4]
