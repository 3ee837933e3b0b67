"""Incremental reading of an image answer: base64 decoded on the fly, the rest kept small.

An image answer is a JSON object whose ``output`` array holds
``image_generation_call`` items, each with a ``result`` string of base64 text
(often tens of megabytes). :class:`ImageBodyReader` takes the body in chunks,
as they arrive, and:

- copies every byte of the JSON to a *remainder*, except the contents of each
  ``result`` string of an ``output`` item, which are decoded as they stream by,
  in 4-aligned slices, into memory (a ``bytearray``) or a temporary file; in
  the remainder that string becomes a placeholder (:func:`placeholder`);
- never holds the whole base64 text nor the whole body: only the chunk at
  hand, fewer than four pending base64 characters, and the decoded bytes;
- checks the body size against a cap, as the transport does.

The remainder is ordinary JSON, small, to be parsed with orjson or json
(:meth:`ImageBody.loads`). Nothing here does network I/O or imports cattrs.

Decoding is as strict as :mod:`samsar_async.images`: the standard alphabet,
a length that is a multiple of 4, at most two ``=`` and only at the end,
no whitespace; ``pybase64`` when installed, else ``binascii``. An invalid
image does not fail the answer: its :class:`DecodedImage` carries an
:class:`~samsar_async.errors.ImageDecodeError` (naming the image and the
offset, never the payload) for the caller to raise when the image is used, as
today. JSON escapes never occur in valid base64 but are legal JSON (``\\/`` is
common): they are unescaped, and anything they produce that is not base64 is
an invalid image; an invalid escape makes the answer invalid JSON.

Which strings are decoded: every string value under the key ``result`` of an
object that is an element of the root object's ``output`` array. Whether it
is an image is decided when that object closes, by its last ``type`` (keys may
come in any order, and repeat: the last one counts, as for any JSON parser):
a ``result`` decoded for an object whose ``type`` is something else is put back
into the remainder exactly as received (re-encoded; or, once decoding failed,
as the raw text, which only then is kept). An empty ``result`` stays ``""`` (no
image). Everything else, including ``result`` keys anywhere else, is copied
unchanged.

Errors: :class:`~samsar_async.errors.APIResponseValidationError` when the body
is over the cap, is not valid JSON (detected here for the decoded strings, by
the parser for the remainder) or ends too early. After an error, or
:meth:`ImageBodyReader.close`, every temporary file is removed; after a
successful :meth:`ImageBodyReader.finish`, the files belong to the caller
(:meth:`ImageBody.discard` removes them).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable
from typing import Any, Final

from . import _json
from .config import DEFAULT_MAX_RESPONSE_BYTES
from .errors import APIResponseValidationError, ImageDecodeError

__all__ = [
    "IMAGE_ITEM_TYPE",
    "PLACEHOLDER_PREFIX",
    "DecodedImage",
    "ImageBody",
    "ImageBodyReader",
    "placeholder",
    "placeholder_index",
]

IMAGE_ITEM_TYPE: Final = "image_generation_call"
PLACEHOLDER_PREFIX: Final = "\x00samsar-image:"
"""The remainder's ``result`` of a decoded image is this prefix and the image's index."""

_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_EQUALS: Final = 0x3D
_SPECIAL = re.compile(rb'["{}\[\],:]')
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
_SIMPLE_ESCAPES: Final[dict[int, bytes]] = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_NOT_ASCII: Final = b"\x80"
"""Stands for a non-ASCII character produced by a ``\\u`` escape: never base64."""
_KEY_CAP: Final = 64
"""Raw bytes kept of a key: enough for any spelling (escaped too) of the keys we look for."""
_TYPE_CAP: Final = 256
_ID_CAP: Final = 1024
_EXCERPT_BYTES: Final = 800
_EXCERPT_CHARS: Final = 200


def placeholder(index: int) -> str:
    """The remainder's stand-in for image ``index``'s ``result`` string."""
    return f"{PLACEHOLDER_PREFIX}{index}"


def placeholder_index(value: object) -> int | None:
    """The image index of a placeholder string; ``None`` for anything else."""
    if isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX):
        digits = value[len(PLACEHOLDER_PREFIX) :]
        if digits.isdigit() and digits.isascii():
            return int(digits)
    return None


# --------------------------------------------------------------------------- decoders


def _strict_regex_decode(data: bytes | memoryview) -> bytes:
    """Python 3.10 (no ``strict_mode``): the regex plus the lenient decoder, 4-aligned input."""
    if re.fullmatch(rb"[A-Za-z0-9+/]*={0,2}", data) is None:
        raise binascii.Error("Non-base64 digit found")
    return binascii.a2b_base64(data)


def _stdlib_decoder() -> tuple[Callable[[memoryview], bytes], int]:
    if sys.version_info >= (3, 11):

        def decode(data: memoryview) -> bytes:
            return binascii.a2b_base64(data, strict_mode=True)

        return decode, 256 * 1024
    return _strict_regex_decode, 256 * 1024


def _select_decoder() -> tuple[Callable[[memoryview], bytes], int]:
    """``(decode, slice_chars)``: pybase64 when installed (1 MiB slices), else binascii."""
    try:
        import pybase64
    except ImportError:
        return _stdlib_decoder()

    def decode(data: memoryview) -> bytes:
        return pybase64.b64decode(data, validate=True)

    return decode, 1024 * 1024


# --------------------------------------------------------------------------- sinks


class _Sink:
    """Where one image's decoded bytes go."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read_all(self) -> bytes:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError


