"""An aiohttp web backend that forwards Samsar assistant answers as server-sent events.

- ``GET /`` serves ``chat.html``, a page whose ``EventSource`` asks questions
  from the same origin.
- ``POST /chat`` with ``{"session_id": "...", "message": "...", "request_id": "..."}``
  (or, for a browser's ``EventSource``,
  ``GET /chat?session_id=...&message=...&request_id=...``) answers
  ``text/event-stream``: OpenAI Responses streaming events
  (``response.created``, ``response.output_text.delta``, ...,
  ``response.completed``, or one ``error`` event when the call fails, whose
  details are logged rather than sent). Bad requests get a ``400`` JSON error.
- ``request_id`` (optional, 1 to 64 letters, digits, ``-`` or ``_``; the page
  sends a random one per question) names the question: the call's
  ``Idempotency-Key`` is derived from it, so an ``EventSource`` that
  reconnects before the answer came (same URL) does not ask again, for a
  server that honours the key (the mock server does).
- An ``EventSource`` reconnecting after events (it sends ``Last-Event-ID``) is
  answered ``204``, which stops it, without calling the API.
- Origins: a browser request from another origin is refused with ``403``
  before anything is sent to the API, unless the origin is listed in
  ``ALLOWED_ORIGINS`` (comma-separated, such as ``https://app.example.com``);
  those get CORS headers and their preflight (``OPTIONS /chat``) is answered.

The whole app shares one :class:`~samsar_async.AsyncSamsar` (one connection
pool), opened on startup and closed on cleanup.

Try it against the local mock server::

    python -m samsar_async.testing --port 8080    # prints the exports below and a session id
    export SAMSAR_BASE_URL=http://127.0.0.1:8080/v1 SAMSAR_API_KEY=... SAMSAR_SESSION_ID=...
    python examples/aiohttp_sse_backend.py        # serves http://127.0.0.1:8081 (PORT=...)
    curl -N http://127.0.0.1:8081/chat -H 'Content-Type: application/json' \\
        -d '{"session_id": "<the session id>", "message": "Hello"}'
    # event: response.created ... event: response.output_text.delta
    # data: {"type":"response.output_text.delta",...,"delta":"Reply 1 to: Hello",...}
    # or open http://127.0.0.1:8081/ in a browser

In a browser, close the ``EventSource`` on ``response.completed`` or
``error``: it reconnects when a stream ends, and a reconnect (it sends
``Last-Event-ID``) is answered ``204`` here so that it stops instead of asking
(and paying) again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
from aiohttp import web

from samsar_async import AsyncSamsar
from samsar_async.events import StreamEvent
from samsar_async.sse import stream_response

logger = logging.getLogger(__name__)

CLIENT = web.AppKey("samsar_client", AsyncSamsar)
"""The app's shared client."""

ALLOWED = web.AppKey("allowed_origins", frozenset[str])
"""The other origins whose pages may call ``/chat`` (CORS)."""

PAGE = pathlib.Path(__file__).with_name("chat.html")

PUBLIC_ERRORS = {
    "NotFoundError": "This conversation was not found.",
    "PermissionDeniedError": "This conversation was not found.",
    "RateLimitError": "Too many requests; try again in a moment.",
}
"""What browsers are told when a call fails, by error code (the rest get a generic line)."""

MAX_MESSAGE_CHARS = 32_000
MAX_SESSION_ID_CHARS = 200
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def env_origins() -> frozenset[str]:
    """The origins listed in ``ALLOWED_ORIGINS`` (comma-separated)."""
    listed = os.environ.get("ALLOWED_ORIGINS", "").split(",")
    return frozenset(origin.strip() for origin in listed if origin.strip())


def _error(status: int, kind: str, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"type": kind, "message": message, "param": param}}
    return web.json_response(body, status=status)


def _bad_request(message: str, param: str | None = None) -> web.Response:
    return _error(400, "invalid_request_error", message, param)


