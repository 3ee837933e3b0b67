"""Retries, idempotency, timeouts, cancellation and bounded replies, with real faults."""

from __future__ import annotations

import datetime
import email.utils
import logging
import socket
from collections import Counter
from typing import Any

import anyio
import pytest

from samsar_async import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIReadTimeoutError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncSamsar,
    BadRequestError,
    InternalServerError,
    InvalidArgumentError,
    OutcomeUnknownError,
    RateLimitError,
    Response,
    RetryBudget,
    RetryPolicy,
    SamsarError,
    Timeout,
)
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0, max_backoff=0)


def make_client(server: MockSamsarServer, **kwargs: Any) -> AsyncSamsar:
    kwargs.setdefault("retry", FAST)
    return AsyncSamsar(server.api_key, base_url=server.url, **kwargs)


def attempts_seen(server: MockSamsarServer) -> int:
    return sum(1 for r in server.requests if r.endpoint == "completion")


@pytest.mark.parametrize("status", [408, 409, 425, 429, 503])
async def test_refused_statuses_are_retried(
    server: MockSamsarServer, session_id: str, status: int
) -> None:
    server.faults.add(Fault.status(status), times=2)
    async with make_client(server, idempotency_keys=False) as c:  # safe even without a key
        resp = await c.assistant.complete(session_id, "x")
    assert resp.output_text == "Reply 1 to: x"
    assert attempts_seen(server) == 3
    assert len(server.ledger) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_outcome_unknown_statuses_need_a_key(
    server: MockSamsarServer, session_id: str, status: int
) -> None:
    server.faults.add(Fault.status(status, after_charge=True))
    async with make_client(server) as c:
        resp = await c.assistant.complete(session_id, "x")
    assert attempts_seen(server) == 2
    # The retry repeated the key, so the server replayed the charged answer.
    assert len(server.ledger) == 1
    assert server.requests[0].idempotency_key == server.requests[1].idempotency_key
    assert server.requests[1].replayed
    assert resp.idempotency_key == server.requests[0].idempotency_key

    server.faults.add(Fault.status(status, after_charge=True))
    async with make_client(server, idempotency_keys=False) as c:
        with pytest.raises(InternalServerError) as info:
            await c.assistant.complete(session_id, "y")
    assert attempts_seen(server) == 3  # raised at once
    assert info.value.idempotency_key is None


@pytest.mark.parametrize("kind", ["disconnect", "truncate"])
async def test_transport_failure_after_sending(
    server: MockSamsarServer, session_id: str, kind: str
) -> None:
    fault = getattr(Fault, kind)(after_charge=True)
    server.faults.add(fault)
    async with make_client(server) as c:
        resp = await c.assistant.complete(session_id, "x")
    assert resp.output_text == "Reply 1 to: x"
    assert attempts_seen(server) == 2
    assert len(server.ledger) == 1  # charged once: the retry was a replay

    server.faults.add(getattr(Fault, kind)(after_charge=True))
    async with make_client(server, idempotency_keys=False) as c:
        with pytest.raises(OutcomeUnknownError, match="may have been charged") as info:
            await c.assistant.complete(session_id, "y")
    assert isinstance(info.value, APIConnectionError)
    assert info.value.sent
    assert attempts_seen(server) == 3  # not retried without a key
    assert len(server.ledger) == 2


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.status(400), BadRequestError),
        (Fault.status(401), APIStatusError),
        (Fault.status(402), APIStatusError),
        (Fault.status(403), APIStatusError),
        (Fault.status(404), APIStatusError),
        (Fault.status(422), APIStatusError),
        (Fault.invalid_json(), APIResponseValidationError),
        (Fault.wrong_content_type(), APIResponseValidationError),
    ],
)
async def test_never_retried(
    server: MockSamsarServer, session_id: str, fault: Fault, cls: type
) -> None:
    server.faults.add(fault, times=None)
    async with make_client(server) as c:
        with pytest.raises(cls) as info:
            await c.assistant.complete(session_id, "x")
    assert attempts_seen(server) == 1
    assert len(info.value.attempts) == 1


