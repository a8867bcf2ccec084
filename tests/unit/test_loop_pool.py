"""LoopPool (the chief's broker pool): results and exceptions reach the
awaiting coroutine, a cancelled call's result is dropped, many results come
back with few wake-ups of the loop, and nothing runs after shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from orchestrator.chief.rpc import LoopPool, run_in


def test_results_and_exceptions_reach_the_caller() -> None:
    pool = LoopPool(max_workers=2, thread_name_prefix="t")

    def boom() -> None:
        raise ValueError("from the pool")

    async def scenario() -> tuple[list[int], str, set[str]]:
        names: set[str] = set()

        def square(x: int) -> int:
            names.add(threading.current_thread().name)
            return x * x

        results = await asyncio.gather(*(run_in(pool, square, i) for i in range(50)))
        with pytest.raises(ValueError, match="from the pool") as raised:
            await run_in(pool, boom)
        return list(results), str(raised.value), names

    results, message, names = asyncio.run(scenario())
    pool.shutdown()
    assert results == [i * i for i in range(50)]
    assert message == "from the pool"
    assert names <= {"t_0", "t_1"} and names  # ran in the pool's threads


def test_a_burst_of_results_wakes_the_loop_fewer_times_than_calls() -> None:
    pool = LoopPool(max_workers=4, thread_name_prefix="t")
    release = threading.Event()
    wakes = []

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            wakes.append(callback)
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        calls = [run_in(pool, lambda i=i: (release.wait(5), i)[1]) for i in range(200)]
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.05)
        release.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(scenario()) == list(range(200))
    pool.shutdown()
    assert 1 <= len(wakes) < 200


def test_a_cancelled_call_is_dropped_and_shutdown_refuses_new_ones() -> None:
    pool = LoopPool(max_workers=1, thread_name_prefix="t")
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "late"

    async def scenario() -> None:
        task = asyncio.ensure_future(run_in(pool, slow))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await run_in(pool, lambda: "next") == "next"  # the pool goes on
        pool.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            await run_in(pool, lambda: "never")

    asyncio.run(scenario())
