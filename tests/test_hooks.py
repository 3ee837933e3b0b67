"""Event hooks (on_request, on_response, on_retry) and SAMSAR_LOG, over real loopback HTTP."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest

from samsar_async import (
    AsyncSamsar,
    EventHooks,
    InvalidArgumentError,
    RateLimitError,
    RequestEvent,
    ResponseEvent,
    RetryEvent,
    RetryPolicy,
    Samsar,
)
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0, max_backoff=0)


class Recorder:
    """Hooks that record their events: plain ones for requests, async ones for the rest."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []

    def request(self, event: RequestEvent) -> None:
        self.events.append(event)

    async def response(self, event: ResponseEvent) -> None:
        await anyio.lowlevel.checkpoint()  # a real await inside an async hook
        self.events.append(event)

    async def retry(self, event: RetryEvent) -> None:
        self.events.append(event)

    def hooks(self) -> EventHooks:
        return EventHooks(
            on_request=[self.request], on_response=[self.response], on_retry=[self.retry]
        )

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def make(server: MockSamsarServer, **kwargs: Any) -> AsyncSamsar:
    kwargs.setdefault("retry", FAST)
    return AsyncSamsar(server.api_key, base_url=server.url, **kwargs)


async def test_hooks_see_each_attempt(server: MockSamsarServer, session_id: str) -> None:
    rec = Recorder()
    server.faults.add(Fault.status(429, retry_after="0"), times=1)
    async with make(server, event_hooks=rec.hooks()) as client:
        resp = await client.assistant.complete(session_id, "hello")
    assert rec.kinds() == [
        "RequestEvent",
        "ResponseEvent",
        "RetryEvent",
        "RequestEvent",
        "ResponseEvent",
    ]
    req1, res1, retry, req2, res2 = rec.events
    assert isinstance(res1, ResponseEvent)
    assert isinstance(retry, RetryEvent)
    assert isinstance(res2, ResponseEvent)
    for event in rec.events:
        assert event.method == "POST"
        assert event.path == "/assistant/completion"
        assert event.url == server.url + "/assistant/completion"
        assert event.session_id == session_id
        assert event.idempotency_key == resp.idempotency_key  # one key for every attempt
    assert [req1.attempt, res1.attempt, retry.attempt, req2.attempt, res2.attempt] == [
        1,
        1,
        1,
        2,
        2,
    ]
    assert (res1.status, res1.error) == (429, "RateLimitError")
    assert (retry.status, retry.error, retry.delay) == (429, "RateLimitError", 0.0)
    assert (res2.status, res2.error) == (200, None)
    assert res2.credits_charged == resp.credits.charged
    assert res2.credits_remaining == resp.credits.remaining
    assert res2.headers["x-credits-charged"] == str(resp.credits.charged)
    assert res2.elapsed >= 0


async def test_an_attempt_without_an_answer(server: MockSamsarServer, session_id: str) -> None:
    rec = Recorder()
    server.faults.add(Fault.disconnect(), times=1)
    async with make(server, event_hooks=rec.hooks()) as client:
        await client.assistant.complete(session_id, "x")
    res1 = rec.events[1]
    assert isinstance(res1, ResponseEvent)
    assert res1.status is None
    assert res1.error == "OutcomeUnknownError"
    assert len(res1.headers) == 0
    assert res1.credits_charged is None
    assert rec.kinds()[2:] == ["RetryEvent", "RequestEvent", "ResponseEvent"]


async def test_failed_call_and_set_system_prompt(server: MockSamsarServer, session_id: str) -> None:
    rec = Recorder()
    server.faults.add(Fault.status(429, retry_after="0"), times=5)
    client = make(
        server, event_hooks=rec.hooks(), retry=RetryPolicy(max_attempts=2, initial_backoff=0)
    )
    async with client:
        with pytest.raises(RateLimitError):
            await client.assistant.complete(session_id, "x")
        # no retry event after the last attempt
        assert rec.kinds() == [
            "RequestEvent",
            "ResponseEvent",
            "RetryEvent",
            "RequestEvent",
            "ResponseEvent",
        ]
        rec.events.clear()
        server.faults.clear()
        await client.assistant.set_system_prompt("Be brief.")
    assert [(e.path, e.session_id) for e in rec.events] == [
        ("/assistant/set_system_prompt", None),
        ("/assistant/set_system_prompt", None),
    ]


async def test_a_raising_hook_is_logged_and_the_call_goes_on(
    server: MockSamsarServer, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int | None] = []

    def broken(_event: ResponseEvent) -> None:
        raise ValueError("hook bug")

    async def broken_async(_event: RequestEvent) -> None:
        raise RuntimeError("async hook bug")

    hooks = EventHooks(
        on_request=[broken_async],
        on_response=[broken, lambda e: seen.append(e.status)],  # the next hook still runs
    )
    caplog.set_level(logging.ERROR, logger="samsar_async")
    async with make(server, event_hooks=hooks) as client:
        resp = await client.assistant.complete(session_id, "x")
    assert resp.output_text == "Reply 1 to: x"
    assert seen == [200]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert {str(r.exc_info[1]) for r in errors if r.exc_info} == {"hook bug", "async hook bug"}


