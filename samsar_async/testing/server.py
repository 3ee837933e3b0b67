"""A faithful local Samsar Assistant API server for tests: :class:`MockSamsarServer`.

It serves the documented contract over real loopback HTTP (``aiohttp.web``),
under both prefixes ``/v1`` and ``/api/v1``:

- ``POST /assistant/set_system_prompt`` stores or clears the account's prompt.
- ``POST /assistant/completion`` answers deterministically, keeps each
  session's response chain, charges credits and reports them in the
  ``x-credits-charged`` / ``x-credits-remaining`` headers.

Everything a test may want to check is recorded: ``requests`` (one
:class:`RecordedRequest` per HTTP request), ``ledger`` (one :class:`Charge` per
charge), each session's :class:`ChainTurn` list, and concurrency counters. Faults are
scripted on ``faults`` (see :mod:`samsar_async.testing.faults`).

Output text rule
----------------
For turn ``N`` of a session (1-based position in its chain), the reply is::

    {prefix}Reply {N} to: {subject}

- ``prefix`` is ``""`` under the default prompt; with a custom account prompt it
  is ``"[" + the prompt's first four words joined by single spaces + "] "``.
- ``subject`` comes from the *last* ``user`` message of this request's input (a
  plain string input, or a bare content array, is one user message): its
  ``input_text`` parts with whitespace collapsed, joined by one space, then
  ``"[1 image]"`` / ``"[K images]"`` if it has ``input_image`` parts. It is
  ``"(no user text)"`` when the input has no user message and ``"(empty)"``
  when that message has neither text nor images.
- Without input (``input`` omitted or null) the subject is ``"(history) "`` plus
  the subject of the latest turn that had input, or ``"(history) (empty)"``.
- ``max_output_tokens=M`` keeps the first ``M`` words; the response's status
  is then ``"incomplete"`` with ``incomplete_details.reason = "max_output_tokens"``.

Image turns
-----------
A turn generates an image when ``tools`` holds an ``{"type": "image_generation"}``
tool and either ``tool_choice`` is ``{"type": "image_generation"}``, or
``tool_choice`` is ``"required"``, or ``tool_choice`` is absent/``"auto"`` and the
subject mentions an image (a word such as *image*, *picture*, *photo*,
*poster*, *draw*, *illustration*, *logo*). Forcing the tool without offering it
is a 400. The output is then a single ``image_generation_call`` item (as in the
API document) with ``revised_prompt = "{prefix}Image {N} for: {subject}"``,
``output_text`` is ``""``, and ``result`` is the base64 of a real PNG: a solid
colour (the first three bytes of SHA-256 of the subject) of the tool's
``size`` (``"WxH"``, each side capped at 1024; ``"auto"`` or absent: 256x256) or,
when the server was made with ``image_bytes=N``, random pixels in a PNG of
exactly ``N`` bytes (made once per server). ``max_output_tokens`` does not apply.

Tokens and credits
------------------
``tokens(s) = ceil(len(s) / 4)``.

- A request's own input tokens: ``tokens(json.dumps(input, sort_keys=True,
  separators=(",", ":"), ensure_ascii=False))`` plus :data:`IMAGE_INPUT_TOKENS`
  per ``input_image`` part (0 without input).
- ``input_tokens`` = tokens of the account prompt (or :data:`DEFAULT_SYSTEM_PROMPT`)
  + the ``context_tokens`` of every earlier turn of the session + own input tokens.
  A turn's ``context_tokens`` = its own input tokens + its output tokens
  (+ :data:`IMAGE_INPUT_TOKENS` when it generated an image).
- ``output_tokens`` = words of the output text (or of the revised prompt).
- ``usd = input_tokens * INPUT_USD_PER_MILLION_TOKENS / 1e6
  + output_tokens * OUTPUT_USD_PER_MILLION_TOKENS / 1e6 + images * IMAGE_USD``;
  ``credits = usd * CREDITS_PER_USD * CREDIT_MULTIPLIER`` quantized to
  :data:`CREDIT_QUANTUM` (half up). See :func:`credits_for`.

The charge is computed after the (simulated) generation. When the balance is
lower than the charge the answer is 402, with ``x-credits-charged: 0``, and
nothing is charged or recorded in the chain.

Idempotency
-----------
A completion with an ``Idempotency-Key`` header is remembered per account:

- the key is in progress: ``409``;
- it completed with a 2xx: the stored answer (same status, body and credit
  headers) plus ``Idempotent-Replayed: true``; nothing is charged, no turn added;
- it completed with a 2xx for a *different* body: ``422``;
- any non-2xx outcome is forgotten, so a retry is processed afresh.

An empty key, or one longer than 255 characters, is a 400.

Outages and limits
------------------
Scriptable from tests, at any time:

- :meth:`MockSamsarServer.go_down` stops serving as a crashed server would:
  the listening socket is closed (new connections are refused) and every open
  connection is dropped, in flight or idle; the accounts, sessions, ledger and
  idempotency records survive. :meth:`MockSamsarServer.come_back` serves again
  on the *same* port; :meth:`MockSamsarServer.outage` does both around a sleep.
  With ``charge_in_flight=True`` the completions in flight when it goes down are
  finished first (charged, their 2xx stored under their ``Idempotency-Key``)
  and only their answers are lost: the "outcome unknown" case.
- :meth:`MockSamsarServer.set_concurrency_limit`: at most ``N`` API requests of
  one account are processed at once; the excess is answered at once with
  ``429``, ``retry-after-ms`` and ``Retry-After`` (nothing done, nothing charged).
- :meth:`MockSamsarServer.set_rate_limit`: at most ``R`` API requests per second
  per account (a token bucket); the excess is answered likewise, with the time
  until the next token as ``retry-after-ms``.

A throttled request has ``throttled`` set (``"concurrency"`` or ``"rate"``) in
its :class:`RecordedRequest`; :attr:`MockSamsarServer.outages` lists the outages.

The raw API keys are never stored in records or shown in a ``repr``: records
name accounts by their id (``acct_1``, ``acct_2``, ...) and any header or body
string holding a key is redacted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
import itertools
import json
import math
import re
import secrets
import struct
import time
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ._png import MIN_NOISE_PNG_SIZE, noise_png, solid_png
from .faults import Fault, FaultKind, FaultPlan

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "CREDITS_PER_USD",
    "CREDIT_MULTIPLIER",
    "CREDIT_QUANTUM",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_SYSTEM_PROMPT",
    "IMAGE_INPUT_TOKENS",
    "IMAGE_USD",
    "INPUT_USD_PER_MILLION_TOKENS",
    "MAX_IMAGE_SIDE",
    "MODEL",
    "OUTPUT_USD_PER_MILLION_TOKENS",
    "SELECTED_ASSISTANT_MODEL",
    "ChainTurn",
    "Charge",
    "MockSamsarServer",
    "Outage",
    "RecordedRequest",
    "count_tokens",
    "credits_for",
]

MODEL: Final = "gpt-5.4"
"""The ``model`` every answer names."""

SELECTED_ASSISTANT_MODEL: Final = "GPT5.4"
"""``selected_assistant_model`` of ``set_system_prompt`` answers."""

DEFAULT_SYSTEM_PROMPT: Final = "You are a helpful assistant. Answer clearly and concisely."
"""The prompt used (and counted in input tokens) when the account has none."""

INPUT_USD_PER_MILLION_TOKENS: Final = Decimal("2.50")
OUTPUT_USD_PER_MILLION_TOKENS: Final = Decimal("15.00")
IMAGE_USD: Final = Decimal("0.04")
"""Price of one generated image."""
IMAGE_INPUT_TOKENS: Final = 765
"""Input tokens an image adds: per ``input_image`` part, and per generated image in history."""
CREDITS_PER_USD: Final = Decimal(100)
CREDIT_MULTIPLIER: Final = Decimal("2.5")
CREDIT_QUANTUM: Final = Decimal("0.000001")

DEFAULT_IMAGE_SIZE: Final = (256, 256)
MAX_IMAGE_SIDE: Final = 1024

MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
"""Largest request body accepted (413 above)."""
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
_BACKLOG: Final = 1024
"""Listen backlog: hundreds of clients connecting at once are queued, not dropped
(a SYN dropped on a full queue is retried by the client's kernel only after 1 s)."""
SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds :meth:`MockSamsarServer.close` waits for handlers (they are woken first)."""

_PREFIXES: Final = ("/v1", "/api/v1")
_ENDPOINT_PATHS: Final = {
    f"{prefix}/assistant/{name}": name
    for prefix in _PREFIXES
    for name in ("completion", "set_system_prompt")
}
_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS: Final = frozenset({"input_text", "output_text"})
_PART_TYPES: Final = _TEXT_PARTS | {"input_image"}
_TOOL_CHOICE_MODES: Final = frozenset({"none", "auto", "required"})
_IMAGE_WORDS: Final = re.compile(
    r"\b(images?|pictures?|photos?|posters?|draw|drawing|illustrations?|logos?)\b", re.IGNORECASE
)
_SIZE: Final = re.compile(r"^([1-9][0-9]{0,5})x([1-9][0-9]{0,5})$")
_REDACTED: Final = "<redacted>"
_ONE_MILLION: Final = Decimal(1_000_000)


def count_tokens(text: str) -> int:
    """The mock's token count of ``text``: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)


def credits_for(input_tokens: int, output_tokens: int, images: int = 0) -> Decimal:
    """Credits charged for a completion with these token counts and generated images.

    ``(input_tokens * $2.50/1M + output_tokens * $15/1M + images * $0.04)
    * 100 credits/$ * 2.5``, quantized to 0.000001 (half up).
    """
    usd = (
        Decimal(input_tokens) * INPUT_USD_PER_MILLION_TOKENS / _ONE_MILLION
        + Decimal(output_tokens) * OUTPUT_USD_PER_MILLION_TOKENS / _ONE_MILLION
        + Decimal(images) * IMAGE_USD
    )
    return (usd * CREDITS_PER_USD * CREDIT_MULTIPLIER).quantize(CREDIT_QUANTUM, ROUND_HALF_UP)


def _decimal(value: Decimal | int | str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise TypeError("credits must be a Decimal, an int or a decimal string")
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError("credits must be finite")
    return result


def _fmt(value: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros (``"0"``, ``"999.3975"``)."""
    return format(value.normalize(), "f")


# --------------------------------------------------------------------------- records


@attrs.frozen
class Charge:
    """One charge taken from an account (one per charged completion)."""

    account: str
    """The account id (``acct_N``), never the API key."""
    session_id: str
    response_id: str
    idempotency_key: str | None
    credits: Decimal


@attrs.frozen
class ChainTurn:
    """One completed turn of a session's response chain."""

    number: int
    """1-based position in the session's chain."""
    response_id: str
    previous_response_id: str | None
    input_text: str | None
    """The subject taken from this turn's input; ``None`` when answered from history."""
    output_text: str
    """The reply text (``""`` for an image turn)."""
    revised_prompt: str | None
    """The image's revised prompt, for an image turn."""
    images: int
    """Images generated (0 or 1)."""
    input_tokens: int
    output_tokens: int
    context_tokens: int
    """Tokens this turn adds to the input of every later turn of the session."""
    credits: Decimal
    idempotency_key: str | None


@attrs.define
class RecordedRequest:
    """One HTTP request the server received, in arrival order.

    Appended when the request starts, completed when its handler ends.
    ``started`` and ``ended`` come from one counter shared by all requests, so
    ``a.ended < b.started`` means ``a`` finished before ``b`` began.
    ``headers`` never contains ``Authorization``; ``account`` names the
    authenticated account by id.
    """

    method: str
    path: str
    endpoint: str | None
    """``"completion"``, ``"set_system_prompt"`` or ``None`` for any other path."""
    started: int
    headers: CIMultiDictProxy[str]
    peer: tuple[str, int] | None
    """The client socket's (host, port)."""
    received: float = attrs.field(factory=time.monotonic)
    """When the request started, in :func:`time.monotonic` seconds."""
    idempotency_key: str | None = None
    body: Any = None
    """The parsed JSON body, or ``None`` when it is not JSON."""
    session_id: str | None = None
    account: str | None = None
    status: int | None = None
    """Status sent (or promised, when truncated); ``None`` when the connection was dropped."""
    turn: int | None = None
    """The turn number this request added to its session."""
    response_id: str | None = None
    charged: Decimal = Decimal(0)
    replayed: bool = False
    """Answered from the idempotency store."""
    fault: str | None = None
    """The :class:`~samsar_async.testing.faults.FaultKind` value injected, if any."""
    throttled: str | None = None
    """``"concurrency"`` or ``"rate"`` when a server limit answered it with 429."""
    ended: int | None = None


@attrs.define
class Outage:
    """One outage made by :meth:`MockSamsarServer.go_down`, in :func:`time.monotonic` seconds."""

    started: float
    ended: float | None = None
    """When :meth:`MockSamsarServer.come_back` served again (``None`` while down)."""
    dropped: int = 0
    """Connections (in flight or idle) the server dropped when it went down."""


# --------------------------------------------------------------------------- internals


@attrs.define
class _Account:
    id: str
    key: str = attrs.field(repr=False)
    balance: Decimal
    system_prompt: str | None = None
    idempotency: dict[str, _Stored] = attrs.field(factory=dict, repr=False)
    in_flight: int = 0
    """API requests of this account admitted past the limits and not yet answered."""
    tokens: float = 0.0
    """Rate-limit tokens left at ``refilled`` (see :meth:`MockSamsarServer.set_rate_limit`)."""
    refilled: float | None = None


@attrs.define
class _Session:
    id: str
    owner: str
    turns: list[ChainTurn] = attrs.field(factory=list)


@attrs.frozen
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@attrs.define
class _Stored:
    fingerprint: str
    reply: _Reply | None = None
    """``None`` while the first request with the key is in progress."""


@attrs.frozen
class _Truncated:
    reply: _Reply


class _Drop:
    """Close the connection without answering."""


@attrs.frozen
class _Raw:
    """Write these bytes as the whole answer, then close the connection."""

    data: bytes


_DROP: Final = _Drop()
_Outcome = _Reply | _Truncated | _Drop | _Raw
_STATUS_LINE: Final = re.compile(rb"HTTP/\d\.\d ([0-9]{3})\b")


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@attrs.frozen
class _Message:
    role: str
    texts: tuple[str, ...]
    images: int


@attrs.frozen
class _Params:
    session_id: str
    messages: tuple[_Message, ...] | None
    own_tokens: int
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    reasoning: dict[str, Any] | None
    metadata: dict[str, str] | None
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any] | None
    image_size: tuple[int, int] | None
    """The image tool's size when an image_generation tool is offered."""


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _json_reply(status: int, obj: object, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, _json_bytes(obj), "application/json", headers)


def _error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str,
    param: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Reply:
    error = {"message": message, "type": type_, "code": code, "param": param}
    return _json_reply(status, {"error": error}, headers)


def _bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> _Reply:
    return _error(400, message, type_="invalid_request_error", code=code, param=param)


def _too_many(message: str, code: str, retry_after: float) -> _Reply:
    milliseconds = max(0, math.ceil(retry_after * 1000))
    headers = (
        ("retry-after-ms", str(milliseconds)),
        ("Retry-After", str(math.ceil(milliseconds / 1000))),
    )
    return _error(429, message, type_="rate_limit_error", code=code, headers=headers)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_part(part: object, where: str) -> tuple[str | None, int]:
    """(text or None, images) of one content part."""
    if not isinstance(part, dict):
        raise _Invalid(f"{where} must be an object", where)
    kind = part.get("type")
    if kind not in _PART_TYPES:
        allowed = ", ".join(sorted(_PART_TYPES))
        raise _Invalid(f"{where}.type must be one of: {allowed}", f"{where}.type")
    if kind in _TEXT_PARTS:
        text = part.get("text")
        if not isinstance(text, str):
            raise _Invalid(f"{where}.text must be a string", f"{where}.text")
        return text, 0
    image_url, file_id = part.get("image_url"), part.get("file_id")
    if not (isinstance(image_url, str) and image_url) and not (
        isinstance(file_id, str) and file_id
    ):
        raise _Invalid(f"{where} needs an image_url or a file_id string", where)
    return None, 1


def _parse_content(content: object, where: str) -> tuple[tuple[str, ...], int]:
    if isinstance(content, str):
        return (content,), 0
    if not isinstance(content, list) or not content:
        raise _Invalid(f"{where} must be a string or a non-empty array of parts", where)
    texts: list[str] = []
    images = 0
    for index, part in enumerate(content):
        text, part_images = _parse_part(part, f"{where}[{index}]")
        if text is not None:
            texts.append(text)
        images += part_images
    return tuple(texts), images


def _parse_message(value: dict[str, Any], where: str) -> _Message:
    if value.get("type", "message") != "message":
        raise _Invalid(f'{where}.type must be "message"', f"{where}.type")
    role = value.get("role")
    if role not in _ROLES:
        raise _Invalid(f"{where}.role must be one of: {', '.join(sorted(_ROLES))}", f"{where}.role")
    texts, images = _parse_content(value.get("content"), f"{where}.content")
    return _Message(role, texts, images)


def _parse_input(value: object) -> tuple[_Message, ...] | None:
    """The messages of ``input``; ``None`` when there is no input."""
    if value is None:
        return None
    if isinstance(value, str):
        return (_Message("user", (value,), 0),)
    if isinstance(value, dict):
        return (_parse_message(value, "input"),)
    if not isinstance(value, list):
        raise _Invalid(
            "input must be a string, a message object, an array of messages "
            "or an array of content parts",
            "input",
        )
    if not value:
        raise _Invalid("input must not be an empty array", "input")
    if all(isinstance(item, dict) and "role" in item for item in value):
        return tuple(_parse_message(item, f"input[{i}]") for i, item in enumerate(value))
    if all(isinstance(item, dict) and "role" not in item for item in value):
        texts, images = _parse_content(value, "input")
        return (_Message("user", texts, images),)
    raise _Invalid("input must not mix messages and content parts", "input")


def _own_tokens(value: object, messages: tuple[_Message, ...] | None) -> int:
    if messages is None:
        return 0
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return count_tokens(text) + IMAGE_INPUT_TOKENS * sum(m.images for m in messages)


def _parse_size(tool: dict[str, Any], where: str) -> tuple[int, int]:
    size = tool.get("size")
    if size is None or size == "auto":
        return DEFAULT_IMAGE_SIZE
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise _Invalid(f'{where}.size must be "auto" or "WIDTHxHEIGHT"', f"{where}.size")
    width, height = (min(int(side), MAX_IMAGE_SIDE) for side in match.groups())
    return width, height


def _parse_params(body: dict[str, Any]) -> _Params:
    session_id = body.get("session_id")
    if session_id is None:
        raise _Invalid("session_id is required", "session_id")
    if not isinstance(session_id, str) or not session_id.strip():
        raise _Invalid("session_id must be a non-empty string", "session_id")
    if body.get("stream"):
        raise _Invalid(
            "streaming is not supported: the response is returned in one piece", "stream"
        )
    messages = _parse_input(body.get("input"))

    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _Invalid("max_output_tokens must be a positive integer", "max_output_tokens")
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 2):
        raise _Invalid("temperature must be a number between 0 and 2", "temperature")
    if top_p is not None and not (_is_number(top_p) and 0 <= top_p <= 1):
        raise _Invalid("top_p must be a number between 0 and 1", "top_p")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise _Invalid("reasoning must be an object", "reasoning")
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _Invalid("metadata must be an object of string values", "metadata")

    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _Invalid("tools must be an array", "tools")
    image_size: tuple[int, int] | None = None
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _Invalid(f"tools[{index}] must be an object with a type", f"tools[{index}]")
        if tool["type"] == "image_generation" and image_size is None:
            image_size = _parse_size(tool, f"tools[{index}]")

    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        if isinstance(tool_choice, dict):
            if not isinstance(tool_choice.get("type"), str):
                raise _Invalid("tool_choice must have a type", "tool_choice")
        elif tool_choice not in _TOOL_CHOICE_MODES:
            raise _Invalid(
                'tool_choice must be "none", "auto", "required" or an object', "tool_choice"
            )
    if _forces_image(tool_choice) and image_size is None:
        raise _Invalid(
            "tool_choice image_generation needs an image_generation tool in tools", "tool_choice"
        )

    return _Params(
        session_id=session_id,
        messages=messages,
        own_tokens=_own_tokens(body.get("input"), messages),
        max_output_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        reasoning=reasoning,
        metadata=metadata,
        tools=tools,
        tool_choice=tool_choice,
        image_size=image_size,
    )


def _forces_image(tool_choice: object) -> bool:
    return isinstance(tool_choice, dict) and tool_choice.get("type") == "image_generation"


def _subject(messages: tuple[_Message, ...]) -> str:
    users = [m for m in messages if m.role == "user"]
    if not users:
        return "(no user text)"
    last = users[-1]
    text = " ".join(" ".join(t.split()) for t in last.texts if t.strip())
    if last.images:
        note = f"[{last.images} image{'s' if last.images > 1 else ''}]"
        text = f"{text} {note}" if text else note
    return text or "(empty)"


def _prompt_prefix(prompt: str | None) -> str:
    if prompt is None:
        return ""
    return "[" + " ".join(prompt.split()[:4]) + "] "


def _wants_image(params: _Params, subject: str) -> bool:
    if params.image_size is None:
        return False
    choice = params.tool_choice
    if _forces_image(choice) or choice == "required":
        return True
    if choice is None or choice == "auto":
        return _IMAGE_WORDS.search(subject) is not None
    return False


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _peer(request: web.BaseRequest) -> tuple[str, int] | None:
    transport = request.transport
    if transport is None:
        return None
    info = transport.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


def _load_json(raw: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw)
    except ValueError:
        return False, None


# --------------------------------------------------------------------------- server


class MockSamsarServer:
    """The Samsar Assistant API, served for real over loopback HTTP.

    Use it as ``async with MockSamsarServer() as server:`` (or ``await
    server.start()`` / ``await server.close()``); point a client at
    ``server.url`` (or ``server.alias_url``) with ``server.api_key``.

    Args:
        host: interface to bind; loopback unless you need otherwise.
        port: port to bind; 0 picks a free one (see :attr:`port`).
        credits: starting balance of the default account.
        latency: seconds each completion takes to "generate" (so calls overlap).
        image_bytes: when set, generated images are random-pixel PNGs of exactly
            this many bytes (at least 84) instead of small solid-colour ones.

    Records (plain attributes, safe to read at any time): :attr:`requests`,
    :attr:`ledger`, :attr:`peers`, :attr:`in_flight`, :attr:`max_in_flight`,
    :attr:`session_overlaps`, :attr:`max_sessions_in_flight`, :attr:`held`,
    :attr:`outages`.

    Outages and limits, scriptable at any time (see the module docstring)::

        await server.go_down(charge_in_flight=True)  # refuse connections, drop open ones
        await server.come_back()                     # serve again on the same port
        await server.outage(0.5)                     # both, around a sleep
        server.set_concurrency_limit(32, retry_after=0.05)  # 429 + retry-after-ms: 50
        server.set_rate_limit(100)                   # 100 requests/s per account
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        credits: Decimal | int | str = Decimal("1000"),
        latency: float = 0.0,
        image_bytes: int | None = None,
    ) -> None:
        if image_bytes is not None and image_bytes < MIN_NOISE_PNG_SIZE:
            raise ValueError(f"image_bytes must be at least {MIN_NOISE_PNG_SIZE}")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.host = host
        self.latency = latency
        """Seconds of simulated generation per completion (may be changed at any time)."""
        self.image_bytes = image_bytes
        self.faults: FaultPlan = FaultPlan()
        """Faults to inject; see :class:`~samsar_async.testing.faults.FaultPlan`."""
        self.requests: list[RecordedRequest] = []
        """Every request received, in start order."""
        self.ledger: list[Charge] = []
        """Every charge, in order."""
        self.peers: set[tuple[str, int]] = set()
        """Client sockets (host, port) seen: fewer peers than requests means reused connections."""
        self.in_flight: int = 0
        """API requests (both endpoints) whose handler is running now."""
        self.max_in_flight: int = 0
        self.session_overlaps: int = 0
        """Requests that started while another request of the same session_id was in flight."""
        self.max_sessions_in_flight: int = 0
        """Most distinct session_ids in flight at one moment."""
        self.held: int = 0
        """API requests waiting at the :meth:`pause` gate now."""

        self.outages: list[Outage] = []
        """Every outage made by :meth:`go_down`, in order."""
        self.concurrency_limit: int | None = None
        """See :meth:`set_concurrency_limit`."""
        self.concurrency_retry_after: float = 0.1
        self.rate_limit: float | None = None
        """See :meth:`set_rate_limit`."""
        self.rate_burst: int = 1

        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._down = False
        self._charge_in_flight = False
        self._paused = False
        self._gate: set[asyncio.Future[None]] = set()
        self._sleepers: set[asyncio.Future[None]] = set()
        self._waiters: list[tuple[Callable[[MockSamsarServer], bool], asyncio.Future[None]]] = []
        self._seq = itertools.count(1)
        self._account_seq = itertools.count(1)
        self._accounts: dict[str, _Account] = {}
        self._accounts_by_key: dict[str, _Account] = {}
        self._sessions: dict[str, _Session] = {}
        self._session_load: Counter[str] = Counter()
        self._noise_png_b64: str | None = None
        self._noise_size = DEFAULT_IMAGE_SIZE
        self._default_key = self.add_account(credits)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> MockSamsarServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind and start serving. Raises ``RuntimeError`` if already started."""
        if self._runner is not None or self._down:
            raise RuntimeError("the server is already started")
        self._closing = False
        await self._bind(self._requested_port)

    async def _bind(self, port: int) -> None:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        for path, name in _ENDPOINT_PATHS.items():
            handler = self._handle_completion if name == "completion" else self._handle_prompt
            app.router.add_post(path, handler)
        app.router.add_route("*", "/{tail:.*}", self._handle_other)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, port, backlog=_BACKLOG)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def _stop(self, runner: web.AppRunner) -> int:
        """Wake held and sleeping handlers, close the listening socket and every
        connection; returns how many connections were open."""
        self._closing = True
        for future in (*self._gate, *self._sleepers):
            _wake(future)
        server = runner.server
        open_connections = 0 if server is None else len(server.connections)
        await runner.cleanup()
        return open_connections

    async def close(self) -> None:
        """Stop serving: wake held and sleeping handlers (they drop their
        connections), close every connection and release the port. Idempotent."""
        runner = self._runner
        self._down = False
        if runner is None:
            return
        self._runner = None
        try:
            await self._stop(runner)
        finally:
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(RuntimeError("the mock server was closed"))

    # ----------------------------------------------------------------- outages

    @property
    def down(self) -> bool:
        """Whether the server is down (between :meth:`go_down` and :meth:`come_back`)."""
        return self._down

    async def go_down(self, *, charge_in_flight: bool = False) -> None:
        """Stop serving as a crashed server would, keeping every record and the port.

        The listening socket is closed, so new connections are refused
        (``ECONNREFUSED``), and every open connection is closed, in flight or
        idle: a request in flight sees its connection dropped after it was sent.
        Handlers waiting (on :attr:`latency`, a stall or :meth:`pause`) are woken
        first. With ``charge_in_flight=False`` they do nothing (no charge, no
        turn); with ``True`` a completion is finished first (charged, the turn
        added, its 2xx stored under its ``Idempotency-Key``, so a retry is a
        replay) and only its answer is lost. Returns once the server is down;
        an :class:`Outage` is appended to :attr:`outages`.
        """
        runner = self._runner
        if runner is None:
            raise RuntimeError("the server is not serving")
        self._runner = None
        self._down = True
        self._charge_in_flight = charge_in_flight
        outage = Outage(started=time.monotonic())
        self.outages.append(outage)
        try:
            outage.dropped = await self._stop(runner)
        finally:
            self._charge_in_flight = False
            self._notify()

    async def come_back(self) -> None:
        """Serve again on the same port after :meth:`go_down`.

        Raises ``RuntimeError`` when the server is not down, and ``OSError``
        when another process took the port meanwhile.
        """
        if not self._down:
            raise RuntimeError("the server is not down")
        self._closing = False
        await self._bind(self.port)
        self._down = False
        self.outages[-1].ended = time.monotonic()
        self._notify()

    async def outage(self, duration: float, *, charge_in_flight: bool = False) -> None:
        """:meth:`go_down`, stay down ``duration`` seconds, then :meth:`come_back`."""
        if duration < 0:
            raise ValueError("duration must be >= 0")
        await self.go_down(charge_in_flight=charge_in_flight)
        try:
            await asyncio.sleep(duration)
        finally:
            await self.come_back()

    # ----------------------------------------------------------------- limits

    def set_concurrency_limit(self, limit: int | None, *, retry_after: float = 0.1) -> None:
        """Process at most ``limit`` API requests of one account at once (``None``: no limit).

        Each account is counted on its own, from the moment a request passes
        authentication until its answer is built. A request over the limit is
        answered at once with ``429`` (``code: "concurrency_limit"``) and
        ``retry-after-ms: retry_after * 1000`` (plus ``Retry-After`` rounded up
        to whole seconds); nothing is done or charged, and no idempotency
        record is kept.
        """
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise ValueError("limit must be an integer >= 1 or None")
        if not retry_after >= 0:
            raise ValueError("retry_after must be >= 0")
        self.concurrency_limit = limit
        self.concurrency_retry_after = float(retry_after)

    def set_rate_limit(self, per_second: float | None, *, burst: int | None = None) -> None:
        """Accept at most ``per_second`` API requests per second per account (``None``: no limit).

        A token bucket per account, ``burst`` tokens deep (default: one
        second's worth, at least 1), full when the limit is set. A request
        finding no token is answered at once with ``429`` (``code:
        "rate_limit"``) and the time until the next token in ``retry-after-ms``
        (plus ``Retry-After`` rounded up); it takes no token.
        """
        if per_second is not None and not per_second > 0:
            raise ValueError("per_second must be > 0 or None")
        depth = burst if burst is not None else max(1, math.ceil(per_second or 1))
        if depth < 1:
            raise ValueError("burst must be >= 1")
        self.rate_limit = None if per_second is None else float(per_second)
        self.rate_burst = depth
        for account in self._accounts.values():
            account.tokens, account.refilled = float(depth), None

    def _throttle(self, account: _Account, record: RecordedRequest) -> _Reply | None:
        """The 429 for a request over a limit, or ``None`` when it may proceed."""
        rate = self.rate_limit
        if rate is not None:
            now = time.monotonic()
            if account.refilled is None:
                account.tokens, account.refilled = float(self.rate_burst), now
            tokens = min(float(self.rate_burst), account.tokens + (now - account.refilled) * rate)
            account.refilled = now
            if tokens < 1.0:
                account.tokens = tokens
                record.throttled = "rate"
                return _too_many(
                    f"rate limit of {rate:g} requests per second exceeded",
                    "rate_limit",
                    (1.0 - tokens) / rate,
                )
            account.tokens = tokens - 1.0
        limit = self.concurrency_limit
        if limit is not None and account.in_flight >= limit:
            record.throttled = "concurrency"
            return _too_many(
                f"concurrency limit of {limit} requests at once exceeded",
                "concurrency_limit",
                self.concurrency_retry_after,
            )
        return None

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return (
            f"<MockSamsarServer {where} accounts={len(self._accounts)} "
            f"sessions={len(self._sessions)} requests={len(self.requests)}>"
        )

    # ----------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, ``http://HOST:PORT/v1``."""
        return f"{self.origin}/v1"

    @property
    def alias_url(self) -> str:
        """The documented alias base URL, ``http://HOST:PORT/api/v1``."""
        return f"{self.origin}/api/v1"

    # ----------------------------------------------------------------- accounts & sessions

    @property
    def api_key(self) -> str:
        """The default account's API key."""
        return self._default_key

    def add_account(
        self, credits: Decimal | int | str = Decimal("1000"), *, api_key: str | None = None
    ) -> str:
        """Create an account with ``credits`` and return its API key.

        ``api_key`` chooses the key (for clients that read it from somewhere
        else, such as worker processes' environment); by default a new random one.
        """
        account_id = f"acct_{next(self._account_seq)}"
        key = f"sk-mock-{secrets.token_hex(16)}" if api_key is None else api_key
        if not key or key in self._accounts_by_key:
            raise ValueError("api_key must be non-empty and not already in use")
        account = _Account(id=account_id, key=key, balance=_decimal(credits))
        self._accounts[account_id] = account
        self._accounts_by_key[key] = account
        return key

    def _account(self, api_key: str | None) -> _Account:
        account = self._accounts_by_key.get(self._default_key if api_key is None else api_key)
        if account is None:
            raise KeyError("no account has that API key")
        return account

    def account_id(self, api_key: str | None = None) -> str:
        """The id (``acct_N``) records use for the account of ``api_key`` (default account)."""
        return self._account(api_key).id

    def balance(self, api_key: str | None = None) -> Decimal:
        """The credit balance of ``api_key``'s account (default account)."""
        return self._account(api_key).balance

    def set_balance(self, api_key: str | None, value: Decimal | int | str) -> None:
        """Set the credit balance of ``api_key``'s account (``None``: default account)."""
        self._account(api_key).balance = _decimal(value)

    def system_prompt(self, api_key: str | None = None) -> str | None:
        """The account's custom system prompt, or ``None`` (the default prompt applies)."""
        return self._account(api_key).system_prompt

    def create_session(self, api_key: str | None = None) -> str:
        """Create a session owned by ``api_key``'s account; returns its 24-hex-digit id."""
        owner = self._account(api_key).id
        session_id = secrets.token_hex(12)
        self._sessions[session_id] = _Session(session_id, owner)
        return session_id

    def turns(self, session_id: str) -> tuple[ChainTurn, ...]:
        """The session's response chain so far."""
        return tuple(self._sessions[session_id].turns)

    # ----------------------------------------------------------------- synchronisation

    def pause(self) -> None:
        """Hold every API request at its processing point (after authentication,
        validation and the idempotency check, before any charge) until :meth:`resume`.
        :attr:`held` counts the requests waiting there."""
        self._paused = True

    def resume(self) -> None:
        """Release the requests held by :meth:`pause`."""
        self._paused = False
        for future in self._gate:
            _wake(future)

    async def wait_until(
        self, predicate: Callable[[MockSamsarServer], bool], *, timeout: float | None = 10.0
    ) -> None:
        """Wait until ``predicate(server)`` is true; it is checked whenever a
        request starts, is held, or ends. ``timeout`` guards against hangs
        (``TimeoutError``); it is not a synchronisation device."""
        if predicate(self):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)

    def _notify(self) -> None:
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                ready = predicate(self)
            except Exception as exc:
                future.set_exception(exc)
                continue
            if ready:
                future.set_result(None)

    async def _hold(self) -> None:
        loop = asyncio.get_running_loop()
        while self._paused and not self._closing:
            future: asyncio.Future[None] = loop.create_future()
            self._gate.add(future)
            self.held += 1
            self._notify()
            try:
                await future
            finally:
                self.held -= 1
                self._gate.discard(future)

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the server closes."""
        if seconds <= 0 or self._closing:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, future)
        self._sleepers.add(future)
        try:
            await future
        finally:
            timer.cancel()
            self._sleepers.discard(future)

    def _enter(self, session_id: str | None) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if session_id is not None:
            if self._session_load[session_id] > 0:
                self.session_overlaps += 1
            self._session_load[session_id] += 1
            self.max_sessions_in_flight = max(self.max_sessions_in_flight, len(self._session_load))
        self._notify()

    def _leave(self, session_id: str | None) -> None:
        self.in_flight -= 1
        if session_id is not None:
            self._session_load[session_id] -= 1
            if self._session_load[session_id] <= 0:
                del self._session_load[session_id]

    # ----------------------------------------------------------------- redaction

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for key in self._accounts_by_key:
                if key in value:
                    value = value.replace(key, _REDACTED)
            return value
        if isinstance(value, list):
            return [self._redact(item) for item in value]
        if isinstance(value, dict):
            return {self._redact(k): self._redact(v) for k, v in value.items()}
        return value

    def _recorded_headers(self, headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
        kept: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            if name.lower() != "authorization":
                kept.add(name, self._redact(value))
        return CIMultiDictProxy(kept)

    # ----------------------------------------------------------------- request flow

    async def _handle_completion(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def _handle_prompt(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "set_system_prompt")

    async def _handle_other(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, None)

    async def _serve(self, request: web.Request, endpoint: str | None) -> web.StreamResponse:
        peer = _peer(request)
        if peer is not None:
            self.peers.add(peer)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            endpoint=endpoint,
            started=next(self._seq),
            headers=self._recorded_headers(request.headers),
            peer=peer,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        self.requests.append(record)
        try:
            raw = await request.read()
        except web.HTTPException as exc:  # 413: body too large
            reply = _error(exc.status, exc.reason, type_="invalid_request_error", code="too_large")
            return self._finish(request, record, reply)
        except Exception:  # the client went away while sending
            return self._finish(request, record, _DROP)
        parsed, body = _load_json(raw)
        record.body = self._redact(body) if parsed else None
        if isinstance(body, dict):
            session_id = body.get("session_id")
            if isinstance(session_id, str) and session_id:
                record.session_id = session_id
        if endpoint is None:
            return self._finish(request, record, self._no_route(request))
        self._enter(record.session_id)
        try:
            outcome = await self._dispatch(request, endpoint, parsed, body, record)
            return self._finish(request, record, outcome)
        finally:
            self._leave(record.session_id)
            self._notify()

    def _finish(
        self, request: web.Request, record: RecordedRequest, outcome: _Outcome
    ) -> web.StreamResponse:
        record.ended = next(self._seq)
        if self._down:
            outcome = _DROP  # went down while it was handled: the answer is lost
        if isinstance(outcome, _Reply):
            record.status = outcome.status
            headers: CIMultiDict[str] = CIMultiDict()
            headers["Content-Type"] = outcome.content_type
            for name, value in outcome.headers:
                headers.add(name, value)
            return web.Response(status=outcome.status, body=outcome.body, headers=headers)
        transport = request.transport
        if isinstance(outcome, _Raw):
            status = _STATUS_LINE.match(outcome.data)
            record.status = int(status.group(1)) if status else None
            if transport is not None and not transport.is_closing():
                transport.write(outcome.data)
        if isinstance(outcome, _Truncated):
            reply = outcome.reply
            record.status = reply.status
            if transport is not None and not transport.is_closing():
                transport.write(_raw_head(reply) + reply.body[: len(reply.body) // 2])
        if transport is not None:
            transport.close()
        # Writing this fails with a ConnectionError, which aiohttp handles quietly.
        return web.Response(status=204)

    def _no_route(self, request: web.Request) -> _Reply:
        if request.path in _ENDPOINT_PATHS:
            return _error(
                405,
                f"method {request.method} is not allowed: use POST",
                type_="invalid_request_error",
                code="method_not_allowed",
                headers=(("Allow", "POST"),),
            )
        return _error(
            404, f"no route for {request.path}", type_="not_found_error", code="route_not_found"
        )

    async def _dispatch(
        self,
        request: web.Request,
        endpoint: str,
        parsed: bool,
        body: Any,
        record: RecordedRequest,
    ) -> _Outcome:
        if self._down:
            return _DROP
        fault = self.faults.take(endpoint, request.path, record.session_id)
        if fault is not None:
            record.fault = fault.kind.value
            if not fault.after_charge and fault.kind is not FaultKind.STALL:
                return _fault_outcome(fault, None)
        stall = fault.seconds if fault is not None and fault.kind is FaultKind.STALL else 0.0
        account = self._authenticate(request)
        if isinstance(account, _Reply):
            outcome: _Outcome = account
        else:
            record.account = account.id
            throttled = self._throttle(account, record)
            if throttled is not None:
                outcome = throttled
            elif not parsed:
                outcome = _bad_request("the body is not valid JSON", code="invalid_json")
            elif not isinstance(body, dict):
                outcome = _bad_request("the body must be a JSON object", code="invalid_body")
            else:
                account.in_flight += 1
                try:
                    if endpoint == "completion":
                        outcome = await self._complete(account, body, record, stall)
                    else:
                        outcome = await self._set_prompt(account, body, stall)
                finally:
                    account.in_flight -= 1
        if fault is not None and fault.after_charge and isinstance(outcome, _Reply):
            return _fault_outcome(fault, outcome)
        return outcome

    def _authenticate(self, request: web.Request) -> _Account | _Reply:
        challenge = (("WWW-Authenticate", "Bearer"),)
        header = request.headers.get("Authorization", "")
        if not header.strip():
            return _error(
                401,
                "missing API key: send Authorization: Bearer <API_KEY>",
                type_="authentication_error",
                code="missing_api_key",
                headers=challenge,
            )
        scheme, _, token = header.strip().partition(" ")
        account = self._accounts_by_key.get(token.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            return _error(
                401,
                "invalid API key",
                type_="authentication_error",
                code="invalid_api_key",
                headers=challenge,
            )
        return account

    async def _set_prompt(self, account: _Account, body: dict[str, Any], stall: float) -> _Outcome:
        value = body.get("system_prompt")
        if value is not None and not isinstance(value, str):
            return _bad_request("system_prompt must be a string or null", "system_prompt")
        await self._hold()
        await self._nap(stall)
        if self._closing:
            return _DROP
        account.system_prompt = value or None
        return _json_reply(
            200,
            {
                "system_prompt": account.system_prompt,
                "model": MODEL,
                "selected_assistant_model": SELECTED_ASSISTANT_MODEL,
            },
        )

    async def _complete(
        self, account: _Account, body: dict[str, Any], record: RecordedRequest, stall: float
    ) -> _Outcome:
        try:
            params = _parse_params(body)
        except _Invalid as exc:
            code = "invalid_session_id" if exc.param == "session_id" else "invalid_request"
            return _bad_request(exc.message, exc.param, code)
        session = self._sessions.get(params.session_id)
        if session is None:
            return _error(
                404,
                "session not found",
                type_="not_found_error",
                code="session_not_found",
                param="session_id",
            )
        if session.owner != account.id:
            return _error(
                403,
                "the session does not belong to the authenticated account",
                type_="permission_error",
                code="session_forbidden",
                param="session_id",
            )

        key = record.idempotency_key
        stored: _Stored | None = None
        if key is not None:
            if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
                return _bad_request(
                    f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
                    "Idempotency-Key",
                    "invalid_idempotency_key",
                )
            fingerprint = hashlib.sha256(
                json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
            previous = account.idempotency.get(key)
            if previous is not None:
                if previous.reply is None:
                    return _error(
                        409,
                        "a request with this Idempotency-Key is in progress",
                        type_="conflict_error",
                        code="idempotency_key_in_progress",
                    )
                if previous.fingerprint != fingerprint:
                    return _error(
                        422,
                        "this Idempotency-Key was used with a different request body",
                        type_="invalid_request_error",
                        code="idempotency_key_reused",
                    )
                record.replayed = True
                replay = previous.reply
                return attrs.evolve(
                    replay, headers=(*replay.headers, ("Idempotent-Replayed", "true"))
                )
            stored = _Stored(fingerprint)
            account.idempotency[key] = stored

        try:
            await self._hold()
            await self._nap(self.latency + stall)
            if self._closing and not self._charge_in_flight:
                return _DROP
            reply = self._generate(account, session, params, record)
            if stored is not None and 200 <= reply.status < 300:
                stored.reply = reply
            return reply
        finally:
            forget = stored is not None and stored.reply is None
            if key is not None and forget and account.idempotency.get(key) is stored:
                del account.idempotency[key]

    def _generate(
        self, account: _Account, session: _Session, params: _Params, record: RecordedRequest
    ) -> _Reply:
        """Make the turn, charge it and build the answer. Runs without awaiting."""
        number = len(session.turns) + 1
        previous_id = session.turns[-1].response_id if session.turns else None
        prefix = _prompt_prefix(account.system_prompt)
        if params.messages is None:
            earlier = next((t.input_text for t in reversed(session.turns) if t.input_text), None)
            subject = f"(history) {earlier or '(empty)'}"
            input_text = None
        else:
            subject = input_text = _subject(params.messages)
        prompt = account.system_prompt or DEFAULT_SYSTEM_PROMPT
        input_tokens = (
            count_tokens(prompt) + sum(t.context_tokens for t in session.turns) + params.own_tokens
        )
        response_id = _new_id("resp")
        incomplete = False
        revised_prompt: str | None = None
        output: list[dict[str, Any]]
        if _wants_image(params, subject):
            images = 1
            revised_prompt = f"{prefix}Image {number} for: {subject}"
            output_text = ""
            output_tokens = len(revised_prompt.split())
            output = [self._image_item(params, subject, revised_prompt)]
        else:
            images = 0
            words = f"{prefix}Reply {number} to: {subject}".split()
            limit = params.max_output_tokens
            if limit is not None and len(words) > limit:
                words, incomplete = words[:limit], True
            output_text = " ".join(words)
            output_tokens = len(words)
            output = [
                {
                    "id": _new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "status": "incomplete" if incomplete else "completed",
                    "content": [{"type": "output_text", "text": output_text, "annotations": []}],
                }
            ]
        charge = credits_for(input_tokens, output_tokens, images)
        if account.balance < charge:
            return _error(
                402,
                f"insufficient credits: this request costs {_fmt(charge)} credits "
                f"and {_fmt(account.balance)} remain",
                type_="insufficient_credits_error",
                code="insufficient_credits",
                headers=(
                    ("x-credits-charged", "0"),
                    ("x-credits-remaining", _fmt(account.balance)),
                ),
            )
        account.balance -= charge
        session.turns.append(
            ChainTurn(
                number=number,
                response_id=response_id,
                previous_response_id=previous_id,
                input_text=input_text,
                output_text=output_text,
                revised_prompt=revised_prompt,
                images=images,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                context_tokens=params.own_tokens + output_tokens + images * IMAGE_INPUT_TOKENS,
                credits=charge,
                idempotency_key=record.idempotency_key,
            )
        )
        self.ledger.append(
            Charge(account.id, session.id, response_id, record.idempotency_key, charge)
        )
        record.turn, record.response_id, record.charged = number, response_id, charge
        now = int(time.time())
        payload = {
            "id": response_id,
            "object": "response",
            "created_at": now,
            "completed_at": None if incomplete else now,
            "status": "incomplete" if incomplete else "completed",
            "model": MODEL,
            "output": output,
            "output_text": output_text,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": None,
            "metadata": params.metadata or {},
            "max_output_tokens": params.max_output_tokens,
            "previous_response_id": previous_id,
            "parallel_tool_calls": True,
            "reasoning": params.reasoning,
            "temperature": 1.0 if params.temperature is None else params.temperature,
            "top_p": 1.0 if params.top_p is None else params.top_p,
            "tool_choice": "auto" if params.tool_choice is None else params.tool_choice,
            "tools": params.tools,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "background": False,
            "service_tier": "default",
            "store": True,
            "user": None,
        }
        return _json_reply(
            200,
            payload,
            (
                ("x-credits-charged", _fmt(charge)),
                ("x-credits-remaining", _fmt(account.balance)),
            ),
        )

    def _image_item(self, params: _Params, subject: str, revised_prompt: str) -> dict[str, Any]:
        if self.image_bytes is not None:
            if self._noise_png_b64 is None:
                png = noise_png(self.image_bytes)
                self._noise_png_b64 = base64.b64encode(png).decode("ascii")
                self._noise_size = _png_size(png)
            result, size = self._noise_png_b64, self._noise_size
        else:
            size = params.image_size or DEFAULT_IMAGE_SIZE
            digest = hashlib.sha256(subject.encode()).digest()
            png = solid_png(size[0], size[1], (digest[0], digest[1], digest[2]))
            result = base64.b64encode(png).decode("ascii")
        return {
            "id": _new_id("ig"),
            "type": "image_generation_call",
            "status": "completed",
            "revised_prompt": revised_prompt,
            "result": result,
            "output_format": "png",
            "size": f"{size[0]}x{size[1]}",
        }


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fault_outcome(fault: Fault, real: _Reply | None) -> _Outcome:
    """What the client gets for ``fault``; ``real`` is the processed answer (after_charge)."""
    if fault.kind is FaultKind.DISCONNECT:
        return _DROP
    if fault.kind is FaultKind.RAW:
        return _Raw(fault.payload)
    if fault.kind is FaultKind.TRUNCATE:
        if real is None:
            fake = _json_bytes({"id": _new_id("resp"), "object": "response", "output": []})
            real = _Reply(200, fake)
        return _Truncated(real)
    if fault.kind is FaultKind.WRONG_CONTENT_TYPE and real is not None:
        return attrs.evolve(real, content_type=fault.content_type)
    return _Reply(fault.status_code, fault.payload, fault.content_type, fault.headers)


def _raw_head(reply: _Reply) -> bytes:
    """Status line and headers of ``reply`` for a raw write (``Connection: close``)."""
    try:
        phrase = http.HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {reply.status} {phrase}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in reply.headers),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")
