"""Flow control shared by every call of one client: the outage gate and the adaptive limiter.

Both are small state machines fed with the outcome of each attempt; neither
knows HTTP (no aiohttp here: asyncio and anyio only). A client runs each
attempt through :func:`run_attempt`, which waits at the gate, takes a slot
from the limiter, sends, and reports the outcome to both.

:class:`OutageGate` -- client-wide back-off while the server is down for everyone.
    Failures that say "the server is down" (connection refused or reset,
    a connection dropped after sending, 502/503/504 from a gateway) are
    counted once the server has answered this client at least once (a server
    never reached is a wrong address: those calls fail fast); after
    ``threshold`` of them in a row, with no answer between, the gate closes.
    Calls then wait at the gate instead of spending attempts against a dead
    port, and exactly one of the waiting calls at a time runs the injected
    *probe* at a jittered, growing interval (by
    default about 0.1 s, then x1.5 each time, up to 2 s). The first probe
    that succeeds, or any call that gets an HTTP answer, opens the gate and
    every waiter goes on. A call whose deadline passes first raises
    :class:`~samsar_async.errors.ServerUnreachableError` ("the server has been
    unreachable for 12 s"). No background task: the prober is a waiting
    call, and it hands the probing over when it leaves.

:class:`AdaptiveLimiter` -- adaptive concurrency on 429 and ``Retry-After``.
    A cap on the attempts in flight that falls when the server throttles
    (429, or any answer with a ``Retry-After``) and grows back as calls
    succeed, the way TCP CUBIC (and botocore's "adaptive" retry mode) moves
    its window: on a throttle the limit is multiplied by ``beta`` and the limit
    it fell from is remembered as ``W_max``; it then grows along ``W(t) = W_max
    + scale * (t - K)**3`` with ``K = cbrt(W_max * (1 - beta) / scale)``: fast
    at first, flat near ``W_max`` (where the server's limit probably is),
    faster again beyond it. ``t`` counts round trips (the smoothed duration of
    successful attempts), so the curve fits calls that take 50 ms as well as
    calls that take 30 s.

    - One decrease per round trip: only a throttle of an attempt sent *after*
      the last decrease lowers the limit again (as TCP decreases once per
      window). The other throttles of the same overshoot still say something:
      the server refused while only ``in_flight`` of ours were out, so the
      limit is cut to that. A burst of 256 against a limit of 32 comes down to
      about 32 as its 429s come back, in one round trip, not ten halvings.
    - ``Retry-After`` holds every new send that long (up to ``max_hold``) when
      the throttle comes well below the last limit the server took (under
      the midpoint of the last decrease: its capacity for this client went
      down, or the client is new to it). A throttle met near or past that
      limit answers the client's own probing: the limit is lowered and only
      the throttled call waits, so the periodic probe does not idle the whole
      pipeline every few round trips.
    - ``beta`` is 0.8, gentler than CUBIC's 0.7: with the cubic's plateau the
      limit averages about 95% of the server's. Plain halving (AIMD, ``beta``
      0.5, a linear climb) averages three quarters of it; measured against an
      account limit of 32 (``benchmarks/outage.py``), ``beta`` 0.7 gave 79% of
      the throughput of a loop holding exactly 32, and 0.8 gave 91-92%.

Neither is on the hot path when idle: the gate costs an attribute test per
attempt while the server is up, and the limiter is used only when enabled.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio

from ._validators import require_int, require_positive
from .errors import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    InvalidArgumentError,
    ServerUnreachableError,
)

__all__ = [
    "AdaptiveLimiter",
    "OutageGate",
    "Probe",
    "Ticket",
    "is_outage_signal",
    "is_throttle",
    "run_attempt",
]

logger = logging.getLogger("samsar_async")

T = TypeVar("T")

Probe = Callable[[], Awaitable[bool]]
"""Checks whether the server is reachable: ``True`` if it is; ``False`` or an exception if not.

