"""A real headless Chromium, driven over the DevTools protocol (a websocket), for tests.

::

    async with Chromium.launch() as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8081/")
        result = await page.evaluate("ask(sessionId, 'Hello')")   # awaits promises

Chromium is Debian's ``chromium`` package (``CHROMIUM`` names another binary).
It prints ``DevTools listening on ws://...`` on stderr once its debugging
port is open: that line is the readiness signal, no polling.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """The Chromium binary, or ``None`` when it is not installed."""
    name = os.environ.get("CHROMIUM")
    if name:
        return shutil.which(name) or (name if os.path.exists(name) else None)
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


class DevToolsError(Exception):
    """A DevTools command failed, or a page's script threw."""


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser: Chromium, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    async def send(self, method: str, **params: Any) -> Any:
        return await self.browser.send(method, params, session_id=self.session_id)

    async def goto(self, url: str) -> None:
        """Navigate and wait until the page has loaded (its scripts ran)."""
        await self.send("Page.enable")
        loaded = self.browser.expect("Page.loadEventFired", self.session_id)
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise DevToolsError(f"navigation to {url} failed: {result['errorText']}")
        await loaded.wait()
        href = await self.evaluate("location.href")
        if href != url:
            raise DevToolsError(f"expected to be at {url}, the page is at {href}")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page, promises awaited."""
        result = await self.send(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"the page's script threw: {text}")
        return result["result"].get("value")


class Chromium:
    """A headless Chromium process and its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, anyio.Event] = {}
        self._results: dict[int, dict[str, Any]] = {}
        self._expected: list[tuple[str, str | None, anyio.Event]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls) -> AsyncIterator[Chromium]:
        path = chromium_path()
        if path is None:
            raise RuntimeError("Chromium is not installed (apt-get install chromium)")
        # Chromium's helper processes may still be writing to the profile for a moment.
        with tempfile.TemporaryDirectory(
            prefix="samsar-chromium-", ignore_cleanup_errors=True
        ) as profile:
            args = [path, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
            process = await anyio.open_process(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
            async with process:
                try:
                    assert process.stderr is not None
                    lines = TextReceiveStream(process.stderr)
                    with anyio.fail_after(60):
                        ws_url, leftover = await _devtools_url(lines)
                    async with (
                        anyio.create_task_group() as tg,
                        aiohttp.ClientSession() as http,
                        http.ws_connect(ws_url, max_msg_size=0) as ws,
                    ):
                        tg.start_soon(_drain, lines, leftover)
                        browser = cls(ws)
                        tg.start_soon(browser._read)
                        try:
                            yield browser
                        finally:
                            with contextlib.suppress(Exception):
                                await browser.send("Browser.close", {}, wait=False)
                            tg.cancel_scope.cancel()
                finally:
                    with anyio.CancelScope(shield=True):
                        # Browser.close was sent: let it exit on its own, then insist.
                        for stop in (None, process.terminate, process.kill):
                            if stop is not None and process.returncode is None:
                                stop()
                            with anyio.move_on_after(10):
                                await process.wait()

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        return Page(self, attached["sessionId"])

    def expect(self, method: str, session_id: str | None) -> anyio.Event:
        """An event set when the next ``method`` event of ``session_id`` arrives."""
        event = anyio.Event()
        self._expected.append((method, session_id, event))
        return event

    async def send(
        self,
        method: str,
        params: dict[str, Any],
        *,
        session_id: str | None = None,
        wait: bool = True,
    ) -> Any:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        done = anyio.Event()
        self._pending[message_id] = done
        await self.ws.send_str(json.dumps(message))
        if not wait:
            return None
        await done.wait()
        reply = self._results.pop(message_id)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                done = self._pending.pop(data["id"], None)
                if done is not None:
                    self._results[data["id"]] = data
                    done.set()
                continue
            for entry in list(self._expected):
                method, session_id, event = entry
                if data.get("method") == method and data.get("sessionId") == session_id:
                    self._expected.remove(entry)
                    event.set()


async def _devtools_url(lines: TextReceiveStream) -> tuple[str, str]:
    """Read stderr up to the ``DevTools listening on ws://...`` line; return the URL."""
    buffer = ""
    async for text in lines:
        buffer += text
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            marker = "DevTools listening on "
            if line.startswith(marker):
                return line[len(marker) :].strip(), buffer
    raise RuntimeError("Chromium exited before opening its DevTools port")


async def _drain(lines: TextReceiveStream, leftover: str) -> None:
    """Keep reading Chromium's stderr, so that it never blocks on a full pipe."""
    async for _ in lines:
        pass
