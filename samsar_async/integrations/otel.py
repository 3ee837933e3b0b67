"""OpenTelemetry tracing and metrics for a client (the ``otel`` extra: ``opentelemetry-api``).

::

    from samsar_async import AsyncSamsar
    from samsar_async.integrations.otel import instrument

    client = AsyncSamsar()
    instrument(client)  # the global tracer and meter providers, or pass your own

Spans. One span per logical call, named after the endpoint
(``samsar.assistant.completion``, ``samsar.assistant.set_system_prompt``),
kind ``INTERNAL``, a child of the span current when the call was made. Each
HTTP attempt is a child ``CLIENT`` span named ``POST`` (HTTP semantic
conventions: ``http.request.method``, ``url.full``, ``server.address``,
``server.port``, ``http.response.status_code``, ``http.request.resend_count``
from the second attempt on, ``error.type``), and the request carries that
attempt's context in a ``traceparent`` header (the globally configured
propagators: W3C trace context unless you changed them), so the server's
spans nest under it. The call's span has:

- ``samsar.session_id``, ``samsar.idempotency_key``;
- ``samsar.attempts`` (attempts made), ``http.response.status_code`` (of the
  last answer);
- ``samsar.credits.charged``, ``samsar.credits.remaining`` (from the last
  answer's headers, as floats), ``samsar.replayed`` when the server answered
  from its idempotency store;
- ``samsar.session.wait``: seconds spent waiting for the session's turn;
- a ``samsar.retry`` event per retry (``samsar.attempt``, ``error.type``,
  ``samsar.retry.delay``), and on failure status ``ERROR``, ``error.type``
  and the exception recorded.

Metrics (meter ``samsar_async``), attributes ``samsar.operation``
(``assistant.completion``, ...) and, where known, ``http.response.status_code``
and ``error.type``:

- ``samsar.client.calls`` (counter, ``{call}``): logical calls, by outcome;
- ``samsar.client.retries`` (counter, ``{retry}``): retries made;
- ``samsar.client.credits.charged`` (counter, ``{credit}``): credits charged,
  from ``x-credits-charged`` (not counted again for a replayed answer);
- ``samsar.client.session.wait`` (histogram, ``s``): the wait for a session's
  turn, for every call on a session (0 when it did not wait);
- ``samsar.client.call.duration`` (histogram, ``s``): a call from start to end,
  its waits and retries included.

Session ids and keys go on spans only, never on metrics (one series per
session would not scale). The API key, the headers sent and the bodies are
never recorded. Nothing of this runs for a client that is not instrumented:
the core never imports OpenTelemetry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import Token
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._observe import CallInfo, CallObserver, CallWatch
from .._version import __version__
from ..client import AsyncSamsar
from ..errors import APIStatusError, InvalidArgumentError
from ..sync import Samsar

if TYPE_CHECKING:
    from .._base_client import BaseClient

__all__ = ["SamsarInstrumentation", "instrument", "uninstrument"]

_SCOPE = "samsar_async"


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = Decimal(value.strip())
    except (InvalidOperation, ValueError):
        return None
    return float(number) if number.is_finite() else None


class SamsarInstrumentation(CallObserver):
    """What :func:`instrument` adds to a client: its tracer, meter and instruments."""

    __slots__ = (
        "_calls",
        "_credits",
        "_duration",
        "_retries",
        "_wait",
        "server_address",
        "server_port",
        "tracer",
    )

    def __init__(
        self,
        base_url: str,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(
            _SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._calls = meter.create_counter(
            "samsar.client.calls", unit="{call}", description="Logical API calls, by outcome"
        )
        self._retries = meter.create_counter(
            "samsar.client.retries", unit="{retry}", description="Retries of failed attempts"
        )
        self._credits = meter.create_counter(
            "samsar.client.credits.charged",
            unit="{credit}",
            description="Credits charged (x-credits-charged)",
        )
        self._wait = meter.create_histogram(
            "samsar.client.session.wait",
            unit="s",
            description="Time a call waited for its session's turn",
        )
        self._duration = meter.create_histogram(
            "samsar.client.call.duration",
            unit="s",
            description="Duration of a logical call, waits and retries included",
        )
        parts = urlsplit(base_url)
        self.server_address: str = parts.hostname or ""
        self.server_port: int = parts.port or (443 if parts.scheme == "https" else 80)

    def start(self, call: CallInfo) -> CallWatch | None:
        """The spans and measurements of one call."""
        return _CallSpans(self, call)


class _CallSpans(CallWatch):
    __slots__ = (
        "attempt_span",
        "attempts",
        "charged",
        "info",
        "operation",
        "owner",
        "remaining",
        "replayed",
        "span",
        "started",
        "status",
        "token",
        "waited_for",
    )

    def __init__(self, owner: SamsarInstrumentation, info: CallInfo) -> None:
        self.owner = owner
        self.info = info
        self.operation = info.path.strip("/").replace("/", ".")
        attributes: dict[str, Any] = {
            "samsar.operation": self.operation,
            "server.address": owner.server_address,
            "server.port": owner.server_port,
        }
        if info.session_id is not None:
            attributes["samsar.session_id"] = info.session_id
        if info.idempotency_key is not None:
            attributes["samsar.idempotency_key"] = info.idempotency_key
        self.span = owner.tracer.start_span(
            f"samsar.{self.operation}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        self.started = time.monotonic()
        self.attempt_span: trace.Span | None = None
        self.token: Token[otel_context.Context] | None = None
        self.attempts = 0
        self.status: int | None = None
        self.charged: str | None = None
        self.remaining: str | None = None
        self.replayed = False
        self.waited_for = 0.0

    def waited(self, seconds: float) -> None:
        self.waited_for = seconds

    async def request(self, attempt: int, headers: dict[str, str]) -> None:
        self.attempts = attempt
        owner = self.owner
        attributes: dict[str, Any] = {
            "http.request.method": self.info.method,
            "url.full": self.info.url,
            "server.address": owner.server_address,
            "server.port": owner.server_port,
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        span = owner.tracer.start_span(
            self.info.method,
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        self.attempt_span = span
        ctx = trace.set_span_in_context(span)
        propagate.inject(headers, context=ctx)
        # Current while the request runs, so aiohttp-level instrumentation nests under it.
        self.token = otel_context.attach(ctx)

    async def response(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str],
        error: str | None,
        elapsed: float,
    ) -> None:
        self._detach()
        span, self.attempt_span = self.attempt_span, None
        if status is not None:
            self.status = status
            self.charged = headers.get("x-credits-charged")
            self.remaining = headers.get("x-credits-remaining")
            self.replayed = headers.get("Idempotent-Replayed", "").lower() == "true"
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_attribute("error.type", str(status) if status is not None else error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    async def retry(self, attempt: int, error: BaseException, delay: float) -> None:
        self.span.add_event(
            "samsar.retry",
            {
                "samsar.attempt": attempt,
                "error.type": type(error).__name__,
                "samsar.retry.delay": delay,
            },
        )
        self.owner._retries.add(
            1, {"samsar.operation": self.operation, "error.type": type(error).__name__}
        )

    def end(self, error: BaseException | None) -> None:
        self._detach()
        attempt_span, self.attempt_span = self.attempt_span, None
        if attempt_span is not None:  # the attempt was cancelled
            attempt_span.set_attribute("error.type", type(error).__name__ if error else "cancelled")
            attempt_span.end()
        span = self.span
        owner = self.owner
        span.set_attribute("samsar.attempts", self.attempts)
        metric: dict[str, Any] = {"samsar.operation": self.operation}
        if self.status is not None:
            span.set_attribute("http.response.status_code", self.status)
            metric["http.response.status_code"] = self.status
        charged = _float(self.charged)
        if charged is not None:
            span.set_attribute("samsar.credits.charged", charged)
            if not self.replayed and charged:
                owner._credits.add(charged, {"samsar.operation": self.operation})
        remaining = _float(self.remaining)
        if remaining is not None:
            span.set_attribute("samsar.credits.remaining", remaining)
        if self.replayed:
            span.set_attribute("samsar.replayed", True)
        if self.info.session_id is not None:
            span.set_attribute("samsar.session.wait", self.waited_for)
            owner._wait.record(self.waited_for, {"samsar.operation": self.operation})
        if error is not None:
            kind = type(error).__name__
            metric["error.type"] = kind
            span.set_attribute("error.type", kind)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, _describe(error)))
        owner._calls.add(1, metric)
        owner._duration.record(time.monotonic() - self.started, metric)
        span.end()

    def _detach(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            otel_context.detach(token)


def _describe(error: BaseException) -> str:
    if isinstance(error, APIStatusError):
        return f"{type(error).__name__} ({error.status_code})"
    return type(error).__name__


def _core(client: AsyncSamsar | Samsar) -> BaseClient:
    if isinstance(client, Samsar):
        return client.async_client
    if isinstance(client, AsyncSamsar):
        return client
    raise InvalidArgumentError(
        "client", f"must be an AsyncSamsar or a Samsar, not {type(client).__name__}"
    )


def instrument(
    client: AsyncSamsar | Samsar,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> SamsarInstrumentation:
    """Trace and measure every call of ``client`` (see the module docstring).

    ``tracer_provider`` and ``meter_provider`` default to the global ones.
    Clients that :meth:`~samsar_async.AsyncSamsar.with_options` makes from
    ``client`` afterwards are instrumented too. Returns the instrumentation,
    for :func:`uninstrument`.
    """
    core = _core(client)
    instrumentation = SamsarInstrumentation(core.base_url, tracer_provider, meter_provider)
    core._instrument(instrumentation)
    return instrumentation


def uninstrument(client: AsyncSamsar | Samsar, instrumentation: SamsarInstrumentation) -> None:
    """Stop ``instrumentation`` (from :func:`instrument`) on ``client``; calls under way finish."""
    _core(client)._uninstrument(instrumentation)
