"""The flow gate (samsar_async._flow): outage back-off with one prober, and the adaptive limiter.

The gate's probe and the limiter's traffic go over real loopback HTTP to a
MockSamsarServer that really goes down and comes back.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import anyio
import pytest

from samsar_async._flow import AdaptiveLimiter, OutageGate, Ticket
from samsar_async.errors import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIReadTimeoutError,
    BadRequestError,
    InternalServerError,
    InvalidArgumentError,
    OutcomeUnknownError,
    RateLimitError,
    ServerUnreachableError,
)
from samsar_async.testing import MockSamsarServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class CountingProbe:
    """An HTTP probe of the mock server that records every call and its result."""

    def __init__(self, http: aiohttp.ClientSession, server: MockSamsarServer) -> None:
        self.http = http
        self.server = server
        self.results: list[bool] = []
        self.active = 0
        self.max_active = 0
        self._watch: list[tuple[int, anyio.Event]] = []

    async def __call__(self) -> bool:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        ok = False
        try:
            async with self.http.get(f"{self.server.url}/assistant/completion") as resp:
                ok = resp.status not in (502, 503, 504)
        finally:
            self.active -= 1
            self.results.append(ok)
            for count, event in self._watch:
                if len(self.results) >= count:
                    event.set()
        return ok

    async def reached(self, count: int) -> None:
        """Wait until ``count`` probes have finished."""
        if len(self.results) >= count:
            return
        event = anyio.Event()
        self._watch.append((count, event))
        with anyio.fail_after(10):  # a guard against hangs, not a synchronisation device
            await event.wait()


def refused() -> APIConnectionError:
    return APIConnectionError("could not connect: refused; nothing was sent", sent=False)


def fast_gate(probe: Callable[[], Awaitable[bool]], **kwargs: float) -> OutageGate:
    options: dict[str, float] = {"first_interval": 0.01, "max_interval": 0.04}
    options.update(kwargs)
    return OutageGate(probe, rng=random.Random(7), **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the outage gate


async def test_one_prober_while_down_then_every_waiter_goes_on(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    probe = CountingProbe(http, server)
    gate = fast_gate(probe)
    gate.on_success()  # the server answered once
    await server.go_down()
    assert gate.on_failure(refused())
    assert gate.on_failure(OutcomeUnknownError("dropped after sending"))
    assert not gate.down  # two failures in a row are not yet an outage
    assert gate.on_failure(InternalServerError("bad gateway", status_code=502))
    assert gate.down
    released: list[int] = []

    async def wait(n: int) -> None:
        await gate.wait(None)
        released.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(wait, n)
        await probe.reached(3)  # three probes failed against the dead port
        assert released == []
        assert gate.waiting == 20
        await server.come_back()
    assert sorted(released) == list(range(20))
    assert probe.max_active == 1  # one prober for twenty waiting calls
    assert probe.results[-1] is True
    assert not any(probe.results[:-1])
    assert not gate.down
    assert gate.outages == 1
    assert gate.probes == len(probe.results)
    assert gate.waiting == 0


async def test_deadline_ends_the_wait_and_the_probing_is_handed_over(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    probe = CountingProbe(http, server)
    gate = fast_gate(probe, threshold=1)
    gate.on_success()
    await server.go_down()
    gate.on_failure(refused())
    errors: list[BaseException] = []
    done: list[str] = []

    async def short() -> None:  # starts first: it is the first prober
        try:
            await gate.wait(time.monotonic() + 0.15, "key-1")
        except ServerUnreachableError as exc:
            errors.append(exc)

    async def patient() -> None:
        await gate.wait(None)
        done.append("patient")

    async with anyio.create_task_group() as tg:
        tg.start_soon(short)
        tg.start_soon(patient)
        await probe.reached(1)
        while not errors:
            await probe.reached(len(probe.results) + 1)
        after_deadline = len(probe.results)
        await probe.reached(after_deadline + 2)  # the patient call probes on
        assert done == []
        await server.come_back()
    assert done == ["patient"]
    [err] = errors
    assert isinstance(err, ServerUnreachableError)
    assert err.sent is False
    assert not err.may_have_been_charged
    assert err.idempotency_key == "key-1"
    assert err.unreachable_for > 0
    assert str(err).startswith("the server has been unreachable for ")
    assert f"({err.probes} probes failed)" in str(err)
    assert probe.max_active == 1


async def test_a_cancelled_prober_hands_over(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    probe = CountingProbe(http, server)
    gate = fast_gate(probe, threshold=1)
    gate.on_success()
    await server.go_down()
    gate.on_failure(refused())
    done: list[str] = []
    scope = anyio.CancelScope()

    async def cancelled() -> None:
        with scope:
            await gate.wait(None)
        done.append("cancelled")

    async def other() -> None:
        await gate.wait(None)
        done.append("other")

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancelled)
        tg.start_soon(other)
        await probe.reached(1)
        scope.cancel()
        count = len(probe.results)
        await probe.reached(count + 2)
        await server.come_back()
    assert done == ["cancelled", "other"]
    assert scope.cancelled_caught
    assert probe.max_active == 1


async def test_an_answer_opens_the_gate_without_a_probe() -> None:
    probes: list[int] = []

    async def probe() -> bool:
        probes.append(1)
        return True

    gate = OutageGate(probe, threshold=1, first_interval=3600, max_interval=3600)
    gate.on_success()
    gate.on_failure(refused())
    released: list[int] = []

    async def wait() -> None:
        await gate.wait(None)
        released.append(1)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert gate.waiting == 3
        gate.on_success()
    assert released == [1, 1, 1]
    assert probes == []


def test_what_counts_as_an_outage() -> None:
    async def probe() -> bool:
        return True

    gate = OutageGate(probe, threshold=2)
    for _ in range(5):  # never reached: a wrong address, not an outage
        assert not gate.on_failure(refused())
    assert not gate.down
    assert gate.on_failure(BadRequestError("bad", status_code=400)) is False  # reached now
    assert gate.on_failure(refused())
    assert not gate.on_failure(BadRequestError("bad", status_code=400))  # an answer: reachable
    assert gate.on_failure(refused())
    assert not gate.down  # the 400 reset the count
    assert not gate.on_failure(APIReadTimeoutError("slow"))  # slow is not down ...
    assert not gate.on_failure(APIConnectTimeoutError("pool"))  # ... nor is a full pool
    assert not gate.on_failure(RateLimitError("busy", status_code=503, retry_after=1.0))
    assert not gate.down
    assert gate.on_failure(refused())
    assert gate.on_failure(InternalServerError("down", status_code=503))
    assert gate.down
    with pytest.raises(InvalidArgumentError, match="threshold"):
        OutageGate(probe, threshold=0)
    with pytest.raises(InvalidArgumentError, match="growth"):
        OutageGate(probe, growth=0.5)


# ------------------------------------------------------------------ the adaptive limiter


def throttled(retry_after: float | None = None) -> RateLimitError:
    return RateLimitError("too many", status_code=429, retry_after=retry_after)


async def test_one_decrease_per_round_trip() -> None:
    limiter = AdaptiveLimiter(10, clock=lambda: 5.0)  # time stands still: no growth
    tickets = [await limiter.acquire() for _ in range(10)]
    assert limiter.in_flight == 10
    limiter.release(tickets.pop(), throttled())
    limiter.release(tickets.pop(), throttled())  # the same overshoot: no second decrease
    assert limiter.limit == 8  # 10 * 0.8
    assert (limiter.throttles, limiter.decreases) == (2, 1)
    for ticket in tickets:
        limiter.release(ticket, None)
    later = await limiter.acquire()  # sent after the decrease: its 429 is news
    limiter.release(later, throttled())
    assert limiter.limit == 6  # 8 * 0.8
    assert limiter.decreases == 2
    assert limiter.in_flight == 0


async def test_a_burst_comes_down_to_what_the_server_took() -> None:
    """256 sent into 32 slots: as the 224 429s come back, the limit follows in_flight down."""
    limiter = AdaptiveLimiter(256, clock=lambda: 5.0)
    tickets = [await limiter.acquire() for _ in range(256)]
    admitted, refused = tickets[:32], tickets[32:]
    for ticket in refused:
        limiter.release(ticket, throttled())
    assert limiter.limit == 32
    assert limiter.decreases == 1
    assert limiter.in_flight == 32
    for ticket in admitted:
        limiter.release(ticket, None)


async def test_waiters_are_served_in_order() -> None:
    limiter = AdaptiveLimiter(2)
    first, second = await limiter.acquire(), await limiter.acquire()
    order: list[int] = []
    tickets: list[Ticket] = []

    async def take(n: int) -> None:
        tickets.append(await limiter.acquire())
        order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(take, n)
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting == 3
        assert order == []
        limiter.release(first, None)
        await anyio.wait_all_tasks_blocked()
        assert order == [0]
        limiter.release(second, RateLimitError("x", status_code=400))  # not a throttle
        await anyio.wait_all_tasks_blocked()
        assert order == [0, 1]
        limiter.release(tickets[0], None)
    assert order == [0, 1, 2]
    assert limiter.limit == 2


async def test_retry_after_holds_new_sends() -> None:
    limiter = AdaptiveLimiter(4)
    ticket = await limiter.acquire()
    limiter.release(ticket, throttled(retry_after=30))
    assert limiter.held_for > 25
    assert limiter.in_flight == 0
    assert limiter.limit == 3  # below the limit, yet held
    with pytest.raises(APIConnectTimeoutError, match="nothing was sent") as info:
        await limiter.acquire(time.monotonic() + 0.05, "key-9")
    assert info.value.idempotency_key == "key-9"
    assert limiter.waiting == 0
    assert limiter.in_flight == 0


async def test_probing_past_the_last_peak_holds_nothing() -> None:
    now = [100.0]
    limiter = AdaptiveLimiter(20, initial=10, default_rtt=1.0, clock=lambda: now[0])
    tickets = [await limiter.acquire() for _ in range(10)]
    limiter.release(tickets.pop(), throttled(retry_after=30))  # new to us: held
    assert limiter.held_for == pytest.approx(30)
    now[0] += 31  # the hold is over; the curve climbs past the old peak of 10
    for ticket in tickets:
        ticket.started = now[0] - 1.0
        limiter.release(ticket, None)
    assert limiter.limit > 10
    probe = [await limiter.acquire() for _ in range(limiter.limit)]
    limiter.release(probe.pop(), throttled(retry_after=30))  # our own probe overshot
    assert limiter.held_for == 0  # the limit fell; nobody else waits
    assert limiter.decreases == 2
    for ticket in probe[1:]:
        limiter.release(ticket, None)
    again = await limiter.acquire()  # refused again, well below the peak of 20: the
    limiter.release(again, throttled(retry_after=30))  # server's capacity went down
    assert limiter.held_for == pytest.approx(30)
    assert limiter.decreases == 3
    limiter.release(probe[0], None)


async def test_cubic_growth_is_flat_near_the_old_limit() -> None:
    now = [1000.0]
    limiter = AdaptiveLimiter(
        100, initial=40, beta=0.7, scale=0.1, default_rtt=1.0, clock=lambda: now[0]
    )
    tickets = [await limiter.acquire() for _ in range(40)]
    limiter.release(tickets.pop(), throttled())
    assert limiter.limit == 28  # 40 * 0.7
    # The first throttle ever: the peak aimed at is (40 + 28) / 2 = 34 (fast convergence),
    # reached after K = cbrt((34 - 28) / 0.1) round trips.
    k = 60 ** (1 / 3)

    def success_at(t: float) -> int:
        ticket = tickets.pop()
        ticket.started = 1000.0 + t - 1.0  # every attempt takes one round trip
        now[0] = 1000.0 + t
        limiter.release(ticket, None)
        return limiter.limit

    assert success_at(k / 2) == 33  # concave: most of the way back in half the time
    assert success_at(k * 0.9) == 33
    assert success_at(k) in (33, 34)  # flat near the peak, where the server's limit was
    assert success_at(k + 2) == 34
    assert success_at(k + 5) == 46  # then convex: probing for more
    assert success_at(k + 60) == 100  # never above the maximum
    assert limiter.rtt == pytest.approx(1.0)


async def test_limiter_settles_at_the_servers_limit(
    server: MockSamsarServer, http: aiohttp.ClientSession
) -> None:
    """64 workers, an account limit of 8 answered 429 + retry-after-ms: the limit comes down."""
    server.set_concurrency_limit(8, retry_after=0.02)
    server.latency = 0.01
    limiter = AdaptiveLimiter(64)
    sessions = [server.create_session() for _ in range(64)]
    headers = {"Authorization": f"Bearer {server.api_key}"}
    url = f"{server.url}/assistant/completion"
    limits: list[int] = []  # the limit after each success

    async def worker(session_id: str) -> None:
        for _ in range(6):
            while True:
                ticket = await limiter.acquire()
                body = {"session_id": session_id, "input": "x"}
                async with http.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                    wait = int(resp.headers.get("retry-after-ms", "0")) / 1000
                if status == 200:
                    limiter.release(ticket, None)
                    limits.append(limiter.limit)
                    break
                limiter.release(ticket, throttled(retry_after=wait))
                await anyio.sleep(wait)  # the call's own retry wait, as the retry loop does

    async with anyio.create_task_group() as tg:
        for session_id in sessions:
            tg.start_soon(worker, session_id)
    assert len(server.ledger) == 64 * 6
    assert limiter.decreases >= 3  # 64 came down towards 8
    assert limiter.in_flight == 0
    # While all 64 workers still had work, the limit stayed near the server's 8.
    busy = limits[len(limits) // 4 : len(limits) * 3 // 4]
    assert sorted(busy)[len(busy) // 2] <= 16
    # Once it has come down, few requests are refused.
    second_half = server.requests[len(server.requests) // 2 :]
    refused_late = sum(1 for r in second_half if r.throttled)
    assert refused_late < 0.15 * len(second_half)
