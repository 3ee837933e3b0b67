"""OpenTelemetry: spans, metrics and trace context, with the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from samsar_async import AsyncSamsar, InsufficientCreditsError, RetryPolicy, Samsar
from samsar_async.integrations.otel import instrument, uninstrument
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0, max_backoff=0)


class Otel:
    """A tracer provider and a meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self._metrics: MetricsData | None = None

    def instrument(self, client: AsyncSamsar | Samsar) -> Any:
        return instrument(
            client, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name``, from one collection per test.

        Collected once, on the first read (every test reads after its calls): up to
        opentelemetry-sdk 1.22, a second collection with nothing recorded in between
        reports cumulative histograms without points (1.20) or no metrics (1.21, 1.22).
        """
        if self._metrics is None:
            self._metrics = self.reader.get_metrics_data()
        data = self._metrics
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        return sum(
            p.value
            for p in self.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def make(server: MockSamsarServer, **kwargs: Any) -> AsyncSamsar:
    kwargs.setdefault("retry", FAST)
    return AsyncSamsar(server.api_key, base_url=server.url, **kwargs)


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_one_span_per_call_with_attempt_children(
    server: MockSamsarServer, session_id: str, otel: Otel
) -> None:
    server.faults.add(Fault.status(503), times=1)
    async with make(server) as client:
        otel.instrument(client)
        parent = otel.tracer_provider.get_tracer("app")
        with parent.start_as_current_span("handler") as handler:
            resp = await client.assistant.complete(session_id, "x")
    attempt1, attempt2, call, app = otel.spans()  # in the order they ended
    assert app.name == "handler"
    assert call.name == "samsar.assistant.completion"
    assert call.kind is SpanKind.INTERNAL
    assert call.parent is not None
    assert call.parent.span_id == handler.get_span_context().span_id
    attrs = dict(call.attributes or {})
    assert attrs["samsar.session_id"] == session_id
    assert attrs["samsar.idempotency_key"] == resp.idempotency_key
    assert attrs["samsar.attempts"] == 2
    assert attrs["http.response.status_code"] == 200
    assert attrs["samsar.credits.charged"] == float(resp.credits.charged or 0)
    assert attrs["samsar.credits.remaining"] == float(resp.credits.remaining or 0)
    assert attrs["samsar.session.wait"] == 0.0
    assert call.status.status_code is StatusCode.UNSET
    [retry] = call.events
    assert retry.name == "samsar.retry"
    assert dict(retry.attributes or {})["error.type"] == "InternalServerError"
    for attempt in (attempt1, attempt2):
        assert attempt.name == "POST"
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.get_span_context().span_id
    assert dict(attempt1.attributes or {})["http.response.status_code"] == 503
    assert dict(attempt1.attributes or {})["error.type"] == "503"
    assert attempt1.status.status_code is StatusCode.ERROR
    assert dict(attempt2.attributes or {})["http.request.resend_count"] == 1
    assert dict(attempt2.attributes or {})["url.full"] == server.url + "/assistant/completion"
    # W3C trace context on the wire: each attempt carries its own span as the parent.
    sent = [r.headers.get("traceparent") for r in server.requests]
    assert sent == [traceparent(attempt1), traceparent(attempt2)]


async def test_failed_call_span_and_metrics(
    server: MockSamsarServer, session_id: str, otel: Otel
) -> None:
    server.set_balance(None, 0)
    async with make(server) as client:
        otel.instrument(client)
        with pytest.raises(InsufficientCreditsError):
            await client.assistant.complete(session_id, "x")
    attempt, call = otel.spans()
    assert call.status.status_code is StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "InsufficientCreditsError"
    assert dict(call.attributes or {})["http.response.status_code"] == 402
    assert [e.name for e in call.events] == ["exception"]
    assert otel.total("samsar.client.calls", **{"error.type": "InsufficientCreditsError"}) == 1
    assert otel.total("samsar.client.credits.charged") == 0
    assert attempt.status.status_code is StatusCode.ERROR


async def test_metrics(server: MockSamsarServer, otel: Otel) -> None:
    sessions = [server.create_session() for _ in range(3)]
    server.faults.add(Fault.status(429, retry_after="0"), times=2)
    async with make(server) as client:
        otel.instrument(client)
        charged = []
        for sid in sessions:
            resp = await client.assistant.complete(sid, "hello")
            charged.append(resp.credits.charged)
        await client.assistant.set_system_prompt("Be brief.")
    completion = {"samsar.operation": "assistant.completion"}
    assert otel.total("samsar.client.calls", **completion) == 3
    assert (
        otel.total("samsar.client.calls", **{"samsar.operation": "assistant.set_system_prompt"})
        == 1
    )
    assert otel.total("samsar.client.retries", **completion) == 2
    assert otel.total("samsar.client.credits.charged") == pytest.approx(
        float(sum(c for c in charged if c is not None))
    )
    [durations] = [
        p
        for p in otel.points("samsar.client.call.duration")
        if p.attributes == {**completion, "http.response.status_code": 200}
    ]
    assert durations.count == 3
    [waits] = otel.points("samsar.client.session.wait")
    assert waits.count == 3  # every completion on a session (set_system_prompt has none)
    assert waits.sum == 0.0  # nobody waited
    names = {span.name for span in otel.spans()}
    assert names == {"POST", "samsar.assistant.completion", "samsar.assistant.set_system_prompt"}
    for point in otel.points("samsar.client.calls"):
        assert "samsar.session_id" not in point.attributes  # one series per session would not scale


async def test_the_wait_for_a_sessions_turn(
    server: MockSamsarServer, session_id: str, otel: Otel
) -> None:
    async with make(server) as client:
        otel.instrument(client)
        server.pause()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.assistant.complete, session_id, "first")
            await server.wait_until(lambda s: s.held == 1)
            tg.start_soon(client.assistant.complete, session_id, "second")
            await asyncio.sleep(0)  # the second call is now parked on its turn
            server.resume()
    [waits] = otel.points("samsar.client.session.wait")
    assert waits.count == 2
    assert waits.sum > 0  # the second call waited for the first
    calls = [s for s in otel.spans() if s.name == "samsar.assistant.completion"]
    waited = sorted(dict(s.attributes or {})["samsar.session.wait"] for s in calls)
    assert waited[0] == 0.0
    assert waited[1] > 0


async def test_replays_are_not_counted_twice(
    server: MockSamsarServer, session_id: str, otel: Otel
) -> None:
    async with make(server) as client:
        otel.instrument(client)
        first = await client.assistant.complete(session_id, "x", idempotency_key="same")
        await client.assistant.complete(session_id, "x", idempotency_key="same")
    assert otel.total("samsar.client.credits.charged") == float(first.credits.charged or 0)
    replay = otel.spans()[-1]
    assert dict(replay.attributes or {})["samsar.replayed"] is True


async def test_uninstrument_and_with_options(
    server: MockSamsarServer, session_id: str, otel: Otel
) -> None:
    async with make(server) as client:
        before = client.with_options(timeout=30)  # made before: not instrumented
        instrumentation = otel.instrument(client)
        after = client.with_options(timeout=30)
        await before.assistant.complete(session_id, "a")
        await after.assistant.complete(session_id, "b")
        uninstrument(client, instrumentation)
        await client.assistant.complete(session_id, "c")
        assert client._observer is None  # back to the untraced path
    assert [s.name for s in otel.spans()] == ["POST", "samsar.assistant.completion"]
    assert [r.headers.get("traceparent") is not None for r in server.requests] == [
        False,
        True,
        False,
    ]


async def test_cancelled_call_ends_its_spans(
    server: MockSamsarServer, session_id: str, otel: Otel
) -> None:
    async with make(server) as client:
        otel.instrument(client)
        server.pause()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.assistant.complete, session_id, "x")
            await server.wait_until(lambda s: s.held == 1)
            tg.cancel_scope.cancel()
        server.resume()
    attempt, call = otel.spans()
    assert call.status.status_code is StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "CancelledError"
    assert attempt.end_time is not None


def test_sync_client_parents_spans_on_the_callers_span(
    server_in_thread: MockSamsarServer, otel: Otel
) -> None:
    server = server_in_thread
    sid = server.create_session()
    with Samsar(server.api_key, base_url=server.url) as client:
        otel.instrument(client)
        tracer = otel.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("view") as view:
            client.assistant.complete(sid, "x")
    _attempt, call, _view = otel.spans()
    assert call.parent is not None
    assert call.parent.span_id == view.get_span_context().span_id
    assert call.context.trace_id == view.get_span_context().trace_id
