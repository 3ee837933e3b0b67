"""``AsyncSamsar``: the client. One pooled aiohttp session, retries, and the API resources.

::

    async with AsyncSamsar() as client:     # SAMSAR_API_KEY, SAMSAR_BASE_URL
        resp = await client.assistant.complete("67df0d8ebc4f9d0b7f4fd123", "Write a caption")

The client has three states (:class:`~samsar_async.config.ClientState`):
*unopened* (constructed; nothing allocated), *open* (the aiohttp session
exists: created lazily, inside the running loop, on first use) and *closed*
(after :meth:`AsyncSamsar.close` or ``async with``; any further call raises
:class:`~samsar_async.errors.ClientClosedError`). A client may be created
outside a running loop and used from many tasks.
"""

from __future__ import annotations

import functools
from types import TracebackType

from ._base_client import BaseClient
from .assistant import Assistant

__all__ = ["AsyncSamsar"]


class AsyncSamsar(BaseClient):
    """Async client of the Samsar Assistant API.

    Args:
        api_key: the Bearer key; defaults to ``$SAMSAR_API_KEY``. Never shown in
            a repr, an exception or a log line.
        base_url: defaults to ``$SAMSAR_BASE_URL`` or ``https://api.samsar.one/v1``
            (the documented alias ``https://api.samsar.one/api/v1`` works too).
        timeout: a :class:`~samsar_async.config.Timeout`, a number (the total
            deadline of a call, retries included) or ``None`` (no limits).
        max_connections: cap on concurrent HTTP connections (keep-alive pooled).
        default_headers: extra headers sent with every request.
        retry: the :class:`~samsar_async.config.RetryPolicy` of every call;
            ``None`` turns retries off.
        retry_budget: the client-wide :class:`~samsar_async.retry.RetryBudget`;
            ``None`` turns it off.
        idempotency_keys: send one ``Idempotency-Key`` per logical call, repeated
            by its retries (default). Without keys, failures whose outcome is
            unknown are not retried.
        serialize_sessions: run completions on the same ``session_id`` one at a
            time, in call order (default).
        max_response_bytes: the largest answer read (64 MiB by default).
        allow_insecure_http: allow a plain ``http://`` base URL to a non-loopback host.
        outage_backoff: while the server is down for every call, calls wait for
            it (bounded by their deadlines) instead of spending their attempts,
            and one probe at a time checks it; on by default. See
            :attr:`outage_gate`.
        adaptive_concurrency: cap the calls in flight with a limit that falls on
            429s / ``Retry-After`` and grows back (CUBIC); off by default. See
            :attr:`concurrency_limit`.
        event_hooks: :class:`~samsar_async.hooks.EventHooks` called around
            each attempt (see :mod:`samsar_async.hooks`).
        trace_configs: ``aiohttp.TraceConfig`` objects for the client's own session.
        connector: an ``aiohttp.BaseConnector`` you own (never closed by the
            client), or a function returning one, called inside the loop when
            the pool opens (the client closes what it returns).
        http_session: an ``aiohttp.ClientSession`` you own: the client sends on
            it and never closes it.
        trust_env: use the environment's ``HTTPS_PROXY`` (and ``NO_PROXY``),
            read once, here.
        proxy: an HTTP proxy URL for every request (``https://`` base URLs are
            tunnelled: the proxy never sees the API key).

    All arguments but ``api_key`` are keyword-only. :meth:`with_options` makes a
    variant sharing the connection pool.
    """

    @functools.cached_property
    def assistant(self) -> Assistant:
        """The Assistant API: ``complete``, ``stream``, ``complete_many``, ``conversation``, ..."""
        return Assistant(self)

    async def __aenter__(self) -> AsyncSamsar:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
