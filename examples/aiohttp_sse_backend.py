"""An aiohttp web backend that forwards Samsar assistant answers as server-sent events.

``POST /chat`` with ``{"session_id": "...", "message": "..."}`` (or, for a
browser's ``EventSource``, ``GET /chat?session_id=...&message=...``) answers
``text/event-stream``: OpenAI Responses streaming events
(``response.created``, ``response.output_text.delta``, ...,
``response.completed``, or one ``error`` event when the call fails, whose
details are logged rather than sent). Bad
requests get a ``400`` JSON error. The whole app shares one
:class:`~samsar_async.AsyncSamsar` (one connection pool), opened on startup and
closed on cleanup.

Try it against the local mock server::

    python -m samsar_async.testing --port 8080    # prints the exports below and a session id
    export SAMSAR_BASE_URL=http://127.0.0.1:8080/v1 SAMSAR_API_KEY=... SAMSAR_SESSION_ID=...
    python examples/aiohttp_sse_backend.py        # serves http://127.0.0.1:8081 (PORT=...)
    curl -N http://127.0.0.1:8081/chat -H 'Content-Type: application/json' \\
        -d '{"session_id": "<the session id>", "message": "Hello"}'
    # event: response.created ... event: response.output_text.delta
    # data: {"type":"response.output_text.delta",...,"delta":"Reply 1 to: Hello",...}

In a browser, close the ``EventSource`` on ``response.completed`` or
``error``: it reconnects when a stream ends, and a reconnect (it sends
``Last-Event-ID``) is answered ``204`` here so that it stops instead of asking
(and paying) again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, cast

import attrs
from aiohttp import web

from samsar_async import AsyncSamsar
from samsar_async.events import StreamEvent
from samsar_async.sse import stream_response

logger = logging.getLogger(__name__)

CLIENT = web.AppKey("samsar_client", AsyncSamsar)
"""The app's shared client."""

PUBLIC_ERRORS = {
    "NotFoundError": "This conversation was not found.",
    "PermissionDeniedError": "This conversation was not found.",
    "RateLimitError": "Too many requests; try again in a moment.",
}
"""What browsers are told when a call fails, by error code (the rest get a generic line)."""

MAX_MESSAGE_CHARS = 32_000
MAX_SESSION_ID_CHARS = 200


def _bad_request(message: str, param: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"type": "invalid_request_error", "message": message, "param": param}},
        status=400,
    )


def _check(fields: Mapping[str, Any]) -> tuple[str, str] | web.Response:
    """``(session_id, message)`` from the request's fields, or the 400 answer."""
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
    return session_id, message


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


async def chat(request: web.Request) -> web.StreamResponse:
    """Answer one message as an SSE stream of the assistant's events."""
    fields: Mapping[str, Any]
    if request.method == "GET":
        if "Last-Event-ID" in request.headers:
            # An EventSource reconnecting after (or during) an answer: don't ask again.
            return web.Response(status=204)
        fields = request.query
    else:
        try:
            body = await request.json()
        except ValueError:
            return _bad_request("the body must be a JSON object")
        if not isinstance(body, dict):
            return _bad_request("the body must be a JSON object")
        fields = cast("dict[str, Any]", body)
    checked = _check(fields)
    if isinstance(checked, web.Response):
        return checked
    session_id, message = checked
    events = request.app[CLIENT].assistant.stream(session_id, message)
    return await stream_response(request, public(events))


def make_app(*, api_key: str | None = None, base_url: str | None = None) -> web.Application:
    """The web app; ``api_key`` and ``base_url`` default to the ``SAMSAR_*`` variables."""

    async def samsar_client(app: web.Application) -> AsyncIterator[None]:
        # Created inside the running loop, shared by every request, closed on cleanup.
        async with AsyncSamsar(api_key, base_url=base_url) as client:
            app[CLIENT] = client
            yield

    app = web.Application()
    app.cleanup_ctx.append(samsar_client)
    app.router.add_post("/chat", chat)
    app.router.add_get("/chat", chat, allow_head=False)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8081")))
