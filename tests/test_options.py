"""Client options: with_options, default headers, trace_configs, connector/http_session,
proxy and trust_env, and the headers of every answer. All over real loopback HTTP."""

from __future__ import annotations

import base64
import pickle
from collections import Counter
from typing import Any

import aiohttp
import anyio
import pytest
from netutil import ForwardProxy, TLSFront, self_signed

from samsar_async import (
    APIConnectionError,
    AsyncSamsar,
    ClientClosedError,
    ClientState,
    InvalidArgumentError,
    Response,
    RetryPolicy,
    Samsar,
    Timeout,
)
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0, max_backoff=0)


def make(server: MockSamsarServer, **kwargs: Any) -> AsyncSamsar:
    kwargs.setdefault("retry", FAST)
    return AsyncSamsar(server.api_key, base_url=server.url, **kwargs)


# --------------------------------------------------------------------------- response headers


async def test_response_headers(server: MockSamsarServer, session_id: str) -> None:
    async with make(server) as client:
        first = await client.assistant.complete(session_id, "x", idempotency_key="k-1")
        again = await client.assistant.complete(session_id, "x", idempotency_key="k-1")
        prompt = await client.assistant.set_system_prompt("Be brief.")
    assert first.headers["X-Credits-Charged"] == str(first.credits.charged)  # any case
    assert first.headers["content-type"].startswith("application/json")
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"  # the server's own additions
    assert prompt.headers["Content-Type"].startswith("application/json")
    with pytest.raises(TypeError):
        first.headers["x-new"] = "1"  # type: ignore[index]


async def test_response_headers_survive_pickling_and_default_to_empty(
    server: MockSamsarServer, session_id: str
) -> None:
    async with make(server) as client:
        resp = await client.assistant.complete(session_id, "x")
    copy = pickle.loads(pickle.dumps(resp))
    assert copy == resp
    assert copy.headers["x-credits-charged"] == resp.headers["x-credits-charged"]
    built = Response(id="r", headers={"X-Request-Id": "abc"})
    assert built.headers["x-request-id"] == "abc"
    assert len(Response(id="r").headers) == 0


# --------------------------------------------------------------------------- with_options


async def test_with_options_shares_the_pool_and_overrides(
    server: MockSamsarServer, session_id: str
) -> None:
    client = make(server, default_headers={"X-Team": "a"})
    async with client:
        await client.assistant.complete(session_id, "one")
        other = client.with_options(
            timeout=Timeout(total=30), retry=None, default_headers={"X-Tenant": "t1"}
        )
        assert other._transport is client._transport  # one pool
        assert other.timeout.total == 30
        assert other.retry.max_attempts == 1
        assert client.timeout.total != 30
        assert client.retry.max_attempts > 1
        resp = await other.assistant.complete(session_id, "two")
        assert resp.output_text == "Reply 2 to: two"
        server.faults.add(Fault.status(503), times=1)
        with pytest.raises(Exception, match="503"):
            await other.assistant.complete(session_id, "no retry")  # retry=None applies
        await client.assistant.complete(session_id, "three")  # the parent still retries
    sent = [r.headers for r in server.requests]
    assert all(h["X-Team"] == "a" for h in sent)  # the parent's headers stay
    assert [h.get("X-Tenant") for h in sent] == [None, "t1", "t1", None]
    assert len(server.peers) == 1  # every call on one pooled connection


async def test_with_options_keeps_session_order_and_budget(
    server: MockSamsarServer, session_id: str
) -> None:
    async with make(server) as client:
        other = client.with_options(idempotency_keys=False)
        assert other._turns is client._turns
        assert other.retry_budget is client.retry_budget
        server.pause()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.assistant.complete, session_id, "first")
            await server.wait_until(lambda s: s.held == 1)
            tg.start_soon(other.assistant.complete, session_id, "second")
            await anyio.sleep(0)  # the second call takes its place in the session's line
            server.resume()
    assert server.session_overlaps == 0  # one turn at a time across both clients
    assert [t.input_text for t in server.turns(session_id)] == ["first", "second"]
    assert server.requests[1].idempotency_key is None  # idempotency_keys=False applied