async def test_connection_refused_is_not_sent_and_retried() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncSamsar("k", base_url=f"http://127.0.0.1:{port}/v1", retry=FAST) as c:
        with pytest.raises(APIConnectionError, match="nothing was sent") as info:
            await c.assistant.complete("s", "x")
    assert info.value.sent is False
    assert [a.number for a in info.value.attempts] == [1, 2, 3]
    assert "after 3 attempts" in str(info.value)


async def test_final_error_lists_every_attempt(server: MockSamsarServer, session_id: str) -> None:
    server.faults.add(Fault.status(503), times=None)
    async with make_client(server) as c:
        with pytest.raises(APIStatusError) as info:
            await c.assistant.complete(session_id, "x")
    err = info.value
    assert err.status_code == 503
    assert [a.status_code for a in err.attempts] == [503, 503, 503]
    assert "after 3 attempts" in str(err)
    assert attempts_seen(server) == 3
    keys = {r.idempotency_key for r in server.requests}
    assert keys == {err.idempotency_key}  # one key, repeated by every attempt


async def test_per_call_retry_override(server: MockSamsarServer, session_id: str) -> None:
    server.faults.add(Fault.status(503), times=None)
    async with make_client(server) as c:
        with pytest.raises(APIStatusError):
            await c.assistant.complete(
                session_id, "x", retry=RetryPolicy(max_attempts=5, initial_backoff=0)
            )
        assert attempts_seen(server) == 5
        with pytest.raises(APIStatusError):
            await c.assistant.complete(session_id, "x", retry=None)
        assert attempts_seen(server) == 6
        with pytest.raises(APIStatusError):
            await c.assistant.complete(
                session_id, "x", retry=RetryPolicy(retry_on={"not_sent"}, initial_backoff=0)
            )
        assert attempts_seen(server) == 7


async def test_caller_key_is_sent_and_replayed(server: MockSamsarServer, session_id: str) -> None:
    async with make_client(server) as c:
        first = await c.assistant.complete(session_id, "x", idempotency_key="order-42")
        again = await c.assistant.complete(session_id, "x", idempotency_key="order-42")
    assert first.idempotency_key == again.idempotency_key == "order-42"
    assert first.id == again.id
    assert len(server.ledger) == 1  # the mock server dedupes by key: charged once


def http_date(seconds_from_now: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=seconds_from_now
    )
    return email.utils.format_datetime(when, usegmt=True)


async def test_retry_after_is_honoured(
    server: MockSamsarServer, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="samsar_async")
    server.faults.add(Fault.status(429, retry_after_ms=30))
    server.faults.add(Fault.status(503, retry_after=http_date(-5)))  # a date in the past: now
    server.faults.add(Fault.status(503, retry_after="0"))
    async with make_client(server, retry=RetryPolicy(max_attempts=4, initial_backoff=5)) as c:
        await c.assistant.complete(session_id, "x")
    waits = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert waits[0].startswith("retrying in 0.03s")  # retry-after-ms, not the 5 s back-off
    assert waits[1].startswith("retrying in 0.00s")
    assert waits[2].startswith("retrying in 0.00s")


@pytest.mark.parametrize("retry_after", ["120", "date"])
async def test_retry_after_over_the_cap_ends_retries(
    server: MockSamsarServer, session_id: str, retry_after: str
) -> None:
    value = http_date(120) if retry_after == "date" else retry_after
    server.faults.add(Fault.status(429, retry_after=value), times=None)
    async with make_client(server) as c:
        with pytest.raises(RateLimitError) as info:
            await c.assistant.complete(session_id, "x")
    assert attempts_seen(server) == 1
    assert info.value.retry_after is not None
    assert 100 < info.value.retry_after <= 120


