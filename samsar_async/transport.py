"""HTTP over one pooled ``aiohttp.ClientSession``: the only module that makes HTTP calls.

(``aiohttp.web`` also serves :mod:`samsar_async.sse` and the mock server in
:mod:`samsar_async.testing`; no other module uses aiohttp's client.)

Every aiohttp (and socket) exception is mapped here to an
:mod:`samsar_async.errors` class, classified by what the server may have done:

- *not sent* (DNS, connect, TLS, waiting for a pooled connection, a pooled
  connection found closed when the request was written):
  :class:`APIConnectionError` with ``sent=False`` / :class:`APIConnectTimeoutError`;
- *outcome unknown* (the request went out but no complete answer came back:
  read timeout, connection dropped, body cut short of its Content-Length):
  :class:`OutcomeUnknownError` / :class:`APIReadTimeoutError`.

Redirects are never followed (the Authorization header must not travel to
another host), and a body larger than the configured cap is refused without
being read into memory.

Lifecycle. The pool belongs to the event loop that opened it. :meth:`Transport.close`
ends every call using it with :class:`ClientClosedError` (``sent=True`` when the
request may have reached the server): a call waiting for a pooled connection
gets it too, although aiohttp cancels those waits; a raw ``CancelledError``
goes on only to a call whose task was cancelled by its caller. When the loop
that opened the pool shuts down (``asyncio.run()`` returning), the pool is
closed on that loop, and the next call, on a new loop, opens a fresh one.
Using one pool from two live loops at once raises :class:`UsageError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import attrs
from multidict import CIMultiDictProxy
from yarl import URL

from ._deadlines import Deadlines
from .errors import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIReadTimeoutError,
    APIResponseValidationError,
    ClientClosedError,
    OutcomeUnknownError,
    UsageError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ._imagebody import DecodedImage

__all__ = ["ConnectorOption", "ImageAnswer", "RawResponse", "Transport"]

ConnectorOption = aiohttp.BaseConnector | Callable[[], aiohttp.BaseConnector]
"""A connector you own, or a function making one the client owns (called inside the loop)."""

_READ_CHUNK = 256 * 1024

logger: logging.Logger = logging.getLogger("samsar_async")


def _no_loop() -> bool:
    return False


class RawResponse:
    """A complete HTTP answer: status, headers and the whole body.

    Plain slots, not attrs: one is made on every call's path. It satisfies
    :class:`samsar_async.converter.Answer`.
    """

    __slots__ = ("body", "headers", "status")
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<RawResponse status={self.status} body={len(self.body)} bytes>"


class ImageAnswer(RawResponse):
    """A 2xx answer to a request for images, read by
    :class:`~samsar_async._imagebody.ImageBodyReader`: ``body`` is the JSON
    with each image's base64 ``result`` replaced by a placeholder, and
    ``images`` the decoded images, by placeholder index."""

    __slots__ = ("images",)
    images: tuple[DecodedImage, ...]

    def __init__(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        body: bytes,
        images: tuple[DecodedImage, ...],
    ) -> None:
        super().__init__(status, headers, body)
        self.images = images

    def __repr__(self) -> str:
        return (
            f"<ImageAnswer status={self.status} body={len(self.body)} bytes "
            f"images={len(self.images)}>"
        )


_IMAGE_CHUNK = 256 * 1024
"""Bytes fed to the image reader at a time: about 0.1-0.5 ms of work."""
_IMAGE_SLICE = 0.002
"""Seconds of image-body work the event loop does between two looks at everything else."""


class _LoopTurns:
    """How much image-body work one event loop has done since it last ran everything else.

    Every image answer on the loop shares it: when the work since :attr:`since`
    passes :data:`_IMAGE_SLICE`, readers step aside (``sleep(0)``) until a
    callback scheduled for the loop's next iteration starts a new slice, so that
    fifty answers arriving at once cannot hold one iteration fifty times as long.
    """

    __slots__ = ("pending", "since")

    def __init__(self) -> None:
        self.since = 0.0
        self.pending = False

    def restart(self) -> None:
        self.since = time.perf_counter()
        self.pending = False

    async def take(self) -> None:
        """Return when this slice has time left (at once, usually)."""
        while time.perf_counter() - self.since > _IMAGE_SLICE:
            if not self.pending:
                self.pending = True
                asyncio.get_running_loop().call_soon(self.restart)
            await asyncio.sleep(0)


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopTurns] = (
    weakref.WeakKeyDictionary()
)


def _loop_turns() -> _LoopTurns:
    """The running loop's turns (a loop that takes no weak reference: this answer's own)."""
    loop = asyncio.get_running_loop()
    try:
        turns = _turns.get(loop)
        if turns is None:
            turns = _turns[loop] = _LoopTurns()
    except TypeError:
        return _LoopTurns()
    return turns


_DESCRIBE_LIMIT = 300


def _describe(exc: BaseException) -> str:
    # One line, bounded: aiohttp's parser errors quote the bytes the server sent.
    text = " ".join(str(exc)[: _DESCRIBE_LIMIT * 2].split())
    text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    if len(text) > _DESCRIBE_LIMIT:
        text = text[: _DESCRIBE_LIMIT - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@attrs.define(eq=False)
class Transport:
    """Owns the client's ``aiohttp.ClientSession`` and sends requests on it.

    The session is created lazily, inside the running event loop, on first
    use; :meth:`close` releases it. ``headers`` are sent with every request.

    Brought by the user instead: ``connector`` (an instance is theirs and is
    never closed; a function is called when the pool opens, and what it
    returns is closed with the session) or ``http_session`` (theirs: used as
    it is, on their loop, ``headers`` sent per request, never closed).
    ``proxy`` is the URL of an HTTP proxy for every request (its credentials,
    if any, go in ``Proxy-Authorization`` to the proxy only).

    ``attempt_timeout`` is the timeout that most attempts are sent with (the
    client's): their deadlines are kept by one :class:`~samsar_async._deadlines.Deadlines`
    timer per pool rather than by one aiohttp timer per request (see :meth:`post`).

    With a proxy, ``headers`` are sent with each request rather than set as
    the session's defaults: aiohttp adds a session's default headers to the
    ``CONNECT`` request it sends the proxy, and turns an ``Authorization``
    among them into ``Proxy-Authorization``: the API key would go to the proxy.
    """

    headers: Mapping[str, str] = attrs.field(repr=False)
    max_connections: int
    max_response_bytes: int
    trace_configs: tuple[aiohttp.TraceConfig, ...] = attrs.field(default=(), repr=False)
    connector: ConnectorOption | None = attrs.field(default=None, repr=False)
    http_session: aiohttp.ClientSession | None = attrs.field(default=None, repr=False)
    proxy: str | None = attrs.field(default=None, repr=False)  # may hold the proxy's password
    attempt_timeout: aiohttp.ClientTimeout | None = attrs.field(default=None, repr=False)
    _session: aiohttp.ClientSession | None = attrs.field(default=None, init=False)
    closed: bool = attrs.field(default=False, init=False, on_setattr=attrs.setters.frozen)
    """Whether :meth:`close` was called (read-only; a plain attribute: read on every
    call's path)."""
    # The loop that opened the session, and an async generator parked on that loop:
    # the loop's shutdown_asyncgens() (asyncio.run's exit) finalizes it, closing the pool there.
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False, repr=False)
    # The per-call check that the pool's loop is the caller's: the thread it runs on, and
    # its is_running(). (asyncio.get_running_loop() makes a getpid() system call on 3.11.)
    _thread: int = attrs.field(default=0, init=False, repr=False)
    _loop_running: Callable[[], bool] = attrs.field(default=_no_loop, init=False, repr=False)
    _watch: AsyncGenerator[None, None] | None = attrs.field(default=None, init=False, repr=False)
    # Calls sleeping between attempts (see sleep()): woken by close().
    _sleepers: set[asyncio.Future[None]] = attrs.field(factory=set, init=False, repr=False)
    # Per-request keyword arguments (proxy, ...), or None when there are none.
    _extra: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)
    # Whether ``headers`` go with each request (not as the session's defaults).
    _per_request: bool = attrs.field(default=False, init=False, repr=False)
    # The client's own FIFO for pooled connections (see _Slots), or None when the pool
    # is not the client's own.
    _slots: _Slots | None = attrs.field(default=None, init=False, repr=False)
    # The attempts sent with ``attempt_timeout`` (see post()), on the pool's loop.
    _deadlines: Deadlines | None = attrs.field(default=None, init=False, repr=False)
    # ``attempt_timeout`` without its total: aiohttp then arms no timer of its own.
    _untimed: aiohttp.ClientTimeout | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        extra: dict[str, Any] = {}
        if self.proxy is not None:
            url = URL(self.proxy)
            auth = aiohttp.BasicAuth.from_url(url)
            extra["proxy"] = url.with_user(None) if auth is not None else url
            if auth is not None:
                extra["proxy_headers"] = {"Proxy-Authorization": auth.encode()}
        if self.http_session is not None:
            extra["raise_for_status"] = False
        self._extra = extra or None
        self._per_request = self.proxy is not None or self.http_session is not None
        shared = self.attempt_timeout
        if shared is not None and shared.total is not None:
            self._untimed = aiohttp.ClientTimeout(
                total=None,
                connect=shared.connect,
                sock_read=shared.sock_read,
                sock_connect=shared.sock_connect,
                ceil_threshold=shared.ceil_threshold,
            )

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The pooled session, once opened (for diagnostics and tests)."""
        return self._session

    def _open(self) -> aiohttp.ClientSession:
        """Open the pool on the running loop (first use, or the loop that had it is gone)."""
        if self.closed:
            raise ClientClosedError("this AsyncSamsar client is closed; create a new one")
        loop = asyncio.get_running_loop()
        old = self._session
        if old is not None and loop is self._loop:
            self._thread = threading.get_ident()  # the same loop, now run by another thread
            return old
        user = self.http_session
        if user is not None:  # the user's: never closed nor dropped here
            if user.closed:
                raise ClientClosedError(
                    "the aiohttp.ClientSession passed as http_session= is closed"
                )
            self._session = user
            self._loop = loop
            self._thread = threading.get_ident()
            self._loop_running = loop.is_running
            self._deadlines = self._new_deadlines(loop)
            logger.info("sending on the aiohttp.ClientSession passed as http_session=")
            return user
        if old is not None:
            old_loop = self._loop
            if old_loop is not None and old_loop is not loop and old_loop.is_running():
                raise UsageError(
                    "this client is in use on another event loop that is still running; "
                    "create one client per event loop, or use samsar_async.Samsar from threads"
                )
            # The loop that opened the pool is closed or stopped: nothing can be awaited
            # on it. Drop the pool (what can be closed without that loop is closed).
            self._session = None
            _abandon(old, close_connector=not isinstance(self.connector, aiohttp.BaseConnector))
        self._finish_watch()
        # anyio loads its event-loop backend on first use (~15 ms of imports): let
        # that happen here, once, when the pool opens, rather than in the middle
        # of a later retry sleep, batch or image save.
        anyio.get_cancelled_exc_class()
        given = self.connector
        connector: aiohttp.BaseConnector
        if given is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                enable_cleanup_closed=False,
            )
        elif isinstance(given, aiohttp.BaseConnector):
            connector = given
        else:
            connector = given()
            if not isinstance(connector, aiohttp.BaseConnector):
                raise TypeError(
                    f"connector= returned {type(connector).__name__}, not an aiohttp.BaseConnector"
                )
        session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=not isinstance(given, aiohttp.BaseConnector),
            headers=None if self._per_request else dict(self.headers),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            trust_env=False,
            raise_for_status=False,
            trace_configs=list(self.trace_configs) or None,
        )
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "opened the connection pool (%s%s)",
                "your connector" if given is not None else f"{self.max_connections} connections",
                "" if self.proxy is None else f", proxy {URL(self.proxy).host}",  # no password
            )
        self._session = session
        self._loop = loop
        self._thread = threading.get_ident()
        self._loop_running = loop.is_running
        # The client's own pool, whose limit it knows: beyond _CONNECTOR_QUEUE calls
        # waiting in aiohttp's connector, calls wait for a connection in the client's
        # queue (a future each) rather than in aiohttp's (a whole request each).
        # Not with a connector of the user's (its limit is theirs) nor with trace configs
        # (their connection-queued signals come from aiohttp's queue).
        own_queue = given is None and not self.trace_configs
        self._slots = _Slots(loop, self.max_connections + _CONNECTOR_QUEUE) if own_queue else None
        self._deadlines = self._new_deadlines(loop)
        watch = self._watch = self._watch_loop(session)
        with contextlib.suppress(StopIteration):
            # Start it on this loop: asyncio registers it for shutdown_asyncgens().
            watch.asend(None).send(None)
        return session

    def _new_deadlines(self, loop: asyncio.AbstractEventLoop) -> Deadlines | None:
        old, self._deadlines = self._deadlines, None
        if old is not None and old.loop is loop:
            old.close()
        shared = self.attempt_timeout
        if shared is None or shared.total is None:
            return None
        return Deadlines(loop, shared.total)

    async def _watch_loop(self, session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
        """Parked on the pool's loop; finalized by the loop's ``shutdown_asyncgens()``
        (``asyncio.run()``, ``asyncio.Runner``, ``anyio.run()`` do it before closing the
        loop), it closes the pool on that loop, so the next loop can open a fresh one."""
        try:
            yield
        finally:
            if self._session is session:
                self._session = None
                self._loop = None
                self._watch = None
                await session.close()

    def _finish_watch(self) -> None:
        # Ends the parked generator at once: its session is no longer current, so its
        # ``finally`` does not await. (Left alone, the garbage collector would hand it
        # to its loop, which may be closed.)
        watch, self._watch = self._watch, None
        if watch is not None:
            closer = watch.aclose()
            try:
                closer.send(None)
            except (StopIteration, RuntimeError):
                pass
            finally:
                closer.close()

    async def close(self) -> None:
        """Close the session and its connections. Safe to call more than once.

        Calls still using it end with :class:`ClientClosedError`. Called from
        another loop than the one that opened the pool: closed on that loop if
        it still runs, dropped without awaiting if it has stopped. A session or
        a connector the user passed in is left open.
        """
        object.__setattr__(self, "closed", True)  # (read-only for everyone else)
        for sleeper in self._sleepers:
            with contextlib.suppress(RuntimeError):  # (its loop is closed)
                sleeper.get_loop().call_soon_threadsafe(_wake, sleeper)
        slots, self._slots = self._slots, None
        if slots is not None and slots.waiters:
            with contextlib.suppress(RuntimeError):  # (its loop is closed)
                slots.loop.call_soon_threadsafe(slots.close)
        deadlines, self._deadlines = self._deadlines, None
        if deadlines is not None and deadlines.timer is not None:
            if deadlines.loop is asyncio.get_running_loop():
                deadlines.close()
            else:
                with contextlib.suppress(RuntimeError):  # (its loop is closed)
                    deadlines.loop.call_soon_threadsafe(deadlines.close)
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        self._finish_watch()
        if session is None or session.closed or session is self.http_session:
            return
        if loop is None or loop is asyncio.get_running_loop():
            await session.close()
            logger.info("closed the connection pool")
        elif loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(session.close(), loop))
        else:
            _abandon(session, close_connector=not isinstance(self.connector, aiohttp.BaseConnector))

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` between two attempts of a call; :meth:`close` ends the wait
        early with :class:`ClientClosedError` (``sent=False``: the caller knows better)."""
        if not self.closed:
            loop = asyncio.get_running_loop()
            waker: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(max(seconds, 0.0), _wake, waker)
            self._sleepers.add(waker)
            try:
                await waker
            finally:
                timer.cancel()
                self._sleepers.discard(waker)
        if self.closed:
            raise ClientClosedError(
                "the client was closed while this call waited to retry", sent=False
            )

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - per-attempt limits, passed on
        idempotency_key: str | None,
        images: bool = False,
    ) -> RawResponse:
        """POST ``body`` (JSON bytes) to ``url`` and read the whole answer.

        ``images``: the request asks for images; a 2xx JSON answer is then read
        in bounded chunks and its base64 images decoded as they arrive, the
        event loop running other work in between (an :class:`ImageAnswer`).

        A ``timeout`` that is :attr:`attempt_timeout` has its total kept by the
        pool's :class:`~samsar_async._deadlines.Deadlines` (one timer for all of
        them) instead of an aiohttp timer per request; the outcome is the same.

        Raises only :mod:`samsar_async.errors` exceptions (and cancellation).
        """
        session = self._session
        if session is None or self._thread != get_ident() or not self._loop_running():
            session = self._open()
        slots = self._slots
        if slots is not None:
            if slots.free > 0 and not slots.waiters:
                slots.free -= 1
            else:
                timeout = await _wait_for_slot(slots, timeout, url, idempotency_key)
                if self._session is not session:  # closed (or reopened) while it waited
                    slots.release()
                    raise _closed_while_waiting()
        deadlines = self._deadlines
        task = None
        if timeout is self.attempt_timeout and deadlines is not None:
            task = _current_task(deadlines.loop)
            if task is not None:
                deadlines.add(task)
                timeout = self._untimed  # type: ignore[assignment]
        extra = self._extra
        try:
            if extra is None:
                request = session.post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                )
            else:
                if self._per_request:  # never the session's defaults: see the class docstring
                    headers = {**self.headers, **headers} if headers else self.headers
                request = session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    **extra,
                )
            async with request as resp:
                if images and 200 <= resp.status < 300 and "json" in resp.content_type:
                    return await self._read_image_answer(resp, idempotency_key)
                answer = resp.headers
                length = answer.get(_CONTENT_LENGTH)
                if (
                    length is not None
                    and length.isdecimal()
                    and int(length) <= self.max_response_bytes
                    and answer.get(_CONTENT_ENCODING, "identity") == "identity"
                ):
                    # The length on the wire is the length read: safe to read whole.
                    data = await resp.read()
                else:
                    data = await self._read_capped(resp, idempotency_key)
                return RawResponse(resp.status, answer, data)
        except asyncio.CancelledError:
            if task is not None and deadlines.timed_out(task):  # type: ignore[union-attr]
                raise _read_timeout(url, idempotency_key) from asyncio.TimeoutError(
                    "the attempt's deadline passed"
                )
            # aiohttp's connector cancels the calls waiting for a pooled connection when
            # the pool closes; a caller's own cancellation always goes on.
            if self.closed and not _cancelled_by_caller():
                raise ClientClosedError(
                    "the client was closed while this call waited for a connection; "
                    "nothing was sent",
                    sent=False,
                ) from None
            raise
        except aiohttp.ClientHttpProxyError as exc:
            raise APIConnectionError(
                f"the proxy refused the tunnel to {_host(url)} (status {exc.status}); "
                "nothing was sent",
                sent=False,
                idempotency_key=idempotency_key,
            ) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise APIConnectTimeoutError(
                f"timed out getting a connection to {_host(url)}: nothing was sent",
                idempotency_key=idempotency_key,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(
                f"could not connect to {_host(url)}: {_describe(exc.os_error)}; nothing was sent",
                sent=False,
                idempotency_key=idempotency_key,
            ) from exc
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
            raise _read_timeout(url, idempotency_key) from exc
        except (aiohttp.ClientError, OSError, socket.gaierror) as exc:
            if self.closed:
                raise _closed_during(exc) from exc
            if _body_unsent(exc):
                raise APIConnectionError(
                    f"the connection to {_host(url)} closed before the request was written "
                    f"({_describe(exc)}); nothing was sent",
                    sent=False,
                    idempotency_key=idempotency_key,
                ) from exc
            raise OutcomeUnknownError(
                f"the connection to {_host(url)} failed after the request was sent "
                f"({_describe(exc)}); it may have been charged",
                idempotency_key=idempotency_key,
            ) from exc
        finally:
            if task is not None:
                deadlines.remove(task)  # type: ignore[union-attr]
            if slots is not None and slots is self._slots:
                slots.release()

    async def probe(self, url: str, *, within: float) -> bool:
        """Whether the server at ``url`` answers: a ``GET`` that costs nothing.

        ``True`` for any HTTP answer but 502, 503 and 504 (a gateway saying the
        server behind it is down); ``False`` when no answer comes within
        ``within`` seconds or the connection fails. The body is discarded.
        """
        session = self._session
        if session is None or self._thread != get_ident() or not self._loop_running():
            session = self._open()
        try:
            async with session.get(
                url,
                headers=self.headers if self._per_request else None,
                timeout=aiohttp.ClientTimeout(total=within, ceil_threshold=_NO_CEIL),
                allow_redirects=False,
                **(self._extra or {}),  # through the proxy, if any, as every request
            ) as resp:
                resp.release()
                return resp.status not in (502, 503, 504)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return False

    async def _read_image_answer(
        self, resp: aiohttp.ClientResponse, key: str | None
    ) -> ImageAnswer:
        """Read an image answer chunk by chunk into an ImageBodyReader (same cap, same
        errors as :meth:`_read_capped`); whatever it decoded is dropped on any failure."""
        from ._imagebody import ImageBodyReader

        cap = self.max_response_bytes
        _refuse_declared_oversize(resp, cap, key)
        turns = _loop_turns()
        reader = ImageBodyReader(max_bytes=cap, status_code=resp.status, idempotency_key=key)
        read = resp.content.read
        try:
            while True:
                # read() returns at once while aiohttp has data buffered: without
                # take(), a body that is all there would be decoded in one loop step.
                await turns.take()
                chunk = await read(_IMAGE_CHUNK)
                if not chunk:
                    break
                reader.feed(chunk)
            body = reader.finish()
        except APIResponseValidationError:
            resp.close()  # over the cap or not JSON: the rest is not read
            raise
        finally:
            reader.close()  # after finish(), the images are the caller's: nothing to do
        return ImageAnswer(resp.status, resp.headers, body.remainder, body.images)

    async def _read_capped(self, resp: aiohttp.ClientResponse, key: str | None) -> bytes:
        cap = self.max_response_bytes
        _refuse_declared_oversize(resp, cap, key)
        chunks: list[bytes] = []
        total = 0
        while chunk := await resp.content.read(_READ_CHUNK):
            total += len(chunk)
            if total > cap:
                resp.close()
                raise APIResponseValidationError(
                    f"the {resp.status} answer is over the {cap}-byte limit",
                    status_code=resp.status,
                    idempotency_key=key,
                )
            chunks.append(chunk)
        return b"".join(chunks)


if sys.version_info >= (3, 11):

    def _cancelled_by_caller() -> bool:
        """Whether the current task has a cancellation requested by someone (its caller,
        a timeout, a task group): ``Task.cancelling()``; aiohttp cancels only a future."""
        task = asyncio.current_task()
        return task is None or task.cancelling() > 0

else:  # pragma: no cover - Python 3.10

    def _cancelled_by_caller() -> bool:
        """Python 3.10 cannot tell a task's cancellation from a cancelled future; this is
        asked only while the client is closing, when the connector cancels its waiters
        (a caller cancelling in that same instant gets ClientClosedError)."""
        return False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _refuse_declared_oversize(resp: aiohttp.ClientResponse, cap: int, key: str | None) -> None:
    """Raise before reading when an unencoded answer's Content-Length is over ``cap``."""
    length = resp.content_length
    encoded = resp.headers.get(_CONTENT_ENCODING, "identity") != "identity"
    if length is not None and length > cap and not encoded:
        resp.close()
        raise APIResponseValidationError(
            f"the {resp.status} answer is {length} bytes, over the {cap}-byte limit",
            status_code=resp.status,
            idempotency_key=key,
        )


_CONNECTOR_QUEUE = 4096
"""Calls beyond the pool's connections that wait in aiohttp's connector before the
client's own queue takes the rest (see :class:`_Slots`)."""


class _Slots:
    """The client's own queue for the connections of its pool (it knows their number).

    ``size`` slots: the pool's connections plus :data:`_CONNECTOR_QUEUE` calls
    waiting in aiohttp's connector. Beyond those, a call waits in this line holding
    a future, rather than in aiohttp's connector holding its whole prepared request
    and a timer (about 5 KiB per queued call). A finishing call hands its slot
    straight to the oldest waiting one. One timer, armed for the earliest deadline
    in line, expires the calls that waited as long as their timeout allows.

    Why not every waiting call here: a call woken from this line builds its aiohttp
    request only then, so a burst of answers frees a burst of objects before the
    woken calls allocate theirs; CPython's garbage collector counts allocations
    since its last pass (frees only down to zero) and runs 4-10 times as often
    (measured, callgrind over 4,000 calls: at 1,024 calls on 100 connections,
    588,595 instructions per call with every waiting call here, 651,253 with 256
    in the connector and the rest here, 564,635 with all of them in the
    connector; at 256 calls 548,577 here against 537,421 in the connector).
    So the connector keeps the queues of ordinary loads, and this line the
    deep ones, where memory matters (at 10,000 calls on 100 connections: 5.4 KiB
    per call against 7.4 for raw aiohttp).
    """

    __slots__ = ("deadlines", "free", "loop", "ordered", "timer", "timer_at", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.free = size
        # In line, oldest first: a future each (True: granted, False: timed out,
        # None: the client closed) and its deadline (loop time).
        self.waiters: collections.deque[asyncio.Future[bool | None]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        # Whether the deadlines in line never decrease (every call waits as long: the
        # usual case); then the line's front holds the soonest deadline.
        self.ordered = True
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = _NEVER

    def release(self) -> None:
        """A call is done with its connection: the oldest waiting call gets it."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            self.deadlines.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1

    def add(self, waiter: asyncio.Future[bool | None], deadline: float) -> None:
        """Put ``waiter`` in line until ``deadline`` (loop time; ``_NEVER`` for none)."""
        if not self.waiters:
            self.ordered = True
        elif deadline < self.deadlines[-1]:
            self.ordered = False
        self.waiters.append(waiter)
        self.deadlines.append(deadline)
        if deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = self.loop.call_at(deadline, self.expire)

    def expire(self) -> None:
        """Time out the calls whose deadline passed; arm the timer for the next one.

        The line's front is taken off as it expires (or was cancelled), so that
        when the deadlines are in order each expiry costs only the calls it ends;
        out of order, the rest of the line is scanned.
        """
        self.timer = None
        self.timer_at = soonest = _NEVER
        now = self.loop.time()
        waiters, deadlines = self.waiters, self.deadlines
        while waiters and (waiters[0].done() or deadlines[0] <= now):
            waiter = waiters.popleft()
            deadlines.popleft()
            if not waiter.done():
                waiter.set_result(False)
        if not waiters:
            return
        if self.ordered:
            soonest = deadlines[0]
        else:
            for waiter, deadline in zip(waiters, deadlines, strict=True):
                if waiter.done():
                    continue
                if deadline <= now:
                    waiter.set_result(False)
                elif deadline < soonest:
                    soonest = deadline
        if soonest < _NEVER:
            self.timer_at = soonest
            self.timer = self.loop.call_at(soonest, self.expire)

    def close(self) -> None:
        """The client closed: every call in line ends (``ClientClosedError``)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiters:
            waiter = self.waiters.popleft()
            self.deadlines.popleft()
            if not waiter.done():
                waiter.set_result(None)


_NEVER = float("inf")


async def _wait_for_slot(
    slots: _Slots,
    timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - the attempt's, passed on
    url: str,
    key: str | None,
) -> aiohttp.ClientTimeout:
    """Wait in ``slots``' line for a connection; the attempt's timeout, less the wait.

    ``timeout.connect`` bounds the wait as aiohttp's own does: running out of it
    is *not sent*. The wait counts against the attempt's ``total`` (as a wait
    in aiohttp's connector did), to within 1% of it.
    """
    loop = slots.loop
    waiter: asyncio.Future[bool | None] = loop.create_future()
    pool = timeout.connect
    started = loop.time()
    slots.add(waiter, _NEVER if pool is None else started + pool)
    try:
        granted = await waiter
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled() and waiter.result():
            slots.release()  # granted just as the call was cancelled: pass it on
        raise
    if granted is None:
        raise _closed_while_waiting()
    if not granted:
        raise APIConnectTimeoutError(
            f"timed out getting a connection to {_host(url)}: nothing was sent",
            idempotency_key=key,
        )
    waited = loop.time() - started
    total = timeout.total
    budget = total if total is not None else pool
    if budget is None or waited * 100 <= budget:
        return timeout  # (a wait under 1% of the budget: the cached timeout stands)
    return aiohttp.ClientTimeout(
        total=None if total is None else max(total - waited, 0.001),
        connect=None if pool is None else max(pool - waited, 0.001),
        sock_read=timeout.sock_read,
        sock_connect=timeout.sock_connect,
        ceil_threshold=timeout.ceil_threshold,
    )


def _read_timeout(url: str, key: str | None) -> APIReadTimeoutError:
    return APIReadTimeoutError(
        f"timed out waiting for the answer from {_host(url)}; the request was sent "
        "and may have been charged",
        idempotency_key=key,
    )


_CONTENT_LENGTH = aiohttp.hdrs.CONTENT_LENGTH
_CONTENT_ENCODING = aiohttp.hdrs.CONTENT_ENCODING
"""(Case-insensitive names that carry their folded form: no folding per lookup.)"""

_current_task = asyncio.current_task
"""(Given the loop it does not look up the running one: no ``getpid()`` call on 3.11.)"""


def _closed_while_waiting() -> ClientClosedError:
    return ClientClosedError(
        "the client was closed while this call waited for a connection; nothing was sent",
        sent=False,
    )


def _closed_during(exc: BaseException) -> ClientClosedError:
    """The error of a call whose connection the closing pool took from under it."""
    if _body_unsent(exc) or isinstance(exc, aiohttp.ClientConnectorError):
        return ClientClosedError(
            "the client was closed before this request was sent; nothing was sent", sent=False
        )
    return ClientClosedError(
        "the client was closed while this request was in flight; "
        "it may have reached the server and been charged",
        sent=True,
    )


def _abandon(session: aiohttp.ClientSession, *, close_connector: bool = True) -> None:
    """Drop a session whose loop has stopped, without awaiting on that loop.

    The session is detached (it counts as closed) and its connector closed as far
    as can be done synchronously (unless ``close_connector`` is false: the
    user's): on a closed loop aiohttp leaves the sockets to the garbage
    collector; on a stopped one their closing waits for that loop.
    """
    connector = session.connector
    session.detach()
    if connector is None or not close_connector:
        return
    try:
        waiter = connector.close()
    except RuntimeError:
        return
    # Not awaited (it belongs to the other loop): mark it consumed and drop it.
    steps = waiter.__await__()
    try:
        steps.send(None)
    except (StopIteration, RuntimeError):
        pass
    finally:
        steps.close()


_UNSENT_MESSAGES = ("Can not write request body", "Failed to send bytes into the underlying")


def _body_unsent(exc: BaseException) -> bool:
    """Whether aiohttp failed to write the request: the connection (typically a pooled
    keep-alive one the server had closed) was gone before the body went out. A server
    never processes a request whose body it did not receive, so nothing was sent."""
    if not isinstance(exc, aiohttp.ClientConnectionError):
        return False
    text = str(exc)
    return any(message in text for message in _UNSENT_MESSAGES)


def _host(url: str) -> str:
    # scheme://host[:port]/... -> host[:port]; URLs never carry credentials here.
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


@functools.lru_cache(maxsize=64)
def client_timeout(*, connect: float | None, attempt: float | None) -> aiohttp.ClientTimeout:
    """The aiohttp timeout of one attempt.

    ``attempt`` bounds the whole attempt (waiting for a connection, sending,
    and reading the answer to its last byte): one timer, as raw aiohttp's
    default. ``connect`` bounds opening a new socket. The wait for a pooled
    connection ends a quarter (at most 1 s) before ``attempt``, so that running out of time
    while still waiting is reported as *not sent* (``ConnectionTimeoutError``)
    rather than as a read timeout; aiohttp arms that timer only when no
    pooled connection is free.
    """
    pool = None if attempt is None else attempt - min(1.0, attempt * 0.25)
    return aiohttp.ClientTimeout(
        total=attempt, connect=pool, sock_connect=connect, ceil_threshold=_NO_CEIL
    )


_NO_CEIL = 1e12  # keep deadlines exact: never round them up to whole seconds