async def test_closing_a_derived_client_leaves_the_pool(
    server: MockSamsarServer, session_id: str
) -> None:
    client = make(server)
    async with client:
        async with client.with_options(timeout=20) as other:
            await other.assistant.complete(session_id, "x")
        assert other.state is ClientState.CLOSED
        with pytest.raises(ClientClosedError):
            await other.assistant.complete(session_id, "x")
        assert client.state is ClientState.OPEN
        await client.assistant.complete(session_id, "y")  # the pool is still there
        last = client.with_options(retry=None)
    assert last.state is ClientState.CLOSED  # closing the parent closes the pool of all
    with pytest.raises(ClientClosedError):
        await last.assistant.complete(session_id, "x")
    with pytest.raises(ClientClosedError):
        client.with_options(timeout=1)


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Authorization": "Bearer other"}, "default_headers['Authorization']"),
        ({"idempotency-key": "k"}, "default_headers['idempotency-key']"),
        ({"X-Bad": "a\r\nInjected: 1"}, "default_headers['X-Bad']"),
        ({"X-Num": 5}, "default_headers['X-Num']"),
        ({"Bad Name": "v"}, "default_headers['Bad Name']"),
        (["X-A", "b"], "default_headers"),
    ],
)
def test_default_headers_are_validated(headers: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", default_headers=headers)
    assert info.value.field == field
    client = AsyncSamsar("k")
    with pytest.raises(InvalidArgumentError) as info:
        client.with_options(default_headers=headers)
    assert info.value.field == field


def test_bad_option_values() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", trace_configs=[object()])  # type: ignore[list-item]
    assert info.value.field == "trace_configs[0]"
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", connector="tcp")  # type: ignore[arg-type]
    assert info.value.field == "connector"
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", connector=aiohttp.TCPConnector, max_connections=5)
    assert info.value.field == "max_connections"
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", http_session="s")  # type: ignore[arg-type]
    assert info.value.field == "http_session"
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", trust_env="yes")  # type: ignore[arg-type]
    assert info.value.field == "trust_env"
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", proxy="socks5://user:hunter2@proxy:1080")
    assert info.value.field == "proxy"
    assert "hunter2" not in str(info.value)
    with pytest.raises(InvalidArgumentError) as info:  # the proxy would read the key
        AsyncSamsar("k", base_url="http://127.0.0.1:9/v1", proxy="http://127.0.0.1:8")
    assert info.value.field == "proxy"
    with pytest.raises(InvalidArgumentError) as info:
        Samsar("k", connector=object())  # type: ignore[arg-type]
    assert info.value.field == "connector"
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar("k", event_hooks=[print])  # type: ignore[arg-type]
    assert info.value.field == "event_hooks"


# --------------------------------------------------------------------------- bring your own


async def test_trace_configs_see_every_attempt(server: MockSamsarServer, session_id: str) -> None:
    seen: Counter[str] = Counter()

    async def on_start(_session: Any, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        seen[params.url.path] += 1

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    server.faults.add(Fault.status(503), times=1)
    async with make(server, trace_configs=[config]) as client:
        await client.assistant.complete(session_id, "x")
    assert seen == Counter({"/v1/assistant/completion": 2})  # the failed attempt and the retry


async def test_connector_instance_is_the_users(server: MockSamsarServer, session_id: str) -> None:
    connector = aiohttp.TCPConnector(limit=2)
    try:
        async with make(server, connector=connector) as client:
            await client.assistant.complete(session_id, "x")
            assert client._transport.session is not None
            assert client._transport.session.connector is connector
        assert not connector.closed  # never closed by the client
        async with make(server, connector=connector) as again:  # reusable
            await again.assistant.complete(session_id, "y")
    finally:
        await connector.close()
    assert len(server.ledger) == 2


async def test_connector_factory_is_the_clients(server: MockSamsarServer, session_id: str) -> None:
    made: list[aiohttp.BaseConnector] = []

    def factory() -> aiohttp.BaseConnector:
        made.append(aiohttp.TCPConnector(limit=3))
        return made[-1]

    client = make(server, connector=factory)
    assert made == []  # called when the pool opens, inside the loop
    async with client:
        await client.assistant.complete(session_id, "x")
    assert len(made) == 1
    assert made[0].closed


def test_sync_client_takes_a_connector_factory(server_in_thread: MockSamsarServer) -> None:
    made: list[aiohttp.BaseConnector] = []

    def factory() -> aiohttp.BaseConnector:
        made.append(aiohttp.TCPConnector(limit=1))
        return made[-1]

    sid = server_in_thread.create_session()
    with Samsar(
        server_in_thread.api_key, base_url=server_in_thread.url, connector=factory
    ) as client:
        assert client.assistant.complete(sid, "x").output_text == "Reply 1 to: x"
        derived = client.with_options(timeout=30)
        assert derived.assistant.complete(sid, "y").output_text == "Reply 2 to: y"
        derived.close()
        assert derived.state is ClientState.CLOSED
        with pytest.raises(ClientClosedError):
            derived.assistant.complete(sid, "z")
        assert client.assistant.complete(sid, "z").output_text == "Reply 3 to: z"
    assert len(made) == 1
    assert made[0].closed


async def test_http_session_is_used_and_left_open(
    server: MockSamsarServer, session_id: str
) -> None:
    # Its own defaults, even raise_for_status, must not change what the client sees.
    async with aiohttp.ClientSession(
        headers={"X-From-Session": "yes"}, raise_for_status=True
    ) as session:
        async with make(server, http_session=session) as client:
            resp = await client.assistant.complete(session_id, "x")  # authenticated: our key
            server.faults.add(Fault.status(503), times=1)
            again = await client.assistant.complete(session_id, "y")  # 503 retried, not raised
        assert not session.closed
        assert client.state is ClientState.CLOSED
    assert resp.output_text == "Reply 1 to: x"
    assert again.output_text == "Reply 2 to: y"
    first = server.requests[0].headers
    assert first["X-From-Session"] == "yes"
    assert first["User-Agent"].startswith("samsar-async/")
    assert first["Idempotency-Key"]


# --------------------------------------------------------------------------- proxies


async def test_proxy_forwards_plain_http_when_allowed(
    server: MockSamsarServer, session_id: str
) -> None:
    async with ForwardProxy() as proxy:
        client = make(server, proxy=proxy.url, allow_insecure_http=True)
        async with client:
            resp = await client.assistant.complete(session_id, "via proxy")
    assert resp.output_text == "Reply 1 to: via proxy"
    assert proxy.heads[0].startswith(f"POST {server.url}/assistant/completion HTTP/1.1")


async def test_https_through_a_proxy_never_shows_the_key(server: MockSamsarServer) -> None:
    """The base URL names a host only the proxy can reach; the proxy sees a CONNECT and
    ciphertext: the API key, the body and the answer travel inside TLS."""
    server_ctx, client_ctx = self_signed("api.samsar.test")
    session_id = server.create_session()
    async with TLSFront(server.port, server_ctx) as front:
        routes: list[tuple[str, int]] = []

        def route(host: str, port: int) -> int:
            routes.append((host, port))
            return front.port

        async with ForwardProxy(route) as proxy:
            proxy_url = f"http://alice:s3cret-pw@127.0.0.1:{proxy.port}"
            client = AsyncSamsar(
                server.api_key,
                base_url="https://api.samsar.test/v1",
                proxy=proxy_url,
                connector=lambda: aiohttp.TCPConnector(ssl=client_ctx),
                retry=FAST,
            )
            assert "s3cret-pw" not in repr(client)
            assert "s3cret-pw" not in repr(client._transport)
            async with client:
                resp = await client.assistant.complete(session_id, "a secret question")
    assert resp.output_text == "Reply 1 to: a secret question"
    assert routes == [("api.samsar.test", 443)]
    head = proxy.heads[0]
    assert head.startswith("CONNECT api.samsar.test:443 HTTP/1.1")
    credentials = base64.b64encode(b"alice:s3cret-pw").decode()
    assert f"Proxy-Authorization: Basic {credentials}" in head  # for the proxy only
    assert server.api_key.encode() not in proxy.seen
    assert b"a secret question" not in proxy.seen
    assert b"Bearer" not in proxy.seen
    assert "Proxy-Authorization" not in server.requests[0].headers  # never to the API


async def test_a_proxy_refusing_the_tunnel_is_not_sent(server: MockSamsarServer) -> None:
    async with ForwardProxy() as proxy:
        proxy.refuse = 407
        client = AsyncSamsar(
            server.api_key,
            base_url="https://api.samsar.test/v1",
            proxy=proxy.url,
            retry=RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0),
        )
        async with client:
            with pytest.raises(APIConnectionError) as info:
                await client.assistant.complete(server.create_session(), "x")
    assert info.value.sent is False
    assert "407" in str(info.value)
    assert len(info.value.attempts) == 2  # not sent: safe to retry
    assert len(proxy.heads) == 2
    assert server.requests == []


async def test_trust_env_reads_the_proxy_once(
    server: MockSamsarServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_ctx, client_ctx = self_signed("api.samsar.test")
    session_id = server.create_session()
    async with (
        TLSFront(server.port, server_ctx) as front,
        ForwardProxy(lambda _h, _p: front.port) as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        ignored = AsyncSamsar(server.api_key, base_url="https://api.samsar.test/v1")
        assert ignored._transport.proxy is None  # trust_env is off by default
        client = AsyncSamsar(
            server.api_key,
            base_url="https://api.samsar.test/v1",
            trust_env=True,
            connector=lambda: aiohttp.TCPConnector(ssl=client_ctx),
        )
        monkeypatch.delenv("HTTPS_PROXY")  # read at construction, not per call
        async with client:
            resp = await client.assistant.complete(session_id, "x")
    assert resp.output_text == "Reply 1 to: x"
    assert proxy.heads[0].startswith("CONNECT api.samsar.test:443 ")


def test_trust_env_honours_no_proxy_and_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "api.samsar.test")
    monkeypatch.delenv("no_proxy", raising=False)
    base = "https://api.samsar.test/v1"
    assert AsyncSamsar("k", base_url=base, trust_env=True)._transport.proxy is None
    monkeypatch.setenv("NO_PROXY", "other.example")
    assert AsyncSamsar("k", base_url=base, trust_env=True)._transport.proxy == (
        "http://proxy.internal:3128"
    )
    local = AsyncSamsar("k", base_url="https://localhost:8443/v1", trust_env=True)
    assert local._transport.proxy is None  # a proxy cannot reach our loopback
