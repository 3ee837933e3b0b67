"""Tests of samsar_async.testing.MockSamsarServer over real loopback HTTP (plain aiohttp)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import re
import struct
import zlib
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import anyio
import pytest

from samsar_async.testing import (
    DEFAULT_SYSTEM_PROMPT,
    IMAGE_INPUT_TOKENS,
    MODEL,
    PNG_SIGNATURE,
    Charge,
    Fault,
    FaultKind,
    MockSamsarServer,
    credits_for,
)
from samsar_async.testing.__main__ import build_parser, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from multidict import CIMultiDictProxy

pytestmark = pytest.mark.anyio

DEFAULT = object()
"""Sentinel: use the server's default API key."""

CREDITS_PER_INPUT_TOKEN = Decimal("2.50") / 1_000_000 * 100 * Decimal("2.5")
CREDITS_PER_OUTPUT_TOKEN = Decimal("15") / 1_000_000 * 100 * Decimal("2.5")
CREDITS_PER_IMAGE = Decimal("0.04") * 100 * Decimal("2.5")


class Reply(NamedTuple):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture
async def server() -> AsyncIterator[MockSamsarServer]:
    async with MockSamsarServer() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    server: MockSamsarServer,
    body: Any = None,
    *,
    endpoint: str = "completion",
    base: str | None = None,
    key: Any = DEFAULT,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> Reply:
    """POST to ``{base}/assistant/{endpoint}`` and read the whole answer."""
    sent = dict(headers or {})
    if key is DEFAULT:
        key = server.api_key
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    url = f"{base or server.url}/assistant/{endpoint}"
    kwargs: dict[str, Any] = {"headers": sent}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if raw is not None:
        kwargs["data"] = raw
        sent.setdefault("Content-Type", "application/json")
    else:
        kwargs["json"] = body
    async with http.post(url, **kwargs) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def expected_credits(input_tokens: int, output_tokens: int, images: int = 0) -> Decimal:
    """The documented formula, computed independently of the server's code."""
    return (
        input_tokens * CREDITS_PER_INPUT_TOKEN
        + output_tokens * CREDITS_PER_OUTPUT_TOKEN
        + images * CREDITS_PER_IMAGE
    )


def tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value)
    return math.ceil(len(text) / 4)


