"""Client lifecycle: close() under load, one client across event loops, cancelled session turns.

Over real loopback HTTP to MockSamsarServer; synchronised on the server's
records (``wait_until``), never on sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import random
import sys
import threading
import warnings
from collections.abc import Iterator

import aiohttp
import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

import samsar_async.transport
from samsar_async import AsyncSamsar, ClientClosedError, ClientState, RetryPolicy, UsageError
from samsar_async.testing import Fault, MockSamsarServer

FAST = RetryPolicy(initial_backoff=0, max_backoff=0)


# ----------------------------------------------------------------- clean shutdown


@pytest.mark.anyio
@pytest.mark.parametrize(
    "queue",
    [
        "the client's",
        "aiohttp's",  # (trace configs keep calls waiting in aiohttp's connector)
    ],
)
async def test_close_ends_every_in_flight_and_waiting_call_with_client_closed(
    server: MockSamsarServer, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 calls wait in aiohttp's connector (the client's own queue takes the others),
    # or all of them do.
    monkeypatch.setattr(samsar_async.transport, "_CONNECTOR_QUEUE", 8)
    sessions = [server.create_session() for _ in range(500)]
    configs = [aiohttp.TraceConfig()] if queue == "aiohttp's" else None
    client = AsyncSamsar(
        server.api_key,
        base_url=server.url,
        max_connections=100,
        retry=FAST,
        trace_configs=configs,
    )
    server.pause()
    tasks = [asyncio.create_task(client.assistant.complete(s, "hi")) for s in sessions]
    await server.wait_until(lambda s: s.held == 100)  # 100 at the server, 400 waiting for the pool
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await client.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    server.resume()

    kinds = collections.Counter(type(r).__name__ for r in results)
    assert kinds == {"ClientClosedError": 500}
    assert not any(t.cancelled() for t in tasks)
    sent = collections.Counter(r.sent for r in results if isinstance(r, ClientClosedError))
    assert sent == {True: 100, False: 400}  # in flight: may have been charged; waiting: not sent
    assert all(
        r.may_have_been_charged == r.sent for r in results if isinstance(r, ClientClosedError)
    )
    assert [str(w.message) for w in caught] == []
    assert len(server.requests) == 100  # nothing was sent after close()
    with pytest.raises(ClientClosedError):
        await client.assistant.complete(sessions[0], "again")


@pytest.mark.anyio
@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+")
async def test_a_caller_cancellation_during_close_stays_a_cancellation(
    server: MockSamsarServer,
) -> None:
    sessions = [server.create_session() for _ in range(30)]
    client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=10, retry=FAST)
    server.pause()
    tasks = [asyncio.create_task(client.assistant.complete(s, "hi")) for s in sessions]
    await server.wait_until(lambda s: s.held == 10)
    cancelled = tasks[::3]  # some held at the server, some waiting for the pool
    for task in cancelled:
        task.cancel()  # in the same instant as close(): the caller's cancellation wins
    await client.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    server.resume()
    for task in tasks:
        if task in cancelled:
            assert task.cancelled()
        else:
            assert isinstance(task.exception(), ClientClosedError)


@pytest.mark.anyio
@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="3.10 has no Task.cancelling(): a cancel in the same instant as close() is "
    "reported as ClientClosedError there (documented in transport.py)",
)
async def test_a_cancel_scope_around_a_waiting_call_still_cancels_at_close(
    server: MockSamsarServer,
) -> None:
    sessions = [server.create_session() for _ in range(4)]
    client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=1, retry=FAST)
    server.pause()
    outcome: list[str] = []

    async def scoped(session_id: str, scope: anyio.CancelScope) -> None:
        with scope:
            await client.assistant.complete(session_id, "hi")
        outcome.append("cancelled" if scope.cancelled_caught else "finished")

    scope = anyio.CancelScope()
    first = asyncio.create_task(client.assistant.complete(sessions[0], "hi"))
    await server.wait_until(lambda s: s.held == 1)
    waiting = asyncio.create_task(scoped(sessions[1], scope))
    await asyncio.sleep(0)  # let it reach the pool's queue (not a synchronisation of the result)
    scope.cancel()
    await client.close()
    await waiting
    server.resume()
    assert outcome == ["cancelled"]
    assert isinstance(await asyncio.gather(first, return_exceptions=True), list)


@pytest.mark.anyio
async def test_close_between_retries_reports_the_charged_attempt(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    client = AsyncSamsar(
        server.api_key,
        base_url=server.url,
        retry=RetryPolicy(initial_backoff=30, max_backoff=30, max_attempts=2),
        outage_backoff=False,
    )
    server.faults.add(Fault.disconnect(after_charge=True))
    sleeping = asyncio.Event()

    class Announce(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("retrying in"):
                sleeping.set()  # logged right before the back-off sleep starts

    handler = Announce()
    logging.getLogger("samsar_async").addHandler(handler)
    try:
        call = asyncio.create_task(client.assistant.complete(session_id, "hi"))
        await sleeping.wait()
    finally:
        logging.getLogger("samsar_async").removeHandler(handler)
    with anyio.fail_after(10):  # a guard against hangs: close() ends the 30 s back-off now
        await client.close()
        result = await asyncio.gather(call, return_exceptions=True)
    (error,) = result
    assert isinstance(error, ClientClosedError)
    assert error.sent
    assert error.may_have_been_charged


# ----------------------------------------------------------------- event loops


class Threaded:
    """A MockSamsarServer on its own loop and thread."""

    def __init__(self, portal: BlockingPortal, server: MockSamsarServer) -> None:
        self.portal = portal
        self.server = server


@pytest.fixture
def threaded() -> Iterator[Threaded]:
    with start_blocking_portal("asyncio") as portal:
        server = MockSamsarServer()
        portal.call(server.start)
        try:
            yield Threaded(portal, server)
        finally:
            portal.call(server.resume)
            portal.call(server.close)


def test_one_client_in_three_asyncio_runs(threaded: Threaded) -> None:
    server = threaded.server
    session_id = server.create_session()
    client = AsyncSamsar(server.api_key, base_url=server.url, retry=FAST)

    async def turn(n: int) -> str:
        resp = await client.assistant.complete(session_id, f"turn {n}")
        assert client.state is ClientState.OPEN
        return resp.output_text

    texts = []
    for n in range(3):
        texts.append(asyncio.run(turn(n)))
        # asyncio.run closed the pool on its own loop before closing the loop
        assert client.state is ClientState.UNOPENED
    assert texts == ["Reply 1 to: turn 0", "Reply 2 to: turn 1", "Reply 3 to: turn 2"]
    assert len(server.peers) == 3  # one fresh connection per loop
    asyncio.run(client.close())
    assert client.state is ClientState.CLOSED


def test_a_client_whose_loop_has_stopped_opens_a_fresh_pool(threaded: Threaded) -> None:
    server = threaded.server
    session_id = server.create_session()
    client = AsyncSamsar(server.api_key, base_url=server.url, retry=FAST)
    old = asyncio.new_event_loop()
    try:
        first = old.run_until_complete(client.assistant.complete(session_id, "one"))
        assert client.state is ClientState.OPEN  # the pool stays on the stopped loop

        async def again() -> str:
            resp = await client.assistant.complete(session_id, "two")
            await client.close()
            return resp.output_text

        assert asyncio.run(again()) == "Reply 2 to: two"
        assert first.output_text == "Reply 1 to: one"
        assert client.state is ClientState.CLOSED
        # The old pool was closed as far as possible without its loop; its sockets'
        # closing callbacks wait on that loop, and run when it runs.
        old.run_until_complete(asyncio.sleep(0))
    finally:
        old.run_until_complete(old.shutdown_asyncgens())
        old.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_whose_loop_was_closed_without_shutdown_opens_a_fresh_pool(
    threaded: Threaded,
) -> None:
    server = threaded.server
    session_id = server.create_session()
    client = AsyncSamsar(server.api_key, base_url=server.url, retry=FAST)
    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(client.assistant.complete(session_id, "one"))
    finally:
        loop.close()  # no shutdown_asyncgens(): the pool is left on a closed loop
    assert client.state is ClientState.OPEN

    async def again() -> str:
        resp = await client.assistant.complete(session_id, "two")
        await client.close()
        return resp.output_text

    assert first.output_text == "Reply 1 to: one"
    assert asyncio.run(again()) == "Reply 2 to: two"
    assert client.state is ClientState.CLOSED
    # A closed loop cannot close its sockets: the old ones are left to the garbage
    # collector (ResourceWarning, ignored here; collected now, inside this test).
    gc.collect()


def test_two_live_loops_at_once_raise_a_usage_error(threaded: Threaded) -> None:
    server = threaded.server
    session_id = server.create_session()
    client = AsyncSamsar(server.api_key, base_url=server.url, retry=FAST)
    opened = threading.Event()
    release = threading.Event()
    other: list[str] = []

    async def hold_the_client() -> None:
        other.append((await client.assistant.complete(session_id, "first")).output_text)
        opened.set()
        await asyncio.to_thread(release.wait, 30)
        other.append((await client.assistant.complete(session_id, "third")).output_text)

    thread = threading.Thread(target=asyncio.run, args=(hold_the_client(),))
    thread.start()
    try:
        assert opened.wait(30)

        async def second_loop() -> None:
            await client.assistant.complete(session_id, "second")

        with pytest.raises(UsageError, match="one client per event loop") as info:
            asyncio.run(second_loop())
        assert "samsar_async.Samsar from threads" in str(info.value)
    finally:
        release.set()
        thread.join(30)
    # the first loop kept working; once it is gone, this thread's loop may use the client
    assert other == ["Reply 1 to: first", "Reply 2 to: third"]

    async def after() -> str:
        try:
            return (await client.assistant.complete(session_id, "fourth")).output_text
        finally:
            await client.close()

    assert asyncio.run(after()) == "Reply 3 to: fourth"
    assert len(server.requests) == 3


def test_close_from_another_thread_closes_the_pool_on_its_loop(threaded: Threaded) -> None:
    server = threaded.server
    session_id = server.create_session()
    client = AsyncSamsar(server.api_key, base_url=server.url, retry=FAST)
    opened = threading.Event()
    release = threading.Event()
    after_close: list[BaseException] = []

    async def hold_the_client() -> None:
        await client.assistant.complete(session_id, "first")
        opened.set()
        await asyncio.to_thread(release.wait, 30)
        try:
            await client.assistant.complete(session_id, "second")
        except ClientClosedError as exc:
            after_close.append(exc)

    thread = threading.Thread(target=asyncio.run, args=(hold_the_client(),))
    thread.start()
    try:
        assert opened.wait(30)
        asyncio.run(client.close())
        assert client.state is ClientState.CLOSED
    finally:
        release.set()
        thread.join(30)
    assert len(after_close) == 1
    assert len(server.requests) == 1


# ----------------------------------------------------------------- cancelled turns


@pytest.mark.anyio
async def test_cancelled_turns_storm_keeps_the_session_promise(server: MockSamsarServer) -> None:
    """500 calls over 20 sessions, about half cancelled at deterministic points.

    The promise (README, Conversations): this client sends a session's turns one at
    a time, in call order; a turn is sent only after the previous call on the
    session has ended. A call cancelled after its request went out ends at once,
    and the server may still be running it when the next turn is sent: every
    overlap at the server involves such an abandoned request, never two live calls.
    """
    server.latency = (
        0.002  # the server works a little on each turn, so cancellations land mid-flight
    )
    rng = random.Random(11)
    sessions = [server.create_session() for _ in range(20)]
    client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=50, retry=FAST)
    plan: list[tuple[str, str, str]] = []  # (key, session, how)
    for n in range(500):
        how = rng.choice(["finish", "finish", "before", "mid-flight", "scope"])
        plan.append((f"storm-{n}", sessions[n % 20], how))
    abandoned: set[str] = set()
    finished: list[str] = []
    cancelled_tasks: list[asyncio.Task[None]] = []

    async def call(key: str, session_id: str, how: str) -> None:
        if how == "scope":
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled at its first await: never sent
                await client.assistant.complete(session_id, key, idempotency_key=key)
            return
        await client.assistant.complete(session_id, key, idempotency_key=key)
        finished.append(key)

    async def cancel_when_at_server(task: asyncio.Task[None], key: str) -> None:
        await server.wait_until(
            lambda s: any(r.idempotency_key == key for r in s.requests), timeout=60
        )
        abandoned.add(key)
        task.cancel()

    async with client:
        tasks = []
        watchers = []
        for key, session_id, how in plan:
            task = asyncio.create_task(call(key, session_id, how))
            tasks.append(task)
            if how == "before":
                task.cancel()
                cancelled_tasks.append(task)
            elif how == "mid-flight":
                watchers.append(asyncio.create_task(cancel_when_at_server(task, key)))
                cancelled_tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        for watcher in watchers:
            if not watcher.done():
                watcher.cancel()  # its call finished before the server saw it
        await asyncio.gather(*watchers, return_exceptions=True)
        await server.wait_until(lambda s: s.in_flight == 0, timeout=60)

    sent_keys = {r.idempotency_key for r in server.requests}
    kept = {key for key, _, how in plan if how == "finish"}
    assert set(finished) == kept  # every uncancelled call succeeded
    assert not sent_keys & {key for key, _, how in plan if how in ("before", "scope")}
    # No two live calls of one session were ever at the server at once.
    by_session = collections.defaultdict(list)
    for record in server.requests:
        by_session[record.session_id].append(record)
    overlapped = 0
    for records in by_session.values():
        for i, later in enumerate(records):
            running = [e for e in records[:i] if e.ended is not None and e.ended > later.started]
            overlapped += bool(running)
            assert all(e.idempotency_key in abandoned for e in running)
    assert overlapped == server.session_overlaps
    # Call order: on each session, the turns were sent in the order the calls were made.
    order = {key: n for n, (key, _, _) in enumerate(plan)}
    for records in by_session.values():
        sent = [order[r.idempotency_key] for r in records if r.idempotency_key is not None]
        assert sent == sorted(sent)
