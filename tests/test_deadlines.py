"""Attempt deadlines kept by one timer per pool (samsar_async._deadlines), over real HTTP."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import pytest

from samsar_async import (
    APIReadTimeoutError,
    AsyncSamsar,
    ImageGenerationTool,
    RetryPolicy,
    Timeout,
)
from samsar_async._deadlines import Deadlines
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

needs_cancelling = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+"
)


def make_client(server: MockSamsarServer, **kwargs: Any) -> AsyncSamsar:
    kwargs.setdefault("retry", RetryPolicy.disabled())
    return AsyncSamsar(server.api_key, base_url=server.url, **kwargs)


def cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling() if sys.version_info >= (3, 11) else 0


async def test_stalled_calls_time_out_and_the_others_answer(server: MockSamsarServer) -> None:
    # Ten calls stall, five answer at once: the stalled ones end as read timeouts (the
    # request was sent), the others are untouched, and no task is left cancelling.
    sessions = [server.create_session() for _ in range(15)]
    stalled = set(sessions[:10])
    server.faults.add(
        Fault.stall(30), times=None, match=lambda _path, session_id: session_id in stalled
    )

    async def one(i: int) -> tuple[str, int]:
        try:
            resp = await c.assistant.complete(sessions[i], f"q{i}")
        except APIReadTimeoutError as exc:
            return f"timeout, may have been charged: {exc.may_have_been_charged}", cancelling()
        return resp.output_text, cancelling()

    async with make_client(server, timeout=Timeout(read=1, total=None)) as c:
        results = await asyncio.gather(*(one(i) for i in range(15)))
    assert results[:10] == [("timeout, may have been charged: True", 0)] * 10
    assert results[10:] == [(f"Reply 1 to: q{i}", 0) for i in range(10, 15)]


async def test_one_timer_serves_every_call(server: MockSamsarServer, session_id: str) -> None:
    async with make_client(server) as c:
        await c.assistant.complete(session_id, "first")
        deadlines = c._transport._deadlines
        assert deadlines is not None
        timer = deadlines.timer
        assert timer is not None
        for i in range(5):
            await c.assistant.complete(session_id, f"again {i}")
        assert deadlines.timer is timer  # armed once, not per call
        assert not deadlines.entries  # every call took itself off
    assert timer.cancelled()  # closing the client stopped it


async def test_a_per_call_timeout_keeps_its_own_deadline(
    server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.stall(30), times=1)
    async with make_client(server) as c:  # the client's timeout: minutes
        with pytest.raises(APIReadTimeoutError):
            await c.assistant.complete(session_id, "x", timeout=0.2)
        assert c._transport._deadlines is not None
        assert not c._transport._deadlines.entries


async def test_close_keeps_the_deadlines_of_calls_on_the_users_session(
    server: MockSamsarServer, session_id: str
) -> None:
    # close() leaves a session of the user's open, and the calls on it running: their
    # deadlines still end them (no aiohttp timer would).
    server.faults.add(Fault.stall(30), times=1)
    async with aiohttp.ClientSession() as http_session:
        c = make_client(server, http_session=http_session, timeout=Timeout(read=0.5, total=None))
        call = asyncio.ensure_future(c.assistant.complete(session_id, "x"))
        await server.wait_until(lambda s: len(s.requests) >= 1)
        await c.close()
        with pytest.raises(APIReadTimeoutError):
            await call


async def test_the_callers_cancellation_goes_on(server: MockSamsarServer, session_id: str) -> None:
    server.faults.add(Fault.stall(30), times=1)
    async with make_client(server) as c:
        task = asyncio.ensure_future(c.assistant.complete(session_id, "x"))
        await server.wait_until(lambda s: len(s.requests) >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadlines = c._transport._deadlines
        assert deadlines is not None
        assert not deadlines.entries
        assert not deadlines.expired


@needs_cancelling
async def test_a_timeout_inside_an_asyncio_timeout_scope(
    server: MockSamsarServer, session_id: str
) -> None:
    # The deadline's cancellation is taken back: the enclosing scope neither fires
    # nor is confused (asyncio.timeout counts on Task.cancelling()).
    server.faults.add(Fault.stall(30), times=1)
    async with make_client(server, timeout=Timeout(read=0.2, total=None)) as c:
        async with asyncio.timeout(30):
            with pytest.raises(APIReadTimeoutError):
                await c.assistant.complete(session_id, "x")
            assert cancelling() == 0
            resp = await c.assistant.complete(session_id, "y")
    assert resp.output_text.endswith("y")


@pytest.mark.parametrize("first", ["deadline", "caller"])
async def test_deadline_and_caller_cancel_at_once(first: str) -> None:
    # The deadline passes and the caller cancels in the same loop iteration, in either
    # order: the caller's cancellation wins, never swallowed (on 3.10, which counts no
    # cancellations, the deadline's, as with aiohttp's own timer there).
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, 3600)
    started = asyncio.Event()
    outcome: list[str] = []

    async def attempt() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.add(task)
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("timeout" if deadlines.timed_out(task) else "cancelled")
            raise
        finally:
            deadlines.remove(task)

    task = asyncio.ensure_future(attempt())
    await started.wait()
    deadlines.entries[task] = 0.0  # its deadline has passed
    if first == "caller":
        task.cancel()
        deadlines._expire()
    else:
        deadlines._expire()
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == (["cancelled"] if sys.version_info >= (3, 11) else ["timeout"])
    assert not deadlines.entries
    assert not deadlines.expired
    deadlines.close()
    assert deadlines.timer is None


@needs_cancelling
async def test_an_attempt_started_while_its_task_was_cancelling() -> None:
    # A task that swallowed a cancellation (its count stays 1) and then makes a call
    # whose deadline passes: the deadline's own cancellation is still a timeout.
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, 3600)
    outcome: list[str] = []
    waiting, ready = asyncio.Event(), asyncio.Event()

    async def attempt() -> None:
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # swallowed: cancelling() stays 1
        task = asyncio.current_task()
        assert task is not None
        deadlines.add(task)
        assert deadlines.before == {task: 1}
        try:
            ready.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("timeout" if deadlines.timed_out(task) else "cancelled")
        finally:
            deadlines.remove(task)

    task = asyncio.ensure_future(attempt())
    await waiting.wait()
    task.cancel()
    await ready.wait()
    deadlines.entries[task] = 0.0
    deadlines._expire()
    await task
    assert outcome == ["timeout"]
    assert not deadlines.before
    deadlines.close()


def test_deadlines_on_uvloop() -> None:
    # uvloop's clock is libuv's (coarse); the timer is armed relative to it, and an
    # early firing only re-arms: the stalled call still ends as a read timeout.
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[str, int, str]:
        async with MockSamsarServer() as server:
            session = server.create_session()
            server.faults.add(Fault.stall(30), times=1)
            async with make_client(server, timeout=Timeout(read=0.2, total=None)) as c:
                try:
                    await c.assistant.complete(session, "x")
                except APIReadTimeoutError as exc:
                    outcome = type(exc).__name__
                else:  # pragma: no cover - the failure this test exists for
                    outcome = "answered"
                left = cancelling()
                resp = await c.assistant.complete(session, "y")
        return outcome, left, resp.output_text

    loop = uvloop.new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
        outcome, left, text = loop.run_until_complete(main())
    finally:
        loop.close()
    assert (outcome, left) == ("APIReadTimeoutError", 0)
    assert text.endswith("y")


async def test_an_image_answer_that_stalls_between_chunks_times_out() -> None:
    # A loopback server that sends the headers and the start of an image answer, then
    # nothing: the chunked image reader is inside the attempt, so its deadline ends it.
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        start = (
            b'{"id": "resp_1", "output": [{"type": "image_generation_call", "id": "ig_1",'
            b' "result": "' + b"iVBORw0KGgo" * 40_000
        )
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(start) * 2) + start
        )
        await writer.drain()
        await reader.read()  # until the client gives up and closes the connection
        closed.set()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        client = AsyncSamsar(
            "sk-test",
            base_url=f"http://127.0.0.1:{port}/v1",
            timeout=Timeout(read=0.5, total=None),
            retry=RetryPolicy.disabled(),
        )
        async with client:
            with pytest.raises(APIReadTimeoutError):
                await client.assistant.complete("session-1", "draw", tools=[ImageGenerationTool()])
            assert cancelling() == 0
        await closed.wait()  # the stalled connection was dropped, not left open
    finally:
        listener.close()
        await listener.wait_closed()
