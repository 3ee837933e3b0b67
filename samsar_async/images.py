"""Generated images: strict base64 decoding, format sniffing and atomic saving.

The API returns each generated image as an ``image_generation_call`` output
item whose ``result`` is base64 text (PNG, JPEG, WebP or GIF).
:class:`GeneratedImage` keeps that text as ``str`` and decodes it only when
asked:

- :attr:`GeneratedImage.size`, :attr:`~GeneratedImage.mime_type` and
  :attr:`~GeneratedImage.extension` never decode the whole payload (the size
  comes from the text's length and padding, the format from the first 16
  characters);
- :attr:`GeneratedImage.data` decodes everything at once and caches the bytes;
- :meth:`GeneratedImage.save` and :func:`save_images` decode chunk by chunk
  straight into a temporary file from a worker thread, then move it into place
  atomically.

Decoding is strict: only the standard alphabet ``A-Z a-z 0-9 + /``, a length
that is a multiple of 4, at most two ``=`` and only at the very end. The API
sends unwrapped base64, so whitespace (including line breaks) is an error
too; :meth:`GeneratedImage.from_b64` is the one place that removes it, for
text that comes from elsewhere. Any violation, and an empty payload, raise
:class:`~samsar_async.errors.ImageDecodeError`, whose message names the image
and the offset of the problem but never includes the payload.

``pybase64`` (the ``speedups`` extra) is used when installed; without it the
standard library decodes, in smaller chunks.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import importlib
import os
import pathlib
import re
import secrets
import string
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import anyio
import anyio.from_thread
import anyio.to_thread
import attrs

from .errors import ImageDecodeError, InvalidArgumentError

__all__ = [
    "DEFAULT_NAME_PATTERN",
    "GeneratedImage",
    "UnknownImageFormatWarning",
    "extension_for",
    "save_images",
    "sniff_mime",
]

DEFAULT_NAME_PATTERN: Final = "{response_id}-{index}{ext}"
"""File name used when saving into a directory.

