"""Event hooks: functions a client calls around each HTTP attempt.

::

    from samsar_async import AsyncSamsar, EventHooks, ResponseEvent

    def log_cost(event: ResponseEvent) -> None:
        print(event.path, event.status, event.elapsed, event.credits_charged)

    client = AsyncSamsar(event_hooks=EventHooks(on_response=[log_cost]))

Three kinds, each a sequence of plain or ``async`` callables taking one event:

- ``on_request`` (:class:`RequestEvent`): before each attempt is sent
  (``attempt`` 1, then 2, 3, ... for the retries);
- ``on_response`` (:class:`ResponseEvent`): after each attempt, with its
  HTTP ``status``, or with ``status=None`` and ``error`` when no answer came
  (connection failed, timed out); an attempt cut short by cancellation has none;
- ``on_retry`` (:class:`RetryEvent`): when a failed attempt is going to be
  retried, before the back-off ``delay``.

An event is a small frozen object: the method, the API path, the session id,
the idempotency key, the attempt number and, after an answer, its status,
elapsed time, credits and headers. It never holds the API key, the request
headers or any body. Hooks run in order, on the call's own task (in the loop
thread for the sync :class:`~samsar_async.Samsar`), and the call waits for
them: keep them quick. A hook that raises an :class:`Exception` is logged
(``samsar_async`` logger, ERROR, with the traceback) and the call carries on
as if it had returned; the other hooks still run. Cancellation propagates.

With no hooks (the default) a call does no hook work at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from .errors import InvalidArgumentError

__all__ = ["EventHooks", "Hook", "RequestEvent", "ResponseEvent", "RetryEvent"]

E = TypeVar("E")

Hook = Callable[[E], "Awaitable[None] | None"]
"""A hook: a plain or ``async`` callable taking one event (its return value is ignored)."""


@attrs.frozen(kw_only=True)
class RequestEvent:
    """An attempt about to be sent (``on_request``)."""

    method: str
    """``"POST"``."""
    path: str
    """The API path, e.g. ``"/assistant/completion"`` (after the base URL)."""
    url: str
    """The full URL (it never carries credentials)."""
    session_id: str | None
    """The session the call runs on (``None`` for ``set_system_prompt``)."""
    idempotency_key: str | None
    """The call's ``Idempotency-Key`` (the same for all its attempts), if any."""
    attempt: int
    """1 for the first attempt, 2 for the first retry, ..."""


@attrs.frozen(kw_only=True)
class ResponseEvent(RequestEvent):
    """An attempt that ended (``on_response``): with an answer, or with ``error`` and no status."""

    status: int | None
    """The HTTP status, or ``None`` when no answer came (see ``error``)."""
    error: str | None
    """The class name of the attempt's error (``"RateLimitError"``,
    ``"APIConnectionError"``, ...) or ``None`` for a 2xx answer."""
    elapsed: float
    """Seconds from sending to the whole answer read (this attempt only)."""
    credits_charged: Decimal | None
    """The answer's ``x-credits-charged``, when it had one."""
    credits_remaining: Decimal | None
    """The answer's ``x-credits-remaining``, when it had one."""
    headers: Mapping[str, str] = attrs.field(repr=False)
    """The answer's headers (read-only, case-insensitive; empty without an answer)."""


@attrs.frozen(kw_only=True)
class RetryEvent(RequestEvent):
    """A failed attempt that will be retried (``on_retry``); ``attempt`` is the failed one."""

    status: int | None
    """The failed attempt's HTTP status, or ``None`` when no answer came."""
    error: str
    """The class name of the failed attempt's error."""
    delay: float
    """Seconds the client waits before attempt ``attempt + 1``."""


def _to_hooks(name: str, value: Any) -> tuple[Callable[..., Any], ...]:
    field = f"event_hooks.{name}"
    if value is None:
        return ()
    if callable(value) or isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidArgumentError(
            field, f"must be a list of callables, not {type(value).__name__}"
        )
    for i, hook in enumerate(value):
        if not callable(hook):
            raise InvalidArgumentError(
                f"{field}[{i}]", f"must be callable, not {type(hook).__name__}"
            )
    return tuple(value)


def _request_hooks(value: Sequence[Hook[RequestEvent]] | None) -> tuple[Hook[RequestEvent], ...]:
    return _to_hooks("on_request", value)


def _response_hooks(
    value: Sequence[Hook[ResponseEvent]] | None,
) -> tuple[Hook[ResponseEvent], ...]:
    return _to_hooks("on_response", value)


def _retry_hooks(value: Sequence[Hook[RetryEvent]] | None) -> tuple[Hook[RetryEvent], ...]:
    return _to_hooks("on_retry", value)


@attrs.frozen
class EventHooks:
    """The hooks of a client: ``AsyncSamsar(event_hooks=EventHooks(...))``.

    Each argument is a list of plain or ``async`` callables taking the event
    (see the module docstring for when each runs and what a raising hook does)::

        async def on_response(event: ResponseEvent) -> None:
            metrics.observe(event.path, event.status, event.elapsed)

        EventHooks(on_response=[on_response], on_retry=[print])

    Bad values raise :class:`~samsar_async.errors.InvalidArgumentError`
    naming the field (``event_hooks.on_request[0]``, ...).
    """

    on_request: tuple[Hook[RequestEvent], ...] = attrs.field(default=(), converter=_request_hooks)
    on_response: tuple[Hook[ResponseEvent], ...] = attrs.field(
        default=(), converter=_response_hooks
    )
    on_retry: tuple[Hook[RetryEvent], ...] = attrs.field(default=(), converter=_retry_hooks)

    def __bool__(self) -> bool:
        """Whether any hook is set."""
        return bool(self.on_request or self.on_response or self.on_retry)
