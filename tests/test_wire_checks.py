"""One validation boundary for what we send (issue 12): every observed case refused
with InvalidArgumentError naming the field, before anything reaches the server."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from samsar_async import (
    AsyncSamsar,
    CompletionRequest,
    ImageGenerationTool,
    InputImage,
    InputText,
    InvalidArgumentError,
    Message,
    RetryPolicy,
    Timeout,
)
from samsar_async import _json as json_module
from samsar_async._wire_checks import check_header, check_headers, check_json
from samsar_async.config import MAX_JSON_DEPTH, MAX_JSON_NODES
from samsar_async.testing import MockSamsarServer

pytestmark = pytest.mark.anyio


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


# ------------------------------------------------------------------ check_json


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ({"temperature": math.inf}, "extra_body.temperature", "inf"),
        ({"k": math.nan}, "metadata.k", "nan"),
        ([{"content": [{"text": -math.inf}]}], "x[0].content[0].text", "-inf"),
        ({"odd key": [1, math.nan]}, "x['odd key'][1]", "nan"),
        ({5: "v"}, "x", "keys are strings"),
        ({"s": "a\ud800b"}, "x.s", "surrogate"),
        ({"k\udfff": 1}, "x['k\\udfff']", "surrogate"),
        ({"n": 2**64}, "x.n", "64-bit"),
        ({"n": -(2**63) - 1}, "x.n", "64-bit"),
        ({"d": Decimal("1.5")}, "x.d", "Decimal"),
        ({"b": b"bytes"}, "x.b", "bytes"),
        ({"s": {1, 2}}, "x.s", "set"),
    ],
)
def test_check_json_refuses_with_the_path(value: Any, field: str, reason: str) -> None:
    prefix = field.split(".")[0].split("[")[0]
    with pytest.raises(InvalidArgumentError) as info:
        check_json(value, prefix)
    assert info.value.field == field
    assert reason in info.value.reason


def test_check_json_depth_limit_is_exact() -> None:
    assert check_json(nested(MAX_JSON_DEPTH), "x") == nested(MAX_JSON_DEPTH)
    with pytest.raises(InvalidArgumentError, match="MAX_JSON_DEPTH") as info:
        check_json(nested(MAX_JSON_DEPTH + 1), "x")
    assert info.value.field == "x" + ".a" * MAX_JSON_DEPTH
    with pytest.raises(InvalidArgumentError, match="MAX_JSON_DEPTH"):
        check_json(nested(100_000), "x")  # no RecursionError however deep


def test_check_json_node_limit_names_the_argument() -> None:
    check_json([0] * MAX_JSON_NODES, "x")
    with pytest.raises(InvalidArgumentError, match="MAX_JSON_NODES") as info:
        check_json([[0] * (MAX_JSON_NODES // 2), [0] * (MAX_JSON_NODES // 2)], "x")
    assert info.value.field == "x"


def test_check_json_returns_plain_data_unchanged_and_converts_the_rest() -> None:
    plain = {"a": [1, 2.5, None, True, "é"], "b": (1, 2)}
    assert check_json(plain, "x") is plain

    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    converted = check_json(
        {
            "a": MappingProxyType({"k": Color.RED}),
            "b": OrderedDict(n=Name("v")),
            "c": [1, Color.RED],
        },
        "x",
    )
    assert converted == {"a": {"k": 1}, "b": {"n": "v"}, "c": [1, 1]}
    assert type(converted["a"]) is dict
    assert type(converted["a"]["k"]) is int
    assert type(converted["b"]["n"]) is str
    assert json_module.loads(json_module.dumps(converted)) == converted


# ------------------------------------------------------------------ check_header


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("Bad Name:", "v", "not a valid header name"),
        ("", "v", "not a valid header name"),
        ("X-É", "v", "not a valid header name"),
        (5, "v", "name must be a string"),
        ("X-Trace", 5, "must be a string, not int"),
        ("X-Trace", "a\r\nX-Injected: 1", "control character"),
        ("X-Trace", "a\nb", "control character"),
        ("X-Trace", "a\x00b", "control character"),
        ("X-Trace", "a\x7fb", "control character"),
        ("X-Trace", "a\ud800", "control character"),
        ("X-Trace", " padded", "whitespace"),
        ("Content-Length", "3", "set by the SDK"),
        ("transfer-encoding", "chunked", "set by the SDK"),
    ],
)
def test_check_header_refuses(name: Any, value: Any, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_header(name, value, "extra_headers")
    assert info.value.field == "extra_headers"
    assert reason in info.value.reason


def test_check_header_never_shows_the_value() -> None:
    secret = "sk-secret-value\n"
    with pytest.raises(InvalidArgumentError) as info:
        check_headers({"Authorization": secret}, "default_headers")
    assert info.value.field == "default_headers['Authorization']"
    assert "sk-secret" not in str(info.value)


def test_check_header_accepts_rfc_9110_fields() -> None:
    check_header("X-Odd!#$%&'*+-.^_`|~9", "a\tb é €", "f")
    check_header("X-Empty", "", "f")
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        check_headers([("X-A", "b")], "extra_headers")


# ------------------------------------------------------------------ through the client


def assert_nothing_sent(server: MockSamsarServer) -> None:
    assert server.requests == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"extra_body": {"temperature": math.inf}}, "extra_body.temperature"),
        ({"extra_body": {"a": {"b": [math.nan]}}}, "extra_body.a.b[0]"),
        ({"metadata": {"k": math.nan}}, "metadata.k"),
        ({"reasoning": {"effort": -math.inf}}, "reasoning.effort"),
        ({"tools": [{"type": "image_generation", "x": math.inf}]}, "tools[0].x"),
        ({"tools": [ImageGenerationTool(extra={"x": math.inf})]}, "tools[0].extra.x"),
        ({"tool_choice": {"type": "image_generation", "x": math.nan}}, "tool_choice.x"),
        ({"metadata": {1: "v"}}, "metadata"),
        ({"extra_body": {"n": 2**70}}, "extra_body.n"),
        ({"extra_body": nested(MAX_JSON_DEPTH + 1)}, "extra_body" + ".a" * MAX_JSON_DEPTH),
        ({"idempotency_key": "a\r\nb"}, "idempotency_key"),
        ({"idempotency_key": "a\nb"}, "idempotency_key"),
        ({"idempotency_key": "a\x00b"}, "idempotency_key"),
        ({"extra_headers": {"X-Trace": "a\r\nb"}}, "extra_headers['X-Trace']"),
        ({"extra_headers": {"X-Trace": 5}}, "extra_headers['X-Trace']"),
        ({"extra_headers": {"Bad Name:": "v"}}, "extra_headers['Bad Name:']"),
        ({"extra_headers": {"Idempotency-Key": "a\rb"}}, "extra_headers['Idempotency-Key']"),
        ({"extra_headers": ["X-A"]}, "extra_headers"),
    ],
)
async def test_complete_refuses_before_sending(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str, options: Any, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.assistant.complete(session_id, "hi", **options)
    assert info.value.field == field
    assert_nothing_sent(server)


@pytest.mark.parametrize(
    ("input", "field"),
    [
        (
            {"role": "user", "content": [{"type": "input_text", "text": math.nan}]},
            "input.content[0].text",
        ),
        ([Message.user("ok"), {"role": "user", "content": math.inf}], "input[1].content"),
        (Message.user("ok", {"type": "input_text", "text": "a\ud800"}), "input.content[1].text"),
        ([InputText("x"), InputText("a\udc00")], "input[1].text"),
        (Message.user(InputImage("https://x/\ud800.png")), "input.content[0].image_url"),
        ("text with a lone \ud800 surrogate", "input"),
    ],
)
async def test_inputs_refused_with_their_path(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str, input: Any, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.assistant.complete(session_id, input)
    assert info.value.field == field
    assert_nothing_sent(server)


async def test_builder_strings_and_session_id_name_their_field(
    client: AsyncSamsar, server: MockSamsarServer
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.assistant.complete("sess\ud800", "hi")
    assert info.value.field == "session_id"
    with pytest.raises(InvalidArgumentError) as info:
        await client.assistant.set_system_prompt("prompt \udfff")
    assert info.value.field == "system_prompt"
    assert_nothing_sent(server)


async def test_same_wire_with_and_without_orjson(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    # What used to differ by encoder is refused by both (above); what passes is
    # sent as plain JSON, converted the same way whichever encoder runs.
    class Level(enum.IntEnum):
        HIGH = 3

    await client.assistant.complete(
        session_id,
        "hi",
        metadata=MappingProxyType({"k": "v"}),
        extra_body={"reasoning": {"effort": "low", "level": Level.HIGH, "t": (1, 2)}},
    )
    (request,) = server.requests
    assert request.body["metadata"] == {"k": "v"}
    assert request.body["reasoning"] == {"effort": "low", "level": 3, "t": [1, 2]}


async def test_default_headers_checked_at_construction(server: MockSamsarServer) -> None:
    cases = [
        ({"X-Trace": "a\nb"}, "default_headers['X-Trace']"),
        ({"X-Trace": 5}, "default_headers['X-Trace']"),
        ({"Bad Name:": "v"}, "default_headers['Bad Name:']"),
        ({"Content-Length": "1"}, "default_headers['Content-Length']"),
    ]
    for headers, field in cases:
        with pytest.raises(InvalidArgumentError) as info:
            AsyncSamsar(server.api_key, base_url=server.url, default_headers=headers)
        assert info.value.field == field
    assert_nothing_sent(server)


async def test_good_headers_arrive_as_given(server: MockSamsarServer, session_id: str) -> None:
    async with AsyncSamsar(
        server.api_key, base_url=server.url, default_headers={"X-Team": "é tab\there"}
    ) as client:
        await client.assistant.complete(
            session_id, "hi", extra_headers={"X-Trace": "t-1"}, idempotency_key="key-1"
        )
    (request,) = server.requests
    assert request.headers["X-Team"] == "é tab\there"
    assert request.headers["X-Trace"] == "t-1"
    assert request.idempotency_key == "key-1"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"api_key": 5}, "api_key"),
        ({"api_key": "sk-\x01x"}, "api_key"),
        ({"base_url": "http://127.0.0.1:99999/v1"}, "base_url"),
        ({"base_url": "http://[::1/v1"}, "base_url"),
        ({"base_url": "http://127.0.0.1/v1\n"}, "base_url"),
        ({"base_url": "http://127.0.0.1/ v1"}, "base_url"),
        ({"timeout": math.inf}, "timeout.total"),
        ({"timeout": math.nan}, "timeout.total"),
        ({"timeout": 10**400}, "timeout.total"),
        ({"timeout": "10"}, "timeout.total"),
        ({"max_response_bytes": "big"}, "max_response_bytes"),
        ({"max_response_bytes": 0}, "max_response_bytes"),
    ],
)
def test_client_construction_refuses(options: dict[str, Any], field: str) -> None:
    options.setdefault("api_key", "sk-test")
    options.setdefault("base_url", "http://127.0.0.1:1/v1")
    with pytest.raises(InvalidArgumentError) as info:
        AsyncSamsar(**options)
    assert info.value.field == field
    assert "sk-test" not in str(info.value)


def test_image_tool_fields_refused_when_built() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ImageGenerationTool(output_compression=math.nan)  # type: ignore[arg-type]
    assert info.value.field == "output_compression"
    with pytest.raises(InvalidArgumentError) as info:
        ImageGenerationTool(extra=5)  # type: ignore[arg-type]
    assert info.value.field == "extra"


def test_completion_request_checks_its_headers_when_built() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        CompletionRequest(session_id="s", extra_headers={"X-Trace": "a\nb"})
    assert info.value.field == "extra_headers['X-Trace']"
    with pytest.raises(InvalidArgumentError) as info:
        CompletionRequest(session_id="s", idempotency_key="k\r\n")
    assert info.value.field == "idempotency_key"


def test_timeout_with_infinite_part_is_refused() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Timeout(connect=math.inf)
    assert info.value.field == "timeout.connect"


def test_from_bytes_mime_type_must_be_a_string() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        InputImage.from_bytes(b"\x89PNG\r\n\x1a\n", 5)  # type: ignore[arg-type]
    assert info.value.field == "mime_type"


@pytest.mark.parametrize(
    "name", ["initial_backoff", "max_backoff", "max_total_time", "max_retry_after"]
)
@pytest.mark.parametrize("value", [10**400, math.inf, math.nan, -1])
def test_retry_policy_seconds_are_bounded(name: str, value: float) -> None:
    # 10**400 used to pass (an int is finite) and failed later: OverflowError in a retry.
    with pytest.raises(InvalidArgumentError) as info:
        RetryPolicy(**{name: value})
    assert info.value.field == name
