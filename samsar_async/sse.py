"""Server-sent events (``text/event-stream``): streaming events on the wire, and back.

::

    # aiohttp server: forward a completion as SSE
    async def chat(request: web.Request) -> web.StreamResponse:
        events = client.assistant.stream(session_id, message)
        return await sse.stream_response(request, events)

    # any client: bytes in, events out
    async for event in sse.decode(response.content.iter_any()):
        ...

- :func:`encode` gives one frame: ``event: <type>``, optionally ``id: <id>``,
  and ``data: <compact JSON of event_to_dict(event)>``, then a blank line.
  Compact JSON escapes every control character, so the data is always one
  line. An :class:`~samsar_async.events.UnknownEvent` goes out under the
  server's name for it (its ``event_type``), as it came in.
- :data:`KEEPALIVE` and :func:`comment` are comment frames, which clients ignore.
- :func:`decode_frames` parses a byte stream as the HTML standard says
  (lines end with CRLF, LF or CR, even split across chunks; UTF-8 even split
  mid-character; comments, ``event``, ``data``, ``id``, ``retry``), and
  :func:`decode` turns each frame's data into an event with
  :func:`~samsar_async.converter.event_from_dict`.
- :func:`stream_response` writes events to an ``aiohttp.web`` client, with
  keep-alive comments while it waits and a clean stop when the client leaves.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterable, Mapping

import anyio
import attrs
from aiohttp import web

from . import _json
from .converter import event_from_dict, event_to_dict
from .errors import InvalidArgumentError, StreamDecodeError
from .events import ErrorEvent, StreamEvent, UnknownEvent

__all__ = [
    "CONTENT_TYPE",
    "KEEPALIVE",
    "Frame",
    "comment",
    "decode",
    "decode_frames",
    "encode",
    "stream_response",
]

logger: logging.Logger = logging.getLogger(__name__)
"""Where :func:`stream_response` logs a failing event source."""

CONTENT_TYPE = "text/event-stream"

KEEPALIVE = b": keep-alive\n\n"
"""A comment frame: keeps proxies and load balancers from closing an idle stream."""

_EOL = re.compile(r"\r\n|\r|\n")
_BAD_FIELD_CHARS = ("\r", "\n", "\0")


def _check_field(name: str, value: str) -> str:
    if any(c in value for c in _BAD_FIELD_CHARS):
        raise InvalidArgumentError(name, "must not contain CR, LF or NUL")
    return value


def comment(text: str = "") -> bytes:
    """A comment frame (``: text``); each line of ``text`` becomes a comment line."""
    lines = _EOL.split(text) if text else [""]
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode() + b"\n"


def encode(event: StreamEvent, *, id: str | None = None) -> bytes:
    """One ``text/event-stream`` frame holding ``event``.

    ``event: <type>\\n`` (``id: <id>\\n``) ``data: <compact JSON>\\n\\n``;
    for an :class:`~samsar_async.events.UnknownEvent` the ``event:`` name is
    its ``event_type``. Raises :class:`~samsar_async.errors.InvalidArgumentError`
    when that name or ``id`` contains CR, LF or NUL (they cannot be sent in a
    field), and :class:`~samsar_async.errors.StreamDecodeError` when the event's
    data cannot be written as JSON (an answer nested deeper than the JSON
    encoder goes, say).
    """
    if isinstance(event, UnknownEvent):
        name = _check_field("event.event_type", event.event_type)
    else:
        name = event.type
    head = "event: " + name + "\n"
    if id is not None:
        head += "id: " + _check_field("id", id) + "\n"
    try:
        data = _json.dumps(event_to_dict(event))
    except (TypeError, ValueError, RecursionError) as exc:
        raise StreamDecodeError(
            f"{name} event: its data cannot be written as JSON ({type(exc).__name__})"
        ) from None
    # Compact JSON has no raw CR or LF: they are escaped inside strings.
    return head.encode() + b"data: " + data + b"\n\n"


# --- decoding -------------------------------------------------------------------


@attrs.frozen
class Frame:
    """One dispatched SSE frame.

    ``event`` is the ``event:`` field (``"message"`` when absent), ``data`` the
    ``data:`` lines joined with ``\\n``, ``id`` the last event id seen so far
    in the stream (``None`` before any ``id:`` field) and ``retry`` the last
    reconnection time in milliseconds set by a ``retry:`` field, if any.
    """

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class _Lines:
    """Splits decoded text into lines ending with CRLF, LF or CR, across feeds."""

    __slots__ = ("_pending", "_skip_lf")

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._skip_lf = False

    def feed(self, text: str) -> list[str]:
        if self._skip_lf and text:
            # The last feed ended with CR: an LF starting this one completes that CRLF.
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        lines: list[str] = []
        start = 0
        for match in _EOL.finditer(text):
            self._pending.append(text[start : match.start()])
            lines.append("".join(self._pending))
            self._pending.clear()
            start = match.end()
        if start < len(text):
            self._pending.append(text[start:])
        if text.endswith("\r"):
            self._skip_lf = True
        return lines


class _Parser:
    """The HTML standard's event stream interpretation, one line at a time."""

    __slots__ = ("_data", "_event", "_has_data", "id", "retry")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self.id: str | None = None
        self.retry: int | None = None

    def line(self, line: str) -> Frame | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self.id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Frame | None:
        event, self._event = self._event, ""
        if not self._has_data:
            return None
        data = "\n".join(self._data)
        self._data.clear()
        self._has_data = False
        return Frame(event or "message", data, self.id, self.retry)