Placeholders: ``{response_id}``, ``{index}``, ``{image_id}``, ``{session_id}``
and ``{ext}`` (``".png"``, ``".jpg"``, ``".webp"``, ``".gif"`` or ``".bin"``).
``{index}`` is an ``int`` and takes a format spec (``{index:03d}``).
"""

NAME_PLACEHOLDERS: Final = frozenset({"response_id", "index", "image_id", "session_id", "ext"})

OCTET_STREAM: Final = "application/octet-stream"

_EXTENSIONS: Final[dict[str, str]] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}

_FALLBACK_NAME: Final = "image"
_MAX_PART_CHARS: Final = 64
"""Cap on each placeholder value in a generated name."""
_MAX_NAME_CHARS: Final = 200
"""Cap on a generated file name (leaves room for the temp-file affixes under 255)."""
_HEAD_CHARS: Final = 16
"""Base64 characters decoded to sniff the format: 12 bytes, enough for every magic."""
_WRITE_CHUNK_BYTES: Final = 1024 * 1024
"""Write size when the decoded bytes are already cached."""

_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")
_WINDOWS_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_LINK_UNSUPPORTED: Final = frozenset(
    code
    for code in (
        errno.EPERM,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", None),
        errno.ENOSYS,
        errno.EMLINK,
        errno.EXDEV,
    )
    if code is not None
)
"""``os.link`` errors that mean "no hard links here", not "the name is taken"."""


class UnknownImageFormatWarning(UserWarning):
    """A generated image is not PNG, JPEG, WebP or GIF; it was saved as ``.bin``."""


# --------------------------------------------------------------------------- formats


def sniff_mime(data: bytes | bytearray | memoryview) -> str | None:
    """The image MIME type from the magic bytes at the start of ``data``, or ``None``.

    Recognizes PNG, JPEG, WebP (``RIFF....WEBP``) and GIF (87a and 89a); the
    first 12 bytes are enough.
    """
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def extension_for(mime: str) -> str:
    """The file extension (with its dot) for a MIME type; ``".bin"`` when unknown.

    Parameters such as ``; charset=...`` and letter case are ignored.
    """
    base = mime.split(";", 1)[0].strip().lower()
    if base == "image/jpg":
        base = "image/jpeg"
    return _EXTENSIONS.get(base, ".bin")


# --------------------------------------------------------------------------- decoders


@attrs.frozen
class _Decoder:
    """A strict base64 decoder and the chunk size that keeps each call short.

    ``decode`` takes ASCII base64 text whose length is a multiple of 4 and
    raises ``ValueError`` (``binascii.Error`` is one) on anything invalid. It
    holds the GIL for its whole run, so ``chunk_chars`` bounds how long the
    event loop can be kept waiting while a worker thread saves an image.
    """

    name: str
    decode: Callable[[str], bytes]
    chunk_chars: int = attrs.field()

    @chunk_chars.validator
    def _check_chunk(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value <= 0 or value % 4:
            raise ValueError("chunk_chars must be a positive multiple of 4")


_yield_cpu: Callable[[], object] = getattr(os, "sched_yield", lambda: time.sleep(0))

# anyio imports its asyncio backend on first use (~15 ms): do it now, at import
# time, rather than inside the first save() (the event loop would stall for it).
# aiohttp means asyncio, so this is the backend every save uses.
with contextlib.suppress(ImportError):
    importlib.import_module("anyio._backends._asyncio")


_STRICT_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _regex_checked_decode(text: str) -> bytes:
    """Strict decoding for Python 3.10, whose ``a2b_base64`` has no ``strict_mode``.

    Only used for text whose length is a multiple of 4: then the regex plus
    the lenient decoder accept exactly what ``strict_mode=True`` accepts.
    """
    if _STRICT_BASE64.fullmatch(text) is None:
        raise binascii.Error("Non-base64 digit found")
    return binascii.a2b_base64(text)


if sys.version_info >= (3, 11):

    def _stdlib_decode(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)

else:
    _stdlib_decode = _regex_checked_decode


_STDLIB: Final = _Decoder("stdlib", _stdlib_decode, 256 * 1024)
"""~0.3-1 ms per 256 KiB chunk of text: the loop thread gets the GIL between chunks."""


def _load_pybase64() -> _Decoder | None:
    try:
        import pybase64
    except ImportError:
        return None

    def decode(text: str) -> bytes:
        return pybase64.b64decode(text, validate=True)

    # Many times faster than the standard library: 1 MiB of text decodes in
    # ~0.1 ms. Bigger chunks gain nothing measurable and cost memory (each
    # chunk is a text slice plus its decoded bytes).
    return _Decoder("pybase64", decode, 1024 * 1024)


def _select_decoder() -> _Decoder:
    return _load_pybase64() or _STDLIB


_DECODER: _Decoder = _select_decoder()
"""The decoder in use. Tests swap it (monkeypatch) to exercise both paths."""


# --------------------------------------------------------------------------- names


def _parse_pattern(name: str) -> None:
    """Validate a file-name pattern; raise ``InvalidArgumentError("name", ...)``."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("name", "must be a non-empty file name pattern")
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        raise InvalidArgumentError(
            "name", "must be a file name pattern, not a path (no '/' or '\\')"
        )
    try:
        parsed = list(string.Formatter().parse(name))
    except ValueError as exc:
        raise InvalidArgumentError("name", f"not a valid pattern: {exc}") from None
    for _literal, field, spec, _conversion in parsed:
        if field is None:
            continue
        if spec and "{" in spec:
            raise InvalidArgumentError("name", "placeholders inside a format spec are not allowed")
        if field not in NAME_PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(NAME_PLACEHOLDERS))
            raise InvalidArgumentError("name", f"unknown placeholder {{{field}}} (known: {known})")


def _safe_part(value: str | None) -> str:
    """A placeholder value reduced to ``[A-Za-z0-9._-]``, no leading dot, capped."""
    if not value:
        return _FALLBACK_NAME
    safe = _UNSAFE_RUN.sub("_", value).lstrip(".")[:_MAX_PART_CHARS]
    return safe or _FALLBACK_NAME


