"""Scripted and random faults for :class:`~samsar_async.testing.MockSamsarServer`.

A test queues faults on ``server.faults`` (a :class:`FaultPlan`)::

    server.faults.add(Fault.status(503, retry_after="2"), times=2, path="completion")
    server.faults.add(Fault.disconnect(after_charge=True))
    server.faults.random(rate=0.2, seed=7)  # soak tests

Each API request (``/assistant/completion`` or ``/assistant/set_system_prompt``,
under either prefix) takes the first queued entry whose filters match it, FIFO;
an entry is used for ``times`` requests, then dropped. When no scripted entry
matches and random faults are on, one may be drawn. Other paths never fault.

When a fault fires relative to the real work:

- ``after_charge=False`` (the default of every kind but :meth:`Fault.truncate`): the
  fault replaces the answer *before anything is done*, as a proxy or a crashed
  front end would: no authentication, no charge, no turn, no idempotency record.
- ``after_charge=True``: the request is processed normally first (authenticated,
  validated, charged, the turn added, a 2xx stored under its ``Idempotency-Key``),
  and only the answer the client gets is replaced. This is the "outcome unknown"
  case a client must reconcile.
- :meth:`Fault.stall` delays the processing (inside the handler, after the
  idempotency key is marked in progress) and then answers normally.

Every request a fault fired on has ``fault`` set to the :class:`FaultKind` value
in its :class:`~samsar_async.testing.RecordedRequest`.
"""

from __future__ import annotations

import enum
import json
import random as _random
from collections.abc import Callable, Iterable
from datetime import datetime
from email.utils import format_datetime
from typing import Final

import attrs

__all__ = ["RANDOM_KINDS", "Fault", "FaultKind", "FaultMatch", "FaultPlan"]

FaultMatch = Callable[[str, str | None], bool]
"""A predicate on ``(request path, session_id)``; the path is the full URL path."""

_ENDPOINTS: Final = ("completion", "set_system_prompt")


class FaultKind(str, enum.Enum):
    """What a :class:`Fault` does to the answer."""

    STATUS = "status"
    """An error status with a JSON body (optionally ``Retry-After`` / ``retry-after-ms``)."""
    DISCONNECT = "disconnect"
    """The connection is closed with no response at all."""
    STALL = "stall"
    """The handler sleeps, then answers normally."""
    TRUNCATE = "truncate"
    """Headers promise a longer body than is written; then the connection is closed."""
    HTML = "html"
    """A proxy's HTML error page (``text/html``)."""
    REDIRECT = "redirect"
    """A redirect to ``Location``."""
    INVALID_JSON = "invalid_json"
    """A 200 ``application/json`` answer whose body is not JSON."""
    WRONG_CONTENT_TYPE = "wrong_content_type"
    """A 200 answer with ``Content-Type: text/plain``."""
    BODY = "body"
    """Any raw status, body, content type and extra headers."""
    RAW = "raw"
    """Bytes written on the connection as they are (status line, headers, body), then closed."""


_NOT_RANDOM: Final = (FaultKind.REDIRECT, FaultKind.RAW)
RANDOM_KINDS: Final = tuple(kind for kind in FaultKind if kind not in _NOT_RANDOM)
"""The kinds :meth:`FaultPlan.random` draws from by default (all but redirects and raw replies)."""

_HTML_PAGE: Final = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

_REASONS: Final = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def _error_json(status: int, message: str) -> bytes:
    error = {"message": message, "type": "server_error", "code": status}
    return json.dumps({"error": error}).encode()


