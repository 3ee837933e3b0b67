"""``complete_many``: many completions at bounded concurrency, results as they finish.

::

    requests = (CompletionRequest(session_id=s, input=t) for s, t in rows)
    async for result in client.assistant.complete_many(requests, concurrency=64):
        result.index, result.request, result.response, result.error

How it works: a runner task starts ``concurrency`` workers in an anyio task
group; each takes the next request from the input (a sync or async iterable,
read lazily: a generator of a million requests is never materialized) as soon
as it is free, so at most ``concurrency`` calls are in flight and no task is
created per request. Results travel through a bounded memory stream: a slow
consumer blocks the workers and so stops the reading (back-pressure, no
unbounded queue). With ``ordered=True`` an :class:`anyio.CapacityLimiter`
bounds the reorder window: no request starts more than ``concurrency`` places
ahead of the oldest result not yet yielded. Requests on one ``session_id``
keep their input order (the client serializes each session's calls, FIFO, in
the order the workers take them).

Leaving early: use ``async with client.assistant.complete_many(...) as results``
(or ``await results.aclose()``): leaving the block by ``break``, an exception or
cancellation cancels the runner and everything in flight, and waits until it
has unwound. A bare ``break`` out of ``async for`` gives Python no hook, but
the runner never refers back to the :class:`BatchRun`: once nothing else holds
the iterator (it was not kept in a variable), it is freed at once and cancels
the runner, so no new call starts (at most one per worker may already have).
If the input itself raises, intake stops, the calls already
sent are delivered, and then the input's exception is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .errors import CreditBudgetExceeded, InvalidArgumentError
from .inputs import CompletionRequest
from .models import Response

if TYPE_CHECKING:
    from types import TracebackType

    from .assistant import Assistant

__all__ = ["DEFAULT_CONCURRENCY", "BatchResult", "BatchRun"]

DEFAULT_CONCURRENCY = 64
"""Calls in flight at once when ``concurrency`` is not given."""


@attrs.frozen
class BatchResult:
    """The outcome of one request of a batch: exactly one of ``response`` and ``error`` is set.

    ``index`` is the request's position in the input.
    """

    index: int
    request: CompletionRequest
    response: Response | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None


_FIELDS = tuple(a.name for a in attrs.fields(CompletionRequest) if a.name != "session_id")


def _options(request: CompletionRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    return options


class BatchRun:
    """The async iterator returned by :meth:`Assistant.complete_many`."""

    def __init__(
        self,
        assistant: Assistant,
        requests: Iterable[CompletionRequest] | AsyncIterable[CompletionRequest],
        *,
        concurrency: int,
        ordered: bool,
        stop_on_error: bool,
        min_credits: Decimal | int | str | None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError("concurrency", "must be an integer >= 1")
        if not isinstance(requests, (Iterable, AsyncIterable)):
            raise InvalidArgumentError("requests", "must be an iterable of CompletionRequest")
        self._concurrency = concurrency
        self._ordered = ordered
        self._stop_on_error = stop_on_error
        self._runner: asyncio.Task[None] | None = None
        self._receive: MemoryObjectReceiveStream[BatchResult] | None = None
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._pending: dict[int, BatchResult] = {}
        self._slots: dict[int, _Slot] = {}
        self._workers = _Workers(
            assistant,
            requests,
            concurrency=concurrency,
            ordered=ordered,
            min_credits=None if min_credits is None else Decimal(str(min_credits)),
            limiter=self._limiter,
            slots=self._slots,
        )
        self._next_index = 0
        self._closed = False

    @property
    def credits_remaining(self) -> Decimal | None:
        """The last ``x-credits-remaining`` seen by this batch."""
        return self._workers.remaining

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        return self

    async def __aenter__(self) -> BatchRun:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Left early without aclose(): stop what is in flight (the loop finishes the unwinding).
        runner = getattr(self, "_runner", None)
        if runner is not None and not runner.done():
            runner.cancel()
        receive = getattr(self, "_receive", None)
        if receive is not None:
            receive.close()

    async def aclose(self) -> None:
        """Cancel whatever is still in flight and wait until it has unwound."""
        self._closed = True
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            # Wait for it to unwind without raising its (expected) cancellation, and
            # without hiding a cancellation aimed at the caller.
            with anyio.CancelScope(shield=True):
                await asyncio.wait({runner})
        if self._receive is not None:
            self._receive.close()

    async def __anext__(self) -> BatchResult:
        if self._closed:
            raise StopAsyncIteration
        receive = self._receive
        if receive is None:
            send, receive = anyio.create_memory_object_stream[BatchResult](self._concurrency)
            self._receive = receive
            self._runner = asyncio.get_running_loop().create_task(self._workers.run(send))
        try:
            while True:
                if self._ordered and self._next_index in self._pending:
                    result = self._pending.pop(self._next_index)
                    self._next_index += 1
                    self._limiter.release_on_behalf_of(self._slots.pop(result.index))
                    return result
                try:
                    # Take a ready result without a trip through the event loop.
                    result = receive.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        result = await receive.receive()
                    except anyio.EndOfStream:
                        break
                except anyio.EndOfStream:
                    break
                if self._stop_on_error and result.error is not None:
                    await self.aclose()
                    raise result.error
                if not self._ordered:
                    return result
                self._pending[result.index] = result
        except BaseException:
            await self.aclose()
            raise
        # The runner finished: surface its failure (e.g. the input iterable raised).
        runner = self._runner
        self._closed = True
        receive.close()
        if runner is not None and runner.done() and not runner.cancelled():
            exc = runner.exception()
            if exc is not None:
                raise exc
        raise StopAsyncIteration


class _Workers:
    """The runner's side of a batch: it never refers to the :class:`BatchRun`, so a
    ``BatchRun`` dropped without ``aclose()`` is freed at once and its ``__del__``
    cancels the runner."""

    def __init__(
        self,
        assistant: Assistant,
        requests: Iterable[CompletionRequest] | AsyncIterable[CompletionRequest],
        *,
        concurrency: int,
        ordered: bool,
        min_credits: Decimal | None,
        limiter: anyio.CapacityLimiter,
        slots: dict[int, _Slot],
    ) -> None:
        self.assistant = assistant
        self.requests = requests
        self.concurrency = concurrency
        self.ordered = ordered
        self.min_credits = min_credits
        self.limiter = limiter
        self.slots = slots
        self.remaining: Decimal | None = None

    async def run(self, send: MemoryObjectSendStream[BatchResult]) -> None:
        """``concurrency`` workers, each taking the next request as soon as it is free."""
        requests = self.requests
        take: _Source = (
            _AsyncSource(requests.__aiter__())
            if isinstance(requests, AsyncIterable)
            else _SyncSource(iter(requests))
        )
        async with send, anyio.create_task_group() as tg:
            for _ in range(self.concurrency):
                tg.start_soon(self._worker, take, send)
        if take.error is not None:
            # The input failed: what was already sent has been delivered; now say why
            # the batch stops (raised by __anext__ once the results run out).
            raise take.error

    async def _worker(self, take: _Source, send: MemoryObjectSendStream[BatchResult]) -> None:
        ordered = self.ordered
        limiter = self.limiter
        min_credits = self.min_credits
        complete = self.assistant.complete
        while True:
            slot = None
            if ordered:
                # The reorder window: no request starts more than `concurrency`
                # places ahead of the oldest result not yet yielded.
                slot = _Slot()
                await limiter.acquire_on_behalf_of(slot)
            item = await take()
            if item is None:
                if slot is not None:
                    limiter.release_on_behalf_of(slot)
                return
            index, request = item
            if slot is not None:
                self.slots[index] = slot
            # No await between taking the request and calling `complete`: its place
            # in its session's queue is the input order.
            error: BaseException
            if not isinstance(request, CompletionRequest):
                error = InvalidArgumentError(
                    f"requests[{index}]",
                    f"must be a CompletionRequest, not {type(request).__name__}",
                )
                await self._send(send, BatchResult(index, request, error=error))
                continue
            remaining = self.remaining
            if min_credits is not None and remaining is not None and remaining < min_credits:
                error = CreditBudgetExceeded(remaining, min_credits)
                await self._send(send, BatchResult(index, request, error=error))
                continue
            try:
                response = await complete(request.session_id, **_options(request))
            except Exception as exc:
                credits = getattr(exc, "credits", None)
                remaining = getattr(credits, "remaining", None)
                if remaining is not None:
                    self.remaining = remaining
                await self._send(send, BatchResult(index, request, error=exc))
                continue
            if response.credits.remaining is not None:
                self.remaining = response.credits.remaining
            await self._send(send, BatchResult(index, request, response=response))

    @staticmethod
    async def _send(send: MemoryObjectSendStream[BatchResult], result: BatchResult) -> None:
        try:
            send.send_nowait(result)  # no trip through the event loop when there is room
        except anyio.WouldBlock:
            await send.send(result)  # back-pressure: the consumer is behind


class _SyncSource:
    """Hands out ``(index, request)`` pairs of a sync iterable, one at a time."""

    __slots__ = ("_iterator", "error", "next_index")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self.next_index = 0
        self.error: Exception | None = None
        """What the input raised: intake stops, calls in flight finish."""

    async def __call__(self) -> tuple[int, Any] | None:
        if self.error is not None:
            return None
        try:
            request = next(self._iterator)
        except StopIteration:
            return None
        except Exception as exc:
            self.error = exc
            return None
        index = self.next_index
        self.next_index = index + 1
        return index, request


class _AsyncSource:
    """Hands out ``(index, request)`` pairs of an async iterable; one ``__anext__`` at a time."""

    __slots__ = ("_done", "_iterator", "_lock", "error", "next_index")

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self._iterator = iterator
        self._lock = anyio.Lock()
        self._done = False
        self.next_index = 0
        self.error: Exception | None = None
        """What the input raised: intake stops, calls in flight finish."""

    async def __call__(self) -> tuple[int, Any] | None:
        async with self._lock:
            if self._done:
                return None
            try:
                request = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._done = True
                return None
            except Exception as exc:
                self._done = True
                self.error = exc
                return None
            index = self.next_index
            self.next_index = index + 1
            return index, request


_Source = _SyncSource | _AsyncSource


class _Slot:
    """A limiter borrower: one place in the ordered window (identity, not value)."""

    __slots__ = ()
