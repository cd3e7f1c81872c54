from __future__ import annotations

import asyncio

from flagops.controller.queue import WorkQueue


async def test_key_added_while_queued_is_processed_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("a")
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_key_added_while_processing_is_processed_again_after() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # a new event arrives mid-reconcile
    assert queue._ready.empty(), "not handed to a second worker while the first holds it"
    queue.done(key)
    assert await asyncio.wait_for(queue.get(), 1) == "a"


async def test_add_after_keeps_the_earliest_wakeup() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 30)
    queue.add_after("a", 0.01)
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.close()


async def test_failures_back_off_exponentially_and_reset_on_success() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=3)
    assert [queue.failed("a") for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    queue.succeeded("a")
    assert queue.failed("a") == 0.5
    queue.close()
