"""Odd answers (issue 12): error messages bounded and never raising, credit headers
out of range unreadable, stream() keeps its one-error-event promise; the raw-reply
and header-carrying faults of the mock server."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

import pytest

from samsar_async import (
    APIStatusError,
    AsyncSamsar,
    BadRequestError,
    OutcomeUnknownError,
    RetryPolicy,
    UnprocessableEntityError,
)
from samsar_async.converter import parse_credits
from samsar_async.events import ErrorEvent
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio


def deep_json(levels: int) -> bytes:
    return b'{"detail": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("levels", [255, 300, 1000, 100_000, 1_000_000])
@pytest.mark.parametrize("status", [400, 422])
async def test_deeply_nested_detail_becomes_a_status_error(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str, levels: int, status: int
) -> None:
    server.faults.add(Fault.body(status, deep_json(levels), "application/json"))
    with pytest.raises(APIStatusError) as info:
        await client.assistant.complete(session_id, "hi")
    exc = info.value
    assert type(exc) is (BadRequestError if status == 400 else UnprocessableEntityError)
    assert exc.status_code == status
    assert str(exc).startswith(f"{status} ")
    assert len(str(exc)) <= 300
    # The client still works.
    assert (await client.assistant.complete(session_id, "again")).output_text


async def test_deep_detail_is_shown_briefly(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.body(400, deep_json(300), "application/json"))
    with pytest.raises(BadRequestError) as info:
        await client.assistant.complete(session_id, "hi")
    assert str(info.value) == "400 Bad Request: [[[[[[[...]]]]]]]"


async def test_stream_yields_one_error_event_for_a_deep_detail(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.body(400, deep_json(300), "application/json"))
    events = [event async for event in client.assistant.stream(session_id, "hi")]
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, ErrorEvent)
    assert event.code == "BadRequestError"
    assert isinstance(event.error, BadRequestError)


async def test_huge_and_unprintable_messages_are_bounded(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    message = "\x1b[31mred\x1b[0m\r\nnext line " + "x" * 1_000_000
    body = json.dumps({"error": {"message": message}}).encode()
    server.faults.add(Fault.body(422, body, "application/json"))
    with pytest.raises(UnprocessableEntityError) as info:
        await client.assistant.complete(session_id, "hi")
    text = str(info.value)
    assert text.startswith("422 Unprocessable Entity: \ufffd[31mred\ufffd[0m next line ")
    assert len(text) <= 600
    assert text.endswith("...")
    assert len(info.value.body["error"]["message"]) == len(message)  # the body is kept whole
    # A lone surrogate escape (JSON without orjson, text with it) never reaches the message.
    server.faults.add(Fault.body(422, b'{"error": {"message": "a \\ud800 b"}}', "application/json"))
    with pytest.raises(UnprocessableEntityError) as info:
        await client.assistant.complete(session_id, "hi")
    str(info.value).encode("utf-8")  # printable and loggable


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (
            b"<html><head><TITLE>502 Bad Gateway</TITLE></head><body>x</body></html>",
            "502 Bad Gateway",
        ),
        (
            b"<p>Upstream <b>failed</b><script>var a = '<p>';</script> now</p>",
            "Upstream failed now",
        ),
        (b"<style>p { color: red }</style><div>Busy</div>", "Busy"),
        (b"<" * 65536, ""),
        (b"<title" * 10_000, ""),
        (b"<script" * 9_000, ""),
        (b"plain \xff\xfe text", "plain \ufffd\ufffd text"),
    ],
)
async def test_html_and_text_pages(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str, page: bytes, message: str
) -> None:
    server.faults.add(Fault.body(418, page, "text/html"))
    with pytest.raises(APIStatusError) as info:
        await client.assistant.complete(session_id, "hi")
    assert str(info.value) == (f"418: {message}" if message else "418")


async def test_redirect_target_never_shows_credentials(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.redirect("https://user:secret@elsewhere.example/v1"))
    with pytest.raises(APIStatusError) as info:
        await client.assistant.complete(session_id, "hi")
    assert "secret" not in str(info.value)
    assert "elsewhere.example" in str(info.value)


# ------------------------------------------------------------------ credits


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("12.5", Decimal("12.5")),
        (" 0.000001 ", Decimal("0.000001")),
        ("-3", Decimal(-3)),
        ("999999999999999.999999999999", Decimal("999999999999999.999999999999")),
        ("1.5000000000000000000000", Decimal("1.5")),
        ("0E+1000000", Decimal(0)),
        ("1e1000000", None),
        ("-1e1000000", None),
        ("1e15", None),
        ("1000000000000000", None),
        ("1e-13", None),
        ("0.0000000000001", None),
        ("1e-1000000", None),
        ("NaN", None),
        ("sNaN", None),
        ("Infinity", None),
        ("abc", None),
        ("", None),
    ],
)
def test_credit_header_range(value: str, parsed: Decimal | None) -> None:
    assert parse_credits(value, None).charged == parsed


async def test_out_of_range_credit_header_never_overflows_later(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    real = await client.assistant.complete(session_id, "first")
    good = real.credits.charged
    assert good is not None
    huge = json.dumps(real.raw).encode()
    chat = client.assistant.conversation(session_id)
    for _ in range(2):
        server.faults.add(
            Fault.body(
                200,
                huge,
                "application/json",
                headers=[("x-credits-charged", "1e1000000"), ("x-credits-remaining", "9e999999")],
            )
        )
        response = await chat.send("hi")
        assert response.credits.charged is None
        assert response.credits.remaining is None
    await chat.send("real one")
    assert chat.credits_charged == chat.turns[-1].credits_charged  # no decimal.Overflow


# ------------------------------------------------------------------ faults


async def test_raw_reply_is_sent_as_is(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    real = await client.assistant.complete(session_id, "first")
    body = json.dumps(real.raw).encode()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"x-credits-charged: 2\r\nx-credits-charged: 3\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    server.faults.add(Fault.raw(head + body))
    response = await client.assistant.complete(session_id, "second")
    assert response.id == real.id
    assert response.credits.charged == Decimal(2)  # the first of duplicate headers
    record = server.requests[-1]
    assert record.fault == "raw"
    assert record.status == 200
    assert server.ledger[-1].response_id == real.id  # nothing charged for the raw reply


async def test_raw_garbage_and_informational_replies(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    async with AsyncSamsar(server.api_key, base_url=server.url, retry=None) as client:
        for data, status in [
            (b"HELLO\r\n\r\n", None),
            (b"HTTP/1.1 100 Continue\r\n\r\n", 100),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", 200),
        ]:
            server.faults.add(Fault.raw(data))
            with pytest.raises(OutcomeUnknownError):
                await client.assistant.complete(session_id, "hi")
            assert server.requests[-1].status == status
        assert (await client.assistant.complete(session_id, "after")).output_text


async def test_body_fault_headers_and_gzip(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    payload = json.dumps({"error": {"message": "zipped"}}).encode()
    server.faults.add(
        Fault.body(
            409,
            gzip.compress(payload),
            "application/json",
            headers=[("Content-Encoding", "gzip"), ("X-Dup", "1"), ("X-Dup", "2")],
        )
    )
    policy = RetryPolicy.disabled()
    with pytest.raises(APIStatusError) as info:
        await client.assistant.complete(session_id, "hi", retry=policy)
    assert str(info.value) == "409 Conflict: zipped"
    assert info.value.headers.getall("X-Dup") == ["1", "2"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="raw"):
        server.faults.random(kinds=["raw"])
