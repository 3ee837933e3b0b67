"""Every exception the SDK raises.

Users never have to catch an ``aiohttp`` error: the transport maps them to
these classes at one boundary (:mod:`samsar_async.transport`). The tree::

    SamsarError
    ├── InvalidArgumentError (also ValueError)  bad input, refused before any network call
    ├── UsageError (also RuntimeError)          the SDK was used in a way it does not support
    │   └── ClientClosedError                   the client was used after close()
    ├── ImageDecodeError (also ValueError)      a generated image is not valid base64 / empty
    ├── ImageSaveError (also OSError)           an image cannot be saved where asked: a
    │                                           parent is not a directory, or the target is one
    ├── CreditBudgetExceededError               a batch stopped scheduling at ``min_credits``
    ├── StreamDecodeError (also ValueError)     a streaming event or SSE frame is malformed
    └── APIError                                a call to the API failed
        ├── APIConnectionError                  no usable HTTP response
        │   ├── APITimeoutError                 a deadline expired
        │   │   ├── APIConnectTimeoutError      ...before the request was sent (safe to retry)
        │   │   └── APIReadTimeoutError         ...after it was sent (also OutcomeUnknownError)
        │   ├── OutcomeUnknownError             sent, no complete answer: may be charged
        │   └── ServerUnreachableError          the server stayed down past the call's deadline
        ├── APIStatusError                      the server answered with a non-2xx status
        │   ├── BadRequestError                 400
        │   ├── AuthenticationError             401
        │   ├── InsufficientCreditsError        402
        │   ├── PermissionDeniedError           403
        │   ├── NotFoundError                   404
        │   ├── ConflictError                   409
        │   ├── UnprocessableEntityError        422
        │   ├── RateLimitError                  429
        │   └── InternalServerError             5xx
        └── APIResponseValidationError          a 2xx whose body is not the expected JSON

Every :class:`APIError` carries the call's ``idempotency_key`` (so a caller can
reconcile a charge) and ``attempts``: one :class:`Attempt` per try, saying why
each failed. After retries, the exception raised is the last attempt's own
error (so ``except RateLimitError`` works as usual), its message ends with the
history of every attempt, and its ``__cause__`` is the lower-level failure
behind it (the transport error, for connection failures) -- unless an attempt
before the last may have been charged: the call then ends as
:class:`OutcomeUnknownError`, whatever the last attempt got (kept as its
``last_error`` and ``__cause__``). A call is never reported as "nothing was
sent" when any of its attempts may have reached the server. (A call whose
*only* possibly-charged attempt is the last one keeps that attempt's error,
e.g. a 500 :class:`InternalServerError`; ``may_have_been_charged`` covers both.)

Was I charged?
--------------
Every :class:`SamsarError` has ``may_have_been_charged``, which says plainly
whether the call that raised it may have cost credits:

- ``False``: certainly not charged. Nothing was sent (bad input, a closed
  client, connection refused, no pooled connection in time, a batch's credit
  floor), or every attempt was refused before any work (400-404, 408, 422,
  425, 429, 503, redirects). It is safe to send the call again.
- ``True``: it may have been charged. An attempt was sent and no complete
  answer came back (:class:`OutcomeUnknownError`, read timeouts, dropped
  connections, cut bodies), the server failed after it may have done the work
  (500, 502, 504 and other 5xx but 503), a 2xx answer was unreadable
  (:class:`APIResponseValidationError`), another request with the same
  idempotency key is in progress (409), or the client was closed while the
  call was in flight. Reconcile (resend with the same ``idempotency_key``: the
  server replays a charged answer instead of charging again) before resending
  with a new one.

Errors raised while decoding data already received (:class:`ImageDecodeError`,
:class:`StreamDecodeError`) say ``False``: the call that produced the data
returned normally, and nothing more was charged.

No exception text ever contains the API key: messages are built from status
codes, server-provided messages and URLs without credentials.

Deprecated alias (removed in the next release): ``CreditBudgetExceeded`` is
:class:`CreditBudgetExceededError`.
"""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "APIConnectTimeoutError",
    "APIConnectionError",
    "APIError",
    "APIReadTimeoutError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConflictError",
    "CreditBudgetExceededError",
    "ImageDecodeError",
    "ImageSaveError",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "RateLimitError",
    "SamsarError",
    "ServerUnreachableError",
    "StreamDecodeError",
    "UnprocessableEntityError",
    "UsageError",
]


