"""Regressions found in review: input errors in batches, lock cancellation races,
compressed bodies over the cap, tiny deadlines, caller keys in extra_headers."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import anyio
import pytest
from aiohttp import web

from samsar_async import (
    APIResponseValidationError,
    APITimeoutError,
    AsyncSamsar,
    CompletionRequest,
    InvalidArgumentError,
    Timeout,
)
from samsar_async._turns import TurnQueues
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio


class InputBroke(Exception):
    pass


async def test_input_error_delivers_what_was_sent_then_raises_it(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    sessions = [server.create_session() for _ in range(3)]

    async def requests() -> AsyncIterator[CompletionRequest]:
        for s in sessions:
            yield CompletionRequest(session_id=s, input="x")
        raise InputBroke("the source failed")

    got = []
    with pytest.raises(InputBroke, match="the source failed"):
        async with client.assistant.complete_many(requests(), concurrency=8) as run:
            async for result in run:
                got.append(result)
    assert len(got) == 3  # the calls already sent were not thrown away
    assert all(r.ok for r in got)
    assert len(server.ledger) == 3


async def test_cancelled_waiter_racing_the_hand_over() -> None:
    locks = TurnQueues()
    assert locks.enter("s") is None  # we hold it
    turn = locks.enter("s")
    assert turn is not None
    waiter = asyncio.ensure_future(locks.wait("s", turn))
    await asyncio.sleep(0)  # the waiter is parked on its turn
    waiter.cancel()  # its turn future is cancelled now...
    locks.leave("s")  # ...and the holder hands over before the waiter runs
    with pytest.raises(asyncio.CancelledError):
        await waiter  # a cancellation, not a KeyError
    assert len(locks) == 0


async def test_compressed_body_over_the_cap_is_refused() -> None:
    bomb = gzip.compress(b'{"id": "' + b"a" * (4 * 1024 * 1024) + b'"}')

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    app = web.Application()
    app.router.add_post("/v1/assistant/completion", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with AsyncSamsar(
            "k", base_url=f"http://127.0.0.1:{port}/v1", max_response_bytes=1024 * 1024
        ) as c:
            assert len(bomb) < 1024 * 1024  # small on the wire...
            with pytest.raises(APIResponseValidationError, match="limit"):
                await c.assistant.complete("s", "x")  # ...but not once decompressed
    finally:
        await runner.cleanup()


async def test_a_tiny_deadline_still_bounds_the_attempt(
    server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.stall(30))
    async with AsyncSamsar(server.api_key, base_url=server.url) as c:
        with anyio.fail_after(10):  # a hang here would be the bug
            with pytest.raises(APITimeoutError):
                await c.assistant.complete(session_id, "x", timeout=Timeout(total=0.0004))


async def test_key_in_extra_headers_is_the_calls_key(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    resp = await client.assistant.complete(
        session_id, "x", extra_headers={"idempotency-key": "order-7"}
    )
    assert resp.idempotency_key == "order-7"
    assert server.requests[-1].idempotency_key == "order-7"


async def test_unserializable_values_are_refused_before_sending(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    with pytest.raises(InvalidArgumentError, match="JSON"):
        await client.assistant.complete(session_id, "x", metadata={"when": object()})
    assert server.requests == []
