"""Hypothesis: hostile arguments at every entry point (issue 12).

The property: a call either raises ``InvalidArgumentError`` and nothing reaches
the local server, or the server receives a request whose body, parsed back,
equals what was passed (the expected JSON is computed by a small reference
model here). Whatever the server then answers is a ``Response`` or a
``SamsarError``. One server and client per test function, a fresh session per
example. Run more examples with ``HYPOTHESIS_PROFILE=nightly`` (``nox -s fuzz``).
"""

from __future__ import annotations

import base64
import enum
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from samsar_async import (
    AsyncSamsar,
    CompletionRequest,
    ImageGenerationTool,
    InputImage,
    InputText,
    InvalidArgumentError,
    Message,
    Response,
    RetryPolicy,
    SamsarError,
    Timeout,
    _wire_checks,
)
from samsar_async.config import MAX_JSON_DEPTH
from samsar_async.images import sniff_mime
from samsar_async.testing import MockSamsarServer

pytestmark = [pytest.mark.anyio, pytest.mark.fuzz]

SMALL_NODES = 40
"""MAX_JSON_NODES while fuzzing, so that drawn values cross it (the real limit has its own test)."""


@pytest.fixture(autouse=True)
def small_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_wire_checks, "MAX_JSON_NODES", SMALL_NODES)


class Refused(Exception):
    """The reference model expects InvalidArgumentError."""


# ------------------------------------------------------------------ strategies


class Color(enum.IntEnum):
    RED = 1


class Mood(enum.Enum):
    CALM = "calm"


class Name(str):
    pass


CHARS = st.one_of(
    *[st.characters()] * 6,
    st.characters(categories=["Cs"]),  # lone surrogates
    st.characters(categories=["Cc"]),  # control characters
    st.sampled_from(" \t\r\n\x00\x7f\x85\u2028é€"),
)
texts = st.text(CHARS, max_size=12)
big_texts = st.integers(0, 100_000).map(lambda n: "x" * n)
ints = st.one_of(
    st.integers(-1000, 1000),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400]),
)
floats = st.floats()  # NaN, infinities, -0.0, subnormals included
odd_values = st.sampled_from(
    [Decimal("1.5"), b"bytes", {1, 2}, object(), Mood.CALM, 1 + 2j, bytearray(b"x")]
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, big_texts)
keys = st.one_of(
    texts,
    st.sampled_from(["type", "text", "k", ""]),
    st.integers(),
    st.none(),
    st.builds(Name, texts),
)


def _nest(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


json_values = st.recursive(
    st.one_of(scalars, st.builds(Name, texts), st.just(Color.RED), odd_values),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=5),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(MappingProxyType),
    ),
    max_leaves=25,
)
deep_values = st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3).map(_nest) | st.integers(
    200, 3000
).map(_nest)
mappings = st.one_of(
    st.dictionaries(keys, json_values, max_size=6),
    st.dictionaries(st.sampled_from(["a", "b"]), deep_values, max_size=1),
)
anything = st.one_of(json_values, mappings, deep_values)

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_names = st.one_of(
    st.text(st.sampled_from(TCHARS), min_size=1, max_size=8).map(lambda s: "X-" + s),
    st.sampled_from(["Bad Name:", "", "X-É", "X\r\nY", "Content-Length", "transfer-encoding"]),
    st.integers(),
)
header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
    texts,
    st.integers(),
    st.none(),
)
header_maps = st.one_of(
    st.dictionaries(header_names, header_values, max_size=3),
    st.just(["X-A", "b"]),
    st.none(),
)

DETAILS = ("auto", "low", "high")
image_urls = st.one_of(st.just("https://example.com/a.png"), texts)
parts = st.one_of(
    st.builds(InputText, texts),
    st.builds(InputImage, st.just("https://example.com/a.png"), st.sampled_from([None, *DETAILS])),
    st.builds(InputImage, st.just("https://x/\ud800"), st.none()),
    mappings,
)
messages = st.builds(
    Message,
    st.sampled_from(["user", "assistant", "system", "developer"]),
    st.one_of(texts, st.lists(parts, max_size=3)),
)
tool_fields = st.fixed_dictionaries(
    {},
    optional={
        "size": st.one_of(st.none(), st.sampled_from(["1024x1024", "auto"]), texts),
        "quality": st.one_of(st.none(), texts),
        "format": st.one_of(st.none(), st.sampled_from(["png", "webp"])),
        "output_compression": st.one_of(st.none(), st.integers(0, 100), ints),
        "extra": st.one_of(mappings, st.just({})),
    },
)
hostile_tool_fields = st.fixed_dictionaries(
    {},
    optional={
        "size": scalars,
        "quality": st.one_of(texts, st.integers(), st.booleans()),
        "output_compression": st.one_of(ints, floats, st.booleans(), texts),
        "extra": st.one_of(mappings, st.just(5), json_values),
    },
)