async def test_retry_budget_empties_and_refills(server: MockSamsarServer) -> None:
    budget = RetryBudget(capacity=10, retry_cost=5, success_refund=1)
    sessions = [server.create_session() for _ in range(4)]
    async with make_client(server, retry_budget=budget) as c:
        server.faults.add(Fault.status(503), times=None)
        with pytest.raises(APIStatusError):
            await c.assistant.complete(sessions[0], "x")  # 2 retries: 10 tokens
        assert budget.tokens == 0
        assert attempts_seen(server) == 3
        with pytest.raises(APIStatusError) as info:
            await c.assistant.complete(sessions[1], "x")  # empty: fails fast
        assert len(info.value.attempts) == 1
        assert attempts_seen(server) == 4
        server.faults.clear()
        for _ in range(5):
            await c.assistant.complete(sessions[2], "ok")  # each success refunds 1
        assert budget.tokens == 5
        server.faults.add(Fault.status(503), times=1)
        await c.assistant.complete(sessions[3], "one retry is affordable again")
        assert budget.tokens == 5  # the retry's 5 tokens came back on success


async def test_read_timeout(server: MockSamsarServer, session_id: str) -> None:
    server.faults.add(Fault.stall(30), times=None)
    timeout = Timeout(read=0.2, total=None)
    async with make_client(server, timeout=timeout, idempotency_keys=False) as c:
        with pytest.raises(APIReadTimeoutError, match="may have been charged") as info:
            await c.assistant.complete(session_id, "x")
    assert isinstance(info.value, APITimeoutError)
    assert isinstance(info.value, OutcomeUnknownError)
    assert attempts_seen(server) == 1  # not retried without a key

    # With a key the read timeout is retried; the stalled first attempt is still
    # running on the server, which refuses the repeats with 409 (never a 2nd charge).
    # The call ends as OutcomeUnknownError: attempt 1 may yet be charged.
    async with make_client(server, timeout=timeout) as c:
        with pytest.raises(OutcomeUnknownError) as unknown:
            await c.assistant.complete(session_id, "y")
    assert [a.error.split(":")[0] for a in unknown.value.attempts] == [
        "APIReadTimeoutError",
        "ConflictError",
        "ConflictError",
    ]
    assert isinstance(unknown.value.last_error, APIStatusError)
    assert unknown.value.last_error.status_code == 409
    assert unknown.value.__cause__ is unknown.value.last_error
    assert unknown.value.may_have_been_charged
    assert attempts_seen(server) == 4


async def test_total_deadline(server: MockSamsarServer, session_id: str) -> None:
    server.faults.add(Fault.stall(30), times=None)
    async with make_client(server, timeout=Timeout(read=None, total=0.3)) as c:
        with pytest.raises(APITimeoutError):
            await c.assistant.complete(session_id, "x")
        with pytest.raises(APITimeoutError):
            await c.assistant.complete(session_id, "x", timeout=0.1)  # per call


async def test_waiting_for_a_pooled_connection_times_out_unsent(server: MockSamsarServer) -> None:
    server.pause()
    async with make_client(server, max_connections=1) as c, anyio.create_task_group() as tg:
        tg.start_soon(c.assistant.complete, server.create_session(), "holds the connection")
        await server.wait_until(lambda s: s.held == 1)
        with pytest.raises(APIConnectTimeoutError, match="nothing was sent") as info:
            await c.assistant.complete(server.create_session(), "x", timeout=1.0)
        assert info.value.sent is False
        assert attempts_seen(server) == 1  # the second call never reached the server
        server.resume()


async def test_cancellation_releases_connections(server: MockSamsarServer) -> None:
    server.pause()
    sessions = [server.create_session() for _ in range(200)]
    async with make_client(server, max_connections=50) as c:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for s in sessions:
                    tg.start_soon(c.assistant.complete, s, "x")
                await server.wait_until(lambda srv: srv.held == 50)
                scope.cancel()
        assert scope.cancelled_caught
        connector = c._transport.session.connector  # type: ignore[union-attr]
        assert connector is not None
        assert len(connector._acquired) == 0
        server.resume()
        resp = await c.assistant.complete(server.create_session(), "still works")
        assert resp.output_text == "Reply 1 to: still works"