@attrs.frozen
class Fault:
    """One injected misbehaviour. Build it with the class methods, not directly.

    ``status_code``, ``headers``, ``payload`` and ``content_type`` are the
    answer sent for the kinds that answer (status, html, redirect,
    invalid_json, wrong_content_type, body); ``payload`` is the whole reply of
    a raw fault; ``seconds`` is the stall.
    """

    kind: FaultKind
    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    payload: bytes = b""
    content_type: str = "application/json"
    seconds: float = 0.0
    after_charge: bool = False

    @classmethod
    def status(
        cls,
        status: int,
        *,
        retry_after: str | int | float | datetime | None = None,
        retry_after_ms: int | float | None = None,
        body: object = None,
        after_charge: bool = False,
    ) -> Fault:
        """Answer ``status`` with a JSON error body.

        ``retry_after`` becomes the ``Retry-After`` header: seconds (a number or a
        string such as ``"2"``), an HTTP-date string, or an aware ``datetime``
        (formatted as an HTTP-date). ``retry_after_ms`` becomes ``retry-after-ms``.
        ``body`` replaces the default ``{"error": {...}}`` body: ``bytes`` are sent
        as they are, anything else is JSON-encoded.
        """
        headers: list[tuple[str, str]] = []
        if isinstance(retry_after, datetime):
            headers.append(("Retry-After", format_datetime(retry_after, usegmt=True)))
        elif retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        if retry_after_ms is not None:
            headers.append(("retry-after-ms", str(retry_after_ms)))
        if body is None:
            payload = _error_json(status, f"injected fault: HTTP {status}")
        elif isinstance(body, bytes):
            payload = body
        else:
            payload = json.dumps(body).encode()
        return cls(
            FaultKind.STATUS,
            status_code=status,
            headers=tuple(headers),
            payload=payload,
            after_charge=after_charge,
        )

    @classmethod
    def disconnect(cls, *, after_charge: bool = False) -> Fault:
        """Close the connection without any response.

        With ``after_charge=True`` the request is processed (and charged) first.
        """
        return cls(FaultKind.DISCONNECT, after_charge=after_charge)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` inside the handler, then answer normally.

        Meant to outlast the client's read timeout. Closing the server ends the
        sleep early (the connection is then dropped without an answer).
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls(FaultKind.STALL, seconds=float(seconds))

    @classmethod
    def truncate(cls, *, after_charge: bool = True) -> Fault:
        """Send headers with a ``Content-Length`` larger than the body written, then close.

        With ``after_charge=True`` (the default) the real answer is processed and
        its first half sent; otherwise a fake 200 answer is cut short, uncharged.
        """
        return cls(FaultKind.TRUNCATE, after_charge=after_charge)

    @classmethod
    def html(cls, status: int = 502, *, after_charge: bool = False) -> Fault:
        """A reverse proxy's ``text/html`` error page with ``status``."""
        reason = _REASONS.get(status, "Error")
        page = _HTML_PAGE.format(status=status, reason=reason).encode()
        return cls(
            FaultKind.HTML,
            status_code=status,
            payload=page,
            content_type="text/html",
            after_charge=after_charge,
        )

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Fault:
        """Redirect to ``location`` (an absolute URL or a path on this server)."""
        return cls(
            FaultKind.REDIRECT,
            status_code=status,
            headers=(("Location", location),),
            payload=b"",
        )

    @classmethod
    def invalid_json(cls, *, status: int = 200, after_charge: bool = False) -> Fault:
        """Answer ``status`` (200) labelled ``application/json`` with a body that is not JSON."""
        return cls(
            FaultKind.INVALID_JSON,
            status_code=status,
            payload=b'{"id": "resp_broken", "object": "response", "output": [',
            after_charge=after_charge,
        )

    @classmethod
    def wrong_content_type(cls, *, after_charge: bool = False) -> Fault:
        """Answer 200 with ``Content-Type: text/plain``.

        The body is the text ``OK``; with ``after_charge=True`` it is the real
        answer's (JSON) body and status, only relabelled ``text/plain``.
        """
        return cls(
            FaultKind.WRONG_CONTENT_TYPE,
            status_code=200,
            payload=b"OK",
            content_type="text/plain; charset=utf-8",
            after_charge=after_charge,
        )

    @classmethod
    def body(
        cls,
        status: int,
        body: bytes,
        content_type: str = "application/octet-stream",
        *,
        headers: Iterable[tuple[str, str]] = (),
        after_charge: bool = False,
    ) -> Fault:
        """Answer anything: ``status``, the raw ``body`` and ``content_type``.

        ``headers`` are added as given, in order: a name may repeat (two
        ``x-credits-charged``, say), and ``Content-Encoding: gzip`` with a
        gzipped ``body`` sends a compressed answer.
        """
        return cls(
            FaultKind.BODY,
            status_code=status,
            headers=tuple((str(name), str(value)) for name, value in headers),
            payload=bytes(body),
            content_type=content_type,
            after_charge=after_charge,
        )

    @classmethod
    def raw(cls, data: bytes, *, after_charge: bool = False) -> Fault:
        """Write ``data`` on the connection as it is, then close the connection.

        ``data`` is the whole reply, status line and headers included, so
        anything a broken server or proxy may send can be scripted: any status
        (1xx included), malformed or duplicate headers, a body longer or
        shorter than its ``Content-Length``, garbage instead of HTTP::

            Fault.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

        The request's ``status`` record is the status of the first line when
        it parses as ``HTTP/x.y NNN``, else ``None``.
        """
        return cls(FaultKind.RAW, payload=bytes(data), after_charge=after_charge)


@attrs.define
class _Entry:
    fault: Fault
    remaining: int | None
    path: str | None
    match: FaultMatch | None

    def applies(self, endpoint: str, path: str, session_id: str | None) -> bool:
        if self.path is not None and self.path not in (endpoint, path):
            return False
        return self.match is None or self.match(path, session_id)


@attrs.define
class _RandomFaults:
    rate: float
    kinds: tuple[FaultKind, ...]
    rng: _random.Random
    stall_seconds: float
    path: str | None

    def draw(self) -> Fault | None:
        rng = self.rng
        if rng.random() >= self.rate:
            return None
        kind = rng.choice(self.kinds)
        coin = rng.random() < 0.5
        if kind is FaultKind.STATUS:
            status = rng.choice((429, 500, 502, 503, 504))
            retry_after = rng.choice((None, "0"))
            return Fault.status(
                status, retry_after=retry_after, after_charge=coin and status in (502, 504)
            )
        if kind is FaultKind.DISCONNECT:
            return Fault.disconnect(after_charge=coin)
        if kind is FaultKind.STALL:
            return Fault.stall(self.stall_seconds)
        if kind is FaultKind.TRUNCATE:
            return Fault.truncate(after_charge=coin)
        if kind is FaultKind.HTML:
            return Fault.html(rng.choice((502, 503, 504)))
        if kind is FaultKind.INVALID_JSON:
            return Fault.invalid_json(after_charge=coin)
        if kind is FaultKind.WRONG_CONTENT_TYPE:
            return Fault.wrong_content_type(after_charge=coin)
        if kind is FaultKind.BODY:
            return Fault.body(rng.choice((500, 502)), b"upstream error", "text/plain")
        raise ValueError(f"cannot draw a random {kind.value} fault")  # pragma: no cover


class FaultPlan:
    """The faults a :class:`~samsar_async.testing.MockSamsarServer` will inject."""

    def __init__(self) -> None:
        self._queue: list[_Entry] = []
        self._random: _RandomFaults | None = None

    def __repr__(self) -> str:
        random_rate = None if self._random is None else self._random.rate
        return f"<FaultPlan queued={len(self._queue)} random_rate={random_rate}>"

    def __len__(self) -> int:
        """How many scripted entries are still queued."""
        return len(self._queue)

    def add(
        self,
        fault: Fault,
        *,
        times: int | None = 1,
        path: str | None = None,
        match: FaultMatch | None = None,
    ) -> None:
        """Queue ``fault`` for the next ``times`` matching requests (``None``: until cleared).

        ``path`` limits it to an endpoint, named ``"completion"`` or
        ``"set_system_prompt"``, or to an exact URL path such as
        ``"/api/v1/assistant/completion"``. ``match(path, session_id)`` may
        refine that further (``session_id`` is ``None`` when the body has none).
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for unlimited)")
        self._queue.append(_Entry(fault, times, path, match))

    def random(
        self,
        rate: float = 0.2,
        *,
        kinds: Iterable[FaultKind | str] | None = None,
        seed: int | None = None,
        stall_seconds: float = 1.0,
        path: str | None = None,
    ) -> None:
        """Fault a ``rate`` share of requests that no scripted fault claimed.

        Kinds are drawn uniformly from ``kinds`` (default :data:`RANDOM_KINDS`:
        every kind but redirects and raw replies) with a ``random.Random(seed)``, so a test
        that sends requests in a fixed order sees a fixed fault sequence.
        Parameters are drawn too: statuses 429/500/502/503/504 (``Retry-After``
        absent or ``"0"``), ``after_charge`` on or off for disconnects,
        truncations, invalid JSON, wrong content types and 502/504 statuses;
        stalls last ``stall_seconds``. ``rate=0`` turns random faults off.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        chosen = RANDOM_KINDS if kinds is None else tuple(FaultKind(k) for k in kinds)
        if not chosen:
            raise ValueError("kinds must not be empty")
        if FaultKind.REDIRECT in chosen:
            raise ValueError("redirects cannot be drawn at random: queue Fault.redirect()")
        if FaultKind.RAW in chosen:
            raise ValueError("raw replies cannot be drawn at random: queue Fault.raw()")
        if rate == 0.0:
            self._random = None
            return
        self._random = _RandomFaults(rate, chosen, _random.Random(seed), stall_seconds, path)

    def clear(self) -> None:
        """Drop every queued fault and turn random faults off."""
        self._queue.clear()
        self._random = None

    def take(self, endpoint: str, path: str, session_id: str | None) -> Fault | None:
        """The fault for this request, if any (consumes one use of a queued entry)."""
        if endpoint not in _ENDPOINTS:
            return None
        for index, entry in enumerate(self._queue):
            if entry.applies(endpoint, path, session_id):
                if entry.remaining is not None:
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        del self._queue[index]
                return entry.fault
        drawer = self._random
        if drawer is not None and drawer.path in (None, endpoint, path):
            return drawer.draw()
        return None