It must not charge anything (a request to a free endpoint, or just a TCP connect).
"""

GATEWAY_STATUSES: Final = frozenset({502, 503, 504})


def is_outage_signal(exc: BaseException) -> bool:
    """Whether ``exc`` suggests the server is down for every call, not just this one.

    Connection refused or reset (not sent), a connection dropped after sending,
    and 502/504, or 503 without ``Retry-After`` (with one it is a throttle, see
    :func:`is_throttle`). Timeouts are not: a slow server, or a full local pool,
    is not a down one.
    """
    if isinstance(exc, APIStatusError):
        code = exc.status_code
        return code in GATEWAY_STATUSES and (code != 503 or exc.retry_after is None)
    if isinstance(exc, (APITimeoutError, ServerUnreachableError)):
        return False
    return isinstance(exc, APIConnectionError)


def is_throttle(exc: BaseException) -> bool:
    """Whether ``exc`` asks the account to slow down: a 429, or any ``Retry-After``."""
    return isinstance(exc, APIStatusError) and (
        exc.status_code == 429 or exc.retry_after is not None
    )


def _closed() -> ClientClosedError:
    return ClientClosedError(
        "the client was closed while this call waited to be sent; nothing was sent meanwhile"
    )


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


class OutageGate:
    """Client-wide back-off while the server is down (see the module docstring).

    Args:
        probe: checks reachability without charging; run by one waiting call at a time.
        threshold: outage failures in a row (no success between) that close the gate.
        first_interval: seconds before the first probe (before jitter).
        growth: each further probe waits this many times longer ...
        max_interval: ... up to this many seconds.
        probe_timeout: a probe taking longer than this counts as failed.
        rng: a ``random.Random`` for the jitter (each wait is uniform in
            ``[interval / 2, interval]``); seeded in tests.

    The client reports every attempt with :meth:`on_success` / :meth:`on_failure`
    and, while :attr:`down`, awaits :meth:`wait` before sending.
    """

    def __init__(
        self,
        probe: Probe,
        *,
        threshold: int = 3,
        first_interval: float = 0.1,
        growth: float = 1.5,
        max_interval: float = 2.0,
        probe_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        require_int("threshold", threshold)
        require_positive("first_interval", first_interval)
        require_positive("max_interval", max_interval)
        require_positive("probe_timeout", probe_timeout)
        if not growth >= 1:
            raise InvalidArgumentError("growth", "must be a number >= 1")
        self._probe = probe
        self.threshold = threshold
        self.first_interval: float = float(first_interval)
        self.growth: float = float(growth)
        self.max_interval: float = float(max_interval)
        self.probe_timeout: float = float(probe_timeout)
        self._rng = rng if rng is not None else random.Random()
        self._strikes = 0
        self._seen_up = False
        self._down_since: float | None = None
        self._failed_probes = 0
        self._next_probe = 0.0
        self._probing = False
        self._closed = False
        self._changed: anyio.Event | None = None
        self.probes: int = 0
        """Probes run so far (all outages)."""
        self.outages: int = 0
        """How many times the gate closed."""
        self.waiting: int = 0
        """Calls waiting at the gate now."""
        self.steady: bool = False
        """The server answered and nothing failed since (a plain attribute, read on
        every call's path: while it holds, a success has nothing to record)."""

    def __repr__(self) -> str:
        state = f"down for {self.unreachable_for:.1f}s" if self.down else "up"
        return f"<OutageGate {state} probes={self.probes} outages={self.outages}>"

    @property
    def down(self) -> bool:
        """Whether the gate is closed: the server is believed down for everyone."""
        return self._down_since is not None

    @property
    def unreachable_for(self) -> float:
        """Seconds since the gate closed (0 while it is open)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def on_success(self) -> None:
        """An attempt got its answer: the server is reachable."""
        self._seen_up = True
        self._strikes = 0
        if self._down_since is not None:
            self._open("a call got an answer")
        self.steady = True

    def on_failure(self, exc: BaseException) -> bool:
        """An attempt failed with ``exc``; returns whether it counts as an outage failure.

        An HTTP answer that is not a gateway failure (a 4xx, a 500, a 2xx that
        could not be read) proves the server reachable, as a success does.
        Nothing counts until the server has answered once: a server this client
        never reached (a wrong ``base_url``, nothing listening) is not an
        outage, and its calls fail fast as usual.
        """
        if is_outage_signal(exc):
            self.steady = False
            if not self._seen_up:
                return False  # never reached: a wrong address, not an outage
            self._strikes += 1
            if self._down_since is None and self._strikes >= self.threshold:
                self._close()
            return True
        if isinstance(exc, (APIStatusError, APIResponseValidationError)):
            self.on_success()
        return False

    def shutdown(self) -> None:
        """The client is closing: every waiting call raises ``ClientClosedError`` now."""
        self._closed = True
        self._notify()

    async def wait(self, deadline: float | None, idempotency_key: str | None = None) -> None:
        """Return once the gate is open; wait (probing, if nobody else is) while it is closed.

        ``deadline`` is a :func:`time.monotonic` time (``None``: no limit); when
        it passes first, :class:`~samsar_async.errors.ServerUnreachableError`
        is raised (carrying ``idempotency_key``); after :meth:`shutdown`,
        :class:`~samsar_async.errors.ClientClosedError`. Cancellation is never swallowed.
        """
        if self._down_since is None:
            return
        self.waiting += 1
        try:
            while self._down_since is not None:
                if self._closed:
                    raise _closed()
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise self._unreachable(idempotency_key)
                if not self._probing:
                    self._probing = True
                    try:
                        await self._probe_until(deadline)
                    finally:
                        self._probing = False
                        self._notify()  # hand the probing over, or release the waiters
                    continue
                with anyio.move_on_after(None if deadline is None else deadline - now):
                    await self._event().wait()
        finally:
            self.waiting -= 1

    # ------------------------------------------------------------------ internals

    def _close(self) -> None:
        now = time.monotonic()
        self._down_since = now
        self._failed_probes = 0
        self._next_probe = now + self._interval(0)
        self.outages += 1
        logger.warning(
            "the server looks down (%d connection failures in a row): "
            "calls wait for it while it is probed",
            self._strikes,
        )

    def _open(self, why: str) -> None:
        since = self._down_since
        self._down_since = None
        self._strikes = 0
        self._notify()
        if since is not None:
            logger.warning(
                "the server is reachable again (%s) after %.1fs down", why, time.monotonic() - since
            )

    def _interval(self, failed: int) -> float:
        base = min(self.max_interval, self.first_interval * self.growth**failed)
        return base * (0.5 + 0.5 * self._rng.random())

    def _event(self) -> anyio.Event:
        event = self._changed
        if event is None:
            event = self._changed = anyio.Event()
        return event

    def _notify(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    def _unreachable(self, key: str | None) -> ServerUnreachableError:
        down_for = self.unreachable_for
        return ServerUnreachableError(
            f"the server has been unreachable for {_seconds(down_for)} s "
            f"({self._failed_probes} probes failed); this call's deadline passed while it "
            "waited, and nothing was sent meanwhile",
            unreachable_for=down_for,
            probes=self._failed_probes,
            idempotency_key=key,
        )

    async def _probe_until(self, deadline: float | None) -> None:
        """Probe on schedule until the gate opens, or until ``deadline`` (then return)."""
        while self._down_since is not None and not self._closed:
            now = time.monotonic()
            delay = self._next_probe - now
            if deadline is not None and now + max(delay, 0.0) >= deadline:
                # The next probe is due after this prober's deadline: wait out the
                # deadline (waking early if the gate opens), then hand over.
                with anyio.move_on_after(deadline - now):
                    await self._event().wait()
                return
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._event().wait()
                continue
            if await self._run_probe():
                self._open(f"probe {self._failed_probes + 1} succeeded")
                return
            self._failed_probes += 1
            self._next_probe = time.monotonic() + self._interval(self._failed_probes)

    async def _run_probe(self) -> bool:
        self.probes += 1
        try:
            with anyio.move_on_after(self.probe_timeout):
                return bool(await self._probe())
        except Exception as exc:  # any failure of the probe means "still down"
            logger.debug("probe failed: %s", type(exc).__name__)
            return False
        return False


class Ticket:
    """One attempt's slot in an :class:`AdaptiveLimiter` (give it back with ``release``)."""

    __slots__ = ("epoch", "started")
    epoch: int
    started: float

    def __init__(self, epoch: int, started: float) -> None:
        self.epoch: int = epoch
        """The limiter's decrease count when the slot was granted."""
        self.started: float = started


class AdaptiveLimiter:
    """A concurrency limit that falls on throttles and grows back (see the module docstring).

    Args:
        maximum: the limit never grows above this (and starts here unless ``initial``).
        minimum: ... nor falls below this.
        initial: the starting limit; below ``maximum`` it first grows by one per
            success (TCP's slow start) until the first throttle.
        beta: the factor a throttle multiplies the limit by (0.8; CUBIC's is 0.7).
        scale: CUBIC's ``C``, per round trip cubed (0.01): smaller is slower,
            gentler growth, with fewer throttles.
        max_hold: the longest ``Retry-After`` honoured as a hold on new sends.
        default_rtt: the round trip assumed until a successful attempt measured one.
        clock: the time source of the curve and the holds (tests pass a fake one).

    :attr:`limit` is the current limit (for monitoring), :attr:`in_flight` the
    slots taken, :attr:`throttles` / :attr:`decreases` count the throttles seen
    and the decreases they caused.
    """

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        beta: float = 0.8,
        scale: float = 0.01,
        max_hold: float = 60.0,
        default_rtt: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require_int("maximum", maximum)
        require_int("minimum", minimum)
        if minimum > maximum:
            raise InvalidArgumentError("minimum", "must not exceed maximum")
        start = maximum if initial is None else initial
        if isinstance(start, bool) or not isinstance(start, int) or not minimum <= start <= maximum:
            raise InvalidArgumentError("initial", "must be an integer from minimum to maximum")
        if not 0 < beta < 1:
            raise InvalidArgumentError("beta", "must be between 0 and 1")
        require_positive("scale", scale)
        require_positive("default_rtt", default_rtt)
        if not max_hold >= 0:
            raise InvalidArgumentError("max_hold", "must be a number >= 0")
        self.maximum = maximum
        self.minimum = minimum
        self.beta: float = float(beta)
        self.scale: float = float(scale)
        self.max_hold: float = float(max_hold)
        self._clock = clock
        self._window = float(start)
        self._limit = start
        self._slow_start = start < maximum
        self._w_max = float(start)
        self._last_w_max = 0.0
        self._k = 0.0
        self._epoch = 0
        self._epoch_start: float | None = None
        self._srtt: float | None = None
        self._default_rtt = float(default_rtt)
        self._hold_until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._closed = False
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.throttles: int = 0
        """Throttled attempts seen."""
        self.decreases: int = 0
        """Times the limit was lowered."""

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimiter limit={self._limit} in_flight={self._in_flight} "
            f"waiting={self.waiting} decreases={self.decreases}>"
        )

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Slots taken now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return sum(1 for f in self._waiters if not f.done())

    @property
    def held_for(self) -> float:
        """Seconds new sends are still held for a ``Retry-After`` (0 when not held)."""
        return max(0.0, self._hold_until - self._clock())

    @property
    def rtt(self) -> float:
        """The smoothed duration of successful attempts (``default_rtt`` until measured)."""
        return self._default_rtt if self._srtt is None else max(self._srtt, 0.001)

    async def acquire(
        self, deadline: float | None = None, idempotency_key: str | None = None
    ) -> Ticket:
        """Take a slot, waiting (FIFO) while the limit is reached or sends are held.

        Raises :class:`~samsar_async.errors.APIConnectTimeoutError` (nothing
        sent) when ``deadline`` (a :func:`time.monotonic` time) passes first.
        """
        if self._closed:
            raise _closed()
        now = self._clock()
        if not self._waiters and self._in_flight < self._limit and now >= self._hold_until:
            self._in_flight += 1
            return Ticket(self._epoch, now)
        # A future each, granted in turn by _wake (True) or expired by a timer at the
        # deadline (False): no cancel scope per waiting call.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(future)
        self._wake()
        timer = None
        if deadline is not None and not future.done():
            timer = loop.call_later(max(deadline - time.monotonic(), 0.0), _expire, future)
        try:
            granted = await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                if future.result():
                    self._in_flight -= 1  # granted just as we left: give it back
                    self._wake()
            else:
                future.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not granted:
            raise APIConnectTimeoutError(
                f"timed out waiting for a slot under the adaptive concurrency limit "
                f"({self._limit}); nothing was sent",
                idempotency_key=idempotency_key,
            )
        return Ticket(self._epoch, self._clock())

    def try_acquire(self) -> float | None:
        """Take a slot if one is free now, without waiting: the time it was taken
        (give it back with :meth:`release_ok` or :meth:`release`), else ``None``
        (then :meth:`acquire` waits for one). Allocates nothing: the uncontended
        path of every call under the limit."""
        if self._waiters or self._in_flight >= self._limit or self._closed:
            return None
        now = self._clock()
        if now < self._hold_until:
            return None
        self._in_flight += 1
        return now

    def release_ok(self, started: float) -> None:
        """Give back a slot taken at ``started`` (by :meth:`try_acquire`) whose attempt
        succeeded: :meth:`release` with no error, without a :class:`Ticket`."""
        self._in_flight -= 1
        self._on_success(started, self._clock())
        if self._waiters:
            self._wake()

    def shutdown(self) -> None:
        """The client is closing: every waiting call raises ``ClientClosedError`` now."""
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(_closed())

    def release(self, ticket: Ticket, exc: BaseException | None) -> None:
        """Give back ``ticket``'s slot; ``exc`` is the attempt's error (``None``: it succeeded)."""
        self._in_flight -= 1
        now = self._clock()
        if exc is None:
            self._on_success(ticket.started, now)
        elif is_throttle(exc):
            retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
            self._on_throttle(ticket, now, retry_after)
        self._wake()

    # ------------------------------------------------------------------ internals

    def _set_window(self, window: float) -> None:
        window = min(float(self.maximum), max(float(self.minimum), window))
        self._window = window
        self._limit = int(window)

    def _on_success(self, started: float, now: float) -> None:
        sample = now - started
        srtt = self._srtt
        self._srtt = sample if srtt is None else srtt + (sample - srtt) / 8
        if self._slow_start:
            self._set_window(self._window + 1.0)
            self._slow_start = self._limit < self.maximum
            return
        start = self._epoch_start
        if start is None or self._window >= self.maximum:
            return
        t = (now - start) / self.rtt
        self._set_window(self._w_max + self.scale * (t - self._k) ** 3)

    def _on_throttle(self, ticket: Ticket, now: float, retry_after: float | None) -> None:
        self.throttles += 1
        if ticket.epoch != self._epoch:
            # Sent before the last decrease, which already answered the overshoot. But
            # the server refused it with only ``in_flight`` others of ours out: its
            # limit is at most that, so a burst far over it comes down in one round trip.
            bound = max(self._in_flight, self.minimum)
            if bound < self._window:
                self._set_window(bound)
                self._w_max = self._last_w_max = self._window
                self._k = 0.0
                self._epoch_start = now
            return
        window = self._window
        # Probing: near or above the last peak, this throttle answers our own climb
        # past the server's limit. Falling well short of it (below the midpoint of
        # the last decrease) means the server's limit went down, or is new to us:
        # aim lower (RFC 8312's fast convergence) and hold new sends for the
        # Retry-After.
        probing = self._last_w_max > 0 and window >= self._last_w_max * (1 + self.beta) / 2
        w_max = window if probing else window * (1 + self.beta) / 2
        self._last_w_max = window
        self._w_max = w_max
        self._slow_start = False
        self._set_window(window * self.beta)
        self._k = (max(0.0, w_max - self._window) / self.scale) ** (1 / 3)
        self._epoch += 1
        self._epoch_start = now
        self.decreases += 1
        if retry_after is not None and retry_after > 0 and not probing:
            self._hold_until = max(self._hold_until, now + min(retry_after, self.max_hold))
        logger.info(
            "throttled by the server: concurrency limit %d -> %d%s",
            int(window),
            self._limit,
            f", new sends held {retry_after:.3f}s" if retry_after else "",
        )

    def _wake(self) -> None:
        waiters = self._waiters
        if not waiters:
            return
        now = self._clock()
        if now < self._hold_until:
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._hold_until - now, self._on_timer)
            return
        while waiters and self._in_flight < self._limit:
            future = waiters.popleft()
            if future.done():
                continue
            self._in_flight += 1
            future.set_result(True)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()


def _expire(future: asyncio.Future[bool]) -> None:
    """A call's deadline passed while it waited for a slot."""
    if not future.done():
        future.set_result(False)


async def run_attempt(
    send: Callable[[], Awaitable[T]],
    *,
    gate: OutageGate | None,
    limiter: AdaptiveLimiter | None,
    deadline: float | None,
    idempotency_key: str | None = None,
) -> T:
    """One attempt through the flow control: wait at ``gate``, take a ``limiter`` slot,
    ``send()``, and report the outcome to both. Exceptions propagate unchanged."""
    if gate is not None and gate.down:
        await gate.wait(deadline, idempotency_key)
    ticket = None if limiter is None else await limiter.acquire(deadline, idempotency_key)
    try:
        result = await send()
    except BaseException as exc:
        if ticket is not None and limiter is not None:
            limiter.release(ticket, exc)
        if gate is not None and isinstance(exc, Exception):
            gate.on_failure(exc)
        raise
    if ticket is not None and limiter is not None:
        limiter.release(ticket, None)
    if gate is not None:
        gate.on_success()
    return result