def _safe_name(formatted: str, ext: str) -> str:
    """The formatted pattern as a single safe path component."""
    safe = _UNSAFE_RUN.sub("_", formatted).strip(".")
    if len(safe) > _MAX_NAME_CHARS:
        if ext and safe.endswith(ext):
            safe = safe[: _MAX_NAME_CHARS - len(ext)].rstrip(".") + ext
        else:
            safe = safe[:_MAX_NAME_CHARS].rstrip(".")
    if not safe:
        return _FALLBACK_NAME
    if safe.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        safe = "_" + safe
    return safe


def _build_name(pattern: str, image: GeneratedImage, ext: str) -> str:
    values: dict[str, object] = {
        "response_id": _safe_part(image.response_id),
        "index": image.index,
        "image_id": _safe_part(image.id),
        "session_id": _safe_part(image.session_id),
        "ext": ext,
    }
    try:
        formatted = pattern.format_map(values)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise InvalidArgumentError("name", f"cannot format the pattern: {exc}") from None
    result = _safe_name(formatted, ext)
    # Belt and braces: exactly one ordinary component, whatever the inputs were.
    if result in (".", "..") or os.path.basename(result) != result or "/" in result:
        raise InvalidArgumentError("name", "did not produce a plain file name")
    return result


# --------------------------------------------------------------------------- the image


