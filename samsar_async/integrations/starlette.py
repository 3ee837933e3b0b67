"""Server-sent events for Starlette and FastAPI: :class:`EventStreamResponse`.

Needs the ``starlette`` extra (``pip install "samsar-async[starlette]"``;
FastAPI brings Starlette along); the core package never imports this module.

::

    from fastapi import FastAPI, Request
    from samsar_async.integrations.starlette import EventStreamResponse

    @app.post("/chat")
    async def chat(request: Request) -> EventStreamResponse:
        body = await request.json()
        client = request.state.samsar          # one AsyncSamsar, shared through lifespan
        return EventStreamResponse(client.assistant.stream(body["session_id"], body["message"]))

The response is a :class:`starlette.responses.StreamingResponse` that behaves
like :func:`samsar_async.sse.stream_response` does for ``aiohttp.web``, with
the same frames (:func:`samsar_async.sse.encode`, :data:`~samsar_async.sse.KEEPALIVE`):

- headers ``Content-Type: text/event-stream``, ``Cache-Control: no-cache`` and
  ``X-Accel-Buffering: no`` (plus yours);
- one frame per event, with ``id: <sequence_number>`` (``event_ids=False``:
  none), so that a reconnecting ``EventSource`` sends ``Last-Event-ID``;
- a keep-alive comment whenever no frame was written for ``keepalive``
  seconds (while the completion is being generated);
- when the client disconnects (the server's ``http.disconnect``, or a failed
  write) the events are closed at once, which cancels the call behind a
  :meth:`~samsar_async.assistant.Assistant.stream`; nothing is raised;
- when the events raise, the error is logged and the client gets an
  ``error`` event (``code`` ``"internal_error"``, no details), then the stream
  ends normally. (A failed API call is already an ``error`` event of the stream.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from typing import Any

import anyio
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import InvalidArgumentError
from ..events import ErrorEvent, StreamEvent
from ..sse import CONTENT_TYPE, KEEPALIVE, encode

__all__ = ["EventStreamResponse"]

logger: logging.Logger = logging.getLogger(__name__)

_DEFAULT_HEADERS: Mapping[str, str] = {
    # Given as a header, so that Starlette does not append "; charset=utf-8".
    "Content-Type": CONTENT_TYPE,
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _check_keepalive(keepalive: object) -> float | None:
    if keepalive is None:
        return None
    if (
        isinstance(keepalive, bool)
        or not isinstance(keepalive, (int, float))
        or not math.isfinite(keepalive)
        or keepalive <= 0
    ):
        raise InvalidArgumentError("keepalive", "must be a positive number of seconds or None")
    return float(keepalive)


async def _frames(
    events: AsyncIterable[StreamEvent], event_ids: bool
) -> AsyncGenerator[bytes, None]:
    """The SSE frames of ``events``; an ``error`` frame if they raise. Closes ``events``."""
    iterator = aiter(events)
    last_sequence = -1
    try:
        while True:
            try:
                event = await anext(iterator)
            except StopAsyncIteration:
                return
            except Exception:
                logger.exception("the event source of an SSE response failed")
                error = ErrorEvent(
                    sequence_number=last_sequence + 1,
                    code="internal_error",
                    message="the event stream failed",
                )
                yield encode(error, id=str(error.sequence_number) if event_ids else None)
                return
            sequence = event.sequence_number
            if sequence is not None:
                last_sequence = sequence
            yield encode(event, id=str(sequence) if event_ids and sequence is not None else None)
    finally:
        await _aclose(iterator)


def _body(data: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": True}


async def _aclose(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


class EventStreamResponse(StreamingResponse):
    """A Starlette streaming response sending ``events`` as server-sent events.

    Args:
        events: the events, typically ``client.assistant.stream(...)``. They are
            consumed and closed (``aclose()``) however the response ends.
        keepalive: seconds without a frame after which a keep-alive comment is
            sent; ``None`` sends none. Checked here
            (:class:`~samsar_async.errors.InvalidArgumentError`).
        event_ids: give each frame ``id: <sequence_number>``.
        status_code: the HTTP status (200).
        headers: more response headers (they may override the defaults, except
            that the content type stays ``text/event-stream``).
        background: a Starlette background task, run after the stream ends.

    See the module docstring for the behaviour. The body is produced by
    :meth:`__call__`; ``body_iterator`` holds the frames without keep-alives.
    """

    def __init__(
        self,
        events: AsyncIterable[StreamEvent],
        *,
        keepalive: float | None = 15.0,
        event_ids: bool = True,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.keepalive: float | None = _check_keepalive(keepalive)
        """Seconds between keep-alive comments while idle, or ``None``."""
        self.events = events
        """The events being sent."""
        merged = dict(_DEFAULT_HEADERS)
        for name, value in (headers or {}).items():
            if name.lower() != "content-type":
                merged[name] = value
        self._frames = _frames(events, event_ids)
        super().__init__(
            self._frames,
            status_code=status_code,
            headers=merged,
            media_type=CONTENT_TYPE,
            background=background,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream; stop quietly when the client disconnects."""
        frames = self._frames
        try:
            if scope["type"] != "http":
                await super().__call__(scope, receive, send)
                return
            disconnected = await self._send_all(receive, send)
            if not disconnected:
                try:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    return
        finally:
            await _aclose(frames)
            await _aclose(self.events)  # when the frames never started
        if self.background is not None:
            await self.background()

    async def _send_all(self, receive: Receive, send: Send) -> bool:
        """Send the start and every frame; ``True`` when the client went away."""
        lock = anyio.Lock()
        last_write = anyio.current_time()
        disconnected = False

        async def write(message: dict[str, Any]) -> None:
            nonlocal last_write
            async with lock:
                await send(message)
                last_write = anyio.current_time()

        async def keep_alive(period: float, scope: anyio.CancelScope) -> None:
            nonlocal disconnected
            while True:
                delay = last_write + period - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                    continue
                try:
                    await write(_body(KEEPALIVE))
                except OSError:
                    disconnected = True
                    scope.cancel()
                    return

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    scope.cancel()
                    return

        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        try:
            await write(start)
        except OSError:
            return True
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            if self.keepalive is not None:
                tg.start_soon(keep_alive, self.keepalive, tg.cancel_scope)
            try:
                async for frame in self._frames:
                    await write(_body(frame))
            except OSError:
                disconnected = True
            except Exception as exc:
                failure = exc  # raised below as itself, not in an exception group
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return disconnected
