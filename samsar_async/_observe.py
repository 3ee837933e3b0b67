"""Watching a client's calls: the one mechanism under event hooks and tracing.

A client holds at most one :class:`Observers` (``None`` when nothing watches:
then a call does no observation work at all, beyond one ``is None`` test).
When something watches, every logical call gets a :class:`Trace`, which
sends each attempt (so that watchers see it start and end, and may add
headers such as ``traceparent``), hears about retries and the wait for the
session's turn, and is told how the call ended.

Watchers subclass :class:`CallObserver` (one per client) and
:class:`CallWatch` (one per call): :class:`HookObserver` runs the
:class:`~samsar_async.hooks.EventHooks`, and
:mod:`samsar_async.integrations.otel` makes spans and metrics. A watcher that
raises an :class:`Exception` is logged and ignored: observing never changes
a call's outcome.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .converter import credits_of
from .errors import APIError, APIStatusError, status_error_class
from .models import NO_HEADERS

if TYPE_CHECKING:
    import aiohttp

    # Imported where a hook runs: a client with hooks has loaded the module already
    # (an EventHooks is made there), and `import samsar_async` does not need it.
    from .hooks import EventHooks
    from .transport import RawResponse, Transport

__all__ = ["CallInfo", "CallObserver", "CallWatch", "HookObserver", "Observers", "Trace"]

logger = logging.getLogger("samsar_async")


class CallInfo:
    """What is known of a logical call when it starts (plain slots: one per observed call)."""

    __slots__ = ("idempotency_key", "method", "path", "session_id", "url")

    def __init__(
        self, method: str, path: str, url: str, session_id: str | None, idempotency_key: str | None
    ) -> None:
        self.method: str = method
        self.path: str = path
        self.url: str = url
        self.session_id: str | None = session_id
        self.idempotency_key: str | None = idempotency_key

    def event_fields(self, attempt: int) -> dict[str, Any]:
        """The fields every hook event of this call's attempt ``attempt`` carries."""
        return {
            "method": self.method,
            "path": self.path,
            "url": self.url,
            "session_id": self.session_id,
            "idempotency_key": self.idempotency_key,
            "attempt": attempt,
        }


class CallWatch:
    """One watcher's view of one logical call. Every method is optional (no-ops here)."""

    __slots__ = ()

    def waited(self, seconds: float) -> None:
        """The call waited ``seconds`` for its session's turn (called only when it waited)."""

    async def request(self, attempt: int, headers: dict[str, str]) -> None:
        """Attempt ``attempt`` is about to be sent; ``headers`` (this attempt's own
        extra headers, a fresh dict) may be added to."""

    async def response(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str],
        error: str | None,
        elapsed: float,
    ) -> None:
        """Attempt ``attempt`` ended: ``status`` (``None``: no answer) and ``error``
        (the error class name, ``None`` for a 2xx)."""

    async def retry(self, attempt: int, error: BaseException, delay: float) -> None:
        """Attempt ``attempt`` failed with ``error`` and is retried after ``delay`` seconds."""

    def end(self, error: BaseException | None) -> None:
        """The call ended: returned (``error`` is ``None``) or raised ``error``."""


class CallObserver:
    """Watches a client's calls: :meth:`start` is called once per logical call."""

    __slots__ = ()

    def start(self, call: CallInfo) -> CallWatch | None:
        """A watch for ``call``, or ``None`` to skip it."""
        return None


def _failed(what: str) -> None:
    logger.error(
        "%s raised; ignored (observing never changes a call's outcome)", what, exc_info=True
    )