async def decode_frames(chunks: AsyncIterable[bytes]) -> AsyncGenerator[Frame, None]:
    """The frames of a ``text/event-stream`` byte stream, chunked any way at all.

    Invalid UTF-8 becomes U+FFFD and a leading byte order mark is dropped, as
    the standard says. Frames without data are not dispatched, and neither
    is an unfinished frame at the end of the stream.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines = _Lines()
    parser = _Parser()
    at_start = True
    async for chunk in chunks:
        text = decoder.decode(chunk)
        if at_start and text:
            at_start = False
            if text[0] == "\ufeff":
                text = text[1:]
        for line in lines.feed(text):
            frame = parser.line(line)
            if frame is not None:
                yield frame
    # An incomplete character at the end is U+FFFD in an unfinished frame: dropped.
    decoder.decode(b"", final=True)


def _excerpt(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def decode(chunks: AsyncIterable[bytes]) -> AsyncGenerator[StreamEvent, None]:
    """The streaming events of a ``text/event-stream`` byte stream.

    Each frame's data must be a JSON object in OpenAI's event shape; when it
    has no ``type``, the frame's ``event:`` name is used. A ``data: [DONE]``
    frame (the Chat Completions end marker) is skipped. Raises
    :class:`~samsar_async.errors.StreamDecodeError` for data that is not JSON
    or not a valid event.
    """
    frames = decode_frames(chunks)
    try:
        async for frame in frames:
            if frame.data == "[DONE]":
                continue
            try:
                data = _json.loads(frame.data)
            except ValueError:
                raise StreamDecodeError(
                    f"SSE frame {frame.event!r}: data is not JSON: {_excerpt(frame.data)!r}"
                ) from None
            if isinstance(data, dict) and "type" not in data and frame.event != "message":
                data["type"] = frame.event
            yield event_from_dict(data)
    finally:
        await frames.aclose()


# --- aiohttp.web ----------------------------------------------------------------

_HEADERS: Mapping[str, str] = {
    "Content-Type": CONTENT_TYPE,
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def stream_response(
    request: web.Request,
    events: AsyncIterable[StreamEvent],
    *,
    keepalive: float | None = 15.0,
    event_ids: bool = True,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send ``events`` to the client of ``request`` as server-sent events.

    Prepares a ``200`` :class:`aiohttp.web.StreamResponse` with
    ``Content-Type: text/event-stream``, ``Cache-Control: no-cache`` and
    ``X-Accel-Buffering: no`` (plus ``headers``), writes one frame per event
    and returns the finished response, for the handler to return.

    - While no frame has been written for ``keepalive`` seconds (say, while
      the completion is being generated) a :data:`KEEPALIVE` comment is sent;
      ``None`` sends none.
    - With ``event_ids``, each frame has ``id: <sequence_number>``: a
      browser's ``EventSource`` that reconnects then sends ``Last-Event-ID``,
      which a handler can answer with ``204`` to stop it asking again.
    - When the client goes away (a write fails with ``ConnectionError``), the
      response stops quietly.
    - If ``events`` raises, the error is logged and the client gets an
      ``error`` event (``code`` ``"internal_error"``, no details) before the
      stream ends normally.

    ``events`` is consumed: it is closed (``aclose()``, when it has one)
    however this ends, which cancels the work behind a
    :meth:`~samsar_async.assistant.Assistant.stream` whose client left.
    Cancellation of the handler propagates.
    """
    if keepalive is not None and (
        isinstance(keepalive, bool)
        or not isinstance(keepalive, (int, float))
        or not math.isfinite(keepalive)
        or keepalive <= 0
    ):
        raise InvalidArgumentError("keepalive", "must be a positive number of seconds or None")
    response = web.StreamResponse(headers=_HEADERS)
    if headers:
        response.headers.update(headers)
    await response.prepare(request)

    lock = anyio.Lock()
    last_write = anyio.current_time()
    disconnected = False

    async def write(data: bytes) -> None:
        nonlocal last_write
        async with lock:
            await response.write(data)
            last_write = anyio.current_time()

    async def keep_alive(period: float, scope: anyio.CancelScope) -> None:
        nonlocal disconnected
        while True:
            delay = last_write + period - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)
                continue
            try:
                await write(KEEPALIVE)
            except ConnectionError:
                disconnected = True
                scope.cancel()
                return

    iterator = aiter(events)
    async with anyio.create_task_group() as tg:
        if keepalive is not None:
            tg.start_soon(keep_alive, keepalive, tg.cancel_scope)
        try:
            last_sequence = -1
            while True:
                try:
                    event = await anext(iterator)
                except StopAsyncIteration:
                    break
                except Exception:
                    logger.exception("the event source of an SSE response failed")
                    event = ErrorEvent(
                        sequence_number=last_sequence + 1,
                        code="internal_error",
                        message="the event stream failed",
                    )
                    await write(encode(event, id=str(event.sequence_number) if event_ids else None))
                    break
                sequence = event.sequence_number
                if sequence is not None:
                    last_sequence = sequence
                event_id = str(sequence) if event_ids and sequence is not None else None
                await write(encode(event, id=event_id))
        except ConnectionError:
            disconnected = True
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        tg.cancel_scope.cancel()
    if not disconnected:
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    return response
