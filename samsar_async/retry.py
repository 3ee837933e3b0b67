"""Retries that never charge twice and never storm a failing backend.

A failure is classified by what the server may have done with the request:

- ``not_sent`` (always retried): DNS, connect, TLS, waiting for a pooled connection.
- ``refused`` (always retried): 408, 409, 425, 429, 503; the server did no work.
- ``outcome_unknown`` (retried only when the call carries an idempotency key):
  read timeout, connection dropped or body cut short after sending; 500, 502, 504.

Nothing else is retried: 400, 401, 402, 403, 404, 422 and
:class:`~samsar_async.errors.APIResponseValidationError` fail at once.

The final error is truthful about the whole call: when an attempt before the
last may have been charged, the call ends as
:class:`~samsar_async.errors.OutcomeUnknownError` whatever the last attempt
got (refused, not sent, a 409 from the server still busy with it, a 500),
with the last attempt's error as its ``last_error`` and ``__cause__``: never
as "nothing was sent".

With the client's flow control (:mod:`samsar_async._flow`), attempts that
fail because the server is down for everyone (the outage gate is closed) and
throttled attempts under the adaptive limiter are *not* counted against
``max_attempts`` nor paid from the budget: the gate and the limiter pace
them, the call's deadline bounds them, and at most :data:`MAX_PACED_RETRIES`
such retries are made per call.

:class:`RetryPolicy` says how many attempts, how long to back off (full
jitter), and which conditions to retry; :class:`RetryBudget` is shared by a
client's calls so that when the backend fails for everyone, retries stop
(botocore's "standard" retry quota). The loop itself is tenacity's
``AsyncRetrying``, a fresh one per call, sleeping with anyio. The first
attempt runs before tenacity is involved, so a call that succeeds at once
pays nothing for the retry machinery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import attrs

from ._flow import AdaptiveLimiter, OutageGate, is_outage_signal, is_throttle, run_attempt
from .config import (
    DEFAULT_REFUSED_STATUSES,
    DEFAULT_RETRY_POLICY,
    DEFAULT_UNKNOWN_STATUSES,
    NOT_SENT,
    OUTCOME_UNKNOWN,
    REFUSED,
    RetryPolicy,
)
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Attempt,
    ClientClosedError,
    OutcomeUnknownError,
    SamsarError,
    ServerUnreachableError,
)

if TYPE_CHECKING:
    # tenacity is imported when a call is first retried (retry_failed_call), not with the
    # package: a call that succeeds at once never needs it.
    from tenacity import RetryCallState

__all__ = [
    "DEFAULT_REFUSED_STATUSES",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_UNKNOWN_STATUSES",
    "NOT_SENT",
    "OUTCOME_UNKNOWN",
    "REFUSED",
    "RetryBudget",
    "RetryPolicy",
    "classify",
]

logger: logging.Logger = logging.getLogger("samsar_async")

T = TypeVar("T")

_MIN_ATTEMPT_TIME = 0.1
"""No retry starts with less than this many seconds left before the call's deadline."""

MAX_PACED_RETRIES: Final = 50
"""Most retries per call paced by the outage gate or the adaptive limiter (not counted
against ``max_attempts``); a safety net, the call's deadline is the real bound."""