class _MemorySink(_Sink):
    """Decoded bytes kept as a list of pieces, never one growing buffer: growing a
    ``bytearray`` by slices reallocates and copies it (milliseconds for a few MiB,
    in whichever feed() crosses a size), and joining at the end would copy once
    more. Small writes (the quads around escapes and chunk edges) are gathered
    into pieces of at least :data:`_PIECE_BYTES`."""

    __slots__ = ("pieces", "tail")

    def __init__(self) -> None:
        self.pieces: list[bytes] | None = []
        self.tail = bytearray()

    def write(self, data: bytes) -> None:
        pieces = self.pieces
        assert pieces is not None
        if len(data) >= _PIECE_BYTES:
            if self.tail:
                pieces.append(bytes(self.tail))
                self.tail = bytearray()
            pieces.append(data)
            return
        self.tail += data
        if len(self.tail) >= _PIECE_BYTES:
            pieces.append(bytes(self.tail))
            self.tail = bytearray()

    def take(self) -> tuple[bytes, ...]:
        """The pieces, now the caller's (the sink is emptied)."""
        pieces = self.pieces or []
        if self.tail:
            pieces.append(bytes(self.tail))
        self.pieces = None
        self.tail = bytearray()
        return tuple(pieces)

    def read_all(self) -> bytes:
        return b"".join(self.pieces or ()) + bytes(self.tail)

    def discard(self) -> None:
        self.pieces = None
        self.tail = bytearray()


_PIECE_BYTES: Final = 64 * 1024


