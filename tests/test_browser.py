"""Both example backends end to end in a real headless Chromium (``pytest -m browser``).

The page is the examples' own ``chat.html``; the API behind the backends is a
MockSamsarServer, whose request log and ledger show what was asked and charged.
Run with ``nox -s browser`` (installs Debian's ``chromium`` when missing).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiohttp import web
from webapps import BACKENDS, Answered, Log, serve_aiohttp, serve_backend

from samsar_async.testing import MockSamsarServer

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from browser import Chromium, Page, chromium_path

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="Chromium is not installed"),
]

TEXT_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]

# An EventSource that nobody closes: it records what it receives and resolves
# once the EventSource gives up for good (readyState CLOSED).
NEVER_CLOSED = """
new Promise((resolve) => {
  const source = new EventSource(%(url)s);
  const seen = [];
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (e) => {
      if (e.data !== undefined) seen.push({type: e.type, id: e.lastEventId});
    });
  }
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) resolve(seen);
  });
})
"""

# A cross-origin EventSource and fetch; resolves with what each of them got.
CROSS_ORIGIN = """
(async () => {
  const stream = await new Promise((resolve) => {
    const source = new EventSource(%(url)s);
    const seen = [];
    const done = (ok) => { source.close(); resolve({seen, ok}); };
    source.addEventListener("response.output_text.delta", (e) => {
      seen.push(JSON.parse(e.data).delta);
    });
    source.addEventListener("response.completed", () => done(true));
    source.onerror = () => done(false);
  });
  let post;
  try {
    const response = await fetch(%(chat)s, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(%(body)s),
    });
    post = {status: response.status, body: await response.text()};
  } catch (error) {
    post = {error: String(error)};
  }
  return {stream, post};
})()
"""


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    async with Chromium.launch() as chromium:
        yield chromium


@pytest.fixture
async def page(browser: Chromium) -> Page:
    return await browser.new_page()


@contextlib.asynccontextmanager
async def other_origin() -> AsyncIterator[str]:
    """Another origin (another port) serving a blank page."""

    async def blank(request: web.Request) -> web.Response:
        html = "<!doctype html><title>elsewhere</title>"
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    async with serve_aiohttp(app, Log()) as url:
        yield url


def chat_gets(log: Log) -> list[Answered]:
    return [a for a in log.answered if a.path == "/chat" and a.method == "GET"]


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_page_receives_every_event(
    backend: str, server: MockSamsarServer, page: Page
) -> None:
    session_id = server.create_session()
    log = Log()
    async with serve_backend(backend, log, api_key=server.api_key, base_url=server.url) as url:
        await page.goto(url + "/")
        with anyio.fail_after(60):
            result = await page.evaluate(
                f"""
                document.getElementById("session_id").value = {json.dumps(session_id)};
                document.getElementById("message").value = "Hello, browser 🎉";
                document.getElementById("ask").requestSubmit();
                window.lastAnswer
                """
            )
            shown = await page.evaluate(
                "[document.getElementById('answer').textContent,"
                " Array.from(document.querySelectorAll('#events li'), (li) => li.textContent)]"
            )
    assert result["status"] == "done"
    assert [e["type"] for e in result["events"]] == TEXT_SEQUENCE
    assert [e["id"] for e in result["events"]] == [str(n) for n in range(len(TEXT_SEQUENCE))]
    assert result["text"] == "Reply 1 to: Hello, browser 🎉"
    assert shown == ["Reply 1 to: Hello, browser 🎉", TEXT_SEQUENCE]
    final = result["events"][-1]["data"]["response"]
    assert final["id"] == server.turns(session_id)[0].response_id
    assert len(server.ledger) == 1
    (get,) = chat_gets(log)
    assert get.status == 200
    assert get.headers.get("sec-fetch-site") == "same-origin"


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_page_that_never_closes_its_event_source_is_charged_once(
    backend: str, server: MockSamsarServer, page: Page
) -> None:
    session_id = server.create_session()
    log = Log()
    async with serve_backend(backend, log, api_key=server.api_key, base_url=server.url) as url:
        await page.goto(url + "/")
        query = f"session_id={session_id}&message=once&request_id=never-closed"
        with anyio.fail_after(60):
            seen = await page.evaluate(NEVER_CLOSED % {"url": json.dumps("chat?" + query)})
            # The EventSource came back once the stream ended, with Last-Event-ID: 204.
            await log.wait_for(lambda answered: len(chat_gets(log)) == 2)
    assert [e["type"] for e in seen] == TEXT_SEQUENCE  # each event once: nothing replayed
    first, reconnect = chat_gets(log)
    assert first.status == 200
    assert "last-event-id" not in first.headers
    assert reconnect.headers["last-event-id"] == "8"
    assert reconnect.status == 204
    assert len(server.requests) == 1
    assert len(server.ledger) == 1
    assert len(server.turns(session_id)) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_page_on_another_origin_is_refused_before_the_api(
    backend: str, server: MockSamsarServer, page: Page
) -> None:
    session_id = server.create_session()
    log = Log()
    async with (
        other_origin() as elsewhere,
        serve_backend(backend, log, api_key=server.api_key, base_url=server.url) as url,
    ):
        await page.goto(elsewhere + "/")
        fields = {"session_id": session_id, "message": "from elsewhere"}
        with anyio.fail_after(60):
            result = await page.evaluate(
                CROSS_ORIGIN
                % {
                    "url": json.dumps(f"{url}/chat?session_id={session_id}&message=hi"),
                    "chat": json.dumps(f"{url}/chat"),
                    "body": json.dumps(fields),
                }
            )
    assert result["stream"] == {"seen": [], "ok": False}
    assert "error" in result["post"]  # the preflight was refused: fetch rejects
    answered = [(a.method, a.status, a.headers.get("origin")) for a in log.answered]
    assert answered == [("GET", 403, elsewhere), ("OPTIONS", 403, elsewhere)]
    assert server.requests == []
    assert server.ledger == []


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_allowed_origin_gets_answers(
    backend: str, server: MockSamsarServer, page: Page
) -> None:
    session_id = server.create_session()
    log = Log()
    async with (
        other_origin() as elsewhere,
        serve_backend(
            backend,
            log,
            api_key=server.api_key,
            base_url=server.url,
            allowed_origins=(elsewhere,),
        ) as url,
    ):
        await page.goto(elsewhere + "/")
        fields = {"session_id": session_id, "message": "from elsewhere"}
        with anyio.fail_after(60):
            result: dict[str, Any] = await page.evaluate(
                CROSS_ORIGIN
                % {
                    "url": json.dumps(f"{url}/chat?session_id={session_id}&message=hi"),
                    "chat": json.dumps(f"{url}/chat"),
                    "body": json.dumps(fields),
                }
            )
    assert result["stream"] == {"seen": ["Reply 1 to: hi"], "ok": True}
    assert result["post"]["status"] == 200
    assert "Reply 2 to: from elsewhere" in result["post"]["body"]
    answered = [(a.method, a.status) for a in log.answered]
    assert answered == [("GET", 200), ("OPTIONS", 204), ("POST", 200)]
    assert len(server.ledger) == 2