def _tool(fields: dict[str, Any]) -> ImageGenerationTool:
    try:
        return ImageGenerationTool(**fields)
    except InvalidArgumentError:
        return ImageGenerationTool(extra=fields.get("extra", {}))  # extra alone is checked later


image_tools = tool_fields.map(_tool)
inputs = st.one_of(
    texts,
    big_texts,
    messages,
    mappings,
    parts,
    st.lists(st.one_of(messages, parts, texts, mappings, st.integers()), max_size=4),
    st.just([]),
    st.integers(),
    st.just(b"bytes"),
)


def mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """``valid`` four times in five, so that many examples get through to the server."""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda ok: valid if ok else hostile
    )


clean_texts = st.text(max_size=12)  # no surrogates
clean_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        clean_texts,
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(clean_texts, children, max_size=3)
    ),
    max_leaves=8,
)
clean_mappings = st.dictionaries(clean_texts, clean_json, max_size=4)
clean_headers = st.dictionaries(
    st.text(st.sampled_from(TCHARS), min_size=1, max_size=8).map(lambda s: "X-" + s),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
    max_size=3,
).filter(lambda h: len({k.lower() for k in h}) == len(h))
complete_options = st.fixed_dictionaries(
    {},
    optional={
        "max_output_tokens": mostly(
            st.one_of(st.none(), st.integers(1, 10**6)),
            st.one_of(st.integers(-2, 0), floats, st.booleans()),
        ),
        "temperature": mostly(st.floats(0, 2), st.one_of(floats, ints, texts)),
        "top_p": mostly(st.floats(0, 1), st.one_of(floats, st.integers(-1, 2))),
        "reasoning": mostly(clean_mappings, st.one_of(mappings, json_values)),
        "metadata": mostly(
            st.dictionaries(clean_texts, clean_texts, max_size=3), st.one_of(mappings, json_values)
        ),
        "tools": mostly(
            st.lists(st.one_of(clean_mappings, image_tools), max_size=2),
            st.one_of(st.lists(st.one_of(mappings, image_tools, scalars), max_size=3), json_values),
        ),
        "tool_choice": mostly(
            st.sampled_from(["auto", "none", "required"]),
            st.one_of(st.just("bogus"), image_tools, anything),
        ),
        "extra_body": mostly(clean_mappings, st.one_of(mappings, json_values)),
        "extra_headers": mostly(clean_headers, header_maps),
        "idempotency_key": mostly(
            st.uuids().map(str), st.one_of(texts, header_values, st.just("  "))
        ),
    },
)
session_ids = st.one_of(
    st.just("VALID"),
    st.one_of(texts, st.just(" "), st.integers(), st.builds(Name, texts), st.just("VALID")),
)


# ------------------------------------------------------------------ reference model


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def model_json(value: Any, nodes: int = SMALL_NODES) -> Any:
    """The plain JSON the SDK must send for ``value``, or Refused."""
    count = 0

    def walk(item: Any, depth: int) -> Any:
        nonlocal count
        if item is None or isinstance(item, bool):
            return item
        if isinstance(item, int):
            if not -(2**63) <= item <= 2**64 - 1:
                raise Refused
            return int(item)
        if isinstance(item, float):
            if not math.isfinite(item):
                raise Refused
            return float(item)
        if isinstance(item, str):
            if _has_surrogate(item):
                raise Refused
            return str.__str__(item)
        if isinstance(item, (Mapping, list, tuple)):
            if depth >= MAX_JSON_DEPTH:
                raise Refused
            count += len(item)
            if count > nodes:
                raise Refused
            if isinstance(item, Mapping):
                out = {}
                for key, child in item.items():
                    if not isinstance(key, str) or _has_surrogate(key):
                        raise Refused
                    out[str.__str__(key)] = walk(child, depth + 1)
                return out
            return [walk(child, depth + 1) for child in item]
        raise Refused

    return walk(value, 0)


