"""Generated images on disk: :func:`save_image` and :func:`save_images`.

The API returns each generated image as an ``image_generation_call`` output
item whose ``result`` is base64 text (PNG, JPEG, WebP or GIF). The client
decodes it as the answer arrives (when the request offered the
``image_generation`` tool): the images of ``response.images`` hold their
bytes. A :class:`~samsar_async.models.GeneratedImage` built from base64 text
(``GeneratedImage(b64=...)``, :meth:`~GeneratedImage.from_b64`) holds that
text and decodes it only when asked:

- :attr:`GeneratedImage.size`, :attr:`~GeneratedImage.mime_type` and
  :attr:`~GeneratedImage.extension` never decode the whole payload (the size
  comes from the text's length and padding, the format from the first 16
  characters);
- :attr:`GeneratedImage.data` decodes everything at once and caches the bytes;
- :func:`save_image` and :func:`save_images` (this module: the only one that
  writes image files) write from a worker thread into a temporary file
  (decoding base64 text chunk by chunk on the way), then move it into place
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

import contextlib
import errno
import os
import pathlib
import re
import secrets
import string
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Final

import anyio
import anyio.from_thread
import anyio.to_thread
import attrs

from . import _base64
from ._base64 import OCTET_STREAM, Decoder, extension_for, sniff_mime
from .errors import ImageSaveError, InvalidArgumentError
from .models import GeneratedImage, _label

__all__ = [
    "DEFAULT_NAME_PATTERN",
    "GeneratedImage",
    "UnknownImageFormatWarning",
    "extension_for",
    "save_image",
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


_FALLBACK_NAME: Final = "image"
_MAX_PART_CHARS: Final = 64
"""Cap on each placeholder value in a generated name."""
_MAX_NAME_CHARS: Final = 200
"""Cap on a generated file name (leaves room for the temp-file affixes under 255)."""
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
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


_yield_cpu: Callable[[], object] = getattr(os, "sched_yield", lambda: time.sleep(0))


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


# --------------------------------------------------------------------------- the save job


@attrs.frozen
class _Target:
    """Where to save: ``path`` as given, and the generated name if it is a directory."""

    path: str
    filename: str
    force_dir: bool = False
    """True when ``path`` must be a directory (trailing separator, save_images)."""

    def destination(self) -> pathlib.Path:
        """Create what is missing and return the resolved destination (blocking).

        Raises :class:`ImageSaveError` when a directory on the way is a file.
        """
        p = pathlib.Path(self.path)
        if self.force_dir or p.name in ("", "..") or p.is_dir():
            directory = _ensure_directory(p)
            dest = directory / self.filename
            if dest.parent != directory or dest.name != self.filename:
                raise InvalidArgumentError("name", "would leave the target directory")
            return dest
        return _ensure_directory(p.parent) / p.name


def _check_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a ``str``; refuse what is not a usable path before anything is touched."""
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise InvalidArgumentError("path", "must be a str or os.PathLike[str]")
    if not raw:
        raise InvalidArgumentError(
            "path", "must not be empty (pass '.' to save into the current directory)"
        )
    if "\0" in raw:
        raise InvalidArgumentError("path", "must not contain a NUL character")
    return raw


