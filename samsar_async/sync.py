"""``Samsar``: the synchronous client, running the one async core in a background thread.

::

    from samsar_async import Samsar

    with Samsar() as client:                    # SAMSAR_API_KEY, SAMSAR_BASE_URL
        resp = client.assistant.complete("67df0d8ebc4f9d0b7f4fd123", "Write a caption")
        print(resp.output_text, resp.credits.charged)

There is no second implementation: :class:`Samsar` holds an
:class:`~samsar_async.AsyncSamsar` and runs each call on an event loop in a
background thread (anyio's blocking portal), then hands back its result or
raises its exception. The arguments, results (the same :class:`~samsar_async.Response`,
events and batch results) and errors (the same classes) are those of the async
client.

- The thread and its loop start with the first call (or ``with``), and
  :meth:`Samsar.close` (or leaving ``with``) closes the connections and joins
  the thread. Calls after that raise :class:`~samsar_async.errors.ClientClosedError`.
- One client is safe to use from many threads at once (a thread-pool web
  server, a ``ThreadPoolExecutor``): their calls run concurrently on the one
  loop and share its connection pool, retry budget and per-session ordering.
- It works where a loop is already running (a notebook, or sync code called
  from async code): the calls run on the client's own loop, and the caller's
  thread waits for them.
- A ``KeyboardInterrupt`` (or any exception) raised in the waiting thread
  cancels the call it was waiting for.
- :meth:`SyncAssistant.stream` and :meth:`SyncAssistant.complete_many` are
  plain iterators.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .batch import DEFAULT_CONCURRENCY, BatchResult, BatchRun
from .client import AsyncSamsar
from .config import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMEOUT,
    UNSET,
    ClientState,
)
from .errors import ClientClosedError, InvalidArgumentError

if TYPE_CHECKING:
    import aiohttp
    from typing_extensions import Unpack

    from .config import RetryPolicy, Timeout, Unset
    from .conversation import Conversation, Turn
    from .hooks import EventHooks
    from .inputs import (
        CompletionInput,
        CompletionOptions,
        CompletionRequest,
        ImageGenerationTool,
        ToolChoice,
    )
    from .models import Response, SystemPrompt, Usage
    from .retry import RetryBudget
    from .streaming import StreamEvent

__all__ = ["Samsar", "SyncAssistant", "SyncBatch", "SyncConversation"]

T = TypeVar("T")

_CLOSED = "this Samsar client is closed; create a new one"


async def _next(iterator: Any) -> tuple[bool, Any]:
    """``(True, item)`` from an async iterator, or ``(False, None)`` at its end."""
    try:
        return True, await iterator.__anext__()
    except StopAsyncIteration:
        return False, None


class _Call:
    """One call run on the client's loop, cancellable from the waiting thread at any
    moment: even when a ``KeyboardInterrupt`` arrives after the call started but
    before the thread holds its future (it may then be running already)."""

    __slots__ = ("cancelled", "loop", "task")

    def __init__(self) -> None:
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def run(self, func: Callable[[], Awaitable[T]]) -> T:
        """``await func()`` on the loop, unless :meth:`cancel` came first."""
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()  # (set before cancelled is read: see cancel)
        if self.cancelled:
            raise asyncio.CancelledError
        return await func()

    def cancel(self) -> None:
        """Cancel the call from another thread (``cancelled`` is set before ``task``
        is read, so one of the two sees the other)."""
        self.cancelled = True
        task, loop = self.task, self.loop
        if task is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # (the loop is closed: nothing runs)
                loop.call_soon_threadsafe(task.cancel)


class Samsar:
    """Synchronous client of the Samsar Assistant API.

    Takes the same arguments as :class:`~samsar_async.AsyncSamsar` (checked
    here, at once) and offers the same resource, ``client.assistant``, with
    blocking methods. See the module docstring.

    Two differences, because the client runs on its own loop in its own
    thread: ``connector`` must be a function returning an
    ``aiohttp.BaseConnector`` (it is called on that loop when the pool opens,
    and the client closes what it returns), and there is no ``http_session``
    (a session belongs to the loop that made it). ``event_hooks`` run on the
    client's loop thread.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        default_headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY_POLICY,
        retry_budget: RetryBudget | Unset | None = UNSET,
        idempotency_keys: bool = True,
        serialize_sessions: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
        outage_backoff: bool = True,
        adaptive_concurrency: bool = False,
        event_hooks: EventHooks | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
        connector: Callable[[], aiohttp.BaseConnector] | None = None,
        trust_env: bool = False,
        proxy: str | None = None,
    ) -> None:
        if connector is not None and not callable(connector):
            raise InvalidArgumentError(
                "connector",
                "a sync client runs its own event loop: pass a function that makes the "
                "connector (called on that loop), not a connector",
            )
        self._async = AsyncSamsar(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
            default_headers=default_headers,
            retry=retry,
            retry_budget=retry_budget,
            idempotency_keys=idempotency_keys,
            serialize_sessions=serialize_sessions,
            max_response_bytes=max_response_bytes,
            allow_insecure_http=allow_insecure_http,
            outage_backoff=outage_backoff,
            adaptive_concurrency=adaptive_concurrency,
            event_hooks=event_hooks,
            trace_configs=trace_configs,
            connector=connector,
            trust_env=trust_env,
            proxy=proxy,
        )
        self._parent: Samsar | None = None
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._closed = False
        self.assistant: SyncAssistant = SyncAssistant(self)
        """The Assistant API resource."""

    def __repr__(self) -> str:
        return f"<Samsar base_url={self.base_url!r} state={self.state.value}>"

    @property
    def base_url(self) -> str:
        """The API's base URL."""
        return self._async.base_url

    @property
    def state(self) -> ClientState:
        """The client's :class:`~samsar_async.config.ClientState`, as for ``AsyncSamsar``."""
        return ClientState.CLOSED if self._gone() else self._async.state

    @property
    def async_client(self) -> AsyncSamsar:
        """The :class:`~samsar_async.AsyncSamsar` doing the work, on the client's own loop.

        Only call it through :meth:`run` (it belongs to the background thread's loop).
        """
        return self._async

    def __enter__(self) -> Samsar:
        self._started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def with_options(
        self,
        *,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        retry_budget: RetryBudget | Unset | None = UNSET,
        default_headers: Mapping[str, str] | None = None,
        idempotency_keys: bool | Unset = UNSET,
        event_hooks: EventHooks | Unset | None = UNSET,
    ) -> Samsar:
        """A client like this one with some options changed, sharing its pool and its thread.

        See :meth:`AsyncSamsar.with_options <samsar_async.AsyncSamsar.with_options>`.
        Closing the new client does not close the pool nor stop the thread;
        closing this one does both.
        """
        if self._closed:
            raise ClientClosedError(_CLOSED)
        derived = self._async.with_options(
            timeout=timeout,
            retry=retry,
            retry_budget=retry_budget,
            default_headers=default_headers,
            idempotency_keys=idempotency_keys,
            event_hooks=event_hooks,
        )
        new = Samsar.__new__(Samsar)
        new._async = derived
        new._parent = self if self._parent is None else self._parent
        new._lock = threading.Lock()
        new._portal_cm = None
        new._portal = None
        new._closed = False
        new.assistant = SyncAssistant(new)
        return new

    def close(self) -> None:
        """Close the connections and join the background thread. Idempotent.

        Calls still running in other threads are cancelled (they raise
        :class:`~samsar_async.errors.ClientClosedError`). A client made by
        :meth:`with_options` only closes itself.
        """
        if self._parent is not None:
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            portal, portal_cm = self._portal, self._portal_cm
            self._portal = self._portal_cm = None
        if portal is None or portal_cm is None:
            return
        try:
            portal.call(self._async.close)
            portal.call(portal.stop, True)  # cancel what is still running
        finally:
            portal_cm.__exit__(None, None, None)  # joins the thread

    def _gone(self) -> bool:
        """Whether this client, or the one whose pool it shares, is closed."""
        parent = self._parent
        return self._closed or (parent is not None and parent._closed)

    def _started(self) -> BlockingPortal:
        """The running portal, started on first use."""
        if self._parent is not None:
            if self._closed:
                raise ClientClosedError(_CLOSED)
            return self._parent._started()
        portal = self._portal
        if portal is not None:
            return portal
        with self._lock:
            if self._closed:
                raise ClientClosedError(_CLOSED)
            if self._portal is None:
                portal_cm = start_blocking_portal("asyncio")
                self._portal = portal_cm.__enter__()
                self._portal_cm = portal_cm
            return self._portal

    def run(self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``await func(*args, **kwargs)`` on the client's loop and return its result.

        The way to any async API not wrapped here, such as saving images::

            from samsar_async.images import save_image
            client.run(save_image, response.images[0], "out/")
        """
        portal = self._started()
        call = _Call()
        try:
            future = portal.start_task_soon(call.run, functools.partial(func, *args, **kwargs))
        except RuntimeError:
            if self._gone():
                raise ClientClosedError(_CLOSED) from None
            raise
        except BaseException:
            call.cancel()  # interrupted while the call was being started: stop it too
            raise
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._gone():
                raise ClientClosedError("the client was closed during the call") from None
            raise
        except BaseException:
            call.cancel()  # the waiting thread was interrupted: stop the call too
            raise

    def _iterate(self, iterator: Any) -> Iterator[Any]:
        """A plain iterator over an async iterator living on the client's loop."""
        try:
            while True:
                more, item = self.run(_next, iterator)
                if not more:
                    return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not self._gone():
                self.run(aclose)


class SyncAssistant:
    """The Assistant API resource of :class:`Samsar`: ``client.assistant``.

    Each method takes the arguments of the
    :class:`~samsar_async.assistant.Assistant` method of the same name.
    """

    __slots__ = ("_client",)

    def __init__(self, client: Samsar) -> None:
        self._client = client

    def set_system_prompt(
        self,
        system_prompt: str | None,
        *,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        extra_headers: Mapping[str, str] | None = None,
    ) -> SystemPrompt:
        """Store the account-level system prompt; ``None`` or ``""`` clears it."""
        return self._client.run(
            self._client._async.assistant.set_system_prompt,
            system_prompt,
            timeout=timeout,
            retry=retry,
            extra_headers=extra_headers,
        )

    def clear_system_prompt(
        self,
        *,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        extra_headers: Mapping[str, str] | None = None,
    ) -> SystemPrompt:
        """Clear the account-level system prompt (Samsar's default prompt applies again)."""
        return self._client.run(
            self._client._async.assistant.clear_system_prompt,
            timeout=timeout,
            retry=retry,
            extra_headers=extra_headers,
        )

    def complete(
        self,
        session_id: str,
        input: CompletionInput | None = None,
        *,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        reasoning: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        tools: Sequence[ImageGenerationTool | Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        idempotency_key: str | None = None,
    ) -> Response:
        """Create an assistant response on ``session_id`` and wait for it.

        See :meth:`Assistant.complete <samsar_async.assistant.Assistant.complete>`.
        """
        return self._client.run(
            self._client._async.assistant.complete,
            session_id,
            input,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            top_p=top_p,
            reasoning=reasoning,
            metadata=metadata,
            tools=tools,
            tool_choice=tool_choice,
            extra_body=extra_body,
            extra_headers=extra_headers,
            timeout=timeout,
            retry=retry,
            idempotency_key=idempotency_key,
        )

    def stream(
        self,
        session_id: str,
        input: CompletionInput | None = None,
        *,
        chunk_chars: int | None = None,
        **options: Unpack[CompletionOptions],
    ) -> Iterator[StreamEvent]:
        """:meth:`complete` as OpenAI Responses streaming events, a plain iterator.

        See :meth:`Assistant.stream <samsar_async.assistant.Assistant.stream>`:
        the same events, the same ``error`` event for a failed call, the same
        :class:`~samsar_async.errors.InvalidArgumentError` for bad arguments.
        Leaving early (``break``, then the iterator's ``close()`` or garbage
        collection) cancels the call.
        """
        events = self._client._async.assistant.stream(
            session_id, input, chunk_chars=chunk_chars, **options
        )
        return self._client._iterate(events)

    def conversation(self, session_id: str) -> SyncConversation:
        """The conversation helper for ``session_id``: its turns, credits and usage."""
        conversation = self._client._async.assistant.conversation(session_id)
        return SyncConversation(self._client, conversation)

    def complete_many(
        self,
        requests: Iterable[CompletionRequest],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        stop_on_error: bool = False,
        min_credits: Decimal | int | str | None = None,
    ) -> SyncBatch:
        """Run many completions, at most ``concurrency`` at once; a plain iterator of results.

        ::

            with client.assistant.complete_many(requests, concurrency=8) as results:
                for result in results:
                    ...

        See :meth:`Assistant.complete_many
        <samsar_async.assistant.Assistant.complete_many>` for the arguments and
        results. ``requests`` is read on the client's loop thread. Leaving the
        ``with`` block (or :meth:`SyncBatch.close`) cancels what is in flight;
        iterating to the end closes the batch too.
        """
        run = self._client._async.assistant.complete_many(
            requests,
            concurrency=concurrency,
            ordered=ordered,
            stop_on_error=stop_on_error,
            min_credits=min_credits,
        )
        return SyncBatch(self._client, run)


class SyncBatch:
    """The results of :meth:`SyncAssistant.complete_many`: an iterator and a context manager."""

    def __init__(self, client: Samsar, run: BatchRun) -> None:
        self._client = client
        self._run = run
        self._context: AbstractContextManager[BatchRun] | None = None
        self._entered: BatchRun | None = None
        self._done = False
        self._lock = threading.Lock()

    @property
    def credits_remaining(self) -> Decimal | None:
        """The last ``x-credits-remaining`` seen by this batch."""
        return self._run.credits_remaining

    def __enter__(self) -> SyncBatch:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> SyncBatch:
        return self

    def __next__(self) -> BatchResult:
        if self._done:
            raise StopIteration
        run = self._enter()
        try:
            more, result = self._client.run(_next, run)
        except BaseException:
            self.close()
            raise
        if not more:
            self.close()
            raise StopIteration
        assert isinstance(result, BatchResult)
        return result

    def close(self) -> None:
        """Cancel what is still in flight and wait until it has unwound. Idempotent."""
        with self._lock:
            self._done = True
            context, self._context = self._context, None
        if context is not None and not self._client._gone():
            context.__exit__(None, None, None)

    def _enter(self) -> BatchRun:
        with self._lock:
            if self._entered is None:
                if self._done:
                    raise ClientClosedError("this batch is closed")
                portal = self._client._started()
                context = portal.wrap_async_context_manager(self._run)
                self._entered = context.__enter__()
                self._context = context
            return self._entered


class SyncConversation:
    """A conversation on one ``session_id``: ``client.assistant.conversation(id)``.

    The blocking twin of :class:`~samsar_async.conversation.Conversation`,
    sharing its records.
    """

    def __init__(self, client: Samsar, session: Conversation) -> None:
        self._client = client
        self._session = session

    def __repr__(self) -> str:
        return f"<SyncConversation session_id={self.session_id!r} turns={len(self.turns)}>"

    @property
    def session_id(self) -> str:
        """The conversation's session id."""
        return self._session.session_id

    @property
    def turns(self) -> list[Turn]:
        """Every turn so far, failed ones included."""
        return self._session.turns

    @property
    def last_response(self) -> Response | None:
        """The newest successful turn's response."""
        return self._session.last_response

    @property
    def credits_charged(self) -> Decimal:
        """Credits charged by this conversation's turns so far (exact)."""
        return self._session.credits_charged

    @property
    def usage(self) -> Usage:
        """Token usage summed over the successful turns."""
        return self._session.usage

    def send(
        self, input: CompletionInput | None = None, **options: Unpack[CompletionOptions]
    ) -> Response:
        """Send a turn; takes every option of :meth:`SyncAssistant.complete`."""
        return self._client.run(self._session.send, input, **options)

    def generate_image(
        self,
        prompt: CompletionInput,
        *,
        size: str | None = None,
        quality: str | None = None,
        format: str | None = None,
        background: str | None = None,
        **options: Unpack[CompletionOptions],
    ) -> Response:
        """A turn that forces the ``image_generation`` tool with these options."""
        return self._client.run(
            self._session.generate_image,
            prompt,
            size=size,
            quality=quality,
            format=format,
            background=background,
            **options,
        )
