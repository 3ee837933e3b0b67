"""Both example backends (aiohttp, FastAPI), served for real on loopback, one HTTP contract.

A real HTTP client (httpx with httpx-sse) talks to them; the API behind them is a
MockSamsarServer, whose request log and ledger show what was asked and charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from webapps import BACKENDS, Log, load_example, serve_backend

from samsar_async.streaming import ErrorEvent, OutputTextDelta, StreamEvent, event_from_dict
from samsar_async.testing import MockSamsarServer

httpx = pytest.importorskip("httpx")
httpx_sse = pytest.importorskip("httpx_sse")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

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
OTHER_ORIGIN = "https://app.example.com"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
async def url(backend: str, server: MockSamsarServer, log: Log) -> AsyncIterator[str]:
    async with serve_backend(
        backend, log, api_key=server.api_key, base_url=server.url, allowed_origins=(OTHER_ORIGIN,)
    ) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    # trust_env=False: no proxy from the environment, only loopback.
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        yield client


async def sse_events(
    http: Any, method: str, url: str, **kwargs: Any
) -> tuple[list[StreamEvent], Any]:
    """The events of one SSE answer (parsed by httpx-sse) and the response."""
    events: list[StreamEvent] = []
    async with httpx_sse.aconnect_sse(http, method, url, **kwargs) as source:
        response = source.response
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        async for sse in source.aiter_sse():
            event = event_from_dict(sse.json())
            assert sse.event == event.type
            assert sse.id == str(event.sequence_number)
            events.append(event)
    return events, response


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.delta for e in events if isinstance(e, OutputTextDelta))


@pytest.mark.anyio
async def test_post_and_get_stream_the_answer(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    session_id = server.create_session()
    events, _ = await sse_events(
        http, "POST", f"{url}/chat", json={"session_id": session_id, "message": "Hello backend"}
    )
    assert [e.type for e in events] == TEXT_SEQUENCE
    assert text_of(events) == "Reply 1 to: Hello backend"
    events, _ = await sse_events(
        http, "GET", f"{url}/chat", params={"session_id": session_id, "message": "Ünïcode 🎉?"}
    )
    assert [e.type for e in events] == TEXT_SEQUENCE
    assert text_of(events) == "Reply 2 to: Ünïcode 🎉?"
    assert len(server.ledger) == 2


@pytest.mark.anyio
async def test_the_page_is_served(url: str, http: Any) -> None:
    response = await http.get(f"{url}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "new EventSource(" in response.text


@pytest.mark.anyio
async def test_a_reconnect_gets_204_and_costs_nothing(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    session_id = server.create_session()
    response = await http.get(
        f"{url}/chat",
        params={"session_id": session_id, "message": "again?", "request_id": "r1"},
        headers={"Last-Event-ID": "8"},
    )
    assert response.status_code == 204
    assert server.requests == []


@pytest.mark.anyio
async def test_one_request_id_is_charged_once(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    """An EventSource reconnecting before any event repeats the URL: same request_id."""
    session_id = server.create_session()
    params = {"session_id": session_id, "message": "once", "request_id": "q-1_A"}
    first, _ = await sse_events(http, "GET", f"{url}/chat", params=params)
    again, _ = await sse_events(http, "GET", f"{url}/chat", params=params)
    assert text_of(first) == text_of(again) == "Reply 1 to: once"
    assert len(server.requests) == 2
    assert server.requests[1].replayed
    assert len(server.ledger) == 1
    assert len(server.turns(session_id)) == 1
    # Another question is another call.
    other, _ = await sse_events(http, "GET", f"{url}/chat", params={**params, "request_id": "q-2"})
    assert text_of(other) == "Reply 2 to: once"
    assert len(server.ledger) == 2
    # The same request id on another session is another key.
    session_2 = server.create_session()
    events, _ = await sse_events(
        http, "GET", f"{url}/chat", params={**params, "session_id": session_2}
    )
    assert text_of(events) == "Reply 1 to: once"
    assert len(server.ledger) == 3
    keys = [r.idempotency_key for r in server.requests]
    assert keys[0] == keys[1]
    assert len(set(keys)) == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"json": {"message": "hi"}}, "session_id"),
        ({"json": {"session_id": "  ", "message": "hi"}}, "session_id"),
        ({"json": {"session_id": "s" * 201, "message": "hi"}}, "session_id"),
        ({"json": {"session_id": "abc"}}, "message"),
        ({"json": {"session_id": "abc", "message": ["hi"]}}, "message"),
        ({"json": {"session_id": "abc", "message": "x" * 32_001}}, "message"),
        ({"json": {"session_id": "abc", "message": "hi", "request_id": ""}}, "request_id"),
        ({"json": {"session_id": "abc", "message": "hi", "request_id": "a b"}}, "request_id"),
        ({"json": {"session_id": "abc", "message": "hi", "request_id": "r" * 65}}, "request_id"),
        ({"json": {"session_id": "abc", "message": "hi", "request_id": 7}}, "request_id"),
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
async def test_a_failed_call_is_one_public_error_event(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    events, _ = await sse_events(
        http, "POST", f"{url}/chat", json={"session_id": "f" * 24, "message": "anyone?"}
    )
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, ErrorEvent)
    assert error.code == "NotFoundError"
    assert error.message == "This conversation was not found."


@pytest.mark.anyio
async def test_one_shared_client(server: MockSamsarServer, url: str, http: Any) -> None:
    session_id = server.create_session()
    for n in (1, 2, 3):
        events, _ = await sse_events(
            http, "POST", f"{url}/chat", json={"session_id": session_id, "message": "hi"}
        )
        assert text_of(events) == f"Reply {n} to: hi"
    # One pool for the whole app: the calls reused one connection.
    assert len(server.requests) == 3
    assert len(server.peers) == 1


# --- origins -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
        {"Sec-Fetch-Site": "cross-site"},  # <img src=...> from another site: no Origin
        {"Sec-Fetch-Site": "same-site"},
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unknown_origins_are_refused_before_the_api(
    server: MockSamsarServer, url: str, http: Any, headers: dict[str, str], method: str
) -> None:
    session_id = server.create_session()
    fields = {"session_id": session_id, "message": "hi"}
    if method == "GET":
        response = await http.get(f"{url}/chat", params=fields, headers=headers)
    else:
        response = await http.post(f"{url}/chat", json=fields, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert "access-control-allow-origin" not in response.headers
    assert server.requests == []
    assert server.ledger == []


@pytest.mark.anyio
async def test_same_origin_and_allowed_origins_are_served(
    server: MockSamsarServer, url: str, http: Any
) -> None:
    session_id = server.create_session()
    fields = {"session_id": session_id, "message": "hi"}
    # Our own page's POST carries our origin.
    events, response = await sse_events(
        http,
        "POST",
        f"{url}/chat",
        json=fields,
        headers={"Origin": url, "Sec-Fetch-Site": "same-origin"},
    )
    assert text_of(events) == "Reply 1 to: hi"
    assert "access-control-allow-origin" not in response.headers
    # An allowed other origin gets CORS headers, on the stream and on errors.
    events, response = await sse_events(
        http, "GET", f"{url}/chat", params=fields, headers={"Origin": OTHER_ORIGIN}
    )
    assert text_of(events) == "Reply 2 to: hi"
    assert response.headers["access-control-allow-origin"] == OTHER_ORIGIN
    assert "Origin" in response.headers["vary"]
    bad = await http.get(
        f"{url}/chat", params={"session_id": session_id}, headers={"Origin": OTHER_ORIGIN}
    )
    assert bad.status_code == 400
    assert bad.headers["access-control-allow-origin"] == OTHER_ORIGIN


@pytest.mark.anyio
async def test_preflight(server: MockSamsarServer, url: str, http: Any) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = await http.options(f"{url}/chat", headers={"Origin": OTHER_ORIGIN, **ask})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == OTHER_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()
    refused = await http.options(f"{url}/chat", headers={"Origin": "https://evil.example", **ask})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert server.requests == []


def test_allowed_origins_from_the_environment(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", " https://a.example, ,https://b.example:8443 ")
    assert load_example(backend).env_origins() == {"https://a.example", "https://b.example:8443"}