class Trace:
    """The watches of one logical call, driven by the client's call path."""

    __slots__ = ("info", "watches")

    def __init__(self, info: CallInfo, watches: list[CallWatch]) -> None:
        self.info = info
        self.watches = watches

    def waited(self, seconds: float) -> None:
        """Tell every watch how long the call waited for its session's turn."""
        for watch in self.watches:
            try:
                watch.waited(seconds)
            except Exception:
                _failed(f"{type(watch).__name__}.waited")

    async def send(
        self,
        transport: Transport,
        attempt: int,
        data: bytes,
        headers: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        images: bool = False,
    ) -> RawResponse:
        """One attempt through ``transport``, seen by every watch before and after."""
        info = self.info
        own = dict(headers) if headers else {}
        for watch in self.watches:
            try:
                await watch.request(attempt, own)
            except Exception:
                _failed(f"{type(watch).__name__}.request")
        started = time.monotonic()
        try:
            raw = await transport.post(
                info.url,
                data,
                headers=own or None,
                timeout=timeout,
                idempotency_key=info.idempotency_key,
                images=images,
            )
        except APIError as exc:
            await self._answered(attempt, None, NO_HEADERS, type(exc).__name__, started)
            raise
        status = raw.status
        error = None if 200 <= status < 300 else status_error_class(status).__name__
        await self._answered(attempt, status, raw.headers, error, started)
        return raw

    async def _answered(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str],
        error: str | None,
        started: float,
    ) -> None:
        elapsed = time.monotonic() - started
        for watch in self.watches:
            try:
                await watch.response(attempt, status, headers, error, elapsed)
            except Exception:
                _failed(f"{type(watch).__name__}.response")

    async def retry(self, attempt: int, error: BaseException, delay: float) -> None:
        """Tell every watch that attempt ``attempt`` failed and will be retried."""
        for watch in self.watches:
            try:
                await watch.retry(attempt, error, delay)
            except Exception:
                _failed(f"{type(watch).__name__}.retry")

    def end(self, error: BaseException | None) -> None:
        """Tell every watch how the call ended."""
        for watch in self.watches:
            try:
                watch.end(error)
            except Exception:
                _failed(f"{type(watch).__name__}.end")


class Observers:
    """Everything watching one client's calls (``None`` on the client when nothing does)."""

    __slots__ = ("observers",)

    def __init__(self, observers: tuple[CallObserver, ...]) -> None:
        self.observers = observers

    @classmethod
    def of(cls, observers: tuple[CallObserver, ...]) -> Observers | None:
        """``Observers`` over ``observers``, or ``None`` when there are none."""
        return cls(observers) if observers else None

    def start(
        self, method: str, path: str, url: str, session_id: str | None, key: str | None
    ) -> Trace | None:
        """The :class:`Trace` of a new call, or ``None`` when no observer watches it."""
        info = CallInfo(method, path, url, session_id, key)
        watches: list[CallWatch] = []
        for observer in self.observers:
            try:
                watch = observer.start(info)
            except Exception:
                _failed(f"{type(observer).__name__}.start")
                continue
            if watch is not None:
                watches.append(watch)
        return Trace(info, watches) if watches else None


# --- event hooks ----------------------------------------------------------------


async def _run_hooks(kind: str, hooks: Sequence[Any], event: object) -> None:
    for hook in hooks:
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.error(
                "an %s hook (%s) raised; ignored",
                kind,
                getattr(hook, "__qualname__", hook),
                exc_info=True,
            )


class _HookWatch(CallWatch):
    __slots__ = ("hooks", "info")

    def __init__(self, hooks: EventHooks, info: CallInfo) -> None:
        self.hooks = hooks
        self.info = info

    async def request(self, attempt: int, headers: dict[str, str]) -> None:
        hooks = self.hooks.on_request
        if hooks:
            from .hooks import RequestEvent

            event = RequestEvent(**self.info.event_fields(attempt))
            await _run_hooks("on_request", hooks, event)

    async def response(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str],
        error: str | None,
        elapsed: float,
    ) -> None:
        hooks = self.hooks.on_response
        if hooks:
            from .hooks import ResponseEvent

            credits = credits_of(headers)
            event = ResponseEvent(
                **self.info.event_fields(attempt),
                status=status,
                error=error,
                elapsed=elapsed,
                credits_charged=credits.charged,
                credits_remaining=credits.remaining,
                headers=headers,
            )
            await _run_hooks("on_response", hooks, event)

    async def retry(self, attempt: int, error: BaseException, delay: float) -> None:
        hooks = self.hooks.on_retry
        if hooks:
            from .hooks import RetryEvent

            event = RetryEvent(
                **self.info.event_fields(attempt),
                status=error.status_code if isinstance(error, APIStatusError) else None,
                error=type(error).__name__,
                delay=delay,
            )
            await _run_hooks("on_retry", hooks, event)


class HookObserver(CallObserver):
    """Runs a client's :class:`~samsar_async.hooks.EventHooks`."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: EventHooks) -> None:
        self.hooks = hooks

    def start(self, call: CallInfo) -> CallWatch | None:
        return _HookWatch(self.hooks, call)
