"""Test helpers: the example web backends, served for real on loopback.

``serve_backend(name, ...)`` runs ``examples/<name>_sse_backend.py`` (aiohttp's
own server, or uvicorn for the FastAPI one) on a free loopback port and records
every request it answers (method, path, headers, status) in a :class:`Log`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

import anyio
import attrs
from aiohttp import web

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
BACKENDS = ("aiohttp", "fastapi")

_loaded: dict[str, ModuleType] = {}


def load_example(name: str) -> ModuleType:
    """``examples/<name>_sse_backend.py`` as a module (loaded once)."""
    if name not in _loaded:
        path = EXAMPLES / f"{name}_sse_backend.py"
        spec = importlib.util.spec_from_file_location(f"{name}_sse_backend", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


@attrs.frozen
class Answered:
    """One request a backend answered (header names in lower case)."""

    method: str
    path: str
    headers: Mapping[str, str]
    status: int


@attrs.define
class Log:
    """The requests a backend answered, in order; ``changed`` is set at each one."""

    answered: list[Answered] = attrs.field(factory=list)
    changed: anyio.Event = attrs.field(factory=anyio.Event)

    def add(self, entry: Answered) -> None:
        self.answered.append(entry)
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[list[Answered]], bool]) -> None:
        """Wait until ``predicate(answered)`` holds (checked at each answer)."""
        while not predicate(self.answered):
            await self.changed.wait()


@contextlib.asynccontextmanager
async def serve_aiohttp(app: web.Application, log: Log) -> AsyncIterator[str]:
    """Serve an ``aiohttp.web`` app on a free loopback port; yield its base URL."""

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        log.add(Answered(request.method, request.path, headers, response.status))
        return response

    app.middlewares.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, log: Log | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yield its base URL.

    The socket is bound and listening before uvicorn starts, so requests made
    at once wait in its backlog until uvicorn (lifespan startup included) is ready.
    """
    import uvicorn

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or log is None:
            await app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            log.add(Answered(scope["method"], scope["path"], headers, status[0] if status else 0))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        recording,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def serve_backend(
    name: str, log: Log, *, api_key: str, base_url: str, allowed_origins: tuple[str, ...] = ()
) -> AsyncIterator[str]:
    """Serve ``examples/<name>_sse_backend.py`` against a Samsar server; yield its base URL."""
    module = load_example(name)
    app = module.make_app(api_key=api_key, base_url=base_url, allowed_origins=allowed_origins)
    serve = serve_aiohttp if name == "aiohttp" else serve_asgi
    async with serve(app, log) as url:
        yield url
