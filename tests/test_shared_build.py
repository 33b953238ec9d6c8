"""One build for all the callers that need it at once (service/shared_build.py)."""

from __future__ import annotations

import asyncio

import pytest

from service.shared_build import shared


def test_callers_arriving_meanwhile_await_the_first_callers_build() -> None:
    started: list[int] = []

    async def build() -> int:
        started.append(1)
        await asyncio.sleep(0.01)
        return len(started)

    async def main() -> tuple[list[int], dict[str, asyncio.Future[int]]]:
        building: dict[str, asyncio.Future[int]] = {}
        results = await asyncio.gather(*(shared(building, "k", build) for _ in range(8)))
        return results, building

    results, building = asyncio.run(main())
    assert results == [1] * 8 and started == [1]
    assert building == {}  # forgotten once done: the next caller builds anew


def test_a_failure_reaches_every_caller_and_the_next_caller_starts_again() -> None:
    attempts: list[int] = []

    async def build() -> str:
        attempts.append(1)
        await asyncio.sleep(0.01)
        if len(attempts) == 1:
            raise RuntimeError("first build fails")
        return "built"

    async def main() -> tuple[list[object], str]:
        building: dict[str, asyncio.Future[str]] = {}
        first = await asyncio.gather(
            *(shared(building, "k", build) for _ in range(3)), return_exceptions=True
        )
        return first, await shared(building, "k", build)

    first, again = asyncio.run(main())
    assert [type(r) for r in first] == [RuntimeError] * 3
    assert again == "built" and len(attempts) == 2


def test_a_caller_that_goes_away_does_not_cancel_the_build_the_others_await() -> None:
    async def build() -> str:
        await asyncio.sleep(0.01)
        return "built"

    async def main() -> str:
        building: dict[str, asyncio.Future[str]] = {}
        leaving = asyncio.ensure_future(shared(building, "k", build))
        await asyncio.sleep(0)
        staying = asyncio.ensure_future(shared(building, "k", build))
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return await staying

    assert asyncio.run(main()) == "built"
