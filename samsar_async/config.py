"""Defaults, and the small value types that configure a client and its calls.

The defaults of the client and of a call (base URL, timeouts, connections,
retries, the response cap) are named constants here, so a reader can find
what happens when an argument is not passed. Defaults that belong to one
helper live beside it (``complete_many``'s concurrency in
:mod:`samsar_async.batch`, image file names in :mod:`samsar_async.images`).
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import attrs

from ._validators import non_negative, optional, positive_int, positive_number
from .errors import InvalidArgumentError

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_REFUSED_STATUSES",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_UNKNOWN_STATUSES",
    "MAX_CREDITS_DECIMALS",
    "MAX_CREDITS_DIGITS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_NODES",
    "MAX_TIMEOUT_SECONDS",
    "NOT_SENT",
    "OUTCOME_UNKNOWN",
    "REFUSED",
    "UNSET",
    "ClientState",
    "RetryPolicy",
    "Timeout",
    "Unset",
]

API_KEY_ENV: Final = "SAMSAR_API_KEY"
"""Environment variable read when no ``api_key`` is passed."""

BASE_URL_ENV: Final = "SAMSAR_BASE_URL"
"""Environment variable read when no ``base_url`` is passed."""

DEFAULT_BASE_URL: Final = "https://api.samsar.one/v1"
"""The documented base URL. ``https://api.samsar.one/api/v1`` is the documented alias."""

DEFAULT_MAX_CONNECTIONS: Final = 100
"""Cap on concurrent HTTP connections of one client (the aiohttp connector's ``limit``)."""

DEFAULT_CONCURRENCY: Final = 64
"""Calls in flight at once in ``complete_many`` when ``concurrency`` is not given."""

DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
"""Largest response body read; a larger one raises ``APIResponseValidationError``."""

MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of dicts and lists accepted in a value sent as JSON
(``extra_body``, ``metadata``, dict inputs, tool dicts, ...); deeper raises
``InvalidArgumentError``. The request shapes of the API nest about 5 levels."""

MAX_JSON_NODES: Final = 1_000_000
"""Most values (dict entries and list items, counted through every level) in one
argument sent as JSON; more raises ``InvalidArgumentError``."""

MAX_CREDITS_DIGITS: Final = 15
"""A credits header (``x-credits-charged`` / ``x-credits-remaining``) whose value
is ``10**15`` or more in magnitude is unreadable (``None``)."""

MAX_CREDITS_DECIMALS: Final = 12
"""A credits header with more significant digits after the point than this is
unreadable (``None``). With :data:`MAX_CREDITS_DIGITS`, every readable value has at
most 27 significant digits, so sums stay exact in the default decimal context
(28 digits) and can never overflow."""

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 300.0
DEFAULT_TOTAL_TIMEOUT: Final = 600.0


class Unset(enum.Enum):
    """Type of :data:`UNSET`: tells "not passed" from ``None``."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> Literal[False]:
        return False


UNSET: Final = Unset.UNSET
"""Sentinel for an argument that was not passed (``None`` may mean "clear" or "off")."""


class ClientState(str, enum.Enum):
    """The state of a client: *unopened*, *open* or *closed*.

    A ``str`` enum, so ``client.state == "open"`` also works.
    """

    UNOPENED = "unopened"
    """Constructed; nothing allocated yet (the pool opens on first use)."""
    OPEN = "open"
    """The connection pool exists."""
    CLOSED = "closed"
    """:meth:`~samsar_async.AsyncSamsar.close` was called; every further call raises
    :class:`~samsar_async.errors.ClientClosedError`."""

    def __str__(self) -> str:
        return self.value


MAX_TIMEOUT_SECONDS: Final = 1e9
"""Largest timeout accepted (about 31 years); pass ``None`` for no limit."""

_positive_seconds = positive_number("timeout.", what="number of seconds or None")


