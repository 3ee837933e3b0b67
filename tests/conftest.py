"""Shared pytest configuration."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings

from samsar_async import AsyncSamsar, RetryPolicy
from samsar_async.testing import MockSamsarServer

# Hypothesis profiles for the property tests (marker ``fuzz``). test_fuzz_*.py share
# one server and client per test function, so function-scoped fixtures are intended.
_FUZZ_SETTINGS = {
    "deadline": None,  # a loopback call may be slow on a busy CI machine
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}
settings.register_profile("default", max_examples=100, **_FUZZ_SETTINGS)  # type: ignore[arg-type]
"""The normal run: 100 examples per property (about 10 s for the fuzz tests)."""
settings.register_profile("nightly", max_examples=2000, **_FUZZ_SETTINGS)  # type: ignore[arg-type]
"""``HYPOTHESIS_PROFILE=nightly`` (``nox -s fuzz``): many more examples."""
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[MockSamsarServer]:
    """A real MockSamsarServer on a loopback port."""
    async with MockSamsarServer() as srv:
        yield srv


@pytest.fixture
async def client(server: MockSamsarServer) -> AsyncIterator[AsyncSamsar]:
    """An AsyncSamsar pointed at ``server``, with fast retries (no real back-off waits)."""
    async with AsyncSamsar(
        server.api_key, base_url=server.url, retry=RetryPolicy(initial_backoff=0, max_backoff=0)
    ) as c:
        yield c


@pytest.fixture
def server_in_thread() -> Iterator[MockSamsarServer]:
    """A MockSamsarServer on its own loop thread (for tests of the sync client)."""
    with start_blocking_portal("asyncio") as portal:
        srv = MockSamsarServer()
        portal.call(srv.start)
        try:
            yield srv
        finally:
            portal.call(srv.close)


@pytest.fixture
def session_id(server: MockSamsarServer) -> str:
    """A session owned by the server's default account."""
    return server.create_session()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run only when asked for (``-m browser``, as ``nox -s browser`` does)."""
    if "browser" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a browser test: run with -m browser (nox -s browser)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)
