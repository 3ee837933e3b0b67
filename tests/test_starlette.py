"""samsar_async.integrations.starlette: EventStreamResponse served by uvicorn over loopback."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import anyio
import pytest

from samsar_async import AsyncSamsar, RetryPolicy
from samsar_async.errors import InvalidArgumentError
from samsar_async.sse import KEEPALIVE, decode, encode
from samsar_async.streaming import ErrorEvent, StreamEvent, events_from_response
from samsar_async.testing import MockSamsarServer

pytest.importorskip("uvicorn")
starlette = pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.routing import Route  # noqa: E402
from webapps import serve_asgi  # noqa: E402

from samsar_async.integrations.starlette import EventStreamResponse  # noqa: E402


async def source(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


def app_of(endpoint: Callable[[Request], Any]) -> Starlette:
    return Starlette(routes=[Route("/", endpoint)])


async def decode_all(body: bytes) -> list[StreamEvent]:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    return [e async for e in decode(chunks())]


@pytest.fixture
async def answer(client: AsyncSamsar, session_id: str) -> list[StreamEvent]:
    """The events of one real answer (the mock server's)."""
    response = await client.assistant.complete(session_id, "Hello there")
    return list(events_from_response(response, chunk_chars=4))


@pytest.mark.anyio
async def test_headers_and_frames(answer: list[StreamEvent]) -> None:
    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(
            source(answer),
            headers={"Access-Control-Allow-Origin": "*", "Content-Type": "text/plain"},
        )

    async with (
        serve_asgi(app_of(endpoint)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = await resp.read()
    # The very frames samsar_async.sse.encode makes, with id: <sequence_number>.
    assert body == b"".join(encode(e, id=str(e.sequence_number)) for e in answer)
    assert await decode_all(body) == answer


@pytest.mark.anyio
async def test_without_ids_and_with_a_status(answer: list[StreamEvent]) -> None:
    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(source(answer), event_ids=False, status_code=201)

    async with (
        serve_asgi(app_of(endpoint)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/") as resp,
    ):
        assert resp.status == 201
        body = await resp.read()
    assert body == b"".join(encode(e) for e in answer)


@pytest.mark.anyio
async def test_keepalives_while_waiting(answer: list[StreamEvent]) -> None:
    release = anyio.Event()

    async def slow() -> AsyncIterator[StreamEvent]:
        yield answer[0]
        await release.wait()  # the answer is "being generated"
        for event in answer[1:]:
            yield event

    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(slow(), keepalive=0.01)

    async with (
        serve_asgi(app_of(endpoint)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/") as resp,
    ):
        received = b""
        with anyio.fail_after(10):
            while KEEPALIVE not in received:
                received += await resp.content.readany()
        release.set()
        received += await resp.read()
    assert received.startswith(encode(answer[0], id="0") + KEEPALIVE)
    assert await decode_all(received) == answer


@pytest.mark.anyio
async def test_a_client_leaving_while_waiting_closes_the_events_at_once() -> None:
    """No write is needed to notice: uvicorn's http.disconnect cancels the wait."""
    outcome: list[str] = []
    closed = anyio.Event()
    never = anyio.Event()

    async def waiting() -> AsyncIterator[StreamEvent]:
        try:
            await never.wait()  # a completion that never ends
            yield ErrorEvent(sequence_number=0, message="unreachable")
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise
        finally:
            closed.set()

    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(waiting(), keepalive=None)

    async with serve_asgi(app_of(endpoint)) as url, aiohttp.ClientSession() as http:
        resp = await http.get(url + "/")
        assert resp.status == 200
        resp.close()  # drop the connection before any event
        with anyio.fail_after(10):
            await closed.wait()
    assert outcome == ["CancelledError"]


@pytest.mark.anyio
async def test_a_client_leaving_cancels_the_api_call(server: MockSamsarServer) -> None:
    """A real stream: the completion held at the server is cancelled in the SDK."""
    outcome: list[str] = []
    closed = anyio.Event()
    session_id = server.create_session()
    async with AsyncSamsar(server.api_key, base_url=server.url) as client:

        async def watched() -> AsyncIterator[StreamEvent]:
            try:
                async for event in client.assistant.stream(session_id, "hi"):
                    yield event
            except BaseException as exc:
                outcome.append(type(exc).__name__)
                raise
            finally:
                closed.set()

        async def endpoint(request: Request) -> EventStreamResponse:
            return EventStreamResponse(watched(), keepalive=None)

        server.pause()
        async with serve_asgi(app_of(endpoint)) as url, aiohttp.ClientSession() as http:
            resp = await http.get(url + "/")
            await server.wait_until(lambda s: s.held == 1)
            resp.close()
            with anyio.fail_after(10):
                await closed.wait()
        server.resume()
    assert outcome == ["CancelledError"]
    # The SDK's request was abandoned: the API saw one request, and nobody read its answer.
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_a_failing_source_ends_with_an_error_event(
    answer: list[StreamEvent], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> AsyncIterator[StreamEvent]:
        yield answer[0]
        yield answer[1]
        raise RuntimeError("secret internal detail")

    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(broken())

    with caplog.at_level(logging.ERROR, logger="samsar_async.integrations.starlette"):
        async with (
            serve_asgi(app_of(endpoint)) as url,
            aiohttp.ClientSession() as http,
            http.get(url + "/") as resp,
        ):
            assert resp.status == 200
            body = await resp.read()
    assert await decode_all(body) == [
        answer[0],
        answer[1],
        ErrorEvent(sequence_number=2, code="internal_error", message="the event stream failed"),
    ]
    assert body.endswith(b"id: 2\ndata: " + body.rsplit(b"data: ", 1)[1])
    assert b"secret" not in body
    assert any(
        r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records
    )


@pytest.mark.anyio
async def test_a_failed_call_is_the_streams_error_event(server: MockSamsarServer) -> None:
    async with AsyncSamsar(
        server.api_key, base_url=server.url, retry=RetryPolicy.disabled()
    ) as client:

        async def endpoint(request: Request) -> EventStreamResponse:
            return EventStreamResponse(client.assistant.stream("f" * 24, "anyone?"))

        async with (
            serve_asgi(app_of(endpoint)) as url,
            aiohttp.ClientSession() as http,
            http.get(url + "/") as resp,
        ):
            events = await decode_all(await resp.read())
    assert len(events) == 1
    assert isinstance(events[0], ErrorEvent)
    assert events[0].code == "NotFoundError"
    assert events[0].param == "session_id"


@pytest.mark.anyio
async def test_empty_stream_and_background_task() -> None:
    ran: list[str] = []

    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(source([]), background=BackgroundTask(ran.append, "after"))

    async with (
        serve_asgi(app_of(endpoint)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/") as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == b""
    assert ran == ["after"]


@pytest.mark.anyio
async def test_events_are_closed_when_the_response_is_never_sent() -> None:
    closed: list[bool] = []

    async def events() -> AsyncIterator[StreamEvent]:
        try:
            yield ErrorEvent(sequence_number=0, message="x")
        finally:
            closed.append(True)

    gen = events()
    await anext(gen)  # started, then handed to a response that a failing send never sends

    async def send(message: Any) -> None:
        raise OSError("client gone")

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    await EventStreamResponse(gen)({"type": "http"}, receive, send)
    assert closed == [True]


@pytest.mark.parametrize("keepalive", [0, -1, math.nan, math.inf, True, "5"])
def test_refuses_bad_keepalive(keepalive: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="keepalive"):
        EventStreamResponse(source([]), keepalive=keepalive)
