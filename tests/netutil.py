"""Loopback network helpers for the client-options tests: a forward proxy, a TLS front.

- :class:`ForwardProxy`: an HTTP forward proxy on 127.0.0.1 that records what it
  is sent (the request heads and every byte), tunnels ``CONNECT`` to wherever
  ``route`` says, and forwards absolute-form requests to their host.
- :class:`TLSFront`: a TLS server on 127.0.0.1 that relays the decrypted bytes
  to a plain-HTTP server (so that :class:`~samsar_async.testing.MockSamsarServer`
  can be reached over HTTPS).
- :func:`self_signed`: a certificate for some host names, with the SSL contexts
  of both ends.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest


def self_signed(*hosts: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``hosts``: ``(server context, client context)``.

    Skips the test without ``cryptography`` (a test dependency).
    """
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file = Path(tmp, "cert.pem")
        key_file = Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return server, client


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: bytearray | None
) -> None:
    try:
        while chunk := await reader.read(65536):
            if seen is not None:
                seen += chunk
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class _Relay:
    """A loopback TCP server whose connections are relayed somewhere else."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def _start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        port: int,
        first: bytes,
        seen: bytearray | None,
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        self._writers.add(up_writer)
        try:
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer, seen), _pipe(up_reader, writer, None))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()  # the pipes read EOF and their tasks end
        if self._tasks:
            _done, stuck = await asyncio.wait(set(self._tasks), timeout=10)
            for task in stuck:
                task.cancel()
        if server is not None:
            await server.wait_closed()


class TLSFront(_Relay):
    """TLS on ``port``, relayed in clear to ``127.0.0.1:target``."""

    def __init__(self, target: int, ssl_context: ssl.SSLContext) -> None:
        super().__init__()
        self.target = target
        self.ssl_context = ssl_context

    async def __aenter__(self) -> TLSFront:
        await self._start(self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._relay(reader, writer, self.target, b"", None)


class ForwardProxy(_Relay):
    """An HTTP forward proxy on 127.0.0.1.

    ``CONNECT host:port`` is tunnelled to ``127.0.0.1:route(host, port)``;
    an absolute-form request (``POST http://host:port/...``) is forwarded,
    as it is, to ``127.0.0.1:port``. ``refuse`` answers every request with
    that status instead. Records: ``heads`` (each request head as text) and
    ``seen`` (every byte the clients sent, heads and tunnels included).
    """

    def __init__(self, route: Callable[[str, int], int] | None = None) -> None:
        super().__init__()
        self.route = route or (lambda _host, port: port)
        self.refuse: int | None = None
        self.heads: list[str] = []
        self.seen = bytearray()

    async def __aenter__(self) -> ForwardProxy:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.seen += head
        text = head.decode("latin-1")
        self.heads.append(text)
        method, target, _version = text.split("\r\n", 1)[0].split(" ", 2)
        if self.refuse is not None:
            writer.write(
                f"HTTP/1.1 {self.refuse} Refused\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode("ascii")
            )
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._relay(reader, writer, self.route(host, int(port)), b"", self.seen)
            return
        authority = target.split("://", 1)[1].split("/", 1)[0]
        port = int(authority.rpartition(":")[2])
        await self._relay(reader, writer, port, head, self.seen)
