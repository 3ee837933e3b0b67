"""examples/aiohttp_sse_backend.py, served for real on loopback against a MockSamsarServer.

A real HTTP client (httpx with httpx-sse, an independent SSE parser) talks to it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from samsar_async.streaming import (
    ErrorEvent,
    OutputTextDelta,
    ResponseCompleted,
    StreamEvent,
    event_from_dict,
)
from samsar_async.testing import MockSamsarServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import ModuleType

httpx = pytest.importorskip("httpx")
httpx_sse = pytest.importorskip("httpx_sse")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "aiohttp_sse_backend.py"

TEXT_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiohttp_sse_backend", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backend = load_example()


@contextlib.asynccontextmanager
async def run_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[MockSamsarServer]:
    async with MockSamsarServer() as srv:
        yield srv


@pytest.fixture
async def app(server: MockSamsarServer) -> web.Application:
    return backend.make_app(api_key=server.api_key, base_url=server.url)


@pytest.fixture
async def url(app: web.Application) -> AsyncIterator[str]:
    async with run_app(app) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    # trust_env=False: no proxy from the environment, only loopback.
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        yield client


async def sse_events(http: Any, method: str, url: str, **kwargs: Any) -> list[StreamEvent]:
    """The events of one SSE answer, parsed by httpx-sse; names must match the data."""
    events: list[StreamEvent] = []
    async with httpx_sse.aconnect_sse(http, method, url, **kwargs) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"] == "text/event-stream"
        assert source.response.headers["cache-control"] == "no-cache"
        assert source.response.headers["x-accel-buffering"] == "no"
        async for sse in source.aiter_sse():
            event = event_from_dict(sse.json())
            assert sse.event == event.type
            assert sse.id == str(event.sequence_number)
            events.append(event)
    return events


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.delta for e in events if isinstance(e, OutputTextDelta))


@pytest.mark.anyio
async def test_post_streams_the_answer(server: MockSamsarServer, url: str, http: Any) -> None:
    session_id = server.create_session()
    events = await sse_events(
        http, "POST", f"{url}/chat", json={"session_id": session_id, "message": "Hello backend"}
    )
    assert [e.type for e in events] == TEXT_SEQUENCE
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert text_of(events) == "Reply 1 to: Hello backend"
    final = events[-1]
    assert isinstance(final, ResponseCompleted)
    assert final.parsed is not None
    assert final.parsed.output_text == "Reply 1 to: Hello backend"
    assert server.turns(session_id)[0].response_id == final.parsed.id


@pytest.mark.anyio
async def test_get_for_event_source(server: MockSamsarServer, url: str, http: Any) -> None:
    session_id = server.create_session()
    await sse_events(http, "POST", f"{url}/chat", json={"session_id": session_id, "message": "a"})
    events = await sse_events(
        http, "GET", f"{url}/chat", params={"session_id": session_id, "message": "Ünïcode 🎉?"}
    )
    assert [e.type for e in events] == TEXT_SEQUENCE
    assert text_of(events) == "Reply 2 to: Ünïcode 🎉?"


@pytest.mark.anyio
async def test_event_source_reconnect_gets_204(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    session_id = server.create_session()
    response = await http.get(
        f"{url}/chat",
        params={"session_id": session_id, "message": "again?"},
        headers={"Last-Event-ID": "8"},
    )
    assert response.status_code == 204
    assert server.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"json": {"message": "hi"}}, "session_id"),
        ({"json": {"session_id": "  ", "message": "hi"}}, "session_id"),
        ({"json": {"session_id": 5, "message": "hi"}}, "session_id"),
        ({"json": {"session_id": "s" * 201, "message": "hi"}}, "session_id"),
        ({"json": {"session_id": "abc"}}, "message"),
        ({"json": {"session_id": "abc", "message": ""}}, "message"),
        ({"json": {"session_id": "abc", "message": ["hi"]}}, "message"),
        ({"json": {"session_id": "abc", "message": "x" * 32_001}}, "message"),
        ({"json": ["abc", "hi"]}, None),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, None),
        ({"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, None),
        ({"content": b""}, None),
    ],
)
async def test_bad_requests_get_400_json(
    server: MockSamsarServer, url: str, http: Any, kwargs: dict[str, Any], param: str | None
) -> None:
    response = await http.post(f"{url}/chat", **kwargs)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"]
    assert server.requests == []


@pytest.mark.anyio
async def test_bad_get_request(server: MockSamsarServer, url: str, http: Any) -> None:
    response = await http.get(f"{url}/chat", params={"session_id": "abc"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "message"
    head = await http.head(f"{url}/chat", params={"session_id": "abc", "message": "hi"})
    assert head.status_code == 405
    assert server.requests == []


@pytest.mark.anyio
async def test_a_failed_call_is_one_error_event(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    events = await sse_events(
        http, "POST", f"{url}/chat", json={"session_id": "f" * 24, "message": "anyone?"}
    )
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, ErrorEvent)
    assert error.code == "NotFoundError"
    assert error.param == "session_id"
    assert error.message == "This conversation was not found."


@pytest.mark.anyio
async def test_error_details_stay_on_the_server(
    server: MockSamsarServer, url: str, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = server.create_session()
    server.set_balance(None, "0.000001")
    events = await sse_events(
        http, "POST", f"{url}/chat", json={"session_id": session_id, "message": "hi"}
    )
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, ErrorEvent)
    assert error.code == "InsufficientCreditsError"
    assert error.message == "The assistant could not answer."
    # The balance is in the log, not in the browser.
    assert any("0.000001" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_one_shared_client_closed_on_cleanup(server: MockSamsarServer, http: Any) -> None:
    app = backend.make_app(api_key=server.api_key, base_url=server.url)
    session_id = server.create_session()
    async with run_app(app) as base:
        client = app[backend.CLIENT]
        assert client.state == "unopened"
        for n in (1, 2, 3):
            events = await sse_events(
                http, "POST", f"{base}/chat", json={"session_id": session_id, "message": "hi"}
            )
            assert text_of(events) == f"Reply {n} to: hi"
        assert app[backend.CLIENT] is client
        assert client.state == "open"
        # One pool for the whole app: the calls reused one connection.
        assert len(server.requests) == 3
        assert len(server.peers) == 1
    assert client.state == "closed"
