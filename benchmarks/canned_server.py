"""A cheap canned-response HTTP/1.1 server for the benchmarks.

It runs in its own process (pinned to one core) so that the benchmarks measure
the client, not the server. It is a plain :class:`asyncio.Protocol`: no web
framework, responses prebuilt as bytes, a small incremental request parser
that handles keep-alive and pipelined requests, ``Content-Length`` and chunked
bodies, and ``Expect: 100-continue``.

Routes (any method other than POST on them gets 405, anything else 404):

- ``POST .../assistant/completion`` and ``POST .../responses`` (so the openai
  SDK's ``client.responses.create`` lands on the same payload): the contract's
  200 success payload, with ``x-credits-charged: 0.4625`` and
  ``x-credits-remaining: 999.5375``.
- The same routes, when the JSON body contains ``"image_generation"``: the
  contract's image response shape whose ``result`` is the base64 of a real PNG
  of about N MiB (decoded) made of random, incompressible pixels. N is the
  server's ``--image-mib`` default (the first value), or chosen per request by
  a path prefix ``/mib/<N>/`` (``base_url=http://127.0.0.1:PORT/mib/32/v1``,
  which works with any client that only appends paths to its base URL) or a
  query string ``?image_mib=N``. Sizes listed in ``--image-mib`` are built
  once at startup; other sizes are built on first use and then cached.
- Held answers, for measuring calls in flight: a completion request whose path
  starts with ``/hold/`` (``base_url=http://127.0.0.1:PORT/hold/v1``) is
  parsed but not answered; that connection reads nothing more until
  ``GET /hold/release`` answers every held request (its body: how many) and
  stops holding until ``GET /hold/arm``. ``GET /hold/count`` answers the number
  held now. Holding is armed at start-up.
- ``GET /health``: ``ok``.

Run: ``python -m benchmarks.canned_server --port 0 --cpu 1``; the first line
of stdout is the port it listens on (127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import struct
import sys
import zlib
from urllib.parse import parse_qs

__all__ = [
    "CREDITS_CHARGED",
    "CREDITS_REMAINING",
    "IMAGE_PAYLOAD_TEMPLATE",
    "SUCCESS_PAYLOAD",
    "make_png",
    "serve",
]

# The contract's "Success response (200)" of POST /assistant/completion.
SUCCESS_PAYLOAD: dict[str, object] = {
    "id": "resp_123",
    "object": "response",
    "created_at": 1773651000,
    "status": "completed",
    "model": "gpt-5.4",
    "output_text": (
        "Meet the new drop: sharp design, fast story, and a launch-ready look in one line."
    ),
    "output": [
        {
            "id": "resp_123_message",
            "type": "message",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": (
                        "Meet the new drop: sharp design, fast story, "
                        "and a launch-ready look in one line."
                    ),
                    "annotations": [],
                }
            ],
        }
    ],
    "usage": {"input_tokens": 482, "output_tokens": 43, "total_tokens": 525},
}

# The contract's "Image response example"; ``result`` is replaced by a real PNG.
IMAGE_PAYLOAD_TEMPLATE: dict[str, object] = {
    "id": "resp_456",
    "object": "response",
    "created_at": 1773651300,
    "status": "completed",
    "model": "gpt-5.4",
    "output": [
        {
            "id": "ig_456",
            "type": "image_generation_call",
            "status": "completed",
            "revised_prompt": (
                "A clean launch poster with a premium layout, strong product focal point, "
                "and minimal copy."
            ),
            "result": "",
        }
    ],
    "usage": {"input_tokens": 521, "output_tokens": 22, "total_tokens": 543},
}

CREDITS_CHARGED = "0.4625"
CREDITS_REMAINING = "999.5375"

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_IMAGE_MIB = 256
PNG_WIDTH = 2048  # RGB pixels per row


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def make_png(mib: float) -> bytes:
    """A valid RGB PNG of about ``mib`` MiB made of random (incompressible) pixels.

    The pixel rows are stored with zlib level 0, so the file size is the pixel
    data plus a few bytes per 64 KiB block; it decodes as an ordinary PNG.
    """
    target = int(mib * 1024 * 1024)
    row = 1 + PNG_WIDTH * 3  # filter byte + RGB
    height = max(1, target // row)
    raw = bytearray(os.urandom(row * height))
    raw[::row] = bytes(height)  # filter type 0 ("None") at the start of every row
    ihdr = struct.pack(">IIBBBBB", PNG_WIDTH, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", ihdr),
            _chunk(b"IDAT", zlib.compress(bytes(raw), 0)),
            _chunk(b"IEND", b""),
        )
    )


def _response(
    status: int, reason: str, body: bytes, content_type: str, extra: tuple[str, ...] = ()
) -> bytes:
    head = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_CREDIT_HEADERS = (
    f"x-credits-charged: {CREDITS_CHARGED}",
    f"x-credits-remaining: {CREDITS_REMAINING}",
)


def _json_response(payload: object, status: int = 200, reason: str = "OK") -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    extra = _CREDIT_HEADERS if status == 200 else ()
    return _response(status, reason, body, "application/json", extra)


TEXT_RESPONSE = _json_response(SUCCESS_PAYLOAD)
HEALTH_RESPONSE = _response(200, "OK", b"ok", "text/plain")
NOT_FOUND_RESPONSE = _json_response({"error": {"message": "not found"}}, 404, "Not Found")
NOT_ALLOWED_RESPONSE = _json_response(
    {"error": {"message": "method not allowed"}}, 405, "Method Not Allowed"
)
BAD_REQUEST_RESPONSE = _json_response({"error": {"message": "bad request"}}, 400, "Bad Request")
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ImageCache:
    """Prebuilt image responses keyed by size in MiB."""

    def __init__(self, default_mib: float) -> None:
        self.default_mib = default_mib
        self._responses: dict[float, bytes] = {}
        self.png_sizes: dict[float, int] = {}

    def get(self, mib: float) -> bytes:
        response = self._responses.get(mib)
        if response is None:
            png = make_png(mib)
            payload = json.loads(json.dumps(IMAGE_PAYLOAD_TEMPLATE))
            payload["output"][0]["result"] = base64.b64encode(png).decode("ascii")
            response = _json_response(payload)
            self._responses[mib] = response
            self.png_sizes[mib] = len(png)
        return response


def _image_mib(path: str, query: str, default: float) -> float | None:
    """The requested image size from ``/mib/<N>/`` or ``?image_mib=N``; None if invalid."""
    raw: str | None = None
    if path.startswith("/mib/"):
        raw = path[5:].split("/", 1)[0]
    values = parse_qs(query).get("image_mib") if query else None
    if values:
        raw = values[-1]
    if raw is None:
        return default
    try:
        mib = float(raw)
    except ValueError:
        return None
    return mib if 0 < mib <= MAX_IMAGE_MIB else None


class Held:
    """Answers held back (``/hold/`` routes) until ``GET /hold/release``."""

    def __init__(self) -> None:
        self.waiting: list[tuple[CannedProtocol, bytes, bool]] = []
        self.armed = True

    def release(self) -> int:
        self.armed = False
        waiting, self.waiting = self.waiting, []
        for protocol, response, keep_alive in waiting:
            protocol.answer_held(response, keep_alive)
        return len(waiting)


def _text(body: str) -> bytes:
    return _response(200, "OK", body.encode(), "text/plain")


class CannedProtocol(asyncio.Protocol):
    """One connection: parse requests as bytes arrive, answer each in order."""

    def __init__(self, images: ImageCache, held: Held | None = None) -> None:
        self.images = images
        self.held = held if held is not None else Held()
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        # State of the request whose headers were parsed but whose body is incomplete.
        self.pending: tuple[str, str, int, bool] | None = None
        self.sent_continue = False
        self.holding = False  # an answer is held: read nothing more until it is sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.holding:
            self.held.waiting = [w for w in self.held.waiting if w[0] is not self]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        transport = self.transport
        while transport is not None and not transport.is_closing() and not self.holding:
            if not self._handle_one(transport):
                break

    def answer_held(self, response: bytes, keep_alive: bool) -> None:
        """Send the held answer, then go on with what arrived meanwhile."""
        self.holding = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(response)
        if not keep_alive:
            transport.close()
            return
        self.data_received(b"")

    def _fail(self, transport: asyncio.Transport) -> bool:
        transport.write(BAD_REQUEST_RESPONSE)
        transport.close()
        self.buf.clear()
        return False

    def _handle_one(self, transport: asyncio.Transport) -> bool:
        """Answer the first complete request in the buffer; False if there is none."""
        buf = self.buf
        if self.pending is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    return self._fail(transport)
                return False
            try:
                head = bytes(buf[:end]).decode("latin-1")
                request_line, *header_lines = head.split("\r\n")
                method, target, version = request_line.split(" ")
            except ValueError:
                return self._fail(transport)
            length = 0
            chunked = False
            keep_alive = version == "HTTP/1.1"
            expect_continue = False
            for line in header_lines:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip().lower()
                if name == "content-length":
                    if not value.isdigit():
                        return self._fail(transport)
                    length = int(value)
                elif name == "transfer-encoding":
                    chunked = value.endswith("chunked")
                elif name == "connection":
                    if "close" in value:
                        keep_alive = False
                    elif "keep-alive" in value:
                        keep_alive = True
                elif name == "expect":
                    expect_continue = value == "100-continue"
            if length > MAX_BODY_BYTES:
                return self._fail(transport)
            del buf[: end + 4]
            # -1 marks a chunked body (its length is found by parsing chunks).
            self.pending = (method, target, -1 if chunked else length, keep_alive)
            self.sent_continue = not expect_continue
        method, target, length, keep_alive = self.pending
        if length >= 0:
            if len(buf) < length:
                self._maybe_continue(transport)
                return False
            body = bytes(buf[:length])
            del buf[:length]
        else:
            parsed = self._parse_chunked()
            if parsed is None:
                self._maybe_continue(transport)
                return False
            if parsed is False:
                return self._fail(transport)
            body = parsed
        self.pending = None
        response = self._answer(method, target, body)
        if target.startswith("/hold/") and response is not NOT_FOUND_RESPONSE:
            if target == "/hold/count":
                response = _text(str(len(self.held.waiting)))
            elif target == "/hold/release":
                response = _text(str(self.held.release()))
            elif target == "/hold/arm":
                self.held.armed = True
                response = _text("armed")
            elif method == "POST" and self.held.armed:
                self.holding = True
                self.held.waiting.append((self, response, keep_alive))
                return False
        transport.write(response)
        if not keep_alive:
            transport.close()
            return False
        return True

    def _maybe_continue(self, transport: asyncio.Transport) -> None:
        if not self.sent_continue:
            self.sent_continue = True
            transport.write(CONTINUE_RESPONSE)

    def _parse_chunked(self) -> bytes | bool | None:
        """The whole chunked body (consumed from the buffer), None if incomplete, False if bad."""
        buf = self.buf
        pos = 0
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                return False
            pos = eol + 2
            if size == 0:
                # Trailers (usually none) end with an empty line.
                while True:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        return None
                    if eol == pos:
                        del buf[: eol + 2]
                        return b"".join(parts)
                    pos = eol + 2
            if len(buf) < pos + size + 2:
                return None
            parts.append(bytes(buf[pos : pos + size]))
            pos += size + 2
            if sum(map(len, parts)) > MAX_BODY_BYTES:
                return False

    def _answer(self, method: str, target: str, body: bytes) -> bytes:
        path, _, query = target.partition("?")
        if path == "/health":
            return HEALTH_RESPONSE
        if path in ("/hold/count", "/hold/release", "/hold/arm"):
            return HEALTH_RESPONSE  # replaced by the caller
        if not path.endswith(("/assistant/completion", "/responses")):
            return NOT_FOUND_RESPONSE
        if method != "POST":
            return NOT_ALLOWED_RESPONSE
        if b'"image_generation"' in body:
            mib = _image_mib(path, query, self.images.default_mib)
            if mib is None:
                return BAD_REQUEST_RESPONSE
            return self.images.get(mib)
        return TEXT_RESPONSE


def _raise_fd_limit() -> None:
    """Allow as many connections as the hard limit does (benchmarks.memory opens 10,000)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pin(cpu: int | None) -> None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    available = os.sched_getaffinity(0)
    if cpu in available:
        os.sched_setaffinity(0, {cpu})


async def serve(host: str, port: int, image_mibs: list[float]) -> None:
    images = ImageCache(image_mibs[0] if image_mibs else 8.0)
    for mib in image_mibs:
        images.get(mib)
    held = Held()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: CannedProtocol(images, held), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-POSIX
            loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin this process to")
    parser.add_argument(
        "--image-mib",
        default="8",
        help="comma-separated image sizes (MiB) built at startup; the first is the default",
    )
    args = parser.parse_args(argv)
    _pin(args.cpu)
    _raise_fd_limit()
    mibs = [float(x) for x in args.image_mib.split(",") if x.strip()]
    asyncio.run(serve(args.host, args.port, mibs))


if __name__ == "__main__":
    main()
