"""What the commands share: running one on an event loop that SIGINT / SIGTERM cancel, the
client the global options describe, ``TEXT`` arguments (``-``: stdin) and credit amounts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from ..client import AsyncSamsar
from ..config import API_KEY_ENV, DEFAULT_TIMEOUT
from .exits import EXIT_AUTH, CLIError, _Interrupted

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable
    from decimal import Decimal


def _run(factory: Callable[[], Awaitable[int]]) -> int:
    """Run an async command; SIGINT / SIGTERM cancel it cleanly (then ``_Interrupted``)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            task.cancel()

        installed: list[int] = []
        signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
        for signum in signums:
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - Windows
                continue
            installed.append(signum)
        try:
            return await factory()
        except asyncio.CancelledError:
            if received:
                raise _Interrupted(received[0]) from None
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    return asyncio.run(runner())


def _client(args: argparse.Namespace, **options: Any) -> AsyncSamsar:
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if not api_key or not api_key.strip():
        raise CLIError(f"no API key: set {API_KEY_ENV} or pass --api-key", EXIT_AUTH)
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    return AsyncSamsar(api_key, base_url=args.base_url, timeout=timeout, **options)


def _text_arg(value: str) -> str:
    if value != "-":
        return value
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _fmt_credits(value: Decimal | None) -> str:
    """A sum of credits for people: no exponent, no trailing zeros."""
    return "unknown" if value is None else format(value.normalize(), "f")