class _FileSink(_Sink):
    __slots__ = ("file", "path")

    def __init__(self, directory: str | None) -> None:
        fd, self.path = tempfile.mkstemp(prefix=".samsar-image-", suffix=".part", dir=directory)
        try:
            self.file: Any = open(fd, "wb")  # noqa: SIM115 - closed by finalize/discard
        except BaseException:
            os.close(fd)
            _unlink(self.path)
            raise

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def finalize(self) -> None:
        self.file.close()

    def read_all(self) -> bytes:
        self.file.flush()
        with open(self.path, "rb") as f:
            return f.read()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        _unlink(self.path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --------------------------------------------------------------------------- results


class DecodedImage:
    """One ``result`` string of an ``image_generation_call`` item, decoded.

    ``index`` is its place in :attr:`ImageBody.images` (and in the remainder's
    placeholder); ``output_index`` the place of its item in ``output``.
    Exactly one of ``pieces`` (in-memory mode: the decoded bytes, in order) and
    ``path`` (file mode: a temporary file now owned by the caller) is set,
    unless ``error`` is: then neither is, and ``error`` says why the base64
    text was invalid.
    """

    __slots__ = ("error", "index", "item_id", "output_index", "path", "pieces", "size")

    def __init__(
        self,
        *,
        index: int,
        output_index: int,
        item_id: str | None,
        size: int,
        pieces: tuple[bytes, ...] | None = None,
        path: str | None = None,
        error: ImageDecodeError | None = None,
    ) -> None:
        self.index = index
        self.output_index = output_index
        self.item_id = item_id
        self.size = size
        self.pieces = pieces
        self.path = path
        self.error = error

    @property
    def data(self) -> bytes | None:
        """In-memory mode: the pieces joined (a copy); ``None`` otherwise."""
        return None if self.pieces is None else b"".join(self.pieces)

    def __repr__(self) -> str:
        where = "error" if self.error else ("file" if self.path else "memory")
        return (
            f"DecodedImage(index={self.index}, output_index={self.output_index}, "
            f"item_id={self.item_id!r}, size={self.size}, {where})"
        )


class ImageBody:
    """What :meth:`ImageBodyReader.finish` gives back: the small JSON and the images."""

    __slots__ = ("_reader_excerpt", "body_bytes", "images", "remainder", "status_code")

    def __init__(
        self,
        remainder: bytes,
        images: tuple[DecodedImage, ...],
        body_bytes: int,
        status_code: int,
        excerpt: str,
    ) -> None:
        self.remainder = remainder
        """The body with each decoded ``result`` replaced by its placeholder."""
        self.images = images
        self.body_bytes = body_bytes
        """Bytes read, the base64 text included."""
        self.status_code = status_code
        self._reader_excerpt = excerpt

    def loads(
        self,
        loads: Callable[[bytes], Any] = _json.loads,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """The remainder parsed (orjson when installed); invalid JSON is a validation error.

        On that error the images' files are removed.
        """
        try:
            return loads(self.remainder)
        except ValueError:
            self.discard()
            raise APIResponseValidationError(
                f"the {self.status_code} answer is not valid JSON: {self._reader_excerpt!r}",
                status_code=self.status_code,
                excerpt=self._reader_excerpt,
                idempotency_key=idempotency_key,
            ) from None

    def discard(self) -> None:
        """Remove the images' temporary files and drop their bytes."""
        for image in self.images:
            if image.path is not None:
                _unlink(image.path)
                image.path = None
            image.pieces = None


# --------------------------------------------------------------------------- scanning state


class _Ctx:
    """An open JSON container and, for the objects that matter, what was seen in it."""

    __slots__ = (
        "count",
        "expect_key",
        "id",
        "is_object",
        "key",
        "output_index",
        "results",
        "role",
        "type",
    )

    def __init__(self, is_object: bool, role: int, output_index: int = -1) -> None:
        self.is_object = is_object
        self.role = role
        self.expect_key = is_object
        self.key: str | None = None
        self.count = 0  # commas seen: the index of the current element of an array
        self.output_index = output_index
        self.type: str | None = None
        self.id: str | None = None
        self.results: list[_Stream] = []


_OTHER, _ROOT, _OUTPUT, _ITEM = 0, 1, 2, 3
_NOT_A_STRING: Final = "\x00not a string"

# What a string in progress is for.
_SKIP, _COLLECT_KEY, _COLLECT_TYPE, _COLLECT_ID, _STREAM = 0, 1, 2, 3, 4


class _Stream:
    """A ``result`` string being decoded (or, after a failure, kept as raw JSON text)."""

    __slots__ = (
        "carry",
        "carry_raw",
        "chars",
        "decoded",
        "failure",
        "last_quad",
        "padded",
        "raw",
        "sink",
        "slot",
    )

    def __init__(self, sink: _Sink, slot: int) -> None:
        self.sink = sink
        self.slot = slot  # index in the remainder's pieces, filled when the item closes
        self.carry = bytearray()  # < 4 unescaped characters waiting for alignment
        self.carry_raw = bytearray()  # the same characters as they were in the JSON
        self.chars = 0  # characters decoded so far
        self.decoded = 0  # bytes decoded so far
        self.padded = False  # the last decoded quad ended with '='
        self.last_quad = b""  # that quad, to re-encode exactly
        self.failure: str | None = None
        self.raw: bytearray | None = None  # JSON text of the string, once decoding failed

    def text_so_far(self) -> bytearray:
        """The base64 text decoded so far, re-encoded exactly as it was received."""
        text = bytearray(base64.b64encode(self.sink.read_all()))
        if self.padded:
            text[-4:] = self.last_quad
        return text


class ImageBodyReader:
    """Feed an image answer's body chunk by chunk; :meth:`finish` for the result.

    ``directory``: decode into temporary files there (``None``: in memory,
    unless ``to_file``; then the system's temporary directory). Each call to
    :meth:`feed` costs time proportional to its chunk (base64 decoding
    included), so bounded chunks bound how long the caller's thread is busy.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        status_code: int = 200,
        idempotency_key: str | None = None,
        to_file: bool = False,
        directory: str | None = None,
        decoder: tuple[Callable[[memoryview], bytes], int] | None = None,
    ) -> None:
        self._max = max_bytes
        self._status = status_code
        self._key = idempotency_key
        self._to_file = to_file or directory is not None
        self._directory = directory
        self._decode, self._slice = decoder if decoder is not None else _select_decoder()
        if self._slice <= 0 or self._slice % 4:
            raise ValueError("slice_chars must be a positive multiple of 4")
        self._total = 0
        self._head = bytearray()
        self._out: list[bytes] = []
        self._stack: list[_Ctx] = []
        self._images: list[DecodedImage] = []
        self._streams: list[_Stream] = []  # open or pending (their item not closed yet)
        # The string in progress, if any.
        self._mode: int | None = None
        self._escaped = False  # the next byte of the string is escaped
        self._collected = bytearray()
        self._collect_overflow = False
        self._stream: _Stream | None = None
        self._esc_tail = b""  # an escape cut by the end of a chunk (decoded strings)
        self._state = "open"  # open, finished, closed

    # ------------------------------------------------------------------ public

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Take the next piece of the body."""
        if self._state != "open":
            raise RuntimeError(f"the reader is {self._state}")
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        self._total += len(data)
        if self._total > self._max:
            self.close()
            raise APIResponseValidationError(
                f"the {self._status} answer is over the {self._max}-byte limit",
                status_code=self._status,
                idempotency_key=self._key,
            )
        if len(self._head) < _EXCERPT_BYTES:
            self._head += data[: _EXCERPT_BYTES - len(self._head)]
        try:
            self._scan(data)
        except BaseException:
            self.close()
            raise

    def finish(self) -> ImageBody:
        """The remainder and the images; the temporary files now belong to the caller."""
        if self._state != "open":
            raise RuntimeError(f"the reader is {self._state}")
        if self._mode is not None or self._stack or self._esc_tail:
            self.close()
            raise self._invalid_json("it ends inside a string or a container")
        self._state = "finished"
        return ImageBody(
            b"".join(self._out), tuple(self._images), self._total, self._status, self._excerpt()
        )

    def close(self) -> None:
        """Discard everything: temporary files removed. Safe to call more than once.

        After :meth:`finish` succeeded this does nothing (the caller owns the files).
        """
        if self._state == "finished":
            return
        self._state = "closed"
        for stream in self._streams:
            stream.sink.discard()
        self._streams.clear()
        for image in self._images:
            if image.path is not None:
                _unlink(image.path)
        self._images.clear()
        self._out.clear()

    def __enter__(self) -> ImageBodyReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ errors

    def _excerpt(self) -> str:
        text = bytes(self._head).decode("utf-8", "replace")
        text = " ".join(text.split())
        return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."

    def _invalid_json(self, why: str) -> APIResponseValidationError:
        excerpt = self._excerpt()
        return APIResponseValidationError(
            f"the {self._status} answer is not valid JSON ({why}): {excerpt!r}",
            status_code=self._status,
            excerpt=excerpt,
            idempotency_key=self._key,
        )

    # ------------------------------------------------------------------ structure

    def _scan(self, buf: bytes) -> None:
        pos = 0
        end = len(buf)
        copy_from = 0 if self._mode != _STREAM else -1
        stack = self._stack
        search = _SPECIAL.search
        while pos < end:
            if self._mode is not None:
                if self._mode == _STREAM:
                    pos = self._stream_string(buf, pos)
                    if self._mode is None:
                        copy_from = pos
                else:
                    pos = self._plain_string(buf, pos)
                continue
            match = search(buf, pos)
            if match is None:
                break
            i = match.start()
            c = buf[i]
            pos = i + 1
            top = stack[-1] if stack else None
            if c == _QUOTE:
                if self._start_string(top) == _STREAM:
                    assert self._stream is not None
                    self._out.append(buf[copy_from:i])
                    self._out.append(b"")  # the slot, filled when the item closes
                    self._stream.slot = len(self._out) - 1
                    copy_from = -1
            elif c == 0x7B:  # {
                if top is None:
                    stack.append(_Ctx(True, _ROOT))
                elif top.role == _OUTPUT:
                    stack.append(_Ctx(True, _ITEM, top.count))
                else:
                    stack.append(_Ctx(True, _OTHER))
            elif c == 0x5B:  # [
                is_output = (
                    top is not None
                    and top.role == _ROOT
                    and not top.expect_key
                    and top.key == "output"
                )
                stack.append(_Ctx(False, _OUTPUT if is_output else _OTHER))
            elif c in (0x7D, 0x5D):  # } ]
                if stack:
                    closed = stack.pop()
                    if closed.role == _ITEM:
                        self._close_item(closed)
            elif c == 0x2C:  # ,
                if top is not None:
                    if top.is_object:
                        top.expect_key = True
                        top.key = None
                    else:
                        top.count += 1
            elif top is not None and top.is_object:  # :
                top.expect_key = False
                if top.role == _ITEM:
                    # A later value replaces an earlier one (duplicate keys), whatever
                    # its type: forget it until a string value says otherwise.
                    if top.key == "type":
                        top.type = _NOT_A_STRING
                    elif top.key == "id":
                        top.id = None
        if copy_from >= 0 and copy_from < end:
            self._out.append(buf[copy_from:] if copy_from else buf)

    def _start_string(self, top: _Ctx | None) -> int:
        mode = _SKIP
        if top is not None and top.is_object:
            if top.expect_key:
                if top.role in (_ROOT, _ITEM):
                    mode = _COLLECT_KEY
            elif top.role == _ITEM:
                if top.key == "result":
                    # Even when the item's type is known not to be an image: a later
                    # duplicate "type" key could still make it one.
                    mode = _STREAM
                elif top.key == "type":
                    mode = _COLLECT_TYPE
                elif top.key == "id":
                    mode = _COLLECT_ID
        self._mode = mode
        self._escaped = False
        if mode == _STREAM:
            assert top is not None
            sink: _Sink = _FileSink(self._directory) if self._to_file else _MemorySink()
            stream = _Stream(sink, -1)
            self._streams.append(stream)
            top.results.append(stream)
            self._stream = stream
        elif mode != _SKIP:
            self._collected = bytearray()
            self._collect_overflow = False
        return mode

    def _string_end(self, buf: bytes, pos: int) -> int:
        """Index of the closing quote from ``pos`` on, or -1; keeps ``_escaped`` up to date."""
        end = len(buf)
        if self._escaped:
            if pos >= end:
                return -1
            pos += 1
            self._escaped = False
        while True:
            j = buf.find(b'"', pos)
            if j < 0:
                k = end
                while k > pos and buf[k - 1] == _BACKSLASH:
                    k -= 1
                self._escaped = (end - k) % 2 == 1
                return -1
            k = j
            while k > pos and buf[k - 1] == _BACKSLASH:
                k -= 1
            if (j - k) % 2 == 0:
                return j
            pos = j + 1

    def _plain_string(self, buf: bytes, pos: int) -> int:
        start = pos
        j = self._string_end(buf, pos)
        stop = len(buf) if j < 0 else j
        if self._mode != _SKIP:
            room = _KEY_CAP if self._mode == _COLLECT_KEY else _TYPE_CAP
            if self._mode == _COLLECT_ID:
                room = _ID_CAP
            if len(self._collected) + stop - start > room:
                self._collect_overflow = True
            else:
                self._collected += buf[start:stop]
        if j < 0:
            return len(buf)
        self._end_plain_string()
        return j + 1

    def _end_plain_string(self) -> None:
        mode, self._mode = self._mode, None
        if mode == _SKIP:
            return
        value = None if self._collect_overflow else _decode_json_string(bytes(self._collected))
        top = self._stack[-1]
        if mode == _COLLECT_KEY:
            top.key = value if value is not None else _NOT_A_STRING
        elif mode == _COLLECT_TYPE:
            top.type = value if value is not None else _NOT_A_STRING
        else:
            top.id = value

    # ------------------------------------------------------------------ decoded strings

    def _stream_string(self, buf: bytes, pos: int) -> int:
        stream = self._stream
        assert stream is not None
        j = self._string_end(buf, pos)
        stop = len(buf) if j < 0 else j
        cut = j < 0 and self._escaped
        if cut:
            # The last backslash starts an escape that goes on in the next chunk: it
            # goes in the tail (and _escaped stays set, so that the next chunk's
            # first byte is not taken for the closing quote).
            stop -= 1
        if self._esc_tail:
            src = self._esc_tail + buf[pos:stop]
            start, stop = 0, len(src)
            self._esc_tail = b""
        else:
            src, start = buf, pos
        tail = self._span(stream, src, start, stop)
        if j < 0:
            self._esc_tail = tail + b"\\" if cut else tail
            return len(buf)
        if tail:
            raise self._invalid_json("an incomplete \\u escape")
        self._end_stream(stream)
        self._mode = None
        self._stream = None
        return j + 1

    def _span(self, stream: _Stream, src: bytes, start: int, stop: int) -> bytes:
        """Decode ``src[start:stop]``, a piece of a string's JSON text.

        Returns an escape cut short at its end (to be completed by the next chunk).
        """
        if start >= stop:
            return b""
        if src.find(b"\\", start, stop) < 0:
            self._content(stream, memoryview(src)[start:stop])
            return b""
        text = src[start:stop]
        if text.count(b"\\") == text.count(b"\\/"):
            # Only escaped slashes (some servers escape every '/'): one replace.
            self._content(stream, memoryview(text.replace(b"\\/", b"/")))
            return b""
        i = 0
        n = len(text)
        view = memoryview(text)
        while True:
            k = text.find(b"\\", i)
            if k < 0:
                self._content(stream, view[i:])
                return b""
            if k > i:
                self._content(stream, view[i:k])
            if k + 1 >= n:
                return text[k:]
            kind = text[k + 1]
            if kind == 0x75:  # u
                if k + 6 > n:
                    if _HEX4.match(text[k + 2 :].ljust(4, b"0")) is None:
                        raise self._invalid_json("an invalid \\u escape")
                    return text[k:]
                digits = text[k + 2 : k + 6]
                if _HEX4.fullmatch(digits) is None:
                    raise self._invalid_json("an invalid \\u escape")
                code = int(digits, 16)
                char = bytes((code,)) if code < 0x80 else _NOT_ASCII
                self._escape(stream, char, text[k : k + 6])
                i = k + 6
            else:
                simple = _SIMPLE_ESCAPES.get(kind)
                if simple is None:
                    raise self._invalid_json("an invalid escape")
                self._escape(stream, simple, text[k : k + 2])
                i = k + 2

    def _escape(self, stream: _Stream, char: bytes, source: bytes) -> None:
        if stream.raw is not None:
            stream.raw += source
            return
        if stream.padded:
            self._fail_padding(stream)
            stream.raw = stream.text_so_far()
            stream.raw += source
            return
        stream.carry += char
        stream.carry_raw += source
        if len(stream.carry) == 4:
            self._decode_carry(stream)

    def _content(self, stream: _Stream, seg: memoryview) -> None:
        """Plain base64 text (no escapes): decode the 4-aligned part, carry the rest."""
        n = seg.nbytes
        if n == 0:
            return
        if stream.raw is not None:
            stream.raw += seg
            return
        if stream.padded:
            self._fail_padding(stream)
            stream.raw = stream.text_so_far()
            stream.raw += seg
            return
        i = 0
        if stream.carry:
            need = 4 - len(stream.carry)
            part = seg[:need]
            stream.carry += part
            stream.carry_raw += part
            i = part.nbytes
            if len(stream.carry) < 4:
                return
            if not self._decode_carry(stream):
                assert stream.raw is not None
                stream.raw += seg[i:]
                return
        aligned = i + (n - i) // 4 * 4
        decode = self._decode
        step = self._slice
        while i < aligned:
            if stream.padded:
                self._fail_padding(stream)
                stream.raw = stream.text_so_far()
                stream.raw += seg[i:]
                return
            j = min(i + step, aligned)
            piece = seg[i:j]
            try:
                decoded = decode(piece)
            except ValueError:
                stream.failure = _reason(bytes(piece), stream.chars)
                stream.raw = stream.text_so_far()
                stream.raw += seg[i:]
                return
            stream.sink.write(decoded)
            stream.decoded += len(decoded)
            stream.chars += j - i
            if piece[-1] == _EQUALS:
                stream.padded = True
                stream.last_quad = bytes(piece[-4:])
            i = j
        if i < n:
            if stream.padded:  # text after the padding
                self._fail_padding(stream)
                stream.raw = stream.text_so_far()
                stream.raw += seg[i:]
                return
            stream.carry += seg[i:]
            stream.carry_raw += seg[i:]

    def _decode_carry(self, stream: _Stream) -> bool:
        quad = bytes(stream.carry)
        try:
            decoded = self._decode(memoryview(quad))
        except ValueError:
            stream.failure = _reason(quad, stream.chars)
            raw = stream.text_so_far()
            raw += stream.carry_raw
            stream.raw = raw
            stream.carry.clear()
            stream.carry_raw.clear()
            return False
        stream.sink.write(decoded)
        stream.decoded += len(decoded)
        stream.chars += 4
        if quad[-1] == _EQUALS:
            stream.padded = True
            stream.last_quad = quad
        stream.carry.clear()
        stream.carry_raw.clear()
        return True

    def _fail_padding(self, stream: _Stream) -> None:
        offset = stream.chars - 4 + stream.last_quad.index(b"=")
        stream.failure = f"padding '=' at offset {offset} is not at the end"

    def _end_stream(self, stream: _Stream) -> None:
        """The closing quote: check the length; the item decides the rest when it closes."""
        if stream.raw is None and stream.carry:
            total = stream.chars + len(stream.carry)
            stream.failure = f"length {total} is not a multiple of 4 (truncated or unpadded)"
            raw = stream.text_so_far()
            raw += stream.carry_raw
            stream.raw = raw
            stream.carry.clear()
            stream.carry_raw.clear()
        if isinstance(stream.sink, _FileSink):
            stream.sink.file.flush()

    def _close_item(self, item: _Ctx) -> None:
        is_image = item.type == IMAGE_ITEM_TYPE
        for stream in item.results:
            self._streams.remove(stream)
            empty = stream.raw is None and stream.chars == 0
            if empty:
                stream.sink.discard()
                self._out[stream.slot] = b'""'
            elif not is_image:
                text = stream.raw if stream.raw is not None else stream.text_so_far()
                stream.sink.discard()
                self._out[stream.slot] = b'"' + bytes(text) + b'"'
            else:
                self._out[stream.slot] = self._add_image(stream, item)

    def _add_image(self, stream: _Stream, item: _Ctx) -> bytes:
        index = len(self._images)
        label = item.id if item.id is not None else f"image-{index}"
        if stream.raw is not None:
            if _decode_json_string(bytes(stream.raw)) is None:
                stream.sink.discard()
                raise self._invalid_json("an invalid string")
            stream.sink.discard()
            error = ImageDecodeError(
                f"image {_label(label)}: invalid base64: {stream.failure or 'rejected'}"
            )
            image = DecodedImage(
                index=index,
                output_index=item.output_index,
                item_id=item.id,
                size=0,
                error=error,
            )
        elif isinstance(stream.sink, _FileSink):
            stream.sink.finalize()
            image = DecodedImage(
                index=index,
                output_index=item.output_index,
                item_id=item.id,
                size=stream.decoded,
                path=stream.sink.path,
            )
        else:
            assert isinstance(stream.sink, _MemorySink)
            image = DecodedImage(
                index=index,
                output_index=item.output_index,
                item_id=item.id,
                size=stream.decoded,
                pieces=stream.sink.take(),
            )
        self._images.append(image)
        return _json.dumps(placeholder(index))


def _decode_json_string(raw: bytes) -> str | None:
    """The value of a JSON string's contents (between the quotes), or None if invalid."""
    if b"\\" not in raw:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if _CONTROL.search(raw) is not None:
            return None
        return text
    try:
        value = _json.loads(b'"' + raw + b'"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


_CONTROL = re.compile(rb"[\x00-\x1f]")


def _reason(piece: bytes, offset: int) -> str:
    """Why the 4-aligned base64 ``piece`` (at ``offset`` in the text) was refused."""
    match = _NOT_BASE64.search(piece)
    if match is not None:
        byte = piece[match.start()]
        if chr(byte).isspace():
            what = f"whitespace {chr(byte)!r}"
        elif byte < 0x80:
            what = f"non-base64 character {chr(byte)!r}"
        else:
            what = "a non-ASCII character"
        return f"{what} at offset {offset + match.start()}"
    pos = piece.find(b"=")
    if pos >= 0:
        return f"padding '=' at offset {offset + pos} is not at the end"
    return f"rejected by the decoder near offset {offset}"


def _label(image_id: str) -> str:
    return repr(image_id[:80] + "…") if len(image_id) > 80 else repr(image_id)
