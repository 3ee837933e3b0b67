"""``complete_many``: many completions at bounded concurrency, results as they finish.

::

    requests = (CompletionRequest(session_id=s, input=t) for s, t in rows)
    async with client.assistant.complete_many(requests, concurrency=64) as results:
        async for result in results:
            result.index, result.request, result.response, result.error

How it works: entering the ``async with`` block starts ``concurrency``
workers in an anyio task group that the block owns; each takes the next
request from the input (a sync or async iterable, read lazily: a generator of
a million requests is never materialized) as soon as it is free, so at most
``concurrency`` calls are in flight and no task is created per request.
Results travel through a bounded memory stream: a slow consumer blocks the
workers and so stops the reading (back-pressure, no unbounded queue). With
``ordered=True`` an :class:`anyio.CapacityLimiter` bounds the reorder window:
no request starts more than ``concurrency`` places ahead of the oldest result
not yet yielded. Requests on one ``session_id`` keep their input order (the
client serializes each session's calls, FIFO, in the order the workers take
them).

Leaving the block, by ``break``, an exception or cancellation, cancels every
call in flight at once and waits until the workers have unwound: nothing
runs after the block. Iterating without the block raises
:class:`~samsar_async.errors.UsageError` (there would be no owner for the
workers). If the input itself raises, intake stops, the calls already sent
are delivered, and then the input's exception is raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._validators import positive_int
from .config import DEFAULT_CONCURRENCY
from .errors import CreditBudgetExceededError, InvalidArgumentError, UsageError
from .inputs import CompletionRequest
from .models import Response

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["DEFAULT_CONCURRENCY", "BatchResult", "BatchRun"]


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


Send = Callable[[CompletionRequest], Awaitable[Response]]
"""Sends one request: the assistant's ``_send``."""


def _check_min_credits(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str, float)):
        raise InvalidArgumentError(
            "min_credits", f"must be a number (Decimal, int, str), not {type(value).__name__}"
        )
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidArgumentError("min_credits", f"{value!r} is not a number") from None
    if not number.is_finite():
        raise InvalidArgumentError("min_credits", f"must be a finite number, not {value!r}")
    return number


@attrs.frozen
class _Options:
    """``complete_many``'s options, validated when the batch is created."""

    concurrency: int = attrs.field(validator=positive_int())
    ordered: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    stop_on_error: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    min_credits: Decimal | None = attrs.field(converter=_check_min_credits)


