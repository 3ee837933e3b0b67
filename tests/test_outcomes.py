"""Truthful outcomes: a call's final error says the worst any of its attempts may have done."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import pytest

from samsar_async import (
    APIConnectionError,
    APIConnectTimeoutError,
    APIReadTimeoutError,
    APIResponseValidationError,
    AsyncSamsar,
    ClientClosedError,
    CreditBudgetExceededError,
    ImageDecodeError,
    InvalidArgumentError,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    SamsarError,
    StreamDecodeError,
)
from samsar_async.errors import ServerUnreachableError, status_error_class
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0, max_backoff=0)


def make_client(server: MockSamsarServer, **kwargs: Any) -> AsyncSamsar:
    kwargs.setdefault("retry", FAST)
    return AsyncSamsar(server.api_key, base_url=server.url, **kwargs)


def kinds(err: BaseException) -> list[str]:
    assert isinstance(err, SamsarError)
    return [a.error.split(":")[0] for a in err.attempts]  # type: ignore[attr-defined]


async def test_dropped_after_sending_then_refused_is_outcome_unknown(
    server: MockSamsarServer, session_id: str
) -> None:
    """The issue's case: charged, connection dropped, then the port refuses: never "not sent"."""
    server.latency = 3600.0
    errors: list[BaseException] = []
    async with make_client(server) as client:

        async def call() -> None:
            try:
                await client.assistant.complete(session_id, "x")
            except SamsarError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await server.wait_until(lambda s: s.in_flight == 1)
            await server.go_down(charge_in_flight=True)
    [err] = errors
    assert len(server.ledger) == 1  # the server did charge attempt 1
    assert isinstance(err, OutcomeUnknownError)
    assert err.sent
    assert err.may_have_been_charged
    assert kinds(err) == ["OutcomeUnknownError", "APIConnectionError", "APIConnectionError"]
    assert [a.may_have_been_charged for a in err.attempts] == [True, False, False]
    last = err.last_error
    assert isinstance(last, APIConnectionError)
    assert not isinstance(last, OutcomeUnknownError)
    assert last.sent is False
    assert err.__cause__ is last
    assert str(err).startswith("the call may have been charged: attempt 1 may have reached")
    assert err.idempotency_key == server.ledger[0].idempotency_key


async def test_charged_gateway_error_then_429s_is_outcome_unknown(
    server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.status(502, after_charge=True))
    server.faults.add(Fault.status(429), times=2)
    async with make_client(server) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.assistant.complete(session_id, "x")
    err = info.value
    assert kinds(err) == ["InternalServerError", "RateLimitError", "RateLimitError"]
    assert isinstance(err.last_error, RateLimitError)
    assert err.may_have_been_charged
    assert len(server.ledger) == 1


async def test_refused_then_refused_stays_plain(server: MockSamsarServer, session_id: str) -> None:
    """No attempt may have been charged: the last attempt's own error, saying so."""
    server.faults.add(Fault.status(429), times=None)
    async with make_client(server) as client:
        with pytest.raises(RateLimitError) as info:
            await client.assistant.complete(session_id, "x")
    assert not info.value.may_have_been_charged
    assert [a.may_have_been_charged for a in info.value.attempts] == [False, False, False]
    assert server.ledger == []


async def test_only_the_last_attempt_charged_keeps_its_class(
    server: MockSamsarServer, session_id: str
) -> None:
    server.faults.add(Fault.status(429))
    server.faults.add(Fault.status(500, after_charge=True))
    async with make_client(server, retry=RetryPolicy(max_attempts=2, initial_backoff=0)) as c:
        with pytest.raises(SamsarError) as info:
            await c.assistant.complete(session_id, "x")
    err = info.value
    assert type(err).__name__ == "InternalServerError"
    assert err.may_have_been_charged
    assert len(server.ledger) == 1


def test_may_have_been_charged_for_every_error() -> None:
    assert not InvalidArgumentError("x", "bad").may_have_been_charged
    assert not ClientClosedError("closed").may_have_been_charged
    assert ClientClosedError("closed while in flight", sent=True).may_have_been_charged
    assert not ImageDecodeError("bad").may_have_been_charged
    assert not StreamDecodeError("bad").may_have_been_charged
    assert not CreditBudgetExceededError(Decimal(1), Decimal(2)).may_have_been_charged
    assert not APIConnectionError("refused", sent=False).may_have_been_charged
    assert APIConnectionError("dropped", sent=True).may_have_been_charged
    assert not APIConnectTimeoutError("pool").may_have_been_charged
    assert OutcomeUnknownError("dropped").may_have_been_charged
    assert APIReadTimeoutError("slow").may_have_been_charged
    assert not ServerUnreachableError("down", unreachable_for=12, probes=7).may_have_been_charged
    charged = {409, 500, 502, 504, 520}
    for status in (307, 400, 401, 402, 403, 404, 408, 409, 422, 425, 429, 500, 502, 503, 504, 520):
        err = status_error_class(status)("x", status_code=status)
        assert err.may_have_been_charged is (status in charged), status
    assert APIResponseValidationError("bad json", status_code=200).may_have_been_charged
    assert not APIResponseValidationError("too big", status_code=404).may_have_been_charged
    assert APIResponseValidationError("too big", status_code=500).may_have_been_charged
