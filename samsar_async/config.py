"""Defaults, in one place, and the small value types that configure a client.

Every default the SDK uses is a named constant here, so a reader can find
what happens when an argument is not passed.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import attrs

from .errors import InvalidArgumentError

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "UNSET",
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

DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
"""Largest response body read; a larger one raises ``APIResponseValidationError``."""

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


def _positive_or_none(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgumentError(
            f"timeout.{attribute.name}", "must be a positive number of seconds or None"
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

    connect: float | None = attrs.field(
        default=DEFAULT_CONNECT_TIMEOUT, validator=_positive_or_none
    )
    read: float | None = attrs.field(default=DEFAULT_READ_TIMEOUT, validator=_positive_or_none)
    total: float | None = attrs.field(default=DEFAULT_TOTAL_TIMEOUT, validator=_positive_or_none)

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