@attrs.define(kw_only=True)
class RetryBudget:
    """A client-wide token bucket that caps retries when the backend fails for everyone.

    Every retry takes ``retry_cost`` tokens (``timeout_retry_cost`` after a
    timeout); when the bucket cannot pay, the call fails at once with its
    underlying error. A call that succeeds puts back what its retries took,
    or ``success_refund`` when it needed none, up to ``capacity``. With the
    defaults (500, 5, 10, 1), a fully failing backend sees at most about 100
    retries before new calls stop retrying, instead of two per call.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_retry_cost: int = 10
    success_refund: int = 1
    tokens: float = attrs.field(
        default=attrs.Factory(lambda self: float(self.capacity), takes_self=True)
    )
    """Tokens left now (starts full)."""

    def try_acquire(self, cost: int) -> bool:
        """Take ``cost`` tokens if available."""
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def on_success(self, acquired: int) -> None:
        """Refund after a successful call that took ``acquired`` tokens for retries."""
        refund = acquired if acquired else self.success_refund
        tokens = self.tokens + refund
        self.tokens = tokens if tokens < self.capacity else self.capacity


def classify(exc: BaseException, policy: RetryPolicy) -> str | None:
    """The retry condition ``exc`` falls under, or ``None`` when it is never retried."""
    if isinstance(exc, APIStatusError):
        if exc.status_code in policy.refused_statuses:
            return REFUSED
        if exc.status_code in policy.unknown_statuses:
            return OUTCOME_UNKNOWN
        return None
    if isinstance(exc, OutcomeUnknownError):
        return OUTCOME_UNKNOWN
    if isinstance(exc, APIConnectionError):
        return OUTCOME_UNKNOWN if exc.sent else NOT_SENT
    return None


def _is_retryable(exc: BaseException, policy: RetryPolicy, has_key: bool) -> bool:
    if isinstance(exc, ServerUnreachableError):
        return False  # the call's deadline passed while the server was down
    condition = classify(exc, policy)
    if condition is None or condition not in policy.retry_on:
        return False
    if condition == OUTCOME_UNKNOWN and not has_key:
        return False
    retry_after = getattr(exc, "retry_after", None)
    return not (retry_after is not None and retry_after > policy.max_retry_after)


class _RetryIf:
    def __init__(self, policy: RetryPolicy, has_key: bool) -> None:
        self.policy = policy
        self.has_key = has_key

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        return exc is not None and _is_retryable(exc, self.policy, self.has_key)


class _Flow:
    """The client's flow control as one call's retries see it."""

    __slots__ = ("gate", "limiter")

    def __init__(self, gate: OutageGate | None, limiter: AdaptiveLimiter | None) -> None:
        self.gate = gate
        self.limiter = limiter

    def paces(self, exc: BaseException | None) -> bool:
        """Whether the retry after ``exc`` is paced by the gate or the limiter."""
        if exc is None:
            return False
        gate = self.gate
        if gate is not None and gate.down and is_outage_signal(exc):
            return True
        return self.limiter is not None and is_throttle(exc)


class _Wait:
    """Full-jitter exponential back-off, or the server's ``Retry-After`` when it sent one.

    No back-off after an outage failure while the gate is closed: the gate paces the retry.
    """

    def __init__(self, policy: RetryPolicy, flow: _Flow) -> None:
        from tenacity.wait import wait_random_exponential

        self.jitter = wait_random_exponential(
            multiplier=policy.initial_backoff, max=policy.max_backoff
        )
        self.flow = flow

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        gate = self.flow.gate
        if gate is not None and gate.down and exc is not None and is_outage_signal(exc):
            return 0.0
        return float(self.jitter(retry_state))


class _Stop:
    """Stop at ``max_attempts``, at the deadline, or when the budget cannot pay the retry.

    Retries paced by the flow control count against neither ``max_attempts``
    nor the budget (up to :data:`MAX_PACED_RETRIES`).
    """

    def __init__(
        self, policy: RetryPolicy, deadline: float | None, budget: RetryBudget | None, flow: _Flow
    ) -> None:
        self.max_attempts = policy.max_attempts
        self.deadline = deadline
        self.budget = budget
        self.flow = flow
        self.acquired = 0
        self.paced = 0

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.deadline is not None and (
            time.monotonic() + retry_state.upcoming_sleep + _MIN_ATTEMPT_TIME >= self.deadline
        ):
            return True
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if self.paced < MAX_PACED_RETRIES and self.flow.paces(exc):
            self.paced += 1
            return False
        if retry_state.attempt_number - self.paced >= self.max_attempts:
            return True
        if self.budget is None:
            return False
        cost = (
            self.budget.timeout_retry_cost
            if isinstance(exc, APITimeoutError)
            else self.budget.retry_cost
        )
        if not self.budget.try_acquire(cost):
            logger.warning("retry budget exhausted: not retrying (%s)", type(exc).__name__)
            return True
        self.acquired += cost
        return False


def _log_retry(retry_state: RetryCallState, extra: Mapping[str, object] | None = None) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    if extra is None:
        logger.warning(
            "retrying in %.2fs after attempt %d failed: %s",
            retry_state.upcoming_sleep,
            retry_state.attempt_number,
            type(exc).__name__,
        )
        return
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    logger.warning(
        "retrying in %.2fs after attempt %d failed: %s (POST %s session=%s key=%s)",
        retry_state.upcoming_sleep,
        retry_state.attempt_number,
        type(exc).__name__,
        extra.get("path"),
        extra.get("session_id"),
        extra.get("idempotency_key"),
        extra={
            **extra,
            "attempt": retry_state.attempt_number,
            "status": status,
            "error": type(exc).__name__,
            "delay": retry_state.upcoming_sleep,
        },
    )


def _before_sleep(
    extra: Mapping[str, object] | None,
    on_retry: Callable[[int, BaseException, float], Awaitable[None]] | None,
) -> Callable[[RetryCallState], Awaitable[None]]:
    """tenacity's ``before_sleep``: log the retry, then tell ``on_retry``."""

    async def before_sleep(retry_state: RetryCallState) -> None:
        _log_retry(retry_state, extra)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if on_retry is not None and exc is not None:
            await on_retry(retry_state.attempt_number, exc, retry_state.upcoming_sleep)

    return before_sleep