async def test_cancellation_in_a_hook_propagates(server: MockSamsarServer, session_id: str) -> None:
    entered = anyio.Event()

    async def slow(_event: RequestEvent) -> None:
        entered.set()
        await anyio.sleep_forever()

    async with make(server, event_hooks=EventHooks(on_request=[slow])) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.assistant.complete, session_id, "x")
            await entered.wait()
            tg.cancel_scope.cancel()
        assert client._turns is not None
        assert len(client._turns) == 0  # the session's turn was given back
    assert server.requests == []


async def test_events_hold_no_key_and_no_body(server: MockSamsarServer, session_id: str) -> None:
    rec = Recorder()
    async with make(server, event_hooks=rec.hooks()) as client:
        await client.assistant.complete(session_id, "a very private question")
    text = " ".join(repr(e) + str(e.__dict__ if hasattr(e, "__dict__") else "") for e in rec.events)
    text += " ".join(str(getattr(e, "headers", "")) for e in rec.events)
    assert server.api_key not in text
    assert "private question" not in text
    assert "Reply 1" not in text  # no answer body either


async def test_with_options_can_replace_the_hooks(
    server: MockSamsarServer, session_id: str
) -> None:
    parent, child = Recorder(), Recorder()
    async with make(server, event_hooks=parent.hooks()) as client:
        quiet = client.with_options(event_hooks=None)
        other = client.with_options(event_hooks=child.hooks())
        await quiet.assistant.complete(session_id, "a")
        await other.assistant.complete(session_id, "b")
        await client.assistant.complete(session_id, "c")
    assert len(child.events) == 2
    assert len(parent.events) == 2  # only the parent's own call


def test_bad_hooks_are_refused() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        EventHooks(on_request=print)  # type: ignore[arg-type]
    assert info.value.field == "event_hooks.on_request"
    with pytest.raises(InvalidArgumentError) as info:
        EventHooks(on_retry=[print, "not callable"])  # type: ignore[list-item]
    assert info.value.field == "event_hooks.on_retry[1]"
    assert not EventHooks()
    assert EventHooks(on_retry=[print])


def test_sync_client_runs_hooks(server_in_thread: MockSamsarServer) -> None:
    rec = Recorder()
    sid = server_in_thread.create_session()
    with Samsar(
        server_in_thread.api_key, base_url=server_in_thread.url, event_hooks=rec.hooks()
    ) as c:
        c.assistant.complete(sid, "x")
    assert rec.kinds() == ["RequestEvent", "ResponseEvent"]


# --------------------------------------------------------------------------- logging


async def test_log_records_carry_call_fields(
    server: MockSamsarServer, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="samsar_async")
    server.faults.add(Fault.status(503), times=1)
    async with make(server) as client:
        resp = await client.assistant.complete(session_id, "x")
    calls = [r for r in caplog.records if getattr(r, "path", None) == "/assistant/completion"]
    by_level = {logging.getLevelName(r.levelno): r for r in calls}
    assert set(by_level) == {"DEBUG", "WARNING", "INFO"}  # attempts, the retry, the recovery
    for record in calls:
        assert record.session_id == session_id  # type: ignore[attr-defined]
        assert record.idempotency_key == resp.idempotency_key  # type: ignore[attr-defined]
    attempts = [(r.attempt, r.status) for r in calls if r.levelno == logging.DEBUG]  # type: ignore[attr-defined]
    assert attempts == [(1, 503), (2, 200)]
    warning = by_level["WARNING"]
    assert (warning.attempt, warning.status, warning.error) == (1, 503, "InternalServerError")  # type: ignore[attr-defined]
    assert server.api_key not in caplog.text


SCRIPT = """
import asyncio
from samsar_async import AsyncSamsar, RetryPolicy
from samsar_async.testing import MockSamsarServer

async def main():
    async with MockSamsarServer() as server:
        sid = server.create_session()
        async with AsyncSamsar(server.api_key, base_url=server.url) as client:
            await client.assistant.complete(sid, "hello")
        print("KEY", server.api_key, "SESSION", sid)

asyncio.run(main())
"""


def run_script(level: str | None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SAMSAR_LOG"}
    if level is not None:
        env["SAMSAR_LOG"] = level
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout, done.stderr


@pytest.mark.parametrize("level", ["debug", "DEBUG", "info", None, "loud"])
def test_samsar_log(level: str | None) -> None:
    stdout, stderr = run_script(level)
    _, key, _, session = stdout.split()
    assert key not in stderr
    attempt_line = f"POST /assistant/completion session={session} key=samsar-"
    if level is not None and level.lower() == "debug":
        assert attempt_line in stderr
        assert "status=200" in stderr
        assert "opened the connection pool" in stderr
    elif level == "info":
        assert "opened the connection pool" in stderr
        assert attempt_line not in stderr  # attempts are debug lines
    elif level == "loud":
        assert "SAMSAR_LOG='loud' ignored" in stderr
        assert "connection pool" not in stderr
    else:
        assert stderr == ""


async def test_hooks_under_adaptive_concurrency(server: MockSamsarServer, session_id: str) -> None:
    """Calls under the adaptive limiter take the flow-controlled path: hooks see them too."""
    rec = Recorder()
    server.faults.add(Fault.status(429, retry_after="0"), times=1)
    async with make(server, event_hooks=rec.hooks(), adaptive_concurrency=True) as client:
        await client.assistant.complete(session_id, "x")
    assert rec.kinds() == [
        "RequestEvent",
        "ResponseEvent",
        "RetryEvent",
        "RequestEvent",
        "ResponseEvent",
    ]
    assert [e.attempt for e in rec.events] == [1, 1, 1, 2, 2]
