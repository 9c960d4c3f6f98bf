"""Day 2: async def, await and asyncio.run in a plain script: one await after another vs gather.

    python -m week6_async.steps.day2_asyncio_basics

Calling an `async def` function runs none of its body: it returns a coroutine, and
only `await` (or `asyncio.run`, at the very top) runs it. While a coroutine waits at
an `await`, the event loop runs the others: one thread, taking turns while waiting,
not threads running in parallel.
"""

import asyncio
import time

# `await` only inside `async def`: Python refuses this code before running any of it.
AWAIT_OUTSIDE_ASYNC = "def get_data():\n    await asyncio.sleep(1)\n"


async def get_data(name: str, seconds: float) -> str:
    await asyncio.sleep(seconds)  # stands in for a database query or an HTTP call
    return f"{name} after {seconds} s"


async def one_after_another() -> list[str]:
    # The second call starts only when the first is over: 0.5 s + 0.5 s.
    users = await get_data("users", 0.5)
    orders = await get_data("orders", 0.5)
    return [users, orders]


async def at_the_same_time() -> list[str]:
    # Both start at once and wait together: 0.5 s in all.
    users, orders = await asyncio.gather(get_data("users", 0.5), get_data("orders", 0.5))
    return [users, orders]


async def main() -> None:
    coroutine = get_data("nothing yet", 0)
    print("calling it gives:", type(coroutine).__name__, "- awaiting it gives:", await coroutine)
    for way in (one_after_another, at_the_same_time):
        started = time.perf_counter()
        results = await way()
        print(f"{way.__name__}: {results} in {time.perf_counter() - started:.2f} s")
    try:
        compile(AWAIT_OUTSIDE_ASYNC, "<example>", "exec")
    except SyntaxError as error:
        print("await outside async def:", error.msg)


if __name__ == "__main__":
    asyncio.run(main())
