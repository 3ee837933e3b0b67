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
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import TYPE_CHECKING

import aiohttp
import anyio
import attrs
from multidict import CIMultiDictProxy

from .errors import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIReadTimeoutError,
    APIResponseValidationError,
    ClientClosedError,
    OutcomeUnknownError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RawResponse", "Transport"]

_READ_CHUNK = 256 * 1024


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
    """

    headers: Mapping[str, str] = attrs.field(repr=False)
    max_connections: int
    max_response_bytes: int
    _session: aiohttp.ClientSession | None = attrs.field(default=None, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The pooled session, once opened (for diagnostics and tests)."""
        return self._session

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this AsyncSamsar client is closed; create a new one")
        # anyio loads its event-loop backend on first use (~15 ms of imports): let
        # that happen here, once, when the pool opens, rather than in the middle
        # of a later retry sleep, batch or image save.
        anyio.get_cancelled_exc_class()
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers=dict(self.headers),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            trust_env=False,
            raise_for_status=False,
        )
        self._session = session
        return session

    async def close(self) -> None:
        """Close the session and its connections. Safe to call more than once."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - per-attempt limits, passed on
        idempotency_key: str | None,
    ) -> RawResponse:
        """POST ``body`` (JSON bytes) to ``url`` and read the whole answer.

        Raises only :mod:`samsar_async.errors` exceptions (and cancellation).
        """
        session = self._session
        if session is None or session.closed:
            session = self._open()
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                length = resp.content_length
                if (
                    length is not None
                    and length <= self.max_response_bytes
                    and resp.headers.get("Content-Encoding", "identity") == "identity"
                ):
                    # The length on the wire is the length read: safe to read whole.
                    data = await resp.read()
                else:
                    data = await self._read_capped(resp, idempotency_key)
                return RawResponse(resp.status, resp.headers, data)
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
            raise APIReadTimeoutError(
                f"timed out waiting for the answer from {_host(url)}; the request was sent "
                "and may have been charged",
                idempotency_key=idempotency_key,
            ) from exc
        except (aiohttp.ClientError, OSError, socket.gaierror) as exc:
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

    async def probe(self, url: str, *, within: float) -> bool:
        """Whether the server at ``url`` answers: a ``GET`` that costs nothing.

        ``True`` for any HTTP answer but 502, 503 and 504 (a gateway saying the
        server behind it is down); ``False`` when no answer comes within
        ``within`` seconds or the connection fails. The body is discarded.
        """
        session = self._session
        if session is None or session.closed:
            session = self._open()
        try:
            async with session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=within, ceil_threshold=_NO_CEIL),
                allow_redirects=False,
            ) as resp:
                resp.release()
                return resp.status not in (502, 503, 504)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return False

    async def _read_capped(self, resp: aiohttp.ClientResponse, key: str | None) -> bytes:
        cap = self.max_response_bytes
        length = resp.content_length
        encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
        if length is not None and length > cap and not encoded:
            resp.close()
            raise APIResponseValidationError(
                f"the {resp.status} answer is {length} bytes, over the {cap}-byte limit",
                status_code=resp.status,
                idempotency_key=key,
            )
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
