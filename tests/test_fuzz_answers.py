"""Hypothesis: hostile answers (issue 12).

The local server answers with drawn statuses (100-599: 1xx through raw replies),
headers (duplicates, odd credit values, odd ``Retry-After``) and bodies (deep or
huge JSON, bad UTF-8, truncated, wrong content type, gzip). The property: the
call returns a ``Response`` (or ``SystemPrompt``) or raises a ``SamsarError``
subclass, never anything else; ``stream()`` yields its events or exactly one
error event; credit sums never raise; and the client still works for the next
call. One server and client per test function; faults reset per example.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from samsar_async import (
    AsyncSamsar,
    InvalidArgumentError,
    Response,
    RetryPolicy,
    SamsarError,
    SystemPrompt,
    Timeout,
)
from samsar_async.config import MAX_CREDITS_DIGITS
from samsar_async.events import ErrorEvent
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = [pytest.mark.anyio, pytest.mark.fuzz]


# The guard on a drawn call. Some hostile answers stall the client until its read
# timeout: aiohttp (every version) waits for more bytes after a 1xx status other than
# 100 followed by a body of a megabyte or more. The call then ends with
# APIReadTimeoutError, a SamsarError like any other outcome, so a short guard keeps the
# property and keeps such an example (and Hypothesis' variations of it) to seconds.
GUARD = Timeout(connect=2, read=2, total=3)
# The follow-up call on a healthy answer: generous, for a busy machine.
PATIENT = Timeout(connect=10, read=20, total=30)


@pytest.fixture
async def fuzz_client(server: MockSamsarServer) -> AsyncIterator[AsyncSamsar]:
    """Retries without waiting (a Retry-After above 0 is not retried), a short guard timeout."""
    async with AsyncSamsar(
        server.api_key,
        base_url=server.url,
        timeout=GUARD,
        retry=RetryPolicy(initial_backoff=0, max_backoff=0, max_retry_after=0),
    ) as client:
        yield client


# ------------------------------------------------------------------ strategies

RESPONSE = {
    "id": "resp_fuzz",
    "object": "response",
    "status": "completed",
    "model": "gpt-5.4",
    "output": [
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "hello", "annotations": []}],
        }
    ],
    "output_text": "hello",
    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
}


def _nest(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = [value] if i % 2 else {"detail": value}
    return value


json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated_responses(draw: st.DrawFn) -> Any:
    """The Responses object with a few fields dropped or replaced by odd values."""
    data = json.loads(json.dumps(RESPONSE))
    for key in draw(st.lists(st.sampled_from(sorted(RESPONSE)), max_size=3)):
        if draw(st.booleans()):
            data.pop(key, None)
        else:
            data[key] = draw(json_values)
    if draw(st.booleans()):
        data["output"] = draw(st.lists(json_values, max_size=3))
    return data


json_documents = st.one_of(
    mutated_responses(),
    json_values,
    st.integers(1, 400).map(_nest),  # deeper ones are built as bytes (deep_raw)
    st.builds(lambda m: {"error": {"message": m}}, st.text(max_size=50)),
    st.builds(lambda d: {"detail": d}, st.one_of(json_values, st.integers(1, 400).map(_nest))),
    st.integers(0, 2_000_000).map(lambda n: {"error": {"message": "x" * n}}),
)
deep_raw = st.integers(1, 200_000).map(lambda n: b'{"detail": ' + b"[" * n + b"]" * n + b"}")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "json", "deep", "truncated", "bytes", "badutf8", "empty"]))
    if kind == "json":
        return json.dumps(draw(json_documents)).encode()
    if kind == "deep":
        return draw(deep_raw)
    if kind == "truncated":
        data = json.dumps(draw(json_documents)).encode()
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "badutf8":
        return b'{"error": {"message": "bad \xff\xfe\xc3("}}'
    return b""


content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
            "text/html",
            "text/plain",
            "",
            "application/octet-stream",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)
credit_values = st.one_of(
    st.sampled_from(
        [
            "1e1000000",
            "-1e1000000",
            "9e999999",
            "1e15",
            "999999999999999.999999999999",
            "1e-13",
            "0E+1000000",
            "1e-1000000",
            "NaN",
            "sNaN",
            "-Infinity",
            "",
            "1_000",
            "0.000001",
            "12",
        ]
    ),
    st.decimals().map(str),
    st.floats().map(repr),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
)
retry_after_values = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1e400",
            "nan",
            "inf",
            "99999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37",
            "Thu, 01 Jan 1970 00:00:00 +9999",
            "garbage",
        ]
    ),
    st.floats().map(str),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)
headers = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["x-credits-charged", "x-credits-remaining"]), credit_values),
        st.tuples(st.sampled_from(["Retry-After", "retry-after-ms"]), retry_after_values),
        st.tuples(
            st.sampled_from(["Location", "X-Other", "Content-Type"]),
            st.sampled_from(["https://u:p@h/x", "/v1/other", "", "text/html"]),
        ),
    ),
    max_size=5,
)


@st.composite
def raw_replies(draw: st.DrawFn) -> bytes:
    status = draw(st.integers(100, 599))
    line = draw(
        st.sampled_from(
            [
                f"HTTP/1.1 {status} Reason".encode(),
                f"HTTP/1.0 {status}".encode(),
                b"HTTP/1.1 abc OK",
                b"garbage",
                b"",
            ]
        )
    )
    body = draw(bodies())
    if draw(st.booleans()):
        body = gzip.compress(body)
        extra = [(b"Content-Encoding", b"gzip")]
    else:
        extra = [(b"Content-Encoding", b"gzip")] if draw(st.booleans()) and body else []
    lines = [line]
    lines += [(n.encode() + b": " + v.encode()) for n, v in draw(headers)]
    lines += [n + b": " + v for n, v in extra]
    lines.append(b"Content-Type: " + draw(content_types).encode())
    framing = draw(st.sampled_from(["exact", "short", "long", "none", "chunked", "badchunk"]))
    if framing == "exact":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "short":
        lines.append(b"Content-Length: %d" % max(0, len(body) - 1))
    elif framing == "long":
        lines.append(b"Content-Length: %d" % (len(body) + 10))
    elif framing in ("chunked", "badchunk"):
        lines.append(b"Transfer-Encoding: chunked")
        size = len(body) if framing == "chunked" else len(body) + 5
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (size, body) if body else b"0\r\n\r\n"
    if draw(st.booleans()):
        lines.append(b"X-Bad-Utf8: \xff\xfe")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    kind = draw(st.sampled_from(["body", "body", "raw", "raw", "status", "classic"]))
    if kind == "body":
        body = draw(bodies())
        pairs = draw(headers)
        if draw(st.booleans()):
            body = gzip.compress(body)
            pairs.append(("Content-Encoding", "gzip"))
        return Fault.body(draw(st.integers(200, 599)), body, draw(content_types), headers=pairs)
    if kind == "raw":
        return Fault.raw(draw(raw_replies()))
    if kind == "status":
        return Fault.status(
            draw(st.sampled_from([400, 401, 402, 403, 404, 409, 422, 429, 500, 502, 503])),
            retry_after=draw(st.one_of(st.none(), retry_after_values)),
            body=draw(st.one_of(st.none(), json_documents)),
        )
    return draw(
        st.sampled_from(
            [
                Fault.disconnect(),
                Fault.disconnect(after_charge=True),
                Fault.truncate(),
                Fault.truncate(after_charge=False),
                Fault.html(502),
                Fault.invalid_json(),
                Fault.wrong_content_type(after_charge=True),
                Fault.redirect("https://u:p@elsewhere.example/v1"),
            ]
        )
    )


# ------------------------------------------------------------------ the property


def _check_error(exc: SamsarError, server: MockSamsarServer) -> None:
    assert not isinstance(exc, InvalidArgumentError)
    text = str(exc)
    assert len(text) < 4000
    assert server.api_key not in text
    text.encode("utf-8")  # printable and loggable


def _check_credits(value: Decimal | None) -> None:
    if value is not None:
        assert value.is_finite()
        assert value.adjusted() < MAX_CREDITS_DIGITS


@given(
    fault=faults(), times=st.integers(1, 3), mode=st.sampled_from(["session", "stream", "prompt"])
)
async def test_any_answer_is_a_response_or_a_samsar_error(
    fuzz_client: AsyncSamsar, server: MockSamsarServer, fault: Fault, times: int, mode: str
) -> None:
    client = fuzz_client
    server.faults.clear()
    server.set_balance(None, 10**9)
    session_id = server.create_session()
    server.faults.add(fault, times=times)
    event(f"{fault.kind.value} / {mode}")
    if mode == "session":
        chat = client.assistant.conversation(session_id)
        try:
            response = await chat.send("hi")
        except SamsarError as exc:
            event(type(exc).__name__)
            _check_error(exc, server)
        else:
            event("Response")
            assert isinstance(response, Response)
            _check_credits(response.credits.charged)
            _check_credits(response.credits.remaining)
        _check_credits(chat.credits_charged)  # summing never overflows
    elif mode == "stream":
        events = [e async for e in client.assistant.stream(session_id, "hi")]
        errors = [e for e in events if isinstance(e, ErrorEvent)]
        if errors:
            assert events == errors
            assert len(errors) == 1
            assert isinstance(errors[0].error, SamsarError)
            _check_error(errors[0].error, server)
            event(f"stream error {errors[0].code}")
        else:
            assert events[-1].type == "response.completed"
            event("stream completed")
    else:
        try:
            prompt = await client.assistant.set_system_prompt("be brief")
        except SamsarError as exc:
            event(type(exc).__name__)
            _check_error(exc, server)
        else:
            assert isinstance(prompt, SystemPrompt)
    # The client still works for the next call.
    server.faults.clear()
    again = await client.assistant.complete(server.create_session(), "next", timeout=PATIENT)
    assert again.output_text