async def test_cancellation_is_not_retried_or_swallowed(
    server: MockSamsarServer, session_id: str
) -> None:
    # The server asks for a 30 s wait, so the back-off is exactly that (no jitter);
    # the cancellation is requested when the client announces the retry, just
    # before it sleeps, and is delivered in that sleep: no race with a timer.
    server.faults.add(Fault.status(503, retry_after=30), times=None)
    announced: list[str] = []

    class CancelOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            announced.append(record.getMessage())
            scope.cancel()

    handler = CancelOnRetry(logging.WARNING)
    logger = logging.getLogger("samsar_async")
    logger.addHandler(handler)
    try:
        async with make_client(server, retry=RetryPolicy(max_attempts=3)) as c:
            with anyio.CancelScope() as scope:
                await c.assistant.complete(session_id, "x")  # cancelled in its back-off sleep
            assert scope.cancelled_caught  # the cancellation propagated, not swallowed
    finally:
        logger.removeHandler(handler)
    assert len(announced) == 1
    assert announced[0].startswith("retrying in 30.00s")
    assert attempts_seen(server) == 1  # and was not retried


async def test_response_size_cap(server: MockSamsarServer, session_id: str) -> None:
    async with make_client(server, max_response_bytes=200) as c:
        with pytest.raises(APIResponseValidationError, match="limit"):
            await c.assistant.complete(session_id, "a reply longer than two hundred bytes")
    assert attempts_seen(server) == 1


async def test_redirects_are_not_followed(server: MockSamsarServer, session_id: str) -> None:
    async with MockSamsarServer() as other:
        server.faults.add(Fault.redirect(other.url + "/assistant/completion", status=307))
        async with make_client(server) as c:
            with pytest.raises(APIStatusError, match="not followed") as info:
                await c.assistant.complete(session_id, "x")
        assert info.value.status_code == 307
        assert other.requests == []  # the Authorization header never travelled


async def test_many_tasks_one_client(server: MockSamsarServer) -> None:
    sessions = [server.create_session() for _ in range(20)]
    results: list[Response] = []
    async with make_client(server) as c:

        async def run(s: str) -> None:
            for i in range(5):
                results.append(await c.assistant.complete(s, f"turn {i}"))

        async with anyio.create_task_group() as tg:
            for s in sessions:
                tg.start_soon(run, s)
    assert len(results) == 100
    assert len({r.id for r in results}) == 100


def test_policy_validation() -> None:
    with pytest.raises(InvalidArgumentError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidArgumentError, match="retry_on"):
        RetryPolicy(retry_on={"sometimes"})
    with pytest.raises(InvalidArgumentError, match=r"timeout\.read"):
        Timeout(read=-1)


async def test_soak_no_double_charges(server: MockSamsarServer) -> None:
    """2,000 calls through 64 tasks with ~20% injected faults of every kind."""
    server.faults.random(rate=0.2, seed=7, stall_seconds=0.5)
    sessions = [server.create_session() for _ in range(400)]
    outcomes: list[Response | SamsarError] = []
    client = make_client(
        server,
        retry=RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.01),
        retry_budget=None,
        timeout=Timeout(read=0.1, total=10),
    )
    async with client, anyio.create_task_group() as tg:
        for worker in range(64):

            async def work(worker: int = worker) -> None:
                for n in range(worker, 2000, 64):
                    try:
                        outcomes.append(
                            await client.assistant.complete(sessions[n % 400], f"call {n}")
                        )
                    except SamsarError as exc:
                        outcomes.append(exc)

            tg.start_soon(work)
    assert len(outcomes) == 2000
    responses = [o for o in outcomes if isinstance(o, Response)]
    errors = [o for o in outcomes if not isinstance(o, Response)]
    assert responses
    assert errors  # faults did surface, each as a classified SDK error
    server.resume()
    # No logical call (one idempotency key) was ever charged twice.
    charges = Counter(c.idempotency_key for c in server.ledger)
    assert charges
    assert max(charges.values()) == 1
    for r in responses:
        assert charges[r.idempotency_key] == 1
