"""Serve a :class:`~samsar_async.testing.MockSamsarServer` until Ctrl-C.

::

    python -m samsar_async.testing [--host 127.0.0.1] [--port 8080] [--credits 1000]
                                   [--sessions 1] [--latency 0] [--image-bytes N]

It prints the base URL, the API key and the pre-created session ids as shell
``export`` lines, so ``SAMSAR_BASE_URL`` / ``SAMSAR_API_KEY`` can point a client
at it. It binds loopback unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, TextIO

from .server import MockSamsarServer

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main", "serve"]


def _credits(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("credits must be a finite number >= 0")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line parser of ``python -m samsar_async.testing``."""
    parser = argparse.ArgumentParser(
        prog="python -m samsar_async.testing",
        description="Serve a local mock of the Samsar Assistant API until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port, 0 for any (default: 8080)")
    parser.add_argument(
        "--credits", type=_credits, default=Decimal("1000"), help="starting credits (1000)"
    )
    parser.add_argument(
        "--sessions", type=int, default=1, help="sessions to pre-create (default: 1)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds each completion takes (default: 0)"
    )
    parser.add_argument(
        "--image-bytes",
        type=int,
        default=None,
        help="make generated images random-pixel PNGs of exactly this many bytes",
    )
    return parser


async def serve(
    argv: Sequence[str] | None = None,
    *,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Start the server from ``argv``, print how to use it and serve until ``stop``
    is set (by default: until SIGINT or SIGTERM)."""
    args = build_parser().parse_args(argv)
    out = sys.stdout if out is None else out
    if args.sessions < 0:
        raise SystemExit("--sessions must be >= 0")
    server = MockSamsarServer(
        host=args.host,
        port=args.port,
        credits=args.credits,
        latency=args.latency,
        image_bytes=args.image_bytes,
    )
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}, not loopback", file=sys.stderr)
    async with server:
        sessions = [server.create_session() for _ in range(args.sessions)]
        lines = [
            f"Mock Samsar server on {server.url} (alias {server.alias_url})",
            f"export SAMSAR_BASE_URL={server.url}",
            f"export SAMSAR_API_KEY={server.api_key}",
        ]
        for index, session_id in enumerate(sessions):
            prefix = "export SAMSAR_SESSION_ID=" if index == 0 else "# another session: "
            lines.append(prefix + session_id)
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), file=out, flush=True)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run :func:`serve` and exit 0 on Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