def _check_str(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError(attribute.name, f"must be a str, not {type(value).__name__}")


def _check_optional_str(
    _inst: object, attribute: attrs.Attribute[str | None], value: object
) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(
            attribute.name, f"must be a str or None, not {type(value).__name__}"
        )


def _check_index(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(attribute.name, "must be an int >= 0")


@attrs.frozen(eq=False)
class GeneratedImage:
    """One generated image, as base64 text, with where it came from.

    Immutable; compares by identity. The decoded bytes, once computed by
    :attr:`data`, are cached on the instance.

    ``id``, ``response_id`` and ``session_id`` come from the server and are
    not trusted: they only reach the file system through :meth:`save`'s name
    sanitizing.
    """

    id: str = attrs.field(validator=_check_str)
    """The ``image_generation_call`` item's id."""
    b64: str = attrs.field(repr=False, validator=_check_str)
    """The base64 text exactly as received (never bytes)."""
    revised_prompt: str | None = attrs.field(default=None, validator=_check_optional_str)
    response_id: str | None = attrs.field(default=None, validator=_check_optional_str)
    session_id: str | None = attrs.field(default=None, validator=_check_optional_str)
    index: int = attrs.field(default=0, validator=_check_index)
    """Position among the response's images."""

    _data: bytes | None = attrs.field(default=None, init=False, repr=False)
    _mime: str | None = attrs.field(default=None, init=False, repr=False)

    @classmethod
    def from_b64(
        cls,
        b64: str | bytes | bytearray | memoryview,
        *,
        id: str = _FALLBACK_NAME,
        revised_prompt: str | None = None,
        response_id: str | None = None,
        session_id: str | None = None,
        index: int = 0,
    ) -> GeneratedImage:
        """Build an image from base64 text obtained elsewhere.

        Unlike the constructor, this accepts bytes and removes whitespace
        (line-wrapped base64 such as ``base64``'s output). Nothing is decoded
        yet.
        """
        if isinstance(b64, (bytes, bytearray, memoryview)):
            try:
                text = bytes(b64).decode("ascii")
            except UnicodeDecodeError as exc:
                raise ImageDecodeError(
                    f"image {_label(id)}: invalid base64: non-ASCII byte at offset {exc.start}"
                ) from None
        elif isinstance(b64, str):
            text = b64
        else:
            raise InvalidArgumentError("b64", f"must be str or bytes, not {type(b64).__name__}")
        text = "".join(text.split())
        return cls(
            id=id,
            b64=text,
            revised_prompt=revised_prompt,
            response_id=response_id,
            session_id=session_id,
            index=index,
        )

    # ------------------------------------------------------------------ cheap facts

    @property
    def size(self) -> int:
        """Decoded size in bytes, from the text's length and padding (no decoding).

        Raises :class:`ImageDecodeError` if the length or padding is invalid.
        Characters are not checked here: :attr:`data` and :meth:`save` do that.
        """
        if self._data is not None:
            return len(self._data)
        return self._structure()

    @property
    def mime_type(self) -> str:
        """``"image/png"``, ``"image/jpeg"``, ``"image/webp"``, ``"image/gif"``,
        or ``"application/octet-stream"`` when the format is not recognized.

        Only the first 16 base64 characters are decoded.
        """
        if self._mime is None:
            object.__setattr__(self, "_mime", sniff_mime(self._head()) or OCTET_STREAM)
        assert self._mime is not None
        return self._mime

    @property
    def extension(self) -> str:
        """``".png"``, ``".jpg"``, ``".webp"``, ``".gif"`` or ``".bin"``."""
        return extension_for(self.mime_type)

    @property
    def data(self) -> bytes:
        """The decoded bytes: strictly decoded in one go on first use, then cached.

        To write a file, prefer :meth:`save`, which never holds the whole
        decoded image in memory and never blocks the event loop.
        """
        if self._data is None:
            self._structure()
            try:
                decoded = _DECODER.decode(self.b64)
            except ValueError:
                raise self._invalid(self.b64, 0) from None
            if not decoded:  # unreachable after _structure(); kept as the contract
                raise ImageDecodeError(f"image {_label(self.id)}: decodes to no bytes")
            object.__setattr__(self, "_data", decoded)
        assert self._data is not None
        return self._data

    # ------------------------------------------------------------------ saving

    async def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        name: str = DEFAULT_NAME_PATTERN,
    ) -> pathlib.Path:
        """Write the image to disk atomically and return the resolved path.

        If ``path`` is an existing directory, or a string ending with a path
        separator (``"out/"``; a ``pathlib.Path`` cannot carry one), the file
        is created inside it (the directory is created if missing), named
        from the ``name`` pattern (:data:`DEFAULT_NAME_PATTERN`) with every
        placeholder value sanitized to ``[A-Za-z0-9._-]``. Otherwise ``path``
        is the file itself; its missing parent directories are created.

        The bytes go to a temporary file next to the destination, are
        fsync'ed, then moved into place: ``os.link`` when ``overwrite`` is
        false (an existing file, even one created concurrently, is never
        replaced: :class:`FileExistsError`), ``os.replace`` when it is true.
        On any failure (invalid base64, disk error, cancellation) the
        temporary file is removed and the destination is not created.

        An unrecognized format is saved anyway (``.bin`` in generated names)
        with an :class:`UnknownImageFormatWarning`.
        """
        _parse_pattern(name)
        filename = _build_name(name, self, self.extension)
        raw = os.fspath(path)
        if not isinstance(raw, str):
            raise InvalidArgumentError("path", "must be a str or os.PathLike[str]")
        seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
        target = _Target(raw, filename, force_dir=raw.endswith(seps))
        return await self._save(target, overwrite=overwrite, stacklevel=3)

    async def _save(self, target: _Target, *, overwrite: bool, stacklevel: int) -> pathlib.Path:
        job = _SaveJob(self, target, overwrite, _DECODER)
        try:
            dest = await anyio.to_thread.run_sync(job.run)
        except BaseException:
            if job.abort():
                # Only after a raw asyncio Task.cancel() (anyio's cancellation waits
                # for the worker): let the worker notice, clean up and stop.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(job.finished.wait)
            raise
        if self.mime_type == OCTET_STREAM:
            warnings.warn(
                f"image {_label(self.id)} is not PNG, JPEG, WebP or GIF; saved as {dest.name!r}",
                UnknownImageFormatWarning,
                stacklevel=stacklevel,
            )
        return dest

    # ------------------------------------------------------------------ decoding

    def _structure(self) -> int:
        """Check length and padding; return the decoded size."""
        text = self.b64
        n = len(text)
        if n == 0:
            raise ImageDecodeError(f"image {_label(self.id)}: empty base64 payload")
        if n % 4:
            raise ImageDecodeError(
                f"image {_label(self.id)}: invalid base64: length {n} is not a multiple "
                "of 4 (truncated or unpadded)"
            )
        pad = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
        if n >= 3 and text[-3] == "=":
            raise ImageDecodeError(
                f"image {_label(self.id)}: invalid base64: more than two '=' at the end"
            )
        return n // 4 * 3 - pad

    def _head(self) -> bytes:
        if self._data is not None:
            return self._data[:12]
        self._structure()
        head = self.b64[:_HEAD_CHARS]
        try:
            if len(self.b64) > _HEAD_CHARS and head.endswith("="):
                raise ValueError
            return _stdlib_decode(head)
        except ValueError:
            raise self._invalid(head, 0) from None

    def _chunks(self, decoder: _Decoder) -> Iterator[bytes | memoryview]:
        """Yield the decoded bytes piece by piece (strict)."""
        if self._data is not None:
            view = memoryview(self._data)
            for start in range(0, len(view), _WRITE_CHUNK_BYTES):
                yield view[start : start + _WRITE_CHUNK_BYTES]
            return
        self._structure()
        text = self.b64
        total = len(text)
        step = decoder.chunk_chars
        for start in range(0, total, step):
            chunk = text[start : start + step]
            try:
                if start + step < total and chunk.endswith("="):
                    raise ValueError  # padding before the end of the payload
                decoded = decoder.decode(chunk)
            except ValueError:
                raise self._invalid(chunk, start) from None
            del chunk
            yield decoded

    def _invalid(self, chunk: str, offset: int) -> ImageDecodeError:
        """Say where ``chunk`` (at ``offset`` in the payload) is invalid, without its text."""
        match = _NOT_BASE64.search(chunk)
        if match is not None:
            char = match.group()
            kind = "whitespace" if char.isspace() else "non-base64 character"
            reason = f"{kind} {char!r} at offset {offset + match.start()}"
        else:
            pos = chunk.find("=")
            if pos >= 0:
                reason = f"padding '=' at offset {offset + pos} is not at the end"
            else:
                reason = f"rejected by the decoder near offset {offset}"
        return ImageDecodeError(f"image {_label(self.id)}: invalid base64: {reason}")


def _label(image_id: str) -> str:
    """A short, printable rendering of an untrusted id for messages."""
    return repr(image_id[:80] + "…") if len(image_id) > 80 else repr(image_id)


# --------------------------------------------------------------------------- the save job


@attrs.frozen
class _Target:
    """Where to save: ``path`` as given, and the generated name if it is a directory."""

    path: str
    filename: str
    force_dir: bool = False
    """True when ``path`` must be a directory (trailing separator, save_images)."""

    def destination(self) -> pathlib.Path:
        """Create what is missing and return the resolved destination (blocking)."""
        p = pathlib.Path(self.path)
        if self.force_dir or p.name in ("", "..") or p.is_dir():
            p.mkdir(parents=True, exist_ok=True)
            directory = p.resolve()
            dest = directory / self.filename
            if dest.parent != directory or dest.name != self.filename:
                raise InvalidArgumentError("name", "would leave the target directory")
            return dest
        p.parent.mkdir(parents=True, exist_ok=True)
        return p.parent.resolve() / p.name


class _Aborted(Exception):
    """The awaiting task went away: stop writing and clean up."""


class _SaveJob:
    """The blocking part of a save, run in one worker thread.

    Decodes chunk by chunk into a temporary file in the destination
    directory, fsyncs it and moves it into place. Between chunks it checks
    for cancellation: anyio's (``from_thread.check_cancelled``) and
    :meth:`abort` (called by the awaiting task when it is interrupted some
    other way). Every failure removes the temporary file.
    """

    def __init__(
        self, image: GeneratedImage, target: _Target, overwrite: bool, decoder: _Decoder
    ) -> None:
        self._image = image
        self._target = target
        self._overwrite = overwrite
        self._decoder = decoder
        self._lock = threading.Lock()  # held only to read/flip the two flags below
        self._started = False
        self._aborted = False
        self.finished = threading.Event()

    def abort(self) -> bool:
        """Stop the job; True if it is running and :attr:`finished` must be awaited.

        A job aborted before it started never starts (the worker may also
        never pick it up at all, e.g. when anyio dropped the call).
        """
        with self._lock:
            self._aborted = True
            return self._started and not self.finished.is_set()

    def _checkpoint(self) -> None:
        if self._aborted:
            raise _Aborted
        anyio.from_thread.check_cancelled()

    def run(self) -> pathlib.Path:
        # A thread that has just been started is awaited by the event loop's
        # thread (Thread.start waits for it to boot): let that thread go on
        # before the decoding begins, instead of making it wait for the GIL.
        _yield_cpu()
        with self._lock:
            if self._aborted:
                raise _Aborted
            self._started = True
        try:
            return self._run()
        finally:
            self.finished.set()

    def _run(self) -> pathlib.Path:
        self._checkpoint()
        dest = self._target.destination()
        if not self._overwrite and os.path.lexists(dest):
            raise _exists(dest)
        tmp = dest.with_name(f".{dest.name[:100]}.{secrets.token_hex(6)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        try:
            with open(fd, "wb") as f:
                for piece in self._image._chunks(self._decoder):
                    self._checkpoint()
                    f.write(piece)
                    # Hand the GIL and the CPU to the event loop's thread between
                    # chunks: on a busy (or single) core the OS would otherwise let
                    # this thread run a whole time slice before the loop gets back.
                    _yield_cpu()
                f.flush()
                os.fsync(f.fileno())
            self._checkpoint()
            self._commit(tmp, dest)
        finally:
            # After a successful link the temp name is still there; after a
            # replace it is gone; after a failure it must go.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_directory(dest.parent)
        return dest

    def _commit(self, tmp: pathlib.Path, dest: pathlib.Path) -> None:
        if self._overwrite:
            os.replace(tmp, dest)
            return
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise _exists(dest) from None
        except OSError as exc:
            if exc.errno not in _LINK_UNSUPPORTED:
                raise
            # No hard links on this file system: reserve the name exclusively,
            # then atomically swap the complete file in. The destination exists,
            # empty, between the two steps.
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.unlink(dest)
                raise


def _exists(dest: pathlib.Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST, "File exists (pass overwrite=True to replace it)", str(dest)
    )


def _fsync_directory(directory: pathlib.Path) -> None:
    """Make the new directory entry durable (POSIX; best effort)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


async def save_images(
    images: Sequence[GeneratedImage],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    name: str = DEFAULT_NAME_PATTERN,
) -> list[pathlib.Path]:
    """Save every image into the directory ``path`` (created if missing).

    Each file is named from the ``name`` pattern as in
    :meth:`GeneratedImage.save`. Everything that can be checked without
    writing is checked first: the pattern, each payload's length, padding and
    format, and that no two images get the same name
    (:class:`~samsar_async.errors.InvalidArgumentError`). The images are then
    written one after the other, each atomically; if one fails, the ones
    before it stay saved. Returns the resolved paths, in order.
    """
    _parse_pattern(name)
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise InvalidArgumentError("path", "must be a str or os.PathLike[str]")
    names: dict[str, int] = {}
    targets: list[_Target] = []
    for position, image in enumerate(images):
        filename = _build_name(name, image, image.extension)
        if filename in names:
            raise InvalidArgumentError(
                "name",
                f"gives images {names[filename]} and {position} the same file name "
                f"{filename!r}; include {{index}} or {{image_id}}",
            )
        names[filename] = position
        targets.append(_Target(raw, filename, force_dir=True))
    saved: list[pathlib.Path] = []
    for image, target in zip(images, targets, strict=True):  # not a comprehension: stacklevel
        saved.append(await image._save(target, overwrite=overwrite, stacklevel=3))
    return saved
