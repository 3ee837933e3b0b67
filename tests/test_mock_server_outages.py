"""MockSamsarServer's outages (down and back on the same port) and limits, over raw aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import anyio
import pytest

from samsar_async.testing import MockSamsarServer

pytestmark = pytest.mark.anyio


class Reply(NamedTuple):
    status: int
    headers: Any
    json: Any


@pytest.fixture
async def server() -> AsyncIterator[MockSamsarServer]:
    async with MockSamsarServer() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    server: MockSamsarServer,
    session_id: str,
    *,
    key: str | None = None,
    idempotency_key: str | None = None,
) -> Reply:
    headers = {"Authorization": f"Bearer {key or server.api_key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    body = {"session_id": session_id, "input": "hi"}
    async with http.post(f"{server.url}/assistant/completion", json=body, headers=headers) as r:
        return Reply(r.status, r.headers, await r.json())


# ------------------------------------------------------------------ outages


async def test_down_refuses_and_back_serves_on_the_same_port(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    port = server.port
    assert (await post(http, server, sid)).status == 200
    await server.go_down()
    assert server.down
    async with aiohttp.ClientSession() as fresh:  # a new connection, not the pooled one
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await post(fresh, server, sid)
    assert isinstance(info.value.os_error, ConnectionRefusedError)
    with pytest.raises(RuntimeError, match="not serving"):
        await server.go_down()
    await server.come_back()
    assert not server.down
    assert server.port == port
    reply = await post(http, server, sid)
    assert reply.status == 200
    assert reply.json["output_text"] == "Reply 2 to: hi"  # state survived the outage
    assert len(server.ledger) == 2
    [outage] = server.outages
    assert outage.ended is not None
    assert outage.started < outage.ended
    assert outage.dropped == 1  # the idle keep-alive connection of the first request
    with pytest.raises(RuntimeError, match="not down"):
        await server.come_back()


async def test_in_flight_request_is_dropped_uncharged(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    server.latency = 3600.0
    sid = server.create_session()
    errors: list[BaseException] = []

    async def send() -> None:
        try:
            await post(http, server, sid, idempotency_key="k1")
        except aiohttp.ClientError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await server.wait_until(lambda s: s.in_flight == 1)
        await server.go_down()
    assert len(errors) == 1
    assert isinstance(errors[0], aiohttp.ServerDisconnectedError)
    assert server.ledger == []
    assert server.requests[0].status is None
    server.latency = 0.0
    await server.come_back()
    reply = await post(http, server, sid, idempotency_key="k1")
    assert reply.status == 200
    assert "Idempotent-Replayed" not in reply.headers  # processed afresh
    assert len(server.ledger) == 1


async def test_charge_in_flight_loses_only_the_answer(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    server.latency = 3600.0
    sid = server.create_session()
    errors: list[BaseException] = []

    async def send() -> None:
        try:
            await post(http, server, sid, idempotency_key="k1")
        except aiohttp.ClientError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await server.wait_until(lambda s: s.in_flight == 1)
        await server.go_down(charge_in_flight=True)
    assert isinstance(errors[0], aiohttp.ServerDisconnectedError)
    assert len(server.ledger) == 1  # charged, though the client never heard
    assert server.requests[0].turn == 1
    assert server.requests[0].status is None
    server.latency = 0.0
    await server.come_back()
    reply = await post(http, server, sid, idempotency_key="k1")
    assert reply.status == 200
    assert reply.headers["Idempotent-Replayed"] == "true"
    assert reply.json["id"] == server.ledger[0].response_id
    assert len(server.ledger) == 1


async def test_outage_helper(server: MockSamsarServer, http: aiohttp.ClientSession) -> None:
    sid = server.create_session()
    refused = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.outage, 0.2)
        await server.wait_until(lambda s: s.down)
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectorError):
                await post(fresh, server, sid)
        refused += 1
        await server.wait_until(lambda s: not s.down)
    assert refused == 1
    assert (await post(http, server, sid)).status == 200
    [outage] = server.outages
    assert outage.ended is not None
    assert outage.ended - outage.started >= 0.2
    with pytest.raises(ValueError, match="duration"):
        await server.outage(-1)


async def test_close_while_down() -> None:
    server = MockSamsarServer()
    await server.start()
    await server.go_down()
    await server.close()
    assert not server.down
    with pytest.raises(RuntimeError, match="not down"):
        await server.come_back()


# ------------------------------------------------------------------ limits


async def test_concurrency_limit_per_account(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    server.set_concurrency_limit(3, retry_after=0.05)
    other_key = server.add_account()
    sids = [server.create_session() for _ in range(5)]
    other = server.create_session(other_key)
    replies: list[Reply] = []

    async def send(sid: str, key: str | None = None) -> None:
        replies.append(await post(http, server, sid, key=key))

    server.pause()
    async with anyio.create_task_group() as tg:
        for sid in sids[:3]:
            tg.start_soon(send, sid)
        await server.wait_until(lambda s: s.held == 3)
        for sid in sids[3:]:
            await send(sid)  # answered at once, while three are held
        tg.start_soon(send, other, other_key)  # another account has its own limit
        await server.wait_until(lambda s: s.held == 4)
        server.resume()
    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 200, 200, 200, 429, 429]
    for reply in replies:
        if reply.status == 429:
            assert reply.headers["retry-after-ms"] == "50"
            assert reply.headers["Retry-After"] == "1"
            assert reply.json["error"]["code"] == "concurrency_limit"
    assert len(server.ledger) == 4
    assert [r.throttled for r in server.requests].count("concurrency") == 2
    server.set_concurrency_limit(None)
    assert (await post(http, server, sids[3])).status == 200


async def test_rate_limit(server: MockSamsarServer, http: aiohttp.ClientSession) -> None:
    server.set_rate_limit(0.5, burst=2)  # one token every two seconds
    sid = server.create_session()
    statuses = [(await post(http, server, sid)).status for _ in range(2)]
    reply = await post(http, server, sid)
    assert statuses == [200, 200]
    assert reply.status == 429
    assert reply.json["error"]["code"] == "rate_limit"
    assert 0 < int(reply.headers["retry-after-ms"]) <= 2000
    assert server.requests[-1].throttled == "rate"
    assert len(server.ledger) == 2
    server.set_rate_limit(None)
    assert (await post(http, server, sid)).status == 200
    with pytest.raises(ValueError, match="per_second"):
        server.set_rate_limit(0)
    with pytest.raises(ValueError, match="limit"):
        server.set_concurrency_limit(0)


async def test_concurrency_limit_holds_under_a_storm(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    server.set_concurrency_limit(8)
    server.latency = 0.02
    sid_list = [server.create_session() for _ in range(64)]
    statuses: list[int] = []

    async def send(sid: str) -> None:
        statuses.append((await post(http, server, sid)).status)

    await asyncio.gather(*(send(s) for s in sid_list))
    assert statuses.count(200) == len(server.ledger) >= 8
    assert statuses.count(429) == 64 - statuses.count(200) > 0
    throttled = [r for r in server.requests if r.throttled == "concurrency"]
    assert len(throttled) == statuses.count(429)
    assert all(r.charged == 0 and r.turn is None for r in throttled)
