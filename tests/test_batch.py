"""complete_many: bounded concurrency, laziness, ordering, errors, budgets, early exit."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import anyio
import pytest

from samsar_async import (
    AsyncSamsar,
    CompletionRequest,
    CreditBudgetExceededError,
    InvalidArgumentError,
    NotFoundError,
    UsageError,
)
from samsar_async.batch import BatchResult
from samsar_async.testing import MockSamsarServer

pytestmark = pytest.mark.anyio


async def test_five_thousand_over_two_thousand_sessions(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    sessions = [server.create_session() for _ in range(2000)]
    requests = [
        CompletionRequest(session_id=sessions[(i * 7) % 2000], input=f"r{i}", max_output_tokens=50)
        for i in range(5000)
    ]
    seen: list[BatchResult] = []
    async with client.assistant.complete_many(iter(requests), concurrency=32) as results:
        async for result in results:
            seen.append(result)
    assert len(seen) == 5000
    assert sorted(r.index for r in seen) == list(range(5000))
    for r in seen:
        assert r.ok
        assert r.error is None
        assert r.response is not None
        assert r.request is requests[r.index]
    assert server.max_in_flight <= 32
    assert server.session_overlaps == 0
    # Per session, the server saw the requests in input order.
    order: dict[str, list[int]] = defaultdict(list)
    for rec in server.requests:
        order[rec.session_id].append(int(rec.body["input"][1:]))  # type: ignore[index]
    for indexes in order.values():
        assert indexes == sorted(indexes)
    assert len(server.ledger) == 5000


async def test_million_item_generator_is_read_lazily(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    session = server.create_session()
    pulled = 0

    def requests() -> Iterator[CompletionRequest]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield CompletionRequest(
                session_id=session if i % 2 else server.create_session(), input="x"
            )

    batch = client.assistant.complete_many(requests(), concurrency=16)
    got = 0
    async with batch:
        async for _ in batch:
            got += 1
            if got == 100:
                break
    # At most `concurrency` in flight plus the bounded result buffer were read ahead.
    assert pulled <= 100 + 16 + 16 + 1
    assert len(server.requests) <= pulled


async def test_async_iterable_and_ordered(client: AsyncSamsar, server: MockSamsarServer) -> None:
    server.latency = 0.001
    sessions = [server.create_session() for _ in range(50)]

    async def requests() -> AsyncIterator[CompletionRequest]:
        for i in range(200):
            yield CompletionRequest(session_id=sessions[i % 50], input=f"{i}")

    async with client.assistant.complete_many(requests(), concurrency=8, ordered=True) as run:
        indexes = [r.index async for r in run]
    assert indexes == list(range(200))


async def test_errors_are_results(client: AsyncSamsar, server: MockSamsarServer) -> None:
    good = server.create_session()
    requests = [
        CompletionRequest(session_id=good, input="ok"),
        CompletionRequest(session_id="0" * 24, input="missing session"),
        CompletionRequest(session_id=good, input=[]),  # refused when turned into JSON
        "not a request",
        CompletionRequest(session_id=good, input="ok again"),
    ]
    async with client.assistant.complete_many(requests) as run:  # type: ignore[arg-type]
        results = {r.index: r async for r in run}
    assert results[0].ok
    assert isinstance(results[1].error, NotFoundError)
    assert isinstance(results[2].error, InvalidArgumentError)
    assert isinstance(results[3].error, InvalidArgumentError)
    assert results[3].error.field == "requests[3]"  # type: ignore[union-attr]
    assert results[4].ok
    assert len(server.requests) == 3  # the bad ones never reached the server


async def test_stop_on_error(client: AsyncSamsar, server: MockSamsarServer) -> None:
    good = server.create_session()
    requests = [CompletionRequest(session_id=good, input=f"{i}") for i in range(50)]
    requests.insert(3, CompletionRequest(session_id="f" * 24, input="boom"))
    with pytest.raises(NotFoundError):  # the result's own error, not an ExceptionGroup
        async with client.assistant.complete_many(
            requests, concurrency=2, stop_on_error=True
        ) as run:
            async for _ in run:
                pass
    assert len(server.requests) < 51


async def test_min_credits_stops_scheduling(server: MockSamsarServer) -> None:
    key = server.add_account(credits=Decimal("1.0"))
    sessions = [server.create_session(key) for _ in range(40)]
    requests = [
        CompletionRequest(session_id=s, input="a fairly long question " * 4) for s in sessions
    ]
    async with (
        AsyncSamsar(key, base_url=server.url) as c,
        c.assistant.complete_many(requests, concurrency=1, min_credits="0.8") as run,
    ):
        results = [r async for r in run]
    assert len(results) == 40
    stopped = [r for r in results if isinstance(r.error, CreditBudgetExceededError)]
    sent = [r for r in results if r.ok]
    assert stopped
    assert sent
    assert len(server.ledger) == len(sent)  # exactly the unscheduled ones did not run
    assert all(r.error.remaining < Decimal("0.8") for r in stopped)  # type: ignore[union-attr]
    assert {r.index for r in stopped} == set(range(len(sent), 40))


async def test_leaving_early_cancels_in_flight(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    server.pause()
    sessions = [server.create_session() for _ in range(100)]
    requests = [CompletionRequest(session_id=s, input="x") for s in sessions]
    batch = client.assistant.complete_many(requests, concurrency=10)
    with anyio.move_on_after(30):
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async with batch:
                    async for _ in batch:
                        pass

            tg.start_soon(consume)
            await server.wait_until(lambda s: s.held == 10)
            tg.cancel_scope.cancel()
    server.resume()
    connector = client._transport.session.connector  # type: ignore[union-attr]
    assert len(connector._acquired) == 0  # type: ignore[union-attr]
    resp = await client.assistant.complete(sessions[0], "client still fine")
    assert resp.ok if hasattr(resp, "ok") else resp.output_text


async def test_break_cancels_the_rest_at_once(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    server.pause()
    sessions = [server.create_session() for _ in range(50)]
    requests = (CompletionRequest(session_id=s, input="x") for s in sessions)
    async with anyio.create_task_group() as tg:

        async def release_first_four() -> None:
            await server.wait_until(lambda s: s.held == 4)
            server.resume()

        tg.start_soon(release_first_four)
        async with client.assistant.complete_many(requests, concurrency=4) as run:
            async for _ in run:
                break
    # Leaving the block waited for every worker: no new call of the batch starts.
    resp = await client.assistant.complete(sessions[0], "after the batch")
    assert resp.output_text
    batch_requests = [r for r in server.requests if r.body["input"] == "x"]  # type: ignore[index]
    # The 4 released, plus at most one more per worker taken before the break
    # (cancelled in flight: they may still reach the server).
    assert len(batch_requests) <= 8


async def test_iterating_outside_the_block_is_refused(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    requests = [CompletionRequest(session_id=server.create_session(), input="x")]
    with pytest.raises(UsageError, match="async with"):
        async for _ in client.assistant.complete_many(requests):
            pass
    assert server.requests == []


async def test_aclose_inside_the_block_stops_it(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    sessions = [server.create_session() for _ in range(50)]
    requests = (CompletionRequest(session_id=s, input="x") for s in sessions)
    async with client.assistant.complete_many(requests, concurrency=4) as run:
        async for _ in run:
            await run.aclose()
        assert [r async for r in run] == []
    assert len(server.ledger) < 50


async def test_bad_arguments(client: AsyncSamsar) -> None:
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        client.assistant.complete_many([], concurrency=0)
    with pytest.raises(InvalidArgumentError, match="requests"):
        client.assistant.complete_many(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_credits": "abc"}, "min_credits"),
        ({"min_credits": float("nan")}, "min_credits"),
        ({"min_credits": Decimal("sNaN")}, "min_credits"),
        ({"min_credits": Decimal("Infinity")}, "min_credits"),
        ({"min_credits": object()}, "min_credits"),
        ({"concurrency": True}, "concurrency"),
        ({"ordered": "yes"}, "ordered"),
        ({"stop_on_error": 1}, "stop_on_error"),
    ],
)
async def test_options_are_checked_when_the_batch_is_made(
    client: AsyncSamsar, server: MockSamsarServer, options: dict[str, object], field: str
) -> None:
    requests = [CompletionRequest(session_id=server.create_session(), input="x")]
    with pytest.raises(InvalidArgumentError) as info:
        client.assistant.complete_many(requests, **options)  # type: ignore[arg-type]
    assert info.value.field == field
    assert server.requests == []


async def test_complete_many_adapts_to_429_by_default(server: MockSamsarServer) -> None:
    """complete_many runs under the adaptive limit unless told otherwise: an account
    limit of 4 with 32 workers lowers the limit instead of failing calls."""
    server.latency = 0.01  # calls overlap, so the 5th concurrent one is refused
    server.set_concurrency_limit(4, retry_after=0.01)
    sessions = [server.create_session() for _ in range(60)]
    requests = [CompletionRequest(session_id=s, input="x") for s in sessions]
    async with (
        AsyncSamsar(server.api_key, base_url=server.url) as c,
        c.assistant.complete_many(requests, concurrency=32) as run,
    ):
        results = [r async for r in run]
        assert c.concurrency_limit < 32  # lowered by the 429s
    assert all(r.ok for r in results)
    assert len(server.ledger) == 60
