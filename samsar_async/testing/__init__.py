"""A faithful local Samsar Assistant API server, for tests and offline work.

::

    from samsar_async.testing import Fault, MockSamsarServer

    async with MockSamsarServer(credits=Decimal("50")) as server:
        session_id = server.create_session()
        server.faults.add(Fault.status(503, retry_after="0"))
        ...  # point a client at server.url with server.api_key

Run ``python -m samsar_async.testing`` to serve one until Ctrl-C.
See :mod:`samsar_async.testing.server` for the exact answer, token and credit
rules, and :mod:`samsar_async.testing.faults` for fault injection.
"""

from __future__ import annotations

from ._png import PNG_SIGNATURE
from .faults import RANDOM_KINDS, Fault, FaultKind, FaultMatch, FaultPlan
from .server import (
    CREDIT_MULTIPLIER,
    CREDIT_QUANTUM,
    CREDITS_PER_USD,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SYSTEM_PROMPT,
    IMAGE_INPUT_TOKENS,
    IMAGE_USD,
    INPUT_USD_PER_MILLION_TOKENS,
    MAX_IMAGE_SIDE,
    MODEL,
    OUTPUT_USD_PER_MILLION_TOKENS,
    SELECTED_ASSISTANT_MODEL,
    ChainTurn,
    Charge,
    MockSamsarServer,
    Outage,
    RecordedRequest,
    count_tokens,
    credits_for,
)

__all__ = [
    "CREDITS_PER_USD",
    "CREDIT_MULTIPLIER",
    "CREDIT_QUANTUM",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_SYSTEM_PROMPT",
    "IMAGE_INPUT_TOKENS",
    "IMAGE_USD",
    "INPUT_USD_PER_MILLION_TOKENS",
    "MAX_IMAGE_SIDE",
    "MODEL",
    "OUTPUT_USD_PER_MILLION_TOKENS",
    "PNG_SIGNATURE",
    "RANDOM_KINDS",
    "SELECTED_ASSISTANT_MODEL",
    "ChainTurn",
    "Charge",
    "Fault",
    "FaultKind",
    "FaultMatch",
    "FaultPlan",
    "MockSamsarServer",
    "Outage",
    "RecordedRequest",
    "count_tokens",
    "credits_for",
]


def __getattr__(name: str) -> object:
    """``Turn``: deprecated alias of :class:`ChainTurn` (removed in the next release;
    ``samsar_async.Turn`` is the conversation helper's turn)."""
    if name != "Turn":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        "samsar_async.testing.Turn is renamed ChainTurn", DeprecationWarning, stacklevel=2
    )
    return ChainTurn