def _timeout_seconds(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    _positive_seconds(inst, attr, value)
    if value > MAX_TIMEOUT_SECONDS:  # an int such as 10**400 is finite, but not a float
        raise InvalidArgumentError(
            f"timeout.{attr.name}", f"must be at most {MAX_TIMEOUT_SECONDS:g} seconds, or None"
        )


@attrs.frozen
class Timeout:
    """Timeouts of one call, in seconds; ``None`` means no limit.

    - ``connect``: to get a connection (a new one, or a free one from the pool).
    - ``read``: per attempt, from asking for a connection to the last byte of the
      answer (Samsar answers in one piece, so this is mostly the time to the first byte).
    - ``total``: the whole logical call, retries and back-off sleeps included.

    Expiry raises :class:`~samsar_async.errors.APITimeoutError`.
    """

    connect: float | None = attrs.field(default=DEFAULT_CONNECT_TIMEOUT, validator=_timeout_seconds)
    read: float | None = attrs.field(default=DEFAULT_READ_TIMEOUT, validator=_timeout_seconds)
    total: float | None = attrs.field(default=DEFAULT_TOTAL_TIMEOUT, validator=_timeout_seconds)

    @classmethod
    def of(cls, value: Timeout | float | None) -> Timeout:
        """A :class:`Timeout` from a number (the ``total``), ``None`` (no limits) or itself."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, read=None, total=None)
        return cls(total=value)


DEFAULT_TIMEOUT: Final = Timeout()
"""10 s to connect, 300 s per attempt, 600 s for the whole call."""


# --- retries -------------------------------------------------------------------

NOT_SENT: Final = "not_sent"
"""Retry condition: the request never left this process."""
REFUSED: Final = "refused"
"""Retry condition: the server refused the request before doing any work."""
OUTCOME_UNKNOWN: Final = "outcome_unknown"
"""Retry condition: the request was sent and the server may have done the work (and charged)."""

_CONDITIONS: Final = frozenset({NOT_SENT, REFUSED, OUTCOME_UNKNOWN})

DEFAULT_REFUSED_STATUSES: Final = frozenset({408, 409, 425, 429, 503})
"""Statuses retried as *refused* (the server did no work)."""
DEFAULT_UNKNOWN_STATUSES: Final = frozenset({500, 502, 504})
"""Statuses retried as *outcome unknown* (only with an idempotency key)."""


def _check_conditions(_inst: object, _attr: object, value: frozenset[str]) -> None:
    unknown = set(value) - _CONDITIONS
    if unknown:
        raise InvalidArgumentError(
            "retry_on", f"unknown conditions {sorted(unknown)}; use {sorted(_CONDITIONS)}"
        )


def _statuses(value: Any) -> frozenset[int]:
    return frozenset(value)


_non_negative_seconds = non_negative()


def _backoff_seconds(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    _non_negative_seconds(inst, attr, value)
    if value > MAX_TIMEOUT_SECONDS:  # an int such as 10**400 is finite, but not a float
        raise InvalidArgumentError(attr.name, f"must be at most {MAX_TIMEOUT_SECONDS:g} seconds")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a call is retried. Set one on the client; override it per call with ``retry=``.

    - ``max_attempts``: attempts in all, the first included (1 turns retries off).
    - ``initial_backoff`` / ``max_backoff``: exponential back-off with full jitter:
      before retry *n* the wait is uniform in ``[0, min(max_backoff, initial_backoff * 2**(n-1))]``.
    - ``max_total_time``: no retry starts later than this many seconds after the
      call started (``None``: only the call's ``timeout.total`` bounds it).
    - ``max_retry_after``: a server-requested wait (``Retry-After``/``retry-after-ms``)
      is honoured up to this; a longer one ends the retries at once.
    - ``retry_on``: which conditions are retried (:data:`NOT_SENT`, :data:`REFUSED`,
      :data:`OUTCOME_UNKNOWN`; see :mod:`samsar_async.retry`).
    """

    max_attempts: int = attrs.field(default=3, validator=positive_int())
    initial_backoff: float = attrs.field(default=0.5, validator=_backoff_seconds)
    max_backoff: float = attrs.field(default=8.0, validator=_backoff_seconds)
    max_total_time: float | None = attrs.field(default=None, validator=optional(_backoff_seconds))
    max_retry_after: float = attrs.field(default=60.0, validator=_backoff_seconds)
    retry_on: frozenset[str] = attrs.field(
        default=_CONDITIONS, converter=frozenset, validator=_check_conditions
    )
    refused_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_REFUSED_STATUSES, converter=_statuses
    )
    unknown_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_UNKNOWN_STATUSES, converter=_statuses
    )

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries (handy in tests)."""
        return cls(max_attempts=1)


DEFAULT_RETRY_POLICY: Final = RetryPolicy()
"""Three attempts, full-jitter back-off from 0.5 s up to 8 s."""