def _record(attempts: list[Attempt], number: int, exc: BaseException, started: float) -> None:
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    message = exc.message if isinstance(exc, APIError) else str(exc)
    attempts.append(
        Attempt(
            number=number,
            error=f"{type(exc).__name__}: {message}",
            status_code=status,
            elapsed=time.monotonic() - started,
            may_have_been_charged=exc.may_have_been_charged
            if isinstance(exc, SamsarError)
            else True,
        )
    )


def _truthful(exc: APIError, attempts: tuple[Attempt, ...]) -> APIError:
    """The call's final error: ``exc``, unless an attempt before the last may have been
    charged; then an :class:`OutcomeUnknownError` over the history (``exc`` as ``last_error``)."""
    exc.attempts = attempts
    if isinstance(exc, OutcomeUnknownError):
        return exc
    charged = [a for a in attempts[:-1] if a.may_have_been_charged]
    if not charged:
        return exc
    first = charged[0]
    unknown = OutcomeUnknownError(
        f"the call may have been charged: attempt {first.number} may have reached the server "
        f"({first.error}), and the last attempt failed: {exc.message}",
        idempotency_key=exc.idempotency_key,
        last_error=exc,
    )
    unknown.attempts = attempts
    return unknown


async def retry_failed_call(
    first: APIError,
    send: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget | None,
    has_key: bool,
    deadline: float | None,
    started: float,
    gate: OutageGate | None = None,
    limiter: AdaptiveLimiter | None = None,
    idempotency_key: str | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    on_retry: Callable[[int, BaseException, float], Awaitable[None]] | None = None,
    log_extra: Mapping[str, object] | None = None,
) -> T:
    """Carry on a call whose first attempt (begun at ``started``) failed with ``first``.

    The first attempt runs before any of this (so a call that succeeds at once
    pays nothing for the retry machinery); here its failure is handed to a
    fresh tenacity ``AsyncRetrying`` as attempt 1, and tenacity decides, waits
    and stops. ``deadline`` is a :func:`time.monotonic` time after which no
    retry starts. Each retry goes through the client's flow control
    (``gate``, ``limiter``: see :func:`samsar_async._flow.run_attempt`), which
    the first attempt went through too. ``sleep`` waits between attempts (the
    client's ends early when it closes). The final error carries every
    attempt and is truthful about them (see the module docstring).
    Cancellation is never retried nor swallowed. Before each back-off the retry is
    logged (with ``log_extra`` in the record's ``extra``) and ``on_retry(attempt,
    error, delay)`` is awaited.
    """
    attempts: list[Attempt] = []
    _record(attempts, 1, first, started)
    if policy.max_attempts < 2 or not _is_retryable(first, policy, has_key):
        raise _truthful(first, tuple(attempts))
    if policy.max_total_time is not None:
        limit = started + policy.max_total_time
        deadline = limit if deadline is None else min(deadline, limit)
    from tenacity import AsyncRetrying  # first retry only: see the TYPE_CHECKING import

    flow = _Flow(gate, limiter)
    stop = _Stop(policy, deadline, budget, flow)
    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=_Wait(policy, flow),
        retry=_RetryIf(policy, has_key),
        before_sleep=(
            _log_retry
            if on_retry is None and log_extra is None
            else _before_sleep(log_extra, on_retry)
        ),
        reraise=True,
    )
    paced = gate is not None or limiter is not None
    key = idempotency_key if idempotency_key is not None else first.idempotency_key
    pending: APIError | None = first
    try:
        async for attempt in retrying:
            with attempt:
                if pending is not None:
                    # Attempt 1 already ran: hand its failure to tenacity.
                    replay, pending = pending, None
                    raise replay
                attempt_started = time.monotonic()
                try:
                    if paced:
                        result = await run_attempt(
                            send,
                            gate=gate,
                            limiter=limiter,
                            deadline=deadline,
                            idempotency_key=key,
                        )
                    else:
                        result = await send()
                except APIError as exc:
                    _record(attempts, attempt.retry_state.attempt_number, exc, attempt_started)
                    raise
        if budget is not None:
            budget.on_success(stop.acquired)
        return result
    except APIError as exc:
        final = _truthful(exc, tuple(attempts))
        if final is exc:
            raise
        raise final from exc
    except ClientClosedError as exc:
        # Closed before a retry: truthful about the attempts that may have been charged.
        if not exc.sent and any(a.may_have_been_charged for a in attempts):
            exc.sent = True
        raise
