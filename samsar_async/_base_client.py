"""``BaseClient``: configuration, the pooled transport, and one logical call with retries.

The resources (``client.assistant``, conversations, batches) hold a
:class:`BaseClient` and call its :meth:`~BaseClient._post`;
:class:`~samsar_async.client.AsyncSamsar`, which composes them, is a
``BaseClient`` that nobody below it imports.

A client has three states (:class:`~samsar_async.config.ClientState`):
*unopened* (constructed; nothing allocated), *open* (the connection pool
exists: created lazily, inside the running loop, on first use) and *closed*
(after ``close()`` or ``async with``; any further call raises
:class:`~samsar_async.errors.ClientClosedError`).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import os
import platform
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from multidict import istr

from . import _json
from ._flow import AdaptiveLimiter, OutageGate, Ticket, run_attempt
from ._observe import CallObserver, HookObserver, Observers, Trace
from ._turns import TurnQueues
from ._validators import require_int
from ._version import __version__
from ._wire_checks import check_header, check_headers, json_error
from .config import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMEOUT,
    UNSET,
    ClientState,
    RetryPolicy,
    Timeout,
    Unset,
)
from .converter import Answer, status_error
from .errors import (
    APIConnectTimeoutError,
    APIError,
    APIStatusError,
    ClientClosedError,
    InvalidArgumentError,
)
from .retry import RetryBudget, retry_failed_call
from .transport import ConnectorOption, Transport, client_timeout

if TYPE_CHECKING:
    import aiohttp
    from typing_extensions import Self

    from .hooks import EventHooks  # imported where an EventHooks is checked (rarely)

__all__ = ["BaseClient"]

logger = logging.getLogger("samsar_async")

T = TypeVar("T")

_USER_AGENT = f"samsar-async/{__version__} python/{platform.python_version()}"


class _Keys:
    """Idempotency keys: ``samsar-<24 random hex digits>-<counter>``.

    The random part (96 bits from :func:`secrets.token_hex`) is drawn once per
    process, and again in a forked child, so keys are unique across processes
    and machines; the counter makes them unique within one. A key costs no
    system call and no formatting beyond ``str(int)`` (it is on every call's path).
    """

    prefix = ""
    keys: Iterator[str] = iter(())
    """``prefix + "1"``, ``prefix + "2"``, ...: one C-level ``next()`` per key."""

    @classmethod
    def reseed(cls) -> None:
        cls.prefix = prefix = f"samsar-{secrets.token_hex(12)}-"
        cls.keys = map(prefix.__add__, map(str, itertools.count(1)))


_Keys.reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Keys.reseed)


def _new_key() -> str:
    return next(_Keys.keys)


def _first_attempt_timeout(t: Timeout) -> aiohttp.ClientTimeout:
    """The aiohttp timeout of a call's first attempt (the whole deadline is still left)."""
    limit = t.read
    if t.total is not None and (limit is None or t.total < limit):
        limit = t.total
    return client_timeout(connect=t.connect, attempt=None if limit is None else max(limit, 0.001))


def _timeout_left(t: Timeout, deadline: float | None) -> aiohttp.ClientTimeout:
    """The aiohttp timeout of an attempt starting now, with ``deadline`` (monotonic) to keep."""
    limit = t.read
    if deadline is not None:
        left = deadline - time.monotonic()
        # Rounded so that equal budgets share one cached ClientTimeout (never 0: no limit).
        limit = max(round(left if limit is None or left < limit else limit, 3), 0.001)
    return client_timeout(connect=t.connect, attempt=limit)


def _check_api_key(api_key: str | None) -> str:
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    if api_key is not None and not isinstance(api_key, str):
        raise InvalidArgumentError("api_key", "must be a string")
    if api_key is None or not api_key.strip():
        raise InvalidArgumentError(
            "api_key", f"no API key: pass api_key= or set the {API_KEY_ENV} environment variable"
        )
    if any(c in api_key for c in "\r\n\0") or api_key != api_key.strip():
        raise InvalidArgumentError(
            "api_key", "contains whitespace or control characters (a copy-paste error?)"
        )
    check_header("Authorization", api_key, "api_key")  # the message never shows the key
    return api_key


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(base_url: str | None, allow_insecure_http: bool) -> str:
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not isinstance(base_url, str):
        raise InvalidArgumentError("base_url", "must be a string")
    if not base_url.isprintable() or " " in base_url:
        raise InvalidArgumentError("base_url", "contains whitespace or control characters")
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidArgumentError("base_url", f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            "base_url", f"{base_url!r} is not an http:// or https:// URL with a host"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidArgumentError(
            "base_url", "must not carry credentials; pass the API key as api_key="
        )
    if parts.query or parts.fragment:
        raise InvalidArgumentError("base_url", "must not have a query or fragment")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise InvalidArgumentError(
            "base_url",
            f"plain http:// to {parts.hostname} would send the API key unencrypted; "
            "use https:// or pass allow_insecure_http=True",
        )
    return base_url.rstrip("/")


_IDEMPOTENCY_KEY = istr("Idempotency-Key")

_PER_CALL_HEADERS = {
    "authorization": "the API key is sent for you: pass it as api_key=",
    "idempotency-key": "keys are per call: pass idempotency_key= to the call",
}


def _check_default_headers(field: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` checked as RFC 9110 fields (:func:`check_headers`), and none of
    the headers the client sets itself (``Authorization``, ``Idempotency-Key``)."""
    if headers is None:
        return {}
    checked = dict(check_headers(headers, field))
    for name in checked:
        reason = _PER_CALL_HEADERS.get(name.lower())
        if reason is not None:
            raise InvalidArgumentError(f"{field}[{name!r}]", reason)
    return checked


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(field, f"must be True or False, not {type(value).__name__}")
    return value


def _check_event_hooks(value: object) -> EventHooks | None:
    if value is None:
        return None
    from .hooks import EventHooks  # loaded already when value is one

    if isinstance(value, EventHooks):
        return value or None
    raise InvalidArgumentError(
        "event_hooks", f"must be an EventHooks or None, not {type(value).__name__}"
    )


def _check_trace_configs(value: object) -> tuple[aiohttp.TraceConfig, ...]:
    if value is None:
        return ()
    import aiohttp

    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidArgumentError("trace_configs", "must be a list of aiohttp.TraceConfig")
    for i, config in enumerate(value):
        if not isinstance(config, aiohttp.TraceConfig):
            raise InvalidArgumentError(
                f"trace_configs[{i}]",
                f"must be an aiohttp.TraceConfig, not {type(config).__name__}",
            )
    return tuple(value)


def _check_proxy(proxy: str | None, base_url: str, allow_insecure_http: bool) -> str | None:
    """The proxy URL: ``http://`` or ``https://``, with a host (credentials allowed)."""
    if proxy is None:
        return None
    if not isinstance(proxy, str):
        raise InvalidArgumentError("proxy", f"must be a URL string, not {type(proxy).__name__}")
    parts = urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Never echo the value: it may carry the proxy's password.
        raise InvalidArgumentError("proxy", "must be an http:// or https:// URL with a host")
    if base_url.startswith("http://") and not allow_insecure_http:
        raise InvalidArgumentError(
            "proxy",
            "the base URL is plain http://: the proxy would see the API key; "
            "use https:// or pass allow_insecure_http=True",
        )
    return proxy


def _env_proxy(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (``HTTPS_PROXY`` or
    ``HTTP_PROXY`` by its scheme, unless ``NO_PROXY`` excludes its host), or ``None``.

    Never for a loopback host, nor for a plain ``http://`` base URL (a proxy
    would see the API key)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme != "https" or _is_loopback(host):
        return None
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    if urlsplit(proxy).scheme not in ("http", "https"):
        return None  # socks5:// and the like: aiohttp cannot use them
    return proxy


def _check_own_pool(
    connector: object, http_session: object, max_connections: int, configs: tuple[Any, ...]
) -> None:
    import aiohttp

    if connector is not None and http_session is not None:
        raise InvalidArgumentError("http_session", "pass connector= or http_session=, not both")
    if connector is not None and not (
        isinstance(connector, aiohttp.BaseConnector) or callable(connector)
    ):
        raise InvalidArgumentError(
            "connector",
            "must be an aiohttp.BaseConnector or a function returning one, "
            f"not {type(connector).__name__}",
        )
    if http_session is not None and not isinstance(http_session, aiohttp.ClientSession):
        raise InvalidArgumentError(
            "http_session", f"must be an aiohttp.ClientSession, not {type(http_session).__name__}"
        )
    if max_connections != DEFAULT_MAX_CONNECTIONS:
        raise InvalidArgumentError(
            "max_connections",
            "applies to the client's own connector: set limit= on the connector you pass",
        )
    if http_session is not None and configs:
        raise InvalidArgumentError(
            "trace_configs", "apply to the client's own session: set them on the one you pass"
        )


class BaseClient:
    """What every client shares: configuration, the pooled transport, and calls.

    Args:
        api_key: the Bearer key; defaults to ``$SAMSAR_API_KEY``. Never shown in
            a repr, an exception or a log line.
        base_url: defaults to ``$SAMSAR_BASE_URL`` or ``https://api.samsar.one/v1``
            (the documented alias ``https://api.samsar.one/api/v1`` works too).
        timeout: a :class:`~samsar_async.config.Timeout`, a number (the total
            deadline of a call, retries included) or ``None`` (no limits).
        max_connections: cap on concurrent HTTP connections (keep-alive pooled).
        default_headers: extra headers sent with every request (not
            ``Authorization`` nor ``Idempotency-Key``, which the client sets).
        retry: the :class:`~samsar_async.retry.RetryPolicy` of every call;
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
        outage_backoff: when connections fail (or gateways answer 502/503/504)
            for every call, calls wait for the server instead of spending their
            attempts, while one probe at a time checks it (a ``GET`` that costs
            nothing) at a growing interval; a call whose deadline passes first
            raises :class:`~samsar_async.errors.ServerUnreachableError`. On by
            default; see :attr:`outage_gate`.
        adaptive_concurrency: cap the calls in flight with a limit that falls on
            429s and ``Retry-After`` and grows back as calls succeed (CUBIC, as
            TCP and botocore's adaptive mode do); throttled retries then count
            against neither ``max_attempts`` nor the budget. Off by default;
            ``_post(adaptive=True)`` turns it on for one call.
            :attr:`concurrency_limit` is the current limit.
        event_hooks: :class:`~samsar_async.hooks.EventHooks` called around
            each attempt (see :mod:`samsar_async.hooks`).
        trace_configs: ``aiohttp.TraceConfig`` objects for the client's own
            ``aiohttp.ClientSession``.
        connector: an ``aiohttp.BaseConnector`` you made and own (the client
            never closes it; it must belong to the loop the client runs on), or
            a function of no arguments returning one, called when the pool
            opens, inside the running loop (the client then owns and closes
            it). ``max_connections`` is the connector's business then.
        http_session: an ``aiohttp.ClientSession`` you made and own: the client
            sends on it (its headers merged under the client's, its timeout
            and ``raise_for_status`` overridden per request) and never closes it.
        trust_env: use the proxy the environment names for the base URL
            (``HTTPS_PROXY``, excluded by ``NO_PROXY``), read once, here.
        proxy: the URL of an HTTP proxy for every request (``https://`` base
            URLs are tunnelled through it with ``CONNECT``: the proxy never
            sees the API key). Credentials in it are sent to the proxy only.
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
        connector: ConnectorOption | None = None,
        http_session: aiohttp.ClientSession | None = None,
        trust_env: bool = False,
        proxy: str | None = None,
    ) -> None:
        key = _check_api_key(api_key)
        self._base_url = _check_base_url(base_url, allow_insecure_http)
        self._urls: dict[str, str] = {}
        self._timeout = Timeout.of(timeout)
        self.retry: RetryPolicy = retry if retry is not None else RetryPolicy.disabled()
        """The default retry policy of every call."""
        self.retry_budget: RetryBudget | None = (
            RetryBudget() if isinstance(retry_budget, Unset) else retry_budget
        )
        """The client-wide retry budget (``None``: off)."""
        self.idempotency_keys: bool = idempotency_keys
        """Whether each logical call carries an ``Idempotency-Key``."""
        self._turns: TurnQueues | None = TurnQueues() if serialize_sessions else None
        self._event_hooks: EventHooks | None = _check_event_hooks(event_hooks)
        self._instruments: tuple[CallObserver, ...] = ()
        self._observer: Observers | None = None
        self._set_observer()
        self._headers: dict[str, str] | None = None
        """Headers of a client made by :meth:`with_options`, sent on each request."""
        self._parent: BaseClient | None = None
        """The client whose pool a :meth:`with_options` client shares."""
        headers = {
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        headers.update(_check_default_headers("default_headers", default_headers))
        headers["Authorization"] = f"Bearer {key}"
        # Case-insensitive names (istr) that carry their folded form: aiohttp copies the
        # headers into each request, and would fold a plain str name again every time.
        headers = {istr(name): value for name, value in headers.items()}
        configs = _check_trace_configs(trace_configs)
        trust_env = _check_bool("trust_env", trust_env)
        proxy = _check_proxy(proxy, self.base_url, allow_insecure_http)
        if proxy is None and trust_env:
            proxy = _env_proxy(self.base_url)
        require_int("max_connections", max_connections)
        require_int("max_response_bytes", max_response_bytes)
        if connector is not None or http_session is not None:
            _check_own_pool(connector, http_session, max_connections, configs)
        self._first_timeout = _first_attempt_timeout(self._timeout)
        self._transport = Transport(
            headers=headers,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            trace_configs=configs,
            connector=connector,
            http_session=http_session,
            proxy=proxy,
            attempt_timeout=self._first_timeout,
        )
        self._gate: OutageGate | None = OutageGate(self._probe) if outage_backoff else None
        self.adaptive_concurrency: bool = adaptive_concurrency
        """Whether calls run under the adaptive concurrency limit by default."""
        self._limiter = AdaptiveLimiter(max_connections)

    async def _probe(self) -> bool:
        return await self._transport.probe(self.base_url + "/assistant/completion", within=5.0)

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash (read-only: checked once, when
        the client is made; another URL needs another client)."""
        return self._base_url

    @property
    def timeout(self) -> Timeout:
        """The default timeouts of every call (read-only: :meth:`with_options` makes a
        client with others, sharing the pool)."""
        return self._timeout

    @property
    def outage_gate(self) -> OutageGate | None:
        """The client-wide outage back-off (``None`` when turned off): ``down``,
        ``unreachable_for``, ``probes``, ``outages``, ``waiting``."""
        return self._gate

    @property
    def concurrency_limit(self) -> int:
        """The adaptive concurrency limit now (for monitoring; see ``adaptive_concurrency``)."""
        return self._limiter.limit

    def __repr__(self) -> str:
        return f"<{type(self).__name__} base_url={self.base_url!r} state={self.state.value}>"

    @property
    def state(self) -> ClientState:
        """The client's :class:`~samsar_async.config.ClientState` (unopened, open, closed)."""
        if self._transport.closed:
            return ClientState.CLOSED
        return ClientState.UNOPENED if self._transport.session is None else ClientState.OPEN

    async def close(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards.

        A client made by :meth:`with_options` only closes itself: the pool it
        shares (and the outage gate and limiter) stay until the client that
        made it is closed. A ``connector`` or ``http_session`` you passed is
        never closed.
        """
        if self._parent is not None:
            detached = Transport(headers={}, max_connections=1, max_response_bytes=1)
            await detached.close()
            self._transport = detached  # calls now raise ClientClosedError; the pool stays
            return
        if self._gate is not None:
            self._gate.shutdown()  # calls waiting for the server: ClientClosedError
        self._limiter.shutdown()
        await self._transport.close()

    def _check_open(self) -> None:
        if self._transport.closed:
            raise ClientClosedError(
                f"this {type(self).__name__} client is closed; create a new one"
            )

    def with_options(
        self,
        *,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        retry_budget: RetryBudget | Unset | None = UNSET,
        default_headers: Mapping[str, str] | None = None,
        idempotency_keys: bool | Unset = UNSET,
        event_hooks: EventHooks | Unset | None = UNSET,
    ) -> Self:
        """A client like this one with some options changed, sharing its connection pool.

        ::

            patient = client.with_options(timeout=Timeout(total=1800), retry=None)
            await patient.assistant.complete(session_id, "A long essay, please")

        Arguments left out keep this client's value; ``default_headers`` are
        added to this client's (the new ones win). The new client shares this
        one's pool (so it costs no new connections), its per-session ordering
        (a session's calls stay one at a time across both), its retry budget
        unless ``retry_budget`` is given, its outage gate and adaptive limiter, and
        its tracing (``integrations.otel``).
        Closing it does not close the pool; closing this client does, and
        then the new one cannot be used either.
        """
        self._check_open()
        cls = type(self)
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)  # everything shared by default (pool, session turns)
        for klass in cls.__mro__:  # cached resources hold the client that made them
            for name, attr in vars(klass).items():
                if isinstance(attr, functools.cached_property):
                    new.__dict__.pop(name, None)
        new._parent = self if self._parent is None else self._parent
        if not isinstance(timeout, Unset):
            new._timeout = Timeout.of(timeout)
            new._first_timeout = _first_attempt_timeout(new._timeout)
        if not isinstance(retry, Unset):
            new.retry = retry if retry is not None else RetryPolicy.disabled()
        if not isinstance(retry_budget, Unset):
            new.retry_budget = retry_budget
        if not isinstance(idempotency_keys, Unset):
            new.idempotency_keys = _check_bool("idempotency_keys", idempotency_keys)
        if default_headers is not None:
            extra = _check_default_headers("default_headers", default_headers)
            new._headers = {**(self._headers or {}), **extra} or None
        if not isinstance(event_hooks, Unset):
            new._event_hooks = _check_event_hooks(event_hooks)
            new._set_observer()
        return new

    def _set_observer(self) -> None:
        hooks = self._event_hooks
        observers = (
            self._instruments if hooks is None else (HookObserver(hooks), *self._instruments)
        )
        self._observer = Observers.of(observers)

    def _instrument(self, observer: CallObserver) -> None:
        """Add ``observer`` to the watchers of this client's calls (for integrations)."""
        self._instruments = (*self._instruments, observer)
        self._set_observer()

    def _uninstrument(self, observer: CallObserver) -> None:
        """Remove ``observer`` added by :meth:`_instrument`."""
        self._instruments = tuple(o for o in self._instruments if o is not observer)
        self._set_observer()

    def _url(self, path: str) -> str:
        """The URL of ``path`` (kept: a call's URL is not rebuilt on every call)."""
        url = self._urls[path] = self.base_url + path
        return url

    def _new_idempotency_key(self) -> str | None:
        """A fresh key for one logical call, or ``None`` when keys are turned off."""
        return _new_key() if self.idempotency_keys else None

    async def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        parse: Callable[[Answer, str | None, str | None], T],
        *,
        session_id: str | None = None,
        idempotent: bool = False,
        timeout: Timeout | float | Unset | None = UNSET,
        retry: RetryPolicy | Unset | None = UNSET,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        adaptive: bool | None = None,
        images: bool = False,
    ) -> T:
        """POST ``body`` to ``path`` with retries; ``parse`` turns a 2xx answer into a result.

        ``session_id`` serializes the call with the others on that session.
        ``idempotent`` says a repeat is harmless even without a key.
        ``adaptive`` runs the call under the adaptive concurrency limit
        (``None``: the client's ``adaptive_concurrency``).
        ``images``: the request asks for images (the transport decodes them as
        the answer arrives: see :meth:`Transport.post`).
        """
        transport = self._transport
        if transport.closed:
            self._check_open()
        if extra_headers is not None:
            check_headers(extra_headers, "extra_headers")
        if idempotency_key is not None:
            check_header("Idempotency-Key", idempotency_key, "idempotency_key")
        if extra_headers and idempotency_key is None:
            for name, value in extra_headers.items():
                if name.lower() == "idempotency-key":
                    idempotency_key = value  # the caller's key, not a fresh one
        if idempotency_key is not None:
            key: str | None = idempotency_key
        elif self.idempotency_keys:
            key = next(_Keys.keys)  # _new_key(), inlined: per call
        else:
            key = None
        headers: dict[str, str] | None
        if extra_headers:
            headers = {k: v for k, v in extra_headers.items() if k.lower() != "idempotency-key"}
            if key is not None:
                headers["Idempotency-Key"] = key
        else:
            headers = None if key is None else {_IDEMPOTENCY_KEY: key}
        own = self._headers
        if own is not None:  # a with_options() client's default headers
            headers = {**own, **headers} if headers else dict(own)
        try:
            # orjson returns its bytes in a 4 KiB buffer whatever the length: held for the
            # whole call (retries resend it), so keep an exact-size copy (%b: the cheapest).
            data = b"%b" % _json.dumps(body)
        except (TypeError, ValueError, RecursionError) as exc:
            raise json_error(body, exc) from None
        del body  # (the call holds the encoded bytes, not the dict)
        t = self._timeout if timeout is UNSET else Timeout.of(timeout)
        url = self._urls.get(path) or self._url(path)
        observer = self._observer
        trace = None if observer is None else observer.start("POST", path, url, session_id, key)
        locks = self._turns
        if locks is not None and session_id is not None:
            # Take the session's place in line now, in call order; wait only if it is busy.
            # (TurnQueues.enter's free-session case, inlined: it is every call's path.)
            entries = locks._entries
            if session_id in entries:
                turn = locks.enter(session_id)
                if trace is None:
                    await locks.wait(session_id, turn)  # type: ignore[arg-type]
                else:
                    await _traced_wait(locks, session_id, turn, trace)
            else:
                entries[session_id] = None
        try:
            # The deadline starts once the call may run (after its session's earlier turns).
            started = time.monotonic()
            gate = self._gate
            use_limiter = self.adaptive_concurrency if adaptive is None else adaptive
            limiter = self._limiter if use_limiter else None
            call: _Call[T] | None = None
            failure: APIError
            slot = 0.0  # when the limiter's slot for the inline attempt was taken
            epoch = 0  # ... and the limiter's decrease count then
            attempted = 0
            inline = gate_open = gate is None or gate.steady or not gate.down
            if inline:
                # The first attempt runs inline: a call that succeeds at once costs one
                # coroutine frame here and nothing of the retry machinery. Under the
                # adaptive limit too: a free slot is taken with no allocation, a full
                # limit waited for in line (a future each).
                first_timeout = (
                    self._first_timeout if t is self._timeout else _first_attempt_timeout(t)
                )
                if limiter is not None:
                    taken = limiter.try_acquire()
                    if taken is None:
                        deadline = None if t.total is None else started + t.total
                        try:
                            ticket = await limiter.acquire(deadline, key)
                        except APIError as exc:  # nothing sent: on to the retry policy
                            failure = exc
                            inline = False
                        else:
                            taken = ticket.started
                            first_timeout = _timeout_left(t, deadline)
                    if taken is not None:
                        slot = taken
                        epoch = limiter._epoch
            if inline:
                attempted = 1
                try:
                    if trace is None:
                        raw = await transport.post(
                            url,
                            data,
                            headers=headers,
                            timeout=first_timeout,
                            idempotency_key=key,
                            images=images,
                        )
                    else:
                        raw = await trace.send(transport, 1, data, headers, first_timeout, images)
                    if 200 <= raw.status < 300:
                        result = parse(raw, key, session_id)
                        if logger.isEnabledFor(logging.DEBUG):
                            _log_answer(path, session_id, key, 1, raw.status, started, raw.headers)
                        budget = self.retry_budget
                        if budget is not None and budget.tokens < budget.capacity:
                            budget.on_success(0)
                        if gate is not None and not gate.steady:
                            gate.on_success()
                        if trace is not None:
                            trace.end(None)
                        if limiter is not None:
                            limiter.release_ok(slot)
                        return result
                    failure = status_error(raw, key)
                    if logger.isEnabledFor(logging.DEBUG):
                        _log_answer(path, session_id, key, 1, raw.status, started, raw.headers)
                except APIError as exc:
                    failure = exc
                    if logger.isEnabledFor(logging.DEBUG):
                        _log_failure(path, session_id, key, 1, exc, started)
                except BaseException as exc:
                    if limiter is not None:  # cancelled (or a bug): give the slot back
                        limiter.release(Ticket(epoch, slot), exc)
                    raise
                if limiter is not None:
                    limiter.release(Ticket(epoch, slot), failure)
                if gate is not None:
                    gate.on_failure(failure)
            elif not gate_open:
                # The server is down (wait for it): the first attempt goes through the
                # flow control too.
                call = _Call(
                    transport, path, url, data, headers, key, t, parse, session_id, trace, images
                )
                if t.total is not None:
                    call.deadline = started + t.total
                try:
                    result = await run_attempt(
                        call.send,
                        gate=gate,
                        limiter=limiter,
                        deadline=call.deadline,
                        idempotency_key=key,
                    )
                except APIError as exc:
                    failure = exc
                else:
                    budget = self.retry_budget
                    if budget is not None:
                        budget.on_success(0)
                    if trace is not None:
                        trace.end(None)
                    return result
            if call is None:
                call = _Call(
                    transport, path, url, data, headers, key, t, parse, session_id, trace, images
                )
                call.attempt = attempted
                if t.total is not None:
                    call.deadline = started + t.total
            policy = self.retry if isinstance(retry, Unset) else retry or _NO_RETRY
            result = await retry_failed_call(
                failure,
                call.send,
                policy=policy,
                budget=self.retry_budget,
                has_key=key is not None or idempotent,
                deadline=call.deadline,
                started=started,
                gate=gate,
                limiter=limiter,
                idempotency_key=key,
                sleep=transport.sleep,
                on_retry=None if trace is None else trace.retry,
                log_extra=_extra(path, session_id, key),
            )
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "POST %s session=%s key=%s succeeded at attempt %d",
                    path,
                    session_id,
                    key,
                    call.attempt,
                    extra=_extra(path, session_id, key, call.attempt),
                )
        except BaseException as exc:
            if trace is not None:
                trace.end(exc)
            if isinstance(exc, APIError) and logger.isEnabledFor(logging.INFO):
                _log_failed_call(path, session_id, key, exc)
            raise
        finally:
            if locks is not None and session_id is not None:
                if locks._entries[session_id] is None:
                    del locks._entries[session_id]  # nobody waits (TurnQueues.leave, inlined)
                else:
                    locks.leave(session_id)
        if trace is not None:
            trace.end(None)
        return result


async def _traced_wait(locks: TurnQueues, session_id: str, turn: Any, trace: Trace) -> None:
    """Wait for the session's turn, telling ``trace`` how long it took (or how it failed)."""
    waiting = time.monotonic()
    try:
        await locks.wait(session_id, turn)
    except BaseException as exc:
        trace.end(exc)
        raise
    trace.waited(time.monotonic() - waiting)


def _extra(
    path: str,
    session_id: str | None,
    key: str | None,
    attempt: int | None = None,
    status: int | None = None,
    **more: object,
) -> dict[str, object]:
    """The ``extra`` of a log record: structured fields for log handlers."""
    return {
        "method": "POST",
        "path": path,
        "session_id": session_id,
        "idempotency_key": key,
        "attempt": attempt,
        "status": status,
        **more,
    }


def _log_answer(
    path: str,
    session_id: str | None,
    key: str | None,
    attempt: int,
    status: int,
    started: float,
    headers: Mapping[str, str],
) -> None:
    elapsed = time.monotonic() - started
    charged = headers.get("x-credits-charged")
    logger.debug(
        "POST %s session=%s key=%s attempt=%d status=%d elapsed=%.3fs credits_charged=%s",
        path,
        session_id,
        key,
        attempt,
        status,
        elapsed,
        charged,
        extra=_extra(
            path, session_id, key, attempt, status, elapsed=elapsed, credits_charged=charged
        ),
    )


def _log_failure(
    path: str, session_id: str | None, key: str | None, attempt: int, exc: APIError, started: float
) -> None:
    elapsed = time.monotonic() - started
    logger.debug(
        "POST %s session=%s key=%s attempt=%d failed=%s elapsed=%.3fs",
        path,
        session_id,
        key,
        attempt,
        type(exc).__name__,
        elapsed,
        extra=_extra(path, session_id, key, attempt, error=type(exc).__name__, elapsed=elapsed),
    )


def _log_failed_call(path: str, session_id: str | None, key: str | None, exc: APIError) -> None:
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    attempts = len(exc.attempts) or 1
    logger.info(
        "POST %s session=%s key=%s failed after %d attempt(s): %s",
        path,
        session_id,
        key,
        attempts,
        type(exc).__name__,
        extra=_extra(path, session_id, key, attempts, status, error=type(exc).__name__),
    )


_NO_RETRY = RetryPolicy.disabled()


class _Call(Generic[T]):
    """The state of one logical call; :meth:`send` makes one attempt."""

    __slots__ = (
        "attempt",
        "data",
        "deadline",
        "headers",
        "images",
        "key",
        "parse",
        "path",
        "session_id",
        "timeout",
        "trace",
        "transport",
        "url",
    )

    def __init__(
        self,
        transport: Transport,
        path: str,
        url: str,
        data: bytes,
        headers: dict[str, str] | None,
        key: str | None,
        timeout: Timeout,
        parse: Callable[[Answer, str | None, str | None], T],
        session_id: str | None,
        trace: Trace | None,
        images: bool,
    ) -> None:
        self.transport = transport
        self.images = images
        self.path = path
        self.url = url
        self.data = data
        self.headers = headers
        self.key = key
        self.timeout = timeout
        self.parse = parse
        self.session_id = session_id
        self.trace = trace
        self.deadline: float | None = None
        self.attempt = 0

    async def send(self) -> T:
        """One attempt: POST, then parse a 2xx or raise the status error."""
        self.attempt += 1
        t = self.timeout
        limit = t.read
        deadline = self.deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise APIConnectTimeoutError(
                    f"the call's {t.total}s deadline passed before attempt {self.attempt}",
                    idempotency_key=self.key,
                )
            # Round so that equal budgets share one cached ClientTimeout (never to 0:
            # aiohttp reads 0 as "no limit").
            limit = max(round(left if limit is None or left < limit else limit, 3), 0.001)
        started = time.monotonic()
        timeout = client_timeout(connect=t.connect, attempt=limit)
        try:
            if self.trace is None:
                raw = await self.transport.post(
                    self.url,
                    self.data,
                    headers=self.headers,
                    timeout=timeout,
                    idempotency_key=self.key,
                    images=self.images,
                )
            else:
                raw = await self.trace.send(
                    self.transport, self.attempt, self.data, self.headers, timeout, self.images
                )
        except APIError as exc:
            if logger.isEnabledFor(logging.DEBUG):
                _log_failure(self.path, self.session_id, self.key, self.attempt, exc, started)
            raise
        if logger.isEnabledFor(logging.DEBUG):
            _log_answer(
                self.path, self.session_id, self.key, self.attempt, raw.status, started, raw.headers
            )
        if 200 <= raw.status < 300:
            return self.parse(raw, self.key, self.session_id)
        raise status_error(raw, self.key)