def model_header(name: Any, value: Any) -> None:
    if not isinstance(name, str) or not name or any(c not in TCHARS for c in name):
        raise Refused
    if name.lower() in ("content-length", "transfer-encoding") or not isinstance(value, str):
        raise Refused
    if any((ord(c) < 32 and c != "\t") or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in value):
        raise Refused
    if value[:1] in (" ", "\t") or value[-1:] in (" ", "\t"):
        raise Refused


def model_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise Refused
    for name, value in headers.items():
        model_header(name, value)
    return dict(headers)


def model_part(part: Any) -> Any:
    if isinstance(part, InputText):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, InputImage):
        out = {"type": "input_image", "image_url": part.image_url}
        if part.detail is not None:
            out["detail"] = part.detail
        return out
    return part


def model_message(message: Message) -> Any:
    if isinstance(message.content, str):
        return {"role": message.role, "content": message.content}
    return {"role": message.role, "content": [model_part(p) for p in message.content]}


def model_input(value: Any) -> Any:
    if isinstance(value, str):
        if _has_surrogate(value):
            raise Refused
        return value
    if isinstance(value, Message):
        out = model_message(value)
    elif isinstance(value, Mapping):
        out = value
    elif isinstance(value, (InputText, InputImage)):
        out = [model_part(value)]
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items: list[Any] = []
        has_message = has_part = False
        for item in value:
            if isinstance(item, Message):
                has_message = True
                items.append(model_message(item))
            elif isinstance(item, (InputText, InputImage)):
                has_part = True
                items.append(model_part(item))
            elif isinstance(item, Mapping):
                items.append(item)
            elif isinstance(item, str):
                has_part = True
                items.append({"type": "input_text", "text": item})
            else:
                raise Refused
        if not items or (has_message and has_part):
            raise Refused
        out = items
    else:
        raise Refused
    return model_json(out)


TOOL_FIELDS = (
    ("size", "size"),
    ("quality", "quality"),
    ("format", "output_format"),
    ("background", "background"),
    ("output_compression", "output_compression"),
    ("moderation", "moderation"),
    ("model", "model"),
)


def model_tool(tool: Any) -> Any:
    if isinstance(tool, ImageGenerationTool):
        if not isinstance(tool.extra, Mapping):
            raise Refused
        model_json(tool.extra)
        out: dict[Any, Any] = {"type": "image_generation"}
        for attr, key in TOOL_FIELDS:
            if getattr(tool, attr) is not None:
                out[key] = getattr(tool, attr)
        out.update(tool.extra)
        return model_json(out)
    if isinstance(tool, Mapping):
        return model_json(tool)
    raise Refused


