"""A FastAPI backend that forwards Samsar assistant answers as server-sent events.

The FastAPI twin of ``aiohttp_sse_backend.py``, with the same HTTP interface:

- ``GET /`` serves ``chat.html``, a page whose ``EventSource`` asks questions
  from the same origin.
- ``POST /chat`` with ``{"session_id": "...", "message": "...", "request_id": "..."}``
  (or, for an ``EventSource``, ``GET /chat?session_id=...&message=...&request_id=...``)
  answers ``text/event-stream``: OpenAI Responses streaming events
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
pool), opened by the ``lifespan`` and handed to requests as lifespan state.

Try it against the local mock server::

    pip install "samsar-async[starlette]" fastapi uvicorn
    python -m samsar_async.testing --port 8080    # prints the exports below and a session id
    export SAMSAR_BASE_URL=http://127.0.0.1:8080/v1 SAMSAR_API_KEY=... SAMSAR_SESSION_ID=...
    python examples/fastapi_sse_backend.py        # serves http://127.0.0.1:8081 (PORT=...)
    # open http://127.0.0.1:8081/ in a browser, or:
    curl -N http://127.0.0.1:8081/chat -H 'Content-Type: application/json' \\
        -d '{"session_id": "<the session id>", "message": "Hello"}'
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from typing import Any, TypedDict
from urllib.parse import urlsplit

import attrs
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from samsar_async import AsyncSamsar
from samsar_async.events import StreamEvent
from samsar_async.integrations.starlette import EventStreamResponse

logger = logging.getLogger(__name__)

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


class State(TypedDict):
    """The lifespan state every request sees as ``request.state``."""

    samsar: AsyncSamsar


def env_origins() -> frozenset[str]:
    """The origins listed in ``ALLOWED_ORIGINS`` (comma-separated)."""
    listed = os.environ.get("ALLOWED_ORIGINS", "").split(",")
    return frozenset(origin.strip() for origin in listed if origin.strip())


def _error(status: int, kind: str, message: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"type": kind, "message": message, "param": param}}
    return JSONResponse(body, status_code=status)


def _bad_request(message: str, param: str | None = None) -> JSONResponse:
    return _error(400, "invalid_request_error", message, param)


def origin_check(request: Request, allowed: Collection[str]) -> dict[str, str] | Response:
    """The CORS headers to answer with, or the ``403`` for a caller this app does not serve.

    A same-origin ``GET`` carries no ``Origin`` (nor does curl); a cross-site
    ``<img>``/``<script>``/link load carries none either, but browsers mark it
    ``Sec-Fetch-Site: cross-site``. Every other cross-origin request carries
    ``Origin``. Checked first, so a refused request never reaches the API.
    """
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none"):
            return {}
        return _error(403, "permission_error", "cross-site requests are not served")
    if origin in allowed:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    host = request.headers.get("host", "")
    if host and urlsplit(origin).netloc.lower() == host.lower():
        return {"Vary": "Origin"}  # same origin (a POST from our own page)
    return _error(403, "permission_error", "this origin is not allowed")


def _check(fields: Mapping[str, Any]) -> tuple[str, str, str | None] | Response:
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


def idempotency_key(session_id: str, request_id: str | None) -> str | None:
    """The ``Idempotency-Key`` of the question ``request_id`` (``None``: the SDK makes one)."""
    if request_id is None:
        return None
    digest = hashlib.sha256(f"{session_id}\n{request_id}".encode()).hexdigest()
    return f"chat-{digest[:40]}"


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


def make_app(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    allowed_origins: Collection[str] | None = None,
) -> FastAPI:
    """The web app; ``api_key`` and ``base_url`` default to the ``SAMSAR_*`` variables,
    ``allowed_origins`` (cross-origin callers to serve) to ``ALLOWED_ORIGINS``."""
    allowed = frozenset(env_origins() if allowed_origins is None else allowed_origins)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        # Created inside the running loop, shared by every request, closed on shutdown.
        async with AsyncSamsar(api_key, base_url=base_url) as client:
            yield {"samsar": client}

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        """The chat page (same origin as ``/chat``)."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.options("/chat")
    async def preflight(request: Request) -> Response:
        """CORS preflight: allowed origins only."""
        checked = origin_check(request, allowed)
        if isinstance(checked, Response):
            return checked
        if "Access-Control-Allow-Origin" not in checked:
            return Response(status_code=204, headers={"Allow": "GET, POST, OPTIONS"})
        headers = {
            **checked,
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Content-Type, Last-Event-ID",
            "Access-Control-Max-Age": "600",
        }
        return Response(status_code=204, headers=headers)

    @app.api_route("/chat", methods=["GET", "POST"])
    async def chat(request: Request) -> Response:
        """Answer one message as an SSE stream of the assistant's events."""
        checked = origin_check(request, allowed)
        if isinstance(checked, Response):
            return checked
        cors = checked
        fields: Mapping[str, Any]
        if request.method == "GET":
            if "last-event-id" in request.headers:
                # An EventSource reconnecting after (or during) an answer: don't ask again.
                return Response(status_code=204, headers=cors)
            fields = request.query_params
        else:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return _bad_request("the body must be a JSON object")
            fields = body
        answer = _check(fields)
        if isinstance(answer, Response):
            answer.headers.update(cors)
            return answer
        session_id, message, request_id = answer
        client: AsyncSamsar = request.state.samsar
        events = client.assistant.stream(
            session_id, message, idempotency_key=idempotency_key(session_id, request_id)
        )
        return EventStreamResponse(public(events), headers=cors)

    return app


app = make_app()
"""The app, for ``uvicorn examples.fastapi_sse_backend:app``."""


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8081")))