@attrs.frozen
class Attempt:
    """One try of a logical call, as recorded on the final exception."""

    number: int
    error: str
    """A one-line description: the exception class and its message."""
    status_code: int | None = None
    elapsed: float = 0.0
    """Seconds the attempt took."""
    may_have_been_charged: bool = False
    """Whether this attempt may have been charged (see the module docstring)."""


class SamsarError(Exception):
    """Base class of every error this SDK raises."""

    @property
    def may_have_been_charged(self) -> bool:
        """Whether the call that raised this error may have been charged.

        ``False`` means certainly not (safe to send again); see the module
        docstring for which errors say what.
        """
        return False


class InvalidArgumentError(SamsarError, ValueError):
    """An argument was refused before anything was sent.

    ``field`` names the argument (dotted for nested values) and ``reason``
    says what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class UsageError(SamsarError, RuntimeError):
    """The SDK was used in a way it does not support; the message says what to do instead.

    For example: iterating ``complete_many()`` outside its ``async with`` block.
    """


class ClientClosedError(UsageError):
    """The client was used after :meth:`AsyncSamsar.close`, or closed during the call.

    ``sent`` is ``True`` when the call was in flight (it may have been charged).
    """

    def __init__(self, *args: object, sent: bool = False) -> None:
        super().__init__(*args)
        self.sent = sent

    @property
    def may_have_been_charged(self) -> bool:
        """``True`` when the call was in flight when the client closed."""
        return self.sent


class ImageDecodeError(SamsarError, ValueError):
    """A generated image's base64 payload is invalid or decodes to nothing."""


class ImageSaveError(SamsarError, OSError):
    """An image cannot be saved at the destination asked for, whatever ``overwrite`` says.

    Raised by :func:`~samsar_async.images.save_image` and
    :func:`~samsar_async.images.save_images` when a component of the path
    that must be a directory is not one (``save_image(image, "afile/out.png")``
    where ``afile`` is a regular file), or when the file to write is an
    existing directory. ``errno`` (``ENOTDIR`` or ``EISDIR``), ``strerror``
    and ``filename`` (the offending path) are set as on any :class:`OSError`.
    Nothing is written.

    It is deliberately *not* a :class:`FileExistsError`: that one means only
    "this file exists; pass ``overwrite=True`` to replace it". An empty path
    is refused earlier, with :class:`InvalidArgumentError` (field ``path``).
    """

    def __init__(self, errno: int, message: str, filename: str) -> None:
        super().__init__(errno, message, filename)


class CreditBudgetExceededError(SamsarError):
    """A batch did not schedule this request: credits fell below ``min_credits``."""

    def __init__(self, remaining: Decimal | None, min_credits: Decimal) -> None:
        self.remaining = remaining
        self.min_credits = min_credits
        super().__init__(
            f"not sent: credits remaining ({remaining}) fell below min_credits ({min_credits})"
        )


class StreamDecodeError(SamsarError, ValueError):
    """A streaming event (a dict, or an SSE frame's data) is not a valid event.

    Raised by :func:`samsar_async.converter.event_from_dict` and
    :func:`samsar_async.sse.decode`; the message names the event type and field.
    """


class APIError(SamsarError):
    """A call to the Samsar API failed."""

    idempotency_key: str | None
    attempts: tuple[Attempt, ...]

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.idempotency_key = idempotency_key
        self.attempts = ()

    @property
    def may_have_been_charged(self) -> bool:
        """Whether the call may have been charged (``True`` unless a subclass knows better)."""
        return True

    def __str__(self) -> str:
        text = self.message
        if len(self.attempts) > 1:
            history = "; ".join(f"#{a.number}: {a.error}" for a in self.attempts)
            text = f"{text} (after {len(self.attempts)} attempts: {history})"
        return text


class APIConnectionError(APIError):
    """No usable HTTP response was received.

    ``sent`` is ``False`` when the request provably never left this process
    (DNS, connect, TLS, waiting for a pooled connection); such a call was not
    charged and is always safe to retry.
    """

    def __init__(
        self, message: str, *, sent: bool = False, idempotency_key: str | None = None
    ) -> None:
        super().__init__(message, idempotency_key=idempotency_key)
        self.sent = sent

    @property
    def may_have_been_charged(self) -> bool:
        """``True`` when the request (or one of the call's attempts) may have reached the server."""
        return self.sent


class APITimeoutError(APIConnectionError):
    """A timeout expired (connect, per-attempt read, or the call's total deadline)."""


class APIConnectTimeoutError(APITimeoutError):
    """The connection (or a pooled connection) was not had in time: nothing was sent."""