def _ensure_directory(directory: pathlib.Path) -> pathlib.Path:
    """Create ``directory`` and its missing parents; return it resolved.

    A component that exists but is not a directory (a regular file, a
    dangling symlink) is an :class:`ImageSaveError` naming that component.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _not_a_directory(directory) from None
    return directory.resolve()


def _not_a_directory(directory: pathlib.Path) -> ImageSaveError:
    blocker = directory
    for candidate in (*reversed(directory.parents), directory):  # outermost first
        if os.path.lexists(candidate) and not candidate.is_dir():
            blocker = candidate
            break
    return ImageSaveError(
        errno.ENOTDIR,
        f"Not a directory (cannot save an image into {str(directory)!r})",
        str(blocker),
    )


def _is_a_directory(dest: pathlib.Path) -> ImageSaveError:
    return ImageSaveError(
        errno.EISDIR, "Is a directory (cannot be replaced by an image)", str(dest)
    )


def _is_real_directory(path: pathlib.Path) -> bool:
    """A directory, not a symlink to one (a symlink is replaced like a file)."""
    return os.path.isdir(path) and not os.path.islink(path)


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
        self, image: GeneratedImage, target: _Target, overwrite: bool, decoder: Decoder
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
        if _is_real_directory(dest):
            raise _is_a_directory(dest)
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
            try:
                os.replace(tmp, dest)
            except OSError:
                if _is_real_directory(dest):  # created since the check in _run
                    raise _is_a_directory(dest) from None
                raise
            return
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise _taken(dest) from None
        except OSError as exc:
            if exc.errno not in _LINK_UNSUPPORTED:
                raise
            # No hard links on this file system: reserve the name exclusively,
            # then atomically swap the complete file in. The destination exists,
            # empty, between the two steps.
            try:
                os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError:
                raise _taken(dest) from None
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.unlink(dest)
                raise


async def save_image(
    image: GeneratedImage,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    name: str = DEFAULT_NAME_PATTERN,
) -> pathlib.Path:
    """Write ``image`` to disk atomically and return the resolved path.

    If ``path`` is an existing directory, or a string ending with a path
    separator (``"out/"``; a ``pathlib.Path`` cannot carry one), the file
    is created inside it (the directory is created if missing), named
    from the ``name`` pattern (:data:`DEFAULT_NAME_PATTERN`) with every
    placeholder value sanitized to ``[A-Za-z0-9._-]``. Otherwise ``path``
    is the file itself; its missing parent directories are created.
    An empty ``path`` is refused (:class:`InvalidArgumentError`); pass
    ``"."`` to mean the current directory.

    The bytes go to a temporary file next to the destination, are
    fsync'ed, then moved into place: ``os.link`` when ``overwrite`` is
    false (an existing file, even one created concurrently, is never
    replaced: :class:`FileExistsError`, which is raised for nothing
    else), ``os.replace`` when it is true. A destination that cannot be
    saved to whatever ``overwrite`` says (a parent that is a regular
    file, as in ``"afile/out.png"``; a generated name that is an existing
    directory) raises :class:`~samsar_async.errors.ImageSaveError`.
    On any failure (invalid base64, disk error, cancellation) the
    temporary file is removed and the destination is not created.

    An unrecognized format is saved anyway (``.bin`` in generated names)
    with an :class:`UnknownImageFormatWarning`.
    """
    raw = _check_path(path)
    _parse_pattern(name)
    filename = _build_name(name, image, image.extension)
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    target = _Target(raw, filename, force_dir=raw.endswith(seps))
    return await _save(image, target, overwrite=overwrite, stacklevel=3)


async def _save(
    image: GeneratedImage, target: _Target, *, overwrite: bool, stacklevel: int
) -> pathlib.Path:
    job = _SaveJob(image, target, overwrite, _base64.DECODER)
    try:
        dest = await anyio.to_thread.run_sync(job.run)
    except BaseException:
        if job.abort():
            # Only after a raw asyncio Task.cancel() (anyio's cancellation waits
            # for the worker): let the worker notice, clean up and stop.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(job.finished.wait)
        raise
    if image.mime_type == OCTET_STREAM:
        warnings.warn(
            f"image {_label(image.id)} is not PNG, JPEG, WebP or GIF; saved as {dest.name!r}",
            UnknownImageFormatWarning,
            stacklevel=stacklevel,
        )
    return dest


def _exists(dest: pathlib.Path) -> FileExistsError:
    return FileExistsError(
        errno.EEXIST, "File exists (pass overwrite=True to replace it)", str(dest)
    )


def _taken(dest: pathlib.Path) -> OSError:
    """The error for a destination name found taken at commit time."""
    return _is_a_directory(dest) if _is_real_directory(dest) else _exists(dest)


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

    Each file is named from the ``name`` pattern as in :func:`save_image`.
    Everything that can be checked without writing is checked first: the
    pattern, each payload's length, padding and format, and that no two
    images get the same name
    (:class:`~samsar_async.errors.InvalidArgumentError`). The images are then
    written one after the other, each atomically; if one fails, the ones
    before it stay saved. Returns the resolved paths, in order.

    The errors are those of :func:`save_image`: an empty ``path`` is an
    :class:`~samsar_async.errors.InvalidArgumentError`, a ``path`` that is
    (or lies under) a regular file an
    :class:`~samsar_async.errors.ImageSaveError`, and
    :class:`FileExistsError` only ever means that a file of that name exists
    (pass ``overwrite=True``).
    """
    raw = _check_path(path)
    _parse_pattern(name)
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
        saved.append(await _save(image, target, overwrite=overwrite, stacklevel=3))
    return saved