def model_number(value: Any, low: float, high: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise Refused
    return value


def model_complete(
    session_id: Any, input: Any, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """(body, headers, idempotency key) the server must see, or Refused."""
    if type(session_id) is not str or not session_id.strip():
        raise Refused
    body: dict[str, Any] = {"session_id": session_id}
    if input is not None:
        body["input"] = model_input(input)
    value = options.get("max_output_tokens")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Refused
        body["max_output_tokens"] = value
    if options.get("temperature") is not None:
        body["temperature"] = model_number(options["temperature"], 0, 2)
    if options.get("top_p") is not None:
        body["top_p"] = model_number(options["top_p"], 0, 1)
    for name in ("reasoning", "metadata"):
        value = options.get(name)
        if value is not None:
            if not isinstance(value, Mapping):
                raise Refused
            body[name] = model_json(value)
    tools = options.get("tools")
    if tools is not None:
        if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
            raise Refused
        body["tools"] = [model_tool(tool) for tool in tools]
    choice = options.get("tool_choice")
    if choice is not None:
        if isinstance(choice, str):
            if choice not in ("auto", "none", "required"):
                raise Refused
            body["tool_choice"] = choice
        elif isinstance(choice, ImageGenerationTool):
            body["tool_choice"] = {"type": "image_generation"}
        elif isinstance(choice, Mapping):
            body["tool_choice"] = model_json(choice)
        else:
            raise Refused
    extra = options.get("extra_body")
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise Refused
        body.update(model_json(extra))
    key = options.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise Refused
        model_header("Idempotency-Key", key)
    headers: dict[str, str] = {}
    if options.get("extra_headers") is not None:
        headers = model_headers(options["extra_headers"])
        for name, value in headers.items():
            if name.lower() == "idempotency-key" and key is None:
                key = value
        headers = {k: v for k, v in headers.items() if k.lower() != "idempotency-key"}
    # Strings the SDK builds (session_id, plain text input, builder fields) are
    # refused at encoding when they cannot be UTF-8.
    if any(isinstance(v, str) and _has_surrogate(v) for v in body.values()):
        raise Refused
    return body, headers, key


# ------------------------------------------------------------------ the checks


def fresh(server: MockSamsarServer, session_id: Any) -> Any:
    return server.create_session() if session_id == "VALID" else session_id


async def expect_refused(server: MockSamsarServer, call: Any) -> None:
    """``call()`` (a zero-argument callable giving the awaitable) is refused: by
    ``complete()`` when called, by an ``async def`` when awaited."""
    event("refused")
    before = len(server.requests)
    with pytest.raises(InvalidArgumentError):
        await call()
    assert len(server.requests) == before  # nothing reached the server


async def expect_sent(server: MockSamsarServer, call: Any) -> Any:
    event("sent")
    before = len(server.requests)
    try:
        result = await call()
    except InvalidArgumentError:
        raise
    except SamsarError:
        result = None
    assert len(server.requests) > before, "the call neither refused nor sent anything"
    return server.requests[before], result


async def check_complete(
    client: AsyncSamsar,
    server: MockSamsarServer,
    session_id: Any,
    input: Any,
    options: dict[str, Any],
) -> None:
    try:
        body, headers, key = model_complete(session_id, input, options)
    except Refused:
        await expect_refused(
            server, lambda: client.assistant.complete(session_id, input, **options)
        )
        return
    record, result = await expect_sent(
        server, lambda: client.assistant.complete(session_id, input, **options)
    )
    assert record.body == body
    for name, value in headers.items():
        assert record.headers.getall(name) == [value]
    if key is not None:
        assert record.idempotency_key == key
    assert result is None or isinstance(result, Response)


clean_inputs = st.one_of(
    st.none(),
    clean_texts,
    st.builds(
        Message,
        st.sampled_from(["user", "assistant", "developer"]),
        st.one_of(clean_texts, st.lists(st.builds(InputText, clean_texts), min_size=1, max_size=2)),
    ),
)


@given(
    session_id=mostly(st.just("VALID"), session_ids),
    input=mostly(clean_inputs, inputs),
    options=complete_options,
)
async def test_complete(
    client: AsyncSamsar, server: MockSamsarServer, session_id: Any, input: Any, options: Any
) -> None:
    server.set_balance(None, 10**12)
    await check_complete(client, server, fresh(server, session_id), input, options)


@given(
    prompt=mostly(
        st.one_of(st.none(), clean_texts, big_texts),
        st.one_of(texts, st.integers(), st.just(b"x"), st.builds(Name, texts)),
    ),
    extra_headers=mostly(st.one_of(st.none(), clean_headers), header_maps),
)
async def test_set_system_prompt(
    client: AsyncSamsar, server: MockSamsarServer, prompt: Any, extra_headers: Any
) -> None:
    def call() -> Any:
        return client.assistant.set_system_prompt(prompt, extra_headers=extra_headers)

    try:
        if prompt is not None and not isinstance(prompt, str):
            raise Refused
        if prompt and _has_surrogate(prompt):
            raise Refused
        if extra_headers is not None:
            model_headers(extra_headers)
    except Refused:
        await expect_refused(server, call)
        return
    record, _ = await expect_sent(server, call)
    assert record.body == {"system_prompt": prompt or None}


# ------------------------------------------------------------------ builders


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP", b""]


@st.composite
def builder_calls(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """(kind, a function that builds the object, the expected input JSON or Refused)."""
    kind = draw(st.sampled_from(["text", "image", "bytes", "message", "user", "tool"]))
    if kind == "tool":
        fields = draw(st.one_of(tool_fields, hostile_tool_fields))

        def build() -> Any:
            return ImageGenerationTool(**fields)

        strings = ("size", "quality", "format", "background", "moderation", "model")
        compression = fields.get("output_compression")
        ok = (
            all(fields.get(name) is None or isinstance(fields[name], str) for name in strings)
            and (compression is None or (type(compression) is int and compression >= 0))
            and isinstance(fields.get("extra", {}), Mapping)
        )
        return kind, build, fields if ok else Refused
    if kind == "text":
        text = draw(st.one_of(texts, st.integers(), st.none()))

        def build() -> Any:
            return InputText(text)

        ok = isinstance(text, str)
        return kind, build, [{"type": "input_text", "text": text}] if ok else Refused
    if kind == "image":
        url = draw(st.one_of(image_urls, st.just(" "), st.integers()))
        detail = draw(st.one_of(st.none(), st.sampled_from(DETAILS), texts))

        def build() -> Any:
            return InputImage(url, detail)

        ok = isinstance(url, str) and url.strip() and (detail is None or detail in DETAILS)
        part = {"type": "input_image", "image_url": url}
        if detail is not None:
            part["detail"] = detail
        return kind, build, [part] if ok else Refused
    if kind == "bytes":
        data = draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=20))
        data = draw(
            st.sampled_from([data, bytearray(data), memoryview(data), data.decode("latin-1")])
        )
        mime = draw(st.one_of(st.none(), st.just("image/png"), texts, st.integers()))

        def build() -> Any:
            return InputImage.from_bytes(data, mime)

        raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        sniffed = mime if mime is not None else (sniff_mime(raw[:16]) if raw else None)
        ok = raw and (mime is None or isinstance(mime, str)) and sniffed is not None
        if not ok:
            return kind, build, Refused
        url = f"data:{sniffed};base64,{base64.b64encode(raw).decode()}"  # type: ignore[arg-type]
        return kind, build, [{"type": "input_image", "image_url": url}]
    role = draw(
        st.one_of(st.sampled_from(["user", "assistant", "developer", "bogus"]), st.integers())
    )
    content = draw(st.lists(st.one_of(texts, parts, st.integers()), max_size=3))
    if kind == "message":
        shape = draw(st.sampled_from(["str", "list", "one"]))
        value: Any = draw(texts) if shape == "str" else content if shape == "list" else draw(parts)

        def build() -> Any:
            return Message(role, value)

        items = [value] if shape == "one" else value
    else:
        value = content

        def build() -> Any:
            return Message.user(*value)

        role, items = "user", value
    if role not in ("user", "assistant", "developer", "system"):
        return kind, build, Refused
    if isinstance(items, str):
        return kind, build, {"role": role, "content": items}
    if kind == "user" and not items:
        return kind, build, Refused
    if len(items) == 1 and isinstance(items[0], str) and not (kind == "message" and shape == "one"):
        return kind, build, {"role": role, "content": items[0]}
    expected = []
    for item in items:
        if isinstance(item, str):
            expected.append({"type": "input_text", "text": item})
        elif isinstance(item, (InputText, InputImage, Mapping)):
            expected.append(model_part(item))
        else:
            return kind, build, Refused
    return kind, build, {"role": role, "content": expected}


@given(call=builder_calls())
async def test_builders(
    client: AsyncSamsar, server: MockSamsarServer, call: tuple[str, Any, Any]
) -> None:
    kind, build, expected = call
    if expected is Refused:
        with pytest.raises(InvalidArgumentError):
            build()
        return
    value = build()
    session_id = server.create_session()
    if kind == "tool":  # sent as the one tool of a plain completion
        await check_complete(client, server, session_id, "hi", {"tools": [value]})
        return
    try:
        body = {"session_id": session_id, "input": model_json(expected)}
        if any(_has_surrogate(s) for s in _strings(expected)):
            raise Refused
    except Refused:
        await expect_refused(server, lambda: client.assistant.complete(session_id, value))
        return
    record, _ = await expect_sent(server, lambda: client.assistant.complete(session_id, value))
    assert record.body == body


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


@given(
    tool=image_tools,
    session_id=mostly(st.just("VALID"), session_ids),
    input=mostly(clean_inputs, inputs),
    options=complete_options,
)
async def test_completion_request_in_a_batch(
    client: AsyncSamsar,
    server: MockSamsarServer,
    tool: ImageGenerationTool,
    session_id: Any,
    input: Any,
    options: dict[str, Any],
) -> None:
    server.set_balance(None, 10**12)
    options = {**options, "tools": [tool]} if "tools" not in options else options
    session_id = fresh(server, session_id)
    try:
        request = CompletionRequest(session_id=session_id, input=input, **options)
    except InvalidArgumentError:
        # Fields are checked when the request is built; what it refuses, the model refuses.
        event("refused when built")
        with pytest.raises(Refused):
            model_complete(session_id, input, options)
        return
    before = len(server.requests)
    async with client.assistant.complete_many([request], concurrency=1) as run:
        results = [r async for r in run]
    assert len(results) == 1
    (result,) = results
    assert result.request is request
    try:
        body, headers, key = model_complete(session_id, input, options)
    except Refused:
        event("refused")
        assert isinstance(result.error, InvalidArgumentError)
        assert len(server.requests) == before
        return
    event("sent")
    assert result.error is None or isinstance(result.error, SamsarError)
    assert not isinstance(result.error, InvalidArgumentError)
    record = server.requests[before]
    assert record.body == body
    for name, value in headers.items():
        assert record.headers.getall(name) == [value]
    if key is not None:
        assert record.idempotency_key == key


# ------------------------------------------------------------------ client construction


def _timeouts() -> st.SearchStrategy[Any]:
    seconds = st.one_of(st.none(), floats, st.integers(-1, 10**12), st.just(10**400), texts)

    @st.composite
    def timeout_objects(draw: st.DrawFn) -> Any:
        try:
            return Timeout(draw(seconds), draw(seconds), draw(seconds))
        except InvalidArgumentError:
            return Timeout()

    return st.one_of(seconds, timeout_objects(), st.just(Timeout))


def model_seconds(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1e9:
        raise Refused


@st.composite
def base_urls(draw: st.DrawFn) -> tuple[str, bool]:
    """(a template with {origin}/{port}, valid?)."""
    good = st.sampled_from(
        [
            ("{origin}/v1", True),
            ("{origin}/v1/", True),
            ("{origin}/api/v1", True),
            ("http://localhost:{port}/v1", True),
            ("HTTP://127.0.0.1:{port}/v1", True),
        ]
    )
    return draw(
        mostly(
            good,
            st.sampled_from(
                [
                    ("{origin}/v1", True),
                    ("{origin}/v1/", True),
                    ("{origin}/api/v1", True),
                    ("http://localhost:{port}/v1", True),
                    ("HTTP://127.0.0.1:{port}/v1", True),
                    ("ftp://127.0.0.1:{port}/v1", False),
                    ("http://", False),
                    ("http://user:pw@127.0.0.1:{port}/v1", False),
                    ("{origin}/v1?x=1", False),
                    ("{origin}/v1#f", False),
                    ("{origin}/v1\n", False),
                    ("{origin}/ v1", False),
                    ("{origin}/v1\x00", False),
                    ("http://127.0.0.1:99999/v1", False),
                    ("http://[::1/v1", False),
                    ("http://10.0.0.1:{port}/v1", False),  # plain http to a non-loopback host
                    ("", False),
                ]
            ),
        )
    )


@given(
    api_key=mostly(
        st.just("GOOD"), st.one_of(texts, st.integers(), st.just("sk-\x01"), st.just(" sk"))
    ),
    base_url=base_urls(),
    timeout=mostly(st.one_of(st.none(), st.floats(0.001, 1e9)), _timeouts()),
    max_connections=mostly(
        st.integers(1, 10**30), st.one_of(st.integers(-1, 0), floats, st.booleans(), texts)
    ),
    max_response_bytes=mostly(st.integers(1, 10**30), st.one_of(st.integers(-1, 0), floats, texts)),
    default_headers=mostly(st.one_of(st.none(), clean_headers), header_maps),
)
async def test_client_construction(
    server: MockSamsarServer,
    api_key: Any,
    base_url: tuple[str, bool],
    timeout: Any,
    max_connections: Any,
    max_response_bytes: Any,
    default_headers: Any,
) -> None:
    key = server.api_key if api_key == "GOOD" else api_key
    template, url_ok = base_url
    url = template.format(origin=server.origin, port=server.port)
    options = {
        "base_url": url,
        "timeout": timeout,
        "max_connections": max_connections,
        "max_response_bytes": max_response_bytes,
        "default_headers": default_headers,
        "retry": RetryPolicy(initial_backoff=0, max_backoff=0),
    }
    before = len(server.requests)
    try:
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise Refused
        model_header("Authorization", f"Bearer {key}")
        if not url_ok:
            raise Refused
        if isinstance(timeout, Timeout):
            pass
        elif timeout is Timeout:
            raise Refused
        else:
            model_seconds(timeout)
        for value in (max_connections, max_response_bytes):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Refused
        if default_headers is not None:
            model_headers(default_headers)
    except Refused:
        event("refused")
        with pytest.raises(InvalidArgumentError) as info:
            AsyncSamsar(key, **options)
        assert server.api_key not in str(info.value)
        return
    event("constructed")
    error: SamsarError | None = None
    async with AsyncSamsar(key, **options) as client:
        try:
            response = await client.assistant.complete(server.create_session(), "hi")
        except InvalidArgumentError:
            raise
        except SamsarError as exc:
            error = exc
        else:
            assert isinstance(response, Response)
    if error is not None:
        assert server.api_key not in str(error)
    for record in server.requests[before:]:
        for name, value in (default_headers or {}).items():
            assert record.headers.getall(name) == [value]
