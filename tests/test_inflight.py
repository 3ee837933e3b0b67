"""What a call holds while it waits: the client's own queue for pooled connections,
and the adaptive limiter's slots on complete_many's default path."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from samsar_async import (
    APIConnectTimeoutError,
    AsyncSamsar,
    BadRequestError,
    ClientClosedError,
    CompletionRequest,
    Response,
)
from samsar_async import transport as transport_module
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

QUEUE = 8
"""Calls let wait in aiohttp's connector in these tests (the client's default is 4,096)."""


@pytest.fixture(autouse=True)
def _short_connector_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_module, "_CONNECTOR_QUEUE", QUEUE)


async def _fill_one_connection(
    client: AsyncSamsar, server: MockSamsarServer
) -> list[asyncio.Task[Response]]:
    """With one connection and a paused server: one call on the connection and QUEUE in
    aiohttp's connector, so that the next call waits in the client's own queue."""
    ahead = [
        asyncio.create_task(client.assistant.complete(server.create_session(), "ahead"))
        for _ in range(1 + QUEUE)
    ]
    await server.wait_until(lambda s: s.held == 1)
    return ahead


async def test_calls_beyond_the_pool_wait_in_the_clients_queue(server: MockSamsarServer) -> None:
    # 2 connections, QUEUE calls waiting in aiohttp's connector, the others in the
    # client's own queue.
    sessions = [server.create_session() for _ in range(300)]
    server.pause()
    async with AsyncSamsar(server.api_key, base_url=server.url, max_connections=2) as client:
        tasks = [asyncio.create_task(client.assistant.complete(s, "x")) for s in sessions]
        await server.wait_until(lambda s: s.held == 2)
        await anyio.wait_all_tasks_blocked()
        transport = client._transport
        slots = transport._slots
        assert slots is not None
        # A future each, not a whole prepared aiohttp request each.
        assert sum(not f.done() for f in slots.waiters) == 300 - 2 - QUEUE
        connector = transport.session.connector  # type: ignore[union-attr]
        waiting = sum(len(w) for w in connector._waiters.values())  # type: ignore[union-attr]
        assert waiting == QUEUE
        tasks[-1].cancel()  # a waiting call leaves the line; nothing of it is sent
        server.resume()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[-1], asyncio.CancelledError)
        assert all(not isinstance(r, BaseException) for r in results[:-1])
        sent = [r.session_id for r in server.requests]
        assert sorted(sent) == sorted(sessions[:-1])
        assert slots.free == 2 + QUEUE  # every slot came back, the cancelled one's too
        assert not slots.waiters
        assert server.max_in_flight == 2


async def test_a_call_waiting_in_the_clients_queue_times_out_unsent(
    server: MockSamsarServer,
) -> None:
    server.pause()
    async with AsyncSamsar(
        server.api_key, base_url=server.url, max_connections=1, retry=None
    ) as client:
        ahead = await _fill_one_connection(client, server)
        with pytest.raises(APIConnectTimeoutError, match="nothing was sent") as info:
            await client.assistant.complete(server.create_session(), "x", timeout=0.5)
        assert info.value.sent is False
        server.resume()
        await asyncio.gather(*ahead)
        # Its place was given up: the next call goes straight through.
        answer = await client.assistant.complete(server.create_session(), "after")
        assert answer.output_text
        assert client._transport._slots.free == 1 + QUEUE  # type: ignore[union-attr]
    assert len(server.requests) == 2 + QUEUE


async def test_adaptive_batch_gives_back_every_slot(server: MockSamsarServer) -> None:
    sessions = [server.create_session() for _ in range(60)]
    bad = set(sessions[::7])
    server.faults.add(
        Fault.status(400), times=None, match=lambda _path, session_id: session_id in bad
    )
    client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=8)
    async with client:
        requests = [CompletionRequest(session_id=s, input="x") for s in sessions]
        # concurrency 20 against a limit of 8: twelve calls wait for a slot at any time
        async with client.assistant.complete_many(requests, concurrency=20) as results:
            outcomes = [r async for r in results]
        assert len(outcomes) == 60
        assert {r.request.session_id for r in outcomes if r.error is not None} == bad
        assert all(isinstance(r.error, BadRequestError) for r in outcomes if r.error is not None)
        assert server.max_in_flight <= 8
        limiter = client._limiter
        assert limiter.in_flight == 0
        assert limiter.waiting == 0
        assert limiter.limit == 8  # no throttle: the limit stays where it was

        # Leaving a batch early, with calls in flight and calls waiting for a slot.
        server.pause()
        async with client.assistant.complete_many(requests, concurrency=20) as results:
            await server.wait_until(lambda s: s.held == 8)
            await anyio.wait_all_tasks_blocked()
            assert limiter.in_flight == 8
            assert limiter.waiting == 12
        server.resume()
        assert limiter.in_flight == 0
        assert limiter.waiting == 0
        assert client._transport._slots.free == 8 + QUEUE  # type: ignore[union-attr]
        answer = await client.assistant.complete(sessions[1], "still fine")
        assert answer.output_text


async def test_calls_in_the_clients_queue_time_out_by_their_own_deadlines(
    server: MockSamsarServer,
) -> None:
    # Out of order: a patient call, then an impatient one behind it in line.
    server.pause()
    async with AsyncSamsar(
        server.api_key, base_url=server.url, max_connections=1, retry=None
    ) as client:
        ahead = await _fill_one_connection(client, server)
        patient_session = server.create_session()
        patient = asyncio.create_task(
            client.assistant.complete(patient_session, "patient", timeout=60)
        )
        await anyio.wait_all_tasks_blocked()
        slots = client._transport._slots
        assert slots is not None
        assert slots.ordered
        with pytest.raises(APIConnectTimeoutError, match="nothing was sent"):
            await client.assistant.complete(server.create_session(), "x", timeout=0.5)
        assert not slots.ordered
        assert not patient.done()  # its own deadline is far away: still in line
        server.resume()
        await asyncio.gather(*ahead)
        answer = await patient
        assert answer.output_text
        assert not slots.waiters
        assert slots.free == 1 + QUEUE
    assert patient_session in {r.session_id for r in server.requests}
    assert len(server.requests) == 2 + QUEUE


async def test_close_right_after_a_slot_is_handed_on_ends_the_waiting_call_cleanly(
    server: MockSamsarServer,
) -> None:
    # The first call's answer hands its slot to the next call in line, and in the same
    # loop step its task closes the client: the call handed the slot must end with
    # ClientClosedError (nothing sent), never with aiohttp's "Session is closed".
    client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=1, retry=None)
    server.pause()

    async def first_then_close() -> str:
        answer = await client.assistant.complete(server.create_session(), "first")
        await client.close()
        return answer.output_text

    first = asyncio.create_task(first_then_close())
    await server.wait_until(lambda s: s.held == 1)
    rest = [
        asyncio.create_task(client.assistant.complete(server.create_session(), "x"))
        for _ in range(300)
    ]
    await anyio.wait_all_tasks_blocked()
    server.resume()
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert await first
    assert all(isinstance(r, ClientClosedError) for r in results), {
        type(r).__name__ for r in results
    }
    assert sum(r.sent is False for r in results if isinstance(r, ClientClosedError)) >= 299
    assert len(server.requests) <= 2