def origin_check(request: web.Request) -> dict[str, str] | web.Response:
    """The CORS headers to answer with, or the ``403`` for a caller this app does not serve.

    A same-origin ``GET`` carries no ``Origin`` (nor does curl); a cross-site
    ``<img>``/``<script>``/link load carries none either, but browsers mark it
    ``Sec-Fetch-Site: cross-site``. Every other cross-origin request carries
    ``Origin``. Checked first, so a refused request never reaches the API.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none"):
            return {}
        return _error(403, "permission_error", "cross-site requests are not served")
    if origin in request.app[ALLOWED]:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    host = request.headers.get("Host", "")
    if host and urlsplit(origin).netloc.lower() == host.lower():
        return {"Vary": "Origin"}  # same origin (a POST from our own page)
    return _error(403, "permission_error", "this origin is not allowed")


def idempotency_key(session_id: str, request_id: str | None) -> str | None:
    """The ``Idempotency-Key`` of the question ``request_id`` (``None``: the SDK makes one)."""
    if request_id is None:
        return None
    digest = hashlib.sha256(f"{session_id}\n{request_id}".encode()).hexdigest()
    return f"chat-{digest[:40]}"


def _check(fields: Mapping[str, Any]) -> tuple[str, str, str | None] | web.Response:
    """``(session_id, message, request_id)`` from the request's fields, or the 400 answer."""
    session_id = fields.get("session_id")
    if not isinstance(session_id, str) or not session_id.strip():
        return _bad_request("session_id is required (a non-empty string)", "session_id")
    if len(session_id) > MAX_SESSION_ID_CHARS:
        return _bad_request("session_id is too long", "session_id")
    message = fields.get("message")
    if not isinstance(message, str) or not message.strip():
        return _bad_request("message is required (a non-empty string)", "message")
    if len(message) > MAX_MESSAGE_CHARS:
        return _bad_request(f"message is longer than {MAX_MESSAGE_CHARS} characters", "message")
    request_id = fields.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id)
    ):
        return _bad_request("request_id must be 1 to 64 letters, digits, - or _", "request_id")
    return session_id, message, request_id


async def public(
    events: AsyncGenerator[StreamEvent, None],
) -> AsyncIterator[StreamEvent]:
    """``events`` with error details (API messages, credit balances) kept server-side."""
    async with contextlib.aclosing(events):
        async for event in events:
            if event.type == "error":  # narrows event to an ErrorEvent
                logger.warning("assistant call failed: %s: %s", event.code, event.message)
                message = PUBLIC_ERRORS.get(event.code or "", "The assistant could not answer.")
                event = attrs.evolve(event, message=message, error=None)
            yield event


async def page(request: web.Request) -> web.Response:
    """The chat page (same origin as ``/chat``)."""
    return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight: allowed origins only."""
    checked = origin_check(request)
    if isinstance(checked, web.Response):
        return checked
    if "Access-Control-Allow-Origin" not in checked:
        return web.Response(status=204, headers={"Allow": "GET, POST, OPTIONS"})
    headers = {
        **checked,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "Content-Type, Last-Event-ID",
        "Access-Control-Max-Age": "600",
    }
    return web.Response(status=204, headers=headers)


async def chat(request: web.Request) -> web.StreamResponse:
    """Answer one message as an SSE stream of the assistant's events."""
    checked = origin_check(request)
    if isinstance(checked, web.Response):
        return checked
    cors = checked
    fields: Mapping[str, Any]
    if request.method == "GET":
        if "Last-Event-ID" in request.headers:
            # An EventSource reconnecting after (or during) an answer: don't ask again.
            return web.Response(status=204, headers=cors)
        fields = request.query
    else:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _bad_request("the body must be a JSON object")
        fields = cast("dict[str, Any]", body)
    answer = _check(fields)
    if isinstance(answer, web.Response):
        answer.headers.update(cors)
        return answer
    session_id, message, request_id = answer
    events = request.app[CLIENT].assistant.stream(
        session_id, message, idempotency_key=idempotency_key(session_id, request_id)
    )
    return await stream_response(request, public(events), headers=cors)


def make_app(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    allowed_origins: Collection[str] | None = None,
) -> web.Application:
    """The web app; ``api_key`` and ``base_url`` default to the ``SAMSAR_*`` variables,
    ``allowed_origins`` (cross-origin callers to serve) to ``ALLOWED_ORIGINS``."""

    async def samsar_client(app: web.Application) -> AsyncIterator[None]:
        # Created inside the running loop, shared by every request, closed on cleanup.
        async with AsyncSamsar(api_key, base_url=base_url) as client:
            app[CLIENT] = client
            yield

    app = web.Application()
    app[ALLOWED] = frozenset(env_origins() if allowed_origins is None else allowed_origins)
    app.cleanup_ctx.append(samsar_client)
    app.router.add_get("/", page)
    app.router.add_post("/chat", chat)
    app.router.add_get("/chat", chat, allow_head=False)
    app.router.add_route("OPTIONS", "/chat", preflight)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8081")))
