"""Shared pytest configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from samsar_async import AsyncSamsar, RetryPolicy
from samsar_async.testing import MockSamsarServer


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