class BatchRun:
    """What :meth:`Assistant.complete_many` returns: an ``async with`` block owning the
    workers, and the async iterator of their results (:class:`BatchResult`)."""

    def __init__(
        self,
        send: Send,
        requests: Iterable[CompletionRequest] | AsyncIterable[CompletionRequest],
        *,
        concurrency: int,
        ordered: bool,
        stop_on_error: bool,
        min_credits: Decimal | int | str | None,
    ) -> None:
        try:
            options = _Options(concurrency, ordered, stop_on_error, min_credits)
        except TypeError as exc:  # attrs' instance_of validators
            name = exc.args[1].name if len(exc.args) > 1 else "options"
            raise InvalidArgumentError(name, "must be True or False") from None
        if isinstance(requests, (str, bytes)) or not isinstance(
            requests, (Iterable, AsyncIterable)
        ):
            raise InvalidArgumentError("requests", "must be an iterable of CompletionRequest")
        self._options = options
        self._requests = requests
        self._send = send
        self._limiter = anyio.CapacityLimiter(options.concurrency)
        self._pending: dict[int, BatchResult] = {}
        self._slots: dict[int, _Slot] = {}
        self._next_index = 0
        self._task_group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[BatchResult] | None = None
        self._workers: _Workers | None = None
        self._done = False

    @property
    def credits_remaining(self) -> Decimal | None:
        """The last ``x-credits-remaining`` seen by this batch."""
        return None if self._workers is None else self._workers.remaining

    async def __aenter__(self) -> BatchRun:
        if self._task_group is not None or self._done:
            raise UsageError("a complete_many() batch can be entered only once")
        options = self._options
        send, receive = anyio.create_memory_object_stream[BatchResult](options.concurrency)
        requests = self._requests
        source: _Source = (
            _AsyncSource(requests.__aiter__())
            if isinstance(requests, AsyncIterable)
            else _SyncSource(iter(requests))
        )
        workers = _Workers(self._send, source, options, self._limiter, self._slots)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group, self._receive, self._workers = task_group, receive, workers
        with send:
            for _ in range(options.concurrency):
                task_group.start_soon(workers.work, send.clone())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group = self._task_group
        self._done = True
        if self._receive is not None:
            self._receive.close()
        if task_group is None:
            return
        task_group.cancel_scope.cancel()  # whatever is still in flight stops now
        # The block's own exception (stop_on_error's, say) is not handed to the task
        # group, which would wrap it in an ExceptionGroup: it propagates as it is,
        # once the workers have unwound.
        await task_group.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Stop early: cancel what is in flight; no result is yielded after this."""
        self._done = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        if self._receive is not None:
            self._receive.close()

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        return self

    async def __anext__(self) -> BatchResult:
        receive = self._receive
        if receive is None:
            raise UsageError(
                "iterate complete_many() inside its block: "
                "`async with client.assistant.complete_many(...) as results: "
                "async for result in results: ...`"
            )
        if self._done:
            raise StopAsyncIteration
        ordered = self._options.ordered
        while True:
            if ordered and self._next_index in self._pending:
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
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if self._options.stop_on_error and result.error is not None:
                await self.aclose()
                raise result.error
            if not ordered:
                return result
            self._pending[result.index] = result
        # Every worker is done: surface the input's failure, if it had one.
        self._done = True
        error = self._workers.source.error if self._workers is not None else None
        if error is not None:
            raise error
        raise StopAsyncIteration


class _Workers:
    """The workers' side of a batch: take a request, send it, pass the result on."""

    def __init__(
        self,
        send: Send,
        source: _Source,
        options: _Options,
        limiter: anyio.CapacityLimiter,
        slots: dict[int, _Slot],
    ) -> None:
        self.send = send
        self.source = source
        self.ordered = options.ordered
        self.min_credits = options.min_credits
        self.limiter = limiter
        self.slots = slots
        self.remaining: Decimal | None = None

    async def work(self, results: MemoryObjectSendStream[BatchResult]) -> None:
        """One worker: take the next request as soon as this one is free."""
        with results:
            try:
                await self._loop(results)
            except anyio.BrokenResourceError:
                return  # the consumer stopped early (aclose): nobody reads results now

    async def _loop(self, results: MemoryObjectSendStream[BatchResult]) -> None:
        ordered = self.ordered
        limiter = self.limiter
        min_credits = self.min_credits
        send = self.send
        take = self.source
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
            # No await between taking the request and sending it: its place in
            # its session's queue is the input order.
            error: BaseException
            if not isinstance(request, CompletionRequest):
                error = InvalidArgumentError(
                    f"requests[{index}]",
                    f"must be a CompletionRequest, not {type(request).__name__}",
                )
                await _put(results, BatchResult(index, request, error=error))
                continue
            remaining = self.remaining
            if min_credits is not None and remaining is not None and remaining < min_credits:
                error = CreditBudgetExceededError(remaining, min_credits)
                await _put(results, BatchResult(index, request, error=error))
                continue
            try:
                response = await send(request)
            except Exception as exc:
                credits = getattr(exc, "credits", None)
                remaining = getattr(credits, "remaining", None)
                if remaining is not None:
                    self.remaining = remaining
                await _put(results, BatchResult(index, request, error=exc))
                continue
            if response.credits.remaining is not None:
                self.remaining = response.credits.remaining
            await _put(results, BatchResult(index, request, response=response))


async def _put(results: MemoryObjectSendStream[BatchResult], result: BatchResult) -> None:
    try:
        results.send_nowait(result)  # no trip through the event loop when there is room
    except anyio.WouldBlock:
        await results.send(result)  # back-pressure: the consumer is behind


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