def input_tokens_of(value: Any) -> int:
    return tokens(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, unfiltered scanlines) of an 8-bit RGB PNG, checking every CRC."""
    assert data[:8] == PNG_SIGNATURE == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + payload) == crc
        chunks.append((kind, payload))
        pos += 12 + length
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def assert_error(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    error = reply.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


# ------------------------------------------------------------------ lifecycle


async def test_start_close_and_addresses() -> None:
    srv = MockSamsarServer()
    with pytest.raises(RuntimeError):
        _ = srv.url
    await srv.start()
    try:
        assert srv.port > 0
        assert srv.url == f"http://127.0.0.1:{srv.port}/v1"
        assert srv.alias_url == f"http://127.0.0.1:{srv.port}/api/v1"
        with pytest.raises(RuntimeError):
            await srv.start()
        async with aiohttp.ClientSession() as http:
            reply = await call(http, srv, {"session_id": srv.create_session(), "input": "hi"})
        assert reply.status == 200
    finally:
        await srv.close()
    await srv.close()  # idempotent
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(http, srv, {"session_id": "x"})


async def test_close_wakes_a_slow_completion(http: aiohttp.ClientSession) -> None:
    srv = MockSamsarServer(latency=3600.0)
    await srv.start()
    session_id = srv.create_session()
    outcome: list[BaseException] = []

    async def slow() -> None:
        try:
            await call(http, srv, {"session_id": session_id, "input": "hi"})
        except aiohttp.ClientError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await srv.wait_until(lambda s: s.in_flight == 1)
        await srv.close()
    assert len(outcome) == 1
    assert srv.ledger == []
    assert srv.requests[0].status is None


# ------------------------------------------------------------------ set_system_prompt


async def test_set_system_prompt_both_prefixes(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    prompt = "You are the launch assistant for Acme. Keep answers concise."
    reply = await call(http, server, {"system_prompt": prompt}, endpoint="set_system_prompt")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {
        "system_prompt": prompt,
        "model": "gpt-5.4",
        "selected_assistant_model": "GPT5.4",
    }
    assert server.system_prompt() == prompt

    for cleared in ({"system_prompt": None}, {"system_prompt": ""}, {}):
        await call(http, server, {"system_prompt": "x"}, endpoint="set_system_prompt")
        reply = await call(
            http, server, cleared, endpoint="set_system_prompt", base=server.alias_url
        )
        assert reply.status == 200
        assert reply.json()["system_prompt"] is None
        assert server.system_prompt() is None


async def test_set_system_prompt_errors(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    ep = "set_system_prompt"
    assert_error(await call(http, server, {"system_prompt": 5}, endpoint=ep), 400)
    assert_error(await call(http, server, ["x"], endpoint=ep), 400, "invalid_body")
    assert_error(await call(http, server, raw=b"{nope", endpoint=ep), 400, "invalid_json")
    assert_error(await call(http, server, {}, endpoint=ep, key=None), 401, "missing_api_key")
    assert_error(await call(http, server, {}, endpoint=ep, key="sk-wrong"), 401)
    assert server.system_prompt() is None


# ------------------------------------------------------------------ completion: output rule


async def test_completion_on_both_prefixes_keeps_the_chain(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    assert re.fullmatch(r"[0-9a-f]{24}", sid)
    first = await call(http, server, {"session_id": sid, "input": "Write a caption"})
    second = await call(
        http, server, {"session_id": sid, "input": "Shorter"}, base=server.alias_url
    )
    third = await call(http, server, {"session_id": sid})  # no input: from history
    bodies = [r.json() for r in (first, second, third)]
    assert [r.status for r in (first, second, third)] == [200, 200, 200]
    assert first.headers["Content-Type"] == "application/json"
    assert [b["output_text"] for b in bodies] == [
        "Reply 1 to: Write a caption",
        "Reply 2 to: Shorter",
        "Reply 3 to: (history) Shorter",
    ]
    for body in bodies:
        assert re.fullmatch(r"resp_[0-9a-f]{48}", body["id"])
        assert body["object"] == "response"
        assert body["status"] == "completed"
        assert body["model"] == MODEL
        message = body["output"][0]
        assert re.fullmatch(r"msg_[0-9a-f]{48}", message["id"])
        assert message["type"] == "message"
        assert message["role"] == "assistant"
        assert message["content"] == [
            {"type": "output_text", "text": body["output_text"], "annotations": []}
        ]
        usage = body["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert [b["previous_response_id"] for b in bodies] == [None, bodies[0]["id"], bodies[1]["id"]]
    turns = server.turns(sid)
    assert [t.response_id for t in turns] == [b["id"] for b in bodies]
    assert [t.input_text for t in turns] == ["Write a caption", "Shorter", None]
    assert [r.turn for r in server.requests] == [1, 2, 3]
    assert [r.path for r in server.requests] == [
        "/v1/assistant/completion",
        "/api/v1/assistant/completion",
        "/v1/assistant/completion",
    ]


async def test_system_prompt_prefix_and_max_output_tokens(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    await call(
        http,
        server,
        {"system_prompt": "You   are the launch assistant for Acme."},
        endpoint="set_system_prompt",
    )
    reply = await call(http, server, {"session_id": sid, "input": "Write  a\ncaption"})
    assert reply.json()["output_text"] == "[You are the launch] Reply 1 to: Write a caption"

    reply = await call(http, server, {"session_id": sid, "max_output_tokens": 3})
    body = reply.json()
    assert reply.status == 200
    assert body["output_text"] == "[You are the"
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["usage"]["output_tokens"] == 3
    assert body["max_output_tokens"] == 3

    reply = await call(http, server, {"session_id": sid, "input": "ok", "max_output_tokens": 300})
    assert reply.json()["output_text"] == "[You are the launch] Reply 3 to: ok"
    assert reply.json()["status"] == "completed"


IMAGE_URL = "https://cdn.example.com/launch-hero.png"


@pytest.mark.parametrize(
    ("input_value", "expected"),
    [
        pytest.param("Hello", "Hello", id="string"),
        pytest.param({"role": "user", "content": "Hi there"}, "Hi there", id="message-str"),
        pytest.param(
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Write a caption"}],
            },
            "Write a caption",
            id="message-parts",
        ),
        pytest.param(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
            ],
            "second",
            id="messages",
        ),
        pytest.param(
            [
                {"type": "input_text", "text": "Describe the hero image."},
                {"type": "input_image", "image_url": IMAGE_URL},
            ],
            "Describe the hero image. [1 image]",
            id="content-array",
        ),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": IMAGE_URL},
                        {"type": "input_image", "file_id": "file_123"},
                    ],
                }
            ],
            "[2 images]",
            id="images-only",
        ),
        pytest.param({"role": "developer", "content": "rules"}, "(no user text)", id="no-user"),
    ],
)
async def test_input_forms(
    server: MockSamsarServer, http: aiohttp.ClientSession, input_value: Any, expected: str
) -> None:
    sid = server.create_session()
    reply = await call(http, server, {"session_id": sid, "input": input_value})
    assert reply.status == 200, reply.body
    assert reply.json()["output_text"] == f"Reply 1 to: {expected}"
    images = str(input_value).count("input_image")
    assert reply.json()["usage"]["input_tokens"] == (
        tokens(DEFAULT_SYSTEM_PROMPT) + input_tokens_of(input_value) + images * IMAGE_INPUT_TOKENS
    )


SID = "67df0d8ebc4f9d0b7f4fd123"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"input": "hi"}, "session_id", id="missing-session"),
        pytest.param({"session_id": "", "input": "hi"}, "session_id", id="empty-session"),
        pytest.param({"session_id": 123, "input": "hi"}, "session_id", id="int-session"),
        pytest.param({"session_id": None}, "session_id", id="null-session"),
        pytest.param({"session_id": SID, "input": 42}, "input", id="input-number"),
        pytest.param({"session_id": SID, "input": []}, "input", id="input-empty"),
        pytest.param(
            {
                "session_id": SID,
                "input": [{"role": "user", "content": "a"}, {"type": "input_text"}],
            },
            "input",
            id="input-mixed",
        ),
        pytest.param(
            {"session_id": SID, "input": [{"type": "input_audio", "data": "x"}]},
            "input[0].type",
            id="part-type",
        ),
        pytest.param(
            {"session_id": SID, "input": [{"type": "input_text", "text": 5}]},
            "input[0].text",
            id="part-text",
        ),
        pytest.param(
            {"session_id": SID, "input": [{"type": "input_image"}]}, "input[0]", id="image-no-url"
        ),
        pytest.param(
            {"session_id": SID, "input": {"role": "robot", "content": "x"}},
            "input.role",
            id="bad-role",
        ),
        pytest.param(
            {"session_id": SID, "input": {"role": "user", "content": []}},
            "input.content",
            id="empty-content",
        ),
        pytest.param(
            {"session_id": SID, "input": {"role": "user"}}, "input.content", id="no-content"
        ),
        pytest.param({"session_id": SID, "max_output_tokens": 0}, "max_output_tokens", id="mot-0"),
        pytest.param(
            {"session_id": SID, "max_output_tokens": "10"}, "max_output_tokens", id="mot-str"
        ),
        pytest.param(
            {"session_id": SID, "max_output_tokens": True}, "max_output_tokens", id="mot-bool"
        ),
        pytest.param(
            {"session_id": SID, "max_output_tokens": 1.5}, "max_output_tokens", id="mot-float"
        ),
        pytest.param({"session_id": SID, "temperature": 3}, "temperature", id="temperature"),
        pytest.param({"session_id": SID, "top_p": "1"}, "top_p", id="top-p"),
        pytest.param({"session_id": SID, "metadata": {"a": 1}}, "metadata", id="metadata"),
        pytest.param({"session_id": SID, "reasoning": "high"}, "reasoning", id="reasoning"),
        pytest.param({"session_id": SID, "tools": {"type": "x"}}, "tools", id="tools-object"),
        pytest.param({"session_id": SID, "tools": [{"size": "1x1"}]}, "tools[0]", id="tool-type"),
        pytest.param(
            {"session_id": SID, "tools": [{"type": "image_generation", "size": "big"}]},
            "tools[0].size",
            id="image-size",
        ),
        pytest.param({"session_id": SID, "tool_choice": "sometimes"}, "tool_choice", id="choice"),
        pytest.param(
            {"session_id": SID, "input": "x", "tool_choice": {"type": "image_generation"}},
            "tool_choice",
            id="forced-image-without-tool",
        ),
        pytest.param({"session_id": SID, "stream": True}, "stream", id="stream"),
    ],
)
async def test_invalid_payloads_are_400(
    server: MockSamsarServer, http: aiohttp.ClientSession, body: dict[str, Any], param: str
) -> None:
    server.create_session()
    error = assert_error(await call(http, server, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert server.ledger == []
    assert server.balance() == Decimal("1000")


async def test_invalid_bodies_are_400(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    assert_error(await call(http, server, raw=b'{"session_id": '), 400, "invalid_json")
    assert_error(await call(http, server, raw=b""), 400, "invalid_json")
    assert_error(await call(http, server, ["session_id"]), 400, "invalid_body")
    assert_error(await call(http, server, "just a string"), 400, "invalid_body")


async def test_auth_errors_on_both_endpoints(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    for endpoint in ("completion", "set_system_prompt"):
        body = {"session_id": sid, "input": "hi", "system_prompt": "x"}
        missing = await call(http, server, body, endpoint=endpoint, key=None)
        assert_error(missing, 401, "missing_api_key")
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert_error(await call(http, server, body, endpoint=endpoint, key="sk-nope"), 401)
        reply = await call(
            http,
            server,
            body,
            endpoint=endpoint,
            key=None,
            headers={"Authorization": f"Basic {server.api_key}"},
        )
        assert_error(reply, 401, "invalid_api_key")
    assert server.ledger == []
    assert server.system_prompt() is None


async def test_session_not_found_and_forbidden(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    other_key = server.add_account(credits=Decimal("5"))
    theirs = server.create_session(other_key)
    assert_error(await call(http, server, {"session_id": SID, "input": "hi"}), 404)
    error = assert_error(await call(http, server, {"session_id": theirs, "input": "hi"}), 403)
    assert error["code"] == "session_forbidden"
    reply = await call(http, server, {"session_id": theirs, "input": "hi"}, key=other_key)
    assert reply.status == 200
    assert server.ledger[0].account == server.account_id(other_key) == "acct_2"
    assert server.balance() == Decimal("1000")


async def test_unknown_route_and_method(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{server.url}/assistant/nothing", json={}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "route_not_found"
    async with http.get(f"{server.url}/assistant/completion") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.content_type == "application/json"
    assert [r.endpoint for r in server.requests] == [None, None]
    assert server.max_in_flight == 0


# ------------------------------------------------------------------ credits


async def test_charging_math_headers_and_ledger(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    inputs = ["Write a short product launch caption for this session.", "Again, shorter"]
    charged: list[Decimal] = []
    history = 0
    for number, text in enumerate(inputs, start=1):
        reply = await call(
            http,
            server,
            {"session_id": sid, "input": text},
            headers={"Idempotency-Key": f"k{number}"},
        )
        body = reply.json()
        output = f"Reply {number} to: {text}"
        own = tokens(json.dumps(text))
        expected_in = tokens(DEFAULT_SYSTEM_PROMPT) + history + own
        expected_out = len(output.split())
        assert body["usage"]["input_tokens"] == expected_in
        assert body["usage"]["output_tokens"] == expected_out
        history += own + expected_out
        credits = expected_credits(expected_in, expected_out)
        assert credits == credits_for(expected_in, expected_out)
        assert Decimal(reply.headers["x-credits-charged"]) == credits
        assert re.fullmatch(r"\d+(\.\d+)?", reply.headers["x-credits-charged"])
        charged.append(credits)
        assert Decimal(reply.headers["x-credits-remaining"]) == Decimal(1000) - sum(charged)
        assert re.fullmatch(r"\d+(\.\d+)?", reply.headers["x-credits-remaining"])
    assert server.balance() == Decimal(1000) - sum(charged)
    turns = server.turns(sid)
    assert server.ledger == [
        Charge("acct_1", sid, turns[0].response_id, "k1", charged[0]),
        Charge("acct_1", sid, turns[1].response_id, "k2", charged[1]),
    ]
    assert [r.charged for r in server.requests] == charged


def test_credits_for_constants() -> None:
    assert credits_for(1_000_000, 0) == Decimal("625")  # $2.50 -> 250 credits -> x2.5
    assert credits_for(0, 1_000_000) == Decimal("3750")
    assert credits_for(0, 0, 1) == Decimal("10")
    assert credits_for(1, 1) == Decimal("0.004375")


async def test_insufficient_credits_charges_nothing(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    server.set_balance(server.api_key, Decimal("0.01"))
    reply = await call(http, server, {"session_id": sid, "input": "hi"})
    assert_error(reply, 402, "insufficient_credits")
    assert reply.headers["x-credits-charged"] == "0"
    assert reply.headers["x-credits-remaining"] == "0.01"
    assert server.ledger == []
    assert server.turns(sid) == ()
    assert server.balance() == Decimal("0.01")

    server.set_balance(None, 5)
    reply = await call(http, server, {"session_id": sid, "input": "hi"})
    assert reply.status == 200
    assert reply.json()["output_text"] == "Reply 1 to: hi"


# ------------------------------------------------------------------ idempotency


async def test_idempotent_replay_charges_once(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    body = {"session_id": sid, "input": "hi"}
    key = {"Idempotency-Key": "call-1"}
    first = await call(http, server, body, headers=key)
    again = await call(http, server, body, headers=key)
    assert first.status == again.status == 200
    assert again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["x-credits-charged"] == first.headers["x-credits-charged"]
    assert again.headers["x-credits-remaining"] == first.headers["x-credits-remaining"]
    assert len(server.ledger) == 1
    assert len(server.turns(sid)) == 1
    assert server.balance() == Decimal(1000) - Decimal(first.headers["x-credits-charged"])
    assert [(r.replayed, r.turn, r.charged) for r in server.requests] == [
        (False, 1, server.ledger[0].credits),
        (True, None, Decimal(0)),
    ]

    changed = await call(http, server, {**body, "input": "other"}, headers=key)
    assert_error(changed, 422, "idempotency_key_reused")
    assert_error(await call(http, server, body, headers={"Idempotency-Key": ""}), 400)

    # Keys are per account.
    other = server.add_account()
    theirs = server.create_session(other)
    reply = await call(http, server, {"session_id": theirs, "input": "hi"}, key=other, headers=key)
    assert reply.status == 200
    assert "Idempotent-Replayed" not in reply.headers
    assert len(server.ledger) == 2


async def test_idempotency_409_while_in_flight(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    body = {"session_id": sid, "input": "hi"}
    key = {"Idempotency-Key": "slow-1"}
    results: list[Reply] = []

    async def first() -> None:
        results.append(await call(http, server, body, headers=key))

    server.pause()
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await server.wait_until(lambda s: s.held == 1)
        conflict = await call(http, server, body, headers=key)
        assert conflict.status == 409
        assert conflict.json()["error"]["message"] == (
            "a request with this Idempotency-Key is in progress"
        )
        assert server.ledger == []
        server.resume()
    assert results[0].status == 200
    replay = await call(http, server, body, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.body == results[0].body
    assert len(server.ledger) == 1


async def test_failed_outcomes_are_not_stored(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    server.set_balance(None, 0)
    key = {"Idempotency-Key": "retry-me"}
    body = {"session_id": sid, "input": "hi"}
    assert (await call(http, server, body, headers=key)).status == 402
    server.set_balance(None, 1)
    reply = await call(http, server, body, headers=key)
    assert reply.status == 200
    assert "Idempotent-Replayed" not in reply.headers
    assert len(server.ledger) == 1


# ------------------------------------------------------------------ faults


async def test_status_fault_with_retry_after(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    body = {"session_id": sid, "input": "hi"}
    server.faults.add(Fault.status(503, retry_after="2", retry_after_ms=1500))
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    server.faults.add(Fault.status(429, retry_after=when))
    reply = await call(http, server, body)
    assert_error(reply, 503)
    assert reply.headers["Retry-After"] == "2"
    assert reply.headers["retry-after-ms"] == "1500"
    reply = await call(http, server, body)
    assert reply.status == 429
    assert parsedate_to_datetime(reply.headers["Retry-After"]) == when
    assert (await call(http, server, body)).status == 200
    assert [r.fault for r in server.requests] == ["status", "status", None]
    assert len(server.ledger) == 1
    assert len(server.faults) == 0


async def test_fault_filters_times_and_fifo(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    a, b = server.create_session(), server.create_session()
    server.faults.add(Fault.status(500), times=2, path="set_system_prompt")
    server.faults.add(Fault.status(502), match=lambda path, session_id: session_id == b)
    server.faults.add(Fault.status(504))
    assert (await call(http, server, {"session_id": a, "input": "x"})).status == 504
    assert (await call(http, server, {"session_id": b, "input": "x"})).status == 502
    assert (await call(http, server, {"session_id": b, "input": "x"})).status == 200
    for _ in range(2):
        assert (await call(http, server, {}, endpoint="set_system_prompt")).status == 500
    assert (await call(http, server, {}, endpoint="set_system_prompt")).status == 200
    server.faults.add(Fault.status(500), path="/api/v1/assistant/completion", times=None)
    assert (await call(http, server, {"session_id": a, "input": "x"})).status == 200
    reply = await call(http, server, {"session_id": a, "input": "x"}, base=server.alias_url)
    assert reply.status == 500
    server.faults.clear()
    reply = await call(http, server, {"session_id": a, "input": "x"}, base=server.alias_url)
    assert reply.status == 200


async def test_status_fault_after_charge(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    server.faults.add(Fault.status(504, after_charge=True))
    reply = await call(http, server, {"session_id": sid, "input": "hi"})
    assert reply.status == 504
    assert "x-credits-charged" not in reply.headers
    assert len(server.ledger) == 1
    assert server.requests[0].turn == 1


async def test_disconnect_before_work(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    server.faults.add(Fault.disconnect())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, server, {"session_id": sid, "input": "hi"})
    assert server.ledger == []
    assert server.turns(sid) == ()
    record = server.requests[0]
    assert (record.fault, record.status, record.account) == ("disconnect", None, None)
    assert (await call(http, server, {"session_id": sid, "input": "hi"})).status == 200


async def test_disconnect_after_charge_then_idempotent_retry(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    body = {"session_id": sid, "input": "hi"}
    key = {"Idempotency-Key": "unknown-outcome"}
    server.faults.add(Fault.disconnect(after_charge=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, server, body, headers=key)
    assert len(server.ledger) == 1
    assert server.requests[0].status is None
    assert server.requests[0].turn == 1
    retry = await call(http, server, body, headers=key)
    assert retry.status == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == server.ledger[0].response_id
    assert len(server.ledger) == 1
    assert len(server.turns(sid)) == 1


async def test_stall_outlasts_the_read_timeout(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    server.faults.add(Fault.stall(3600))
    with pytest.raises(asyncio.TimeoutError):
        await call(
            http,
            server,
            {"session_id": sid, "input": "hi"},
            timeout=aiohttp.ClientTimeout(sock_read=0.05),
        )
    assert server.requests[0].fault == "stall"
    assert server.ledger == []  # still stalled; closing the server ends it

    server.faults.add(Fault.stall(0))
    reply = await call(http, server, {"session_id": sid, "input": "hi"})
    assert reply.status == 200
    assert server.requests[1].fault == "stall"


async def test_truncated_body(server: MockSamsarServer, http: aiohttp.ClientSession) -> None:
    sid = server.create_session()
    server.faults.add(Fault.truncate())
    server.faults.add(Fault.truncate(after_charge=False))
    with pytest.raises(aiohttp.ClientPayloadError):
        await call(http, server, {"session_id": sid, "input": "hi"})
    assert len(server.ledger) == 1
    with pytest.raises(aiohttp.ClientPayloadError):
        await call(http, server, {"session_id": sid, "input": "hi"})
    assert len(server.ledger) == 1
    assert [(r.fault, r.status, r.turn) for r in server.requests] == [
        ("truncate", 200, 1),
        ("truncate", 200, None),
    ]
    assert (await call(http, server, {"session_id": sid, "input": "hi"})).status == 200


async def test_html_redirect_and_raw_body_faults(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    body = {"session_id": sid, "input": "hi"}
    server.faults.add(Fault.html())
    reply = await call(http, server, body)
    assert reply.status == 502
    assert reply.headers["Content-Type"] == "text/html"
    assert b"502 Bad Gateway" in reply.body

    server.faults.add(Fault.redirect(f"{server.alias_url}/assistant/completion"))
    async with http.post(
        f"{server.url}/assistant/completion",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
    ) as resp:
        assert resp.status == 200
        assert [h.status for h in resp.history] == [307]
        assert (await resp.json())["output_text"] == "Reply 1 to: hi"
    assert [(r.path, r.status, r.fault) for r in server.requests[1:]] == [
        ("/v1/assistant/completion", 307, "redirect"),
        ("/api/v1/assistant/completion", 200, None),
    ]

    server.faults.add(Fault.body(418, b"\x00teapot", "application/x-teapot"))
    reply = await call(http, server, body)
    assert (reply.status, reply.body) == (418, b"\x00teapot")
    assert reply.headers["Content-Type"] == "application/x-teapot"
    assert len(server.ledger) == 1


async def test_invalid_json_and_wrong_content_type(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    body = {"session_id": sid, "input": "hi"}
    server.faults.add(Fault.invalid_json())
    reply = await call(http, server, body)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        reply.json()

    server.faults.add(Fault.wrong_content_type())
    reply = await call(http, server, body)
    assert (reply.status, reply.body) == (200, b"OK")
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert server.ledger == []

    server.faults.add(Fault.wrong_content_type(after_charge=True))
    reply = await call(http, server, body)
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.json()["output_text"] == "Reply 1 to: hi"
    assert Decimal(reply.headers["x-credits-charged"]) == server.ledger[0].credits
    assert [r.fault for r in server.requests] == [
        "invalid_json",
        "wrong_content_type",
        "wrong_content_type",
    ]


async def test_random_faults_soak(server: MockSamsarServer, http: aiohttp.ClientSession) -> None:
    sid = server.create_session()
    server.faults.random(rate=0.5, seed=1234, stall_seconds=0.0)
    replies: list[dict[str, Any]] = []
    for call_number in range(30):
        headers = {"Idempotency-Key": f"soak-{call_number}"}
        body = {"session_id": sid, "input": f"soak {call_number}"}
        for _attempt in range(25):
            try:
                reply = await call(http, server, body, headers=headers)
            except aiohttp.ClientError:
                continue
            if reply.status == 200 and reply.headers["Content-Type"] == "application/json":
                try:
                    replies.append(reply.json())
                    break
                except ValueError:
                    continue
        else:
            pytest.fail(f"call {call_number} never succeeded")
    assert [r["output_text"] for r in replies] == [f"Reply {n + 1} to: soak {n}" for n in range(30)]
    assert len(server.ledger) == len(server.turns(sid)) == 30
    assert Counter(c.idempotency_key for c in server.ledger) == {f"soak-{n}": 1 for n in range(30)}
    assert server.balance() == Decimal(1000) - sum(c.credits for c in server.ledger)
    kinds = {r.fault for r in server.requests} - {None}
    assert kinds == {k.value for k in FaultKind} - {"redirect", "raw"}
    assert any(r.replayed for r in server.requests)
    assert server.in_flight == 0
    with pytest.raises(ValueError, match="redirect"):
        server.faults.random(kinds=["redirect"])


# ------------------------------------------------------------------ images


def image_request(sid: str, text: str, **tool: Any) -> dict[str, Any]:
    return {
        "session_id": sid,
        "input": text,
        "tools": [{"type": "image_generation", **tool}],
        "tool_choice": {"type": "image_generation"},
    }


async def test_generated_image_is_a_real_png(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    text = "Create a clean launch-poster image for this session."
    reply = await call(http, server, image_request(sid, text, size="64x32", quality="high"))
    body = reply.json()
    assert reply.status == 200
    assert body["output_text"] == ""
    [item] = body["output"]
    assert re.fullmatch(r"ig_[0-9a-f]{48}", item["id"])
    assert (item["type"], item["status"]) == ("image_generation_call", "completed")
    assert item["revised_prompt"] == f"Image 1 for: {text}"
    width, height, raw = decode_png(base64.b64decode(item["result"], validate=True))
    assert (width, height) == (64, 32)
    colour = hashlib.sha256(text.encode()).digest()[:3]
    assert raw == (b"\x00" + colour * 64) * 32

    output_tokens = len(item["revised_prompt"].split())
    input_tokens = tokens(DEFAULT_SYSTEM_PROMPT) + tokens(json.dumps(text))
    assert body["usage"] == {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    assert Decimal(reply.headers["x-credits-charged"]) == expected_credits(
        input_tokens, output_tokens, images=1
    )

    # A follow-up edit is another turn on the chain; its history includes the image.
    reply = await call(http, server, image_request(sid, "Make it blue", size="2048x4096"))
    body = reply.json()
    assert body["previous_response_id"] == server.turns(sid)[0].response_id
    assert body["output"][0]["revised_prompt"] == "Image 2 for: Make it blue"
    assert body["usage"]["input_tokens"] == (
        tokens(DEFAULT_SYSTEM_PROMPT)
        + tokens(json.dumps(text))
        + output_tokens
        + IMAGE_INPUT_TOKENS
        + tokens(json.dumps("Make it blue"))
    )
    width, height, _ = decode_png(base64.b64decode(body["output"][0]["result"]))
    assert (width, height) == (1024, 1024)


async def test_image_choice_rules(server: MockSamsarServer, http: aiohttp.ClientSession) -> None:
    sid = server.create_session()
    tools = [{"type": "image_generation"}]
    auto = await call(http, server, {"session_id": sid, "input": "Draw a picture", "tools": tools})
    item = auto.json()["output"][0]
    assert item["type"] == "image_generation_call"
    assert decode_png(base64.b64decode(item["result"]))[:2] == (256, 256)
    plain = await call(http, server, {"session_id": sid, "input": "Write text", "tools": tools})
    assert plain.json()["output"][0]["type"] == "message"
    refused = await call(
        http,
        server,
        {"session_id": sid, "input": "Draw a picture", "tools": tools, "tool_choice": "none"},
    )
    assert refused.json()["output_text"] == "Reply 3 to: Draw a picture"
    no_tool = await call(http, server, {"session_id": sid, "input": "Draw a picture"})
    assert no_tool.json()["output"][0]["type"] == "message"


async def test_large_incompressible_images(http: aiohttp.ClientSession) -> None:
    size = 300_000
    async with MockSamsarServer(image_bytes=size) as srv:
        sid = srv.create_session()
        reply = await call(http, srv, image_request(sid, "big one"))
        png = base64.b64decode(reply.json()["output"][0]["result"])
        assert len(png) == size
        width, height, _ = decode_png(png)
        assert reply.json()["output"][0]["size"] == f"{width}x{height}"
        assert len(zlib.compress(png)) > size * 0.99  # random pixels: incompressible
    with pytest.raises(ValueError):
        MockSamsarServer(image_bytes=10)


# ------------------------------------------------------------------ OpenAI compatibility


async def test_payloads_validate_as_openai_responses(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    responses = pytest.importorskip("openai.types.responses")
    sid = server.create_session()
    text = await call(
        http,
        server,
        {
            "session_id": sid,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            "max_output_tokens": 300,
            "temperature": 0.5,
            "metadata": {"run": "1"},
            "reasoning": {"effort": "low"},
        },
    )
    parsed = responses.Response.model_validate(text.json())
    assert parsed.output_text == "Reply 1 to: Hi"
    assert parsed.usage.total_tokens == text.json()["usage"]["total_tokens"]

    truncated = await call(http, server, {"session_id": sid, "max_output_tokens": 1})
    parsed = responses.Response.model_validate(truncated.json())
    assert parsed.status == "incomplete"
    assert parsed.output_text == "Reply"

    image = await call(http, server, image_request(sid, "a poster", size="16x16", quality="high"))
    parsed = responses.Response.model_validate(image.json())
    assert parsed.output[0].type == "image_generation_call"
    assert parsed.output[0].result == image.json()["output"][0]["result"]


# ------------------------------------------------------------------ records and secrecy


async def test_api_keys_never_recorded(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    other = server.add_account()
    sid = server.create_session()
    await call(
        http,
        server,
        {"session_id": sid, "input": f"my key is {server.api_key}"},
        headers={"X-Api-Key": other, "Idempotency-Key": "k"},
    )
    await call(http, server, {"system_prompt": "p"}, endpoint="set_system_prompt", key=other)
    record = server.requests[0]
    assert "Authorization" not in record.headers
    assert record.headers["X-Api-Key"] == "<redacted>"
    assert record.headers["Idempotency-Key"] == "k"
    assert record.body["input"] == "my key is <redacted>"
    assert [r.account for r in server.requests] == ["acct_1", "acct_2"]
    everything = repr((server, server.requests, server.ledger, server.faults))
    for key in (server.api_key, other):
        assert key.startswith("sk-mock-")
        assert key not in everything
    assert "acct_1" in everything


async def test_request_log_order_and_connection_reuse(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    sid = server.create_session()
    for _ in range(3):
        await call(http, server, {"session_id": sid, "input": "x"}, headers={"X-Trace": "t"})
    first, second, third = server.requests
    assert first.started < first.ended < second.started < second.ended < third.started  # type: ignore[operator]
    assert [(r.method, r.session_id, r.status, r.turn) for r in server.requests] == [
        ("POST", sid, 200, n) for n in (1, 2, 3)
    ]
    assert first.body == {"session_id": sid, "input": "x"}
    assert len(server.peers) == 1  # one keep-alive connection served all three
    assert first.peer in server.peers
    assert server.max_in_flight == 1
    assert server.session_overlaps == 0


async def test_concurrency_counters(server: MockSamsarServer, http: aiohttp.ClientSession) -> None:
    a, b = server.create_session(), server.create_session()
    replies: list[Reply] = []

    async def send(sid: str) -> None:
        replies.append(await call(http, server, {"session_id": sid, "input": "x"}))

    server.pause()
    async with anyio.create_task_group() as tg:
        for sid in (a, a, b):
            tg.start_soon(send, sid)
        await server.wait_until(lambda s: s.held == 3)
        assert server.in_flight == 3
        assert server.max_in_flight == 3
        assert server.session_overlaps == 1
        assert server.max_sessions_in_flight == 2
        assert server.ledger == []
        server.resume()
    assert sorted(r.status for r in replies) == [200, 200, 200]
    assert [t.number for t in server.turns(a)] == [1, 2]
    assert server.in_flight == 0
    assert len(server.peers) == 3


# ------------------------------------------------------------------ command line


async def test_command_line_prints_how_to_connect() -> None:
    stop = asyncio.Event()
    stop.set()
    out = io.StringIO()
    await serve(["--port", "0", "--sessions", "2", "--credits", "5"], stop=stop, out=out)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"export SAMSAR_BASE_URL=http://127\.0\.0\.1:\d+/v1", lines[1])
    assert re.fullmatch(r"export SAMSAR_API_KEY=sk-mock-[0-9a-f]{32}", lines[2])
    assert re.fullmatch(r"export SAMSAR_SESSION_ID=[0-9a-f]{24}", lines[3])
    assert re.fullmatch(r"# another session: [0-9a-f]{24}", lines[4])
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.credits) == ("127.0.0.1", 8080, Decimal(1000))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--credits", "lots"])