class OutcomeUnknownError(APIConnectionError):
    """The request was sent but no complete answer came back.

    The server may have done the work, and the call may have been charged.
    Such failures are retried only when the call carries an idempotency key.

    A retried call also ends with this error when an attempt before the last
    may have been charged, whatever the last attempt got (refused, not sent, a
    409, a 500): ``last_error`` is then that last attempt's error (also the
    ``__cause__``), and ``attempts`` the whole history. ``last_error`` is
    ``None`` when the failure is this error's own.
    """

    last_error: APIError | None

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str | None = None,
        last_error: APIError | None = None,
    ) -> None:
        super().__init__(message, sent=True, idempotency_key=idempotency_key)
        self.last_error = last_error


class APIReadTimeoutError(OutcomeUnknownError, APITimeoutError):
    """The request was sent but the answer did not arrive in time (outcome unknown)."""


class ServerUnreachableError(APIConnectionError):
    """The server was down for every call (an outage) until this call's deadline passed.

    While the client sees the server down (connections refused or dropped,
    502/503/504 from a gateway), calls wait for it instead of spending their
    attempts, and one prober checks it at a growing interval. A call whose
    deadline passes first ends with this error: ``unreachable_for`` says how
    many seconds the server had been unreachable, ``probes`` how many probes
    failed meanwhile. Nothing was sent while the call waited (``sent=False``);
    when an earlier attempt may have been charged, the call ends as
    :class:`OutcomeUnknownError` with this error as its ``last_error``.
    """

    def __init__(
        self,
        message: str,
        *,
        unreachable_for: float,
        probes: int,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message, sent=False, idempotency_key=idempotency_key)
        self.unreachable_for = unreachable_for
        self.probes = probes


class APIStatusError(APIError):
    """The server answered with a non-2xx status.

    ``credits`` holds the credits headers of that answer, ``body`` the parsed
    JSON (or the text when the body is not JSON) and ``retry_after`` the wait
    in seconds the server asked for, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        credits: Any = None,
        retry_after: float | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message, idempotency_key=idempotency_key)
        self.status_code = status_code
        self.body = body
        self.headers: Mapping[str, str] = headers or {}
        self.credits = credits
        self.retry_after = retry_after

    @property
    def may_have_been_charged(self) -> bool:
        """``True`` for 409 (a request with this key is in progress) and 5xx but 503."""
        return status_may_have_charged(self.status_code)


class BadRequestError(APIStatusError):
    """400: missing or invalid ``session_id``, or an invalid payload."""


class AuthenticationError(APIStatusError):
    """401: the API key is invalid."""


class InsufficientCreditsError(APIStatusError):
    """402: the account's credits cannot cover the call."""


class PermissionDeniedError(APIStatusError):
    """403: the session does not belong to the authenticated account."""


class NotFoundError(APIStatusError):
    """404: the session (or route) was not found."""


class ConflictError(APIStatusError):
    """409: another attempt with the same idempotency key is in progress."""


class UnprocessableEntityError(APIStatusError):
    """422: the payload was understood but refused."""


class RateLimitError(APIStatusError):
    """429: too many requests."""


class InternalServerError(APIStatusError):
    """5xx: the server (or a proxy in front of it) failed."""


class APIResponseValidationError(APIError):
    """A complete 2xx answer whose body is not the expected JSON or shape."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        excerpt: str = "",
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message, idempotency_key=idempotency_key)
        self.status_code = status_code
        self.excerpt = excerpt

    @property
    def may_have_been_charged(self) -> bool:
        """``True`` for an unreadable 2xx (the work was done), else as for its status."""
        return 200 <= self.status_code < 300 or status_may_have_charged(self.status_code)


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_may_have_charged(status_code: int) -> bool:
    """Whether an answer with ``status_code`` leaves the call possibly charged.

    409 (another request with the same idempotency key is in progress) and
    every 5xx but 503 (the server or a gateway failed, maybe after the work).
    """
    return status_code == 409 or (status_code >= 500 and status_code != 503)


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The :class:`APIStatusError` subclass for ``status_code``."""
    cls = _STATUS_ERRORS.get(status_code)
    if cls is not None:
        return cls
    if status_code >= 500:
        return InternalServerError
    return APIStatusError


_DEPRECATED = {"CreditBudgetExceeded": CreditBudgetExceededError}


def __getattr__(name: str) -> Any:
    """Deprecated aliases: they warn, then resolve to the new name."""
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"samsar_async.errors.{name} is renamed {new.__name__}", DeprecationWarning, stacklevel=2
    )
    return new
