"""Tests of samsar_async.sse: frames, a spec-following decoder, stream_response over loopback."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from samsar_async import AsyncSamsar, _json, sse
from samsar_async.converter import structure_response
from samsar_async.errors import InvalidArgumentError, StreamDecodeError
from samsar_async.images import GeneratedImage
from samsar_async.sse import KEEPALIVE, Frame, comment, decode, decode_frames, encode
from samsar_async.streaming import (
    ErrorEvent,
    ImageGenerationCompleted,
    OutputTextDelta,
    ResponseCompleted,
    ResponseFailed,
    ResponseIncomplete,
    StreamEvent,
    UnknownEvent,
    event_to_dict,
    events_from_response,
)
from samsar_async.testing import Fault, MockSamsarServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

TRICKY = 'é€🎉 \r\n\u2028\u2029\x00 "quoted" \\ </script> data: x\n\nevent: y'

RESPONSE = {
    "id": "resp_sse",
    "object": "response",
    "created_at": 1773651000,
    "status": "completed",
    "model": "gpt-5.4",
    "output": [
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": TRICKY, "annotations": []},
                {"type": "refusal", "refusal": "no 🙅"},
                {"type": "output_hologram", "frames": [1]},
            ],
        },
        {
            "id": "ig_1",
            "type": "image_generation_call",
            "status": "completed",
            "revised_prompt": "a poster",
            "result": "iVBORw0KGgo=",
        },
        {"id": "ws_1", "type": "web_search_call", "status": "completed"},
    ],
    "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
}


def every_event() -> list[StreamEvent]:
    """At least one event of every type, with text that is hard to frame."""
    response = structure_response(RESPONSE)
    return [
        *events_from_response(response, chunk_chars=3),
        ResponseIncomplete(
            sequence_number=1,
            response={**RESPONSE, "status": "incomplete"},
            parsed=structure_response({**RESPONSE, "status": "incomplete"}),
        ),
        ResponseFailed(
            sequence_number=2,
            response={**RESPONSE, "status": "failed"},
            parsed=structure_response({**RESPONSE, "status": "failed"}),
        ),
        ImageGenerationCompleted(sequence_number=3, item_id="ig_2", output_index=1),
        ErrorEvent(sequence_number=0, code="X", message=TRICKY, param="p"),
        ErrorEvent(sequence_number=0, message="plain"),
        UnknownEvent("response.future", {"type": "response.future", "text": TRICKY}),
    ]


SMALL = [
    OutputTextDelta(
        sequence_number=4, item_id="msg_é", output_index=0, content_index=0, delta=TRICKY
    ),
    ErrorEvent(sequence_number=5, code="E", message="ünï\r\ncode 🎉"),
    ImageGenerationCompleted(
        sequence_number=6, item_id="ig", output_index=1, image=GeneratedImage(id="ig", b64="aGk=")
    ),
]


async def chunked(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def decode_all(*chunks: bytes) -> list[StreamEvent]:
    return [event async for event in decode(chunked(*chunks))]


async def frames_of(*chunks: bytes) -> list[Frame]:
    return [frame async for frame in decode_frames(chunked(*chunks))]


def assert_same_events(got: list[StreamEvent], expected: list[StreamEvent]) -> None:
    assert got == expected
    assert [type(e) for e in got] == [type(e) for e in expected]
    for a, b in zip(got, expected, strict=True):
        assert event_to_dict(a) == json.loads(json.dumps(event_to_dict(b)))


# --- encode -------------------------------------------------------------------


def test_encode_frame_format() -> None:
    event = SMALL[0]
    frame = encode(event)
    head, data, end = frame.split(b"\n", 2)
    assert head == b"event: response.output_text.delta"
    assert data.startswith(b"data: {")
    assert end == b"\n"
    # One data line: no raw CR or LF inside the JSON, and it is compact.
    payload = data[len(b"data: ") :]
    assert b"\r" not in payload
    assert b"\n" not in payload
    assert json.loads(payload) == event_to_dict(event)
    assert b'", "' not in payload
    assert b'": ' not in payload


def test_encode_with_id() -> None:
    frame = encode(SMALL[1], id="5")
    assert frame.startswith(b"event: error\nid: 5\ndata: {")
    assert frame.endswith(b"}\n\n")


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_encode_refuses_line_breaks_in_fields(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"event\.event_type"):
        encode(UnknownEvent(bad, {"type": bad}))
    with pytest.raises(InvalidArgumentError, match="id"):
        encode(SMALL[0], id=bad)


def test_keepalive_and_comment() -> None:
    assert KEEPALIVE == b": keep-alive\n\n"
    assert comment() == b":\n\n"
    assert comment("hi") == b": hi\n\n"
    assert comment("a\r\nb\n\nc") == b": a\n: b\n:\n: c\n\n"


def test_encode_with_stdlib_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without orjson (the speedups extra) frames are still one compact line."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    monkeypatch.setattr(_json, "dumps", lambda obj: encoder.encode(obj).encode())
    monkeypatch.setattr(_json, "loads", json.loads)
    for event in every_event():
        frame = encode(event)
        assert frame.count(b"\n") == 3
        assert b"\r" not in frame


# --- round trips ----------------------------------------------------------------


@pytest.mark.anyio
async def test_round_trip_every_event_type() -> None:
    events = every_event()
    stream = b"".join(encode(e, id=str(i)) for i, e in enumerate(events))
    assert_same_events(await decode_all(stream), events)
    kinds = {type(e) for e in events}
    assert len(kinds) == 17  # every StreamEvent class


@pytest.mark.anyio
async def test_round_trip_restores_parsed_response_and_image() -> None:
    events = every_event()
    decoded = await decode_all(b"".join(encode(e) for e in events))
    completed = next(e for e in decoded if isinstance(e, ResponseCompleted))
    assert completed.parsed is not None
    assert completed.parsed.output_text == TRICKY
    image = next(e for e in decoded if isinstance(e, ImageGenerationCompleted) and e.image)
    assert image.image is not None
    assert image.image.b64 == "iVBORw0KGgo="
    assert image.image.id == "ig_1"


@pytest.mark.anyio
async def test_round_trip_one_byte_at_a_time() -> None:
    events = every_event()
    stream = KEEPALIVE + b"".join(encode(e) + comment("tick") for e in events)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert_same_events(await decode_all(*chunks), events)


LINE_ENDINGS: dict[str, Callable[[bytes], bytes]] = {
    "LF": lambda b: b,
    "CRLF": lambda b: b.replace(b"\n", b"\r\n"),
    "CR": lambda b: b.replace(b"\n", b"\r"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("ending", list(LINE_ENDINGS))
async def test_every_split_offset(ending: str) -> None:
    """Two chunks split at every byte offset: across CRLF, multi-byte UTF-8, field names."""
    raw = KEEPALIVE + b"".join(encode(e, id=str(e.sequence_number)) + comment("x") for e in SMALL)
    # The JSON holds raw multi-byte UTF-8 (2, 3 and 4 bytes) to split.
    for char in "é€🎉":
        assert char.encode() in raw
    stream = LINE_ENDINGS[ending](raw)
    for offset in range(len(stream) + 1):
        got = await decode_all(stream[:offset], b"", stream[offset:])
        assert got == SMALL, (ending, offset)


@pytest.mark.anyio
async def test_frames_split_at_every_offset_keep_ids() -> None:
    stream = b"".join(encode(e, id=str(e.sequence_number)) for e in SMALL).replace(b"\n", b"\r\n")
    for offset in range(len(stream) + 1):
        frames = await frames_of(stream[:offset], stream[offset:])
        assert [(f.event, f.id) for f in frames] == [
            (e.type, str(e.sequence_number)) for e in SMALL
        ]


# --- the parser, by the standard ----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # data lines are joined with LF; one space after the colon is dropped
        ([b"data: a\ndata: b\n\n"], [Frame("message", "a\nb")]),
        ([b"data:a\n\n"], [Frame("message", "a")]),
        ([b"data:  a\n\n"], [Frame("message", " a")]),
        ([b"data\n\n"], [Frame("message", "")]),
        ([b"data:\ndata:\n\n"], [Frame("message", "\n")]),
        # comments, anywhere
        ([b": hi\ndata: a\n:\ndata: b\n: bye\n\n"], [Frame("message", "a\nb")]),
        ([KEEPALIVE, KEEPALIVE, b"data: a\n\n", KEEPALIVE], [Frame("message", "a")]),
        # event names apply to one frame; a frame without data is not dispatched
        ([b"event: x\n\ndata: a\n\n"], [Frame("message", "a")]),
        ([b"event: x\ndata: a\n\ndata: b\n\n"], [Frame("x", "a"), Frame("message", "b")]),
        ([b"event:x\nevent: y\ndata: a\n\n"], [Frame("y", "a")]),
        # ids persist across frames; an id with NUL is ignored; an empty id resets
        (
            [b"id: 1\ndata: a\n\ndata: b\n\n"],
            [Frame("message", "a", "1"), Frame("message", "b", "1")],
        ),
        ([b"id: 1\0\ndata: a\n\n"], [Frame("message", "a")]),
        (
            [b"id: 1\ndata: a\n\nid\ndata: b\n\n"],
            [Frame("message", "a", "1"), Frame("message", "b", "")],
        ),
        ([b"id: 7\n\ndata: a\n\n"], [Frame("message", "a", "7")]),
        # retry takes ASCII digits only
        ([b"retry: 250\ndata: a\n\n"], [Frame("message", "a", None, 250)]),
        ([b"retry: 2x\ndata: a\n\n"], [Frame("message", "a")]),
        ([b"retry: \xd9\xa1\xd9\xa2\ndata: a\n\n"], [Frame("message", "a")]),
        ([b"retry:\ndata: a\n\n"], [Frame("message", "a")]),
        # unknown and differently-cased fields are ignored
        ([b"foo: bar\nData: x\ndata: a\n\n"], [Frame("message", "a")]),
        # line endings: CR, CRLF, LF, mixed; CRLF split across chunks is one line end
        ([b"data: a\rdata: b\r\r"], [Frame("message", "a\nb")]),
        ([b"data: a\r\n\r\ndata: b\n\n"], [Frame("message", "a"), Frame("message", "b")]),
        (
            [b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"\r"],
            [Frame("message", "a"), Frame("message", "b")],
        ),
        ([b"data: a\r", b"", b"\ndata: b\n\n"], [Frame("message", "a\nb")]),
        # an unfinished frame at the end is dropped
        ([b"data: a\n\ndata: b"], [Frame("message", "a")]),
        ([b"data: a\n\ndata: b\n"], [Frame("message", "a")]),
        ([], []),
        ([b"", b""], []),
        # UTF-8: a leading BOM is dropped (even split), later ones kept; invalid bytes -> U+FFFD
        ([b"\xef\xbb\xbfdata: a\n\n"], [Frame("message", "a")]),
        ([b"\xef", b"\xbb", b"\xbfdata: a\n\n"], [Frame("message", "a")]),
        ([b"data: \xef\xbb\xbfa\n\n"], [Frame("message", "\ufeffa")]),
        ([b"data: \xff\xfe\n\n"], [Frame("message", "\ufffd\ufffd")]),
        ([b"data: \xe2\x82", b"\xac\n\n"], [Frame("message", "€")]),
        ([b"data: \xe2\x82\n\n"], [Frame("message", "\ufffd")]),
    ],
)
async def test_decode_frames(chunks: list[bytes], expected: list[Frame]) -> None:
    assert await frames_of(*chunks) == expected


@pytest.mark.anyio
async def test_multi_line_data_is_one_event() -> None:
    stream = (
        b"event: error\n"
        b'data: {"type": "error",\n'
        b'data:  "sequence_number": 2,\n'
        b'data: "code": null, "message": "two\\nlines"}\n\n'
    )
    assert await decode_all(stream) == [ErrorEvent(sequence_number=2, message="two\nlines")]


@pytest.mark.anyio
async def test_decode_takes_the_type_from_the_event_name_when_data_has_none() -> None:
    stream = b'event: error\ndata: {"sequence_number": 1, "message": "m"}\n\n'
    assert await decode_all(stream) == [ErrorEvent(sequence_number=1, message="m")]


@pytest.mark.anyio
async def test_decode_prefers_the_data_type() -> None:
    stream = b'event: other\ndata: {"type": "error", "sequence_number": 1, "message": "m"}\n\n'
    assert await decode_all(stream) == [ErrorEvent(sequence_number=1, message="m")]


@pytest.mark.anyio
async def test_decode_skips_done_marker() -> None:
    stream = encode(SMALL[1]) + b"data: [DONE]\n\n"
    assert await decode_all(stream) == [SMALL[1]]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (b"data: not json\n\n", "data is not JSON: 'not json'"),
        (b"event: x\ndata: {\n\n", "SSE frame 'x': data is not JSON"),
        (b"data: [1, 2]\n\n", "JSON object"),
        (b'data: {"sequence_number": 1}\n\n', "'type'"),
        (b'data: {"type": "error", "sequence_number": 1}\n\n', "'message'"),
    ],
)
async def test_decode_errors(stream: bytes, match: str) -> None:
    with pytest.raises(StreamDecodeError, match=match):
        await decode_all(stream)


@pytest.mark.anyio
async def test_decode_stops_early_cleanly() -> None:
    stream = b"".join(encode(e) for e in SMALL)
    events = decode(chunked(stream))
    async for event in events:
        assert event == SMALL[0]
        break
    await events.aclose()


# --- stream_response over loopback ----------------------------------------------


@contextlib.asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Any],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def events_source(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


@pytest.mark.anyio
async def test_stream_response_headers_and_frames() -> None:
    events = every_event()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.stream_response(
            request, events_source(events), headers={"Access-Control-Allow-Origin": "*"}
        )

    async with serve(handler) as url, aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = await resp.read()
    assert_same_events(await decode_all(body), events)
    frames = await frames_of(body)
    # Each frame has id: <sequence_number>; an event without one (the UnknownEvent)
    # has no id line, so the last id seen carries over, as the standard says.
    expected_ids: list[str | None] = []
    for event in events:
        sequence = event.sequence_number
        expected_ids.append(str(sequence) if sequence is not None else expected_ids[-1])
    assert [f.id for f in frames] == expected_ids
    assert isinstance(events[-1], UnknownEvent)
    assert b"\n\nevent: response.future\ndata: " in body
    assert [f.event for f in frames] == [
        e.event_type if isinstance(e, UnknownEvent) else e.type for e in events
    ]


@pytest.mark.anyio
async def test_stream_response_without_ids() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.stream_response(request, events_source(SMALL), event_ids=False)

    async with serve(handler) as url, aiohttp.ClientSession() as http, http.get(url) as resp:
        body = await resp.read()
    assert b"\nid:" not in body
    assert body == b"".join(encode(e) for e in SMALL)


@pytest.mark.anyio
async def test_stream_response_sends_keepalives_while_waiting() -> None:
    release = anyio.Event()

    async def slow() -> AsyncIterator[StreamEvent]:
        yield SMALL[0]
        await release.wait()  # the answer is "being generated"
        yield SMALL[1]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.stream_response(request, slow(), keepalive=0.01)

    async with serve(handler) as url, aiohttp.ClientSession() as http, http.get(url) as resp:
        received = b""
        with anyio.fail_after(10):
            while KEEPALIVE not in received:
                received += await resp.content.readany()
        release.set()
        received += await resp.read()
    assert received.startswith(encode(SMALL[0], id="4"))
    assert received.endswith(encode(SMALL[1], id="5"))
    assert await decode_all(received) == SMALL[:2]


@pytest.mark.anyio
async def test_stream_response_stops_when_the_client_leaves() -> None:
    closed = anyio.Event()
    returned = anyio.Event()
    never = anyio.Event()

    async def endless() -> AsyncIterator[StreamEvent]:
        try:
            yield SMALL[0]
            await never.wait()
            yield SMALL[1]
        finally:
            closed.set()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await sse.stream_response(request, endless(), keepalive=0.01)
        returned.set()
        return response

    async with serve(handler) as url, aiohttp.ClientSession() as http:
        resp = await http.get(url)
        received = b""
        with anyio.fail_after(10):
            while b"\n\n" not in received:
                received += await resp.content.readany()
        resp.close()  # drop the connection mid-stream
        with anyio.fail_after(10):
            await closed.wait()
            await returned.wait()
    assert received.startswith(encode(SMALL[0], id="4"))


@pytest.mark.anyio
async def test_stream_response_reports_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> AsyncIterator[StreamEvent]:
        yield SMALL[0]
        raise RuntimeError("secret internal detail")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.stream_response(request, broken())

    with caplog.at_level(logging.ERROR, logger="samsar_async.sse"):
        async with serve(handler) as url, aiohttp.ClientSession() as http, http.get(url) as resp:
            body = await resp.read()
    events = await decode_all(body)
    assert events == [
        SMALL[0],
        ErrorEvent(sequence_number=5, code="internal_error", message="the event stream failed"),
    ]
    assert b"secret" not in body
    assert any(
        r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records
    )


@pytest.mark.anyio
async def test_stream_response_of_nothing() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse.stream_response(request, events_source([]))

    async with serve(handler) as url, aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == b""


@pytest.mark.anyio
@pytest.mark.parametrize("keepalive", [0, -1, math.nan, math.inf, True, "5"])
async def test_stream_response_refuses_bad_keepalive(keepalive: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="keepalive"):
        await sse.stream_response(None, events_source([]), keepalive=keepalive)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_an_event_too_deep_for_json_is_a_samsar_error(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    """A 2xx answer whose unknown item nests 800 levels: stream() yields its events,
    and encoding one raises StreamDecodeError, never a raw TypeError/RecursionError."""
    deep = b"[" * 800 + b"]" * 800
    body = b'{"id":"r","object":"response","output":[{"type":"weird","x":' + deep + b"}]}"
    server.faults.add(Fault.body(200, body, "application/json"))
    events = [e async for e in client.assistant.stream(session_id, "x")]
    assert events[-1].type == "response.completed"
    failures = 0
    for event in events:
        try:
            sse.encode(event)
        except StreamDecodeError:
            failures += 1
    if _json.HAVE_ORJSON:  # (the standard library's encoder goes that deep)
        assert failures >= 1  # the events that carry the deep item
