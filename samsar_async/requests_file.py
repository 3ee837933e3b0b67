"""JSONL batch files: one request per line, one result row per line, resumable.

The format of ``samsar batch`` (see :mod:`samsar_async.cli`), shared with the
Ray integration so that both produce the same rows and the same idempotency
keys: a line run on one machine and re-run on a cluster is never charged twice.

- :func:`iter_lines`: the non-blank lines, a UTF-8 BOM at the start of the file removed.
- :func:`batch_idempotency_key`: the key of a line, stable across runs.
- :func:`parse_line`: a line to a :class:`CompletionRequest`, or :class:`Malformed`.
- :func:`scan_requests` and :class:`KeyOwners`: an explicit ``idempotency_key``
  belongs to one line only; a later line repeating it is refused, unsent.
- :func:`iter_todo`: the lines still to do, parsed, with those rules applied
  (the single-machine and the Ray paths both read requests files through it).
- :func:`result_row`: a :class:`~samsar_async.batch.BatchResult` to a result row.
- :func:`read_done_lines` and :class:`ResultsWriter`: resuming and appending.

Encoding: a requests file is UTF-8. A byte order mark at the very start of
the file (as some Windows editors write, and Python's ``utf-8-sig`` codec
accepts) is not part of line 1: it is ignored for parsing, for the blank-line
test and for line 1's derived key. A BOM anywhere else makes that line
invalid JSON, as does any byte sequence that is not UTF-8.

Duplicate keys: a line's own ``idempotency_key`` (compared without
surrounding whitespace, as an HTTP header value is) is owned by the first
line of the file that carries it, unless a row of the results file already
carries it for another line (that line then owns it: its call was sent with
the key). Every other line carrying it gets an error row naming the owner,
and nothing is sent for it: a server that honours idempotency keys would
answer it with the owner's recorded response. Only the keys are kept in
memory, never the lines.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import uuid
from collections.abc import Container, Generator, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import attrs

from . import _json
from .errors import APIStatusError, InvalidArgumentError
from .images import save_images
from .inputs import REQUEST_FIELDS, CompletionRequest

if TYPE_CHECKING:
    from .batch import BatchResult
    from .models import Response

__all__ = [
    "BATCH_KEY_NAMESPACE",
    "LINE_FIELDS",
    "KeyOwners",
    "Malformed",
    "RequestsScan",
    "ResultsWriter",
    "batch_idempotency_key",
    "count_todo",
    "error_info",
    "explicit_key",
    "iter_lines",
    "iter_requests",
    "iter_todo",
    "make_row",
    "parse_line",
    "read_done_lines",
    "read_key_owners",
    "result_row",
    "scan_requests",
]

BATCH_KEY_NAMESPACE: Final = uuid.UUID("70cd1133-fdc8-5999-bef3-12eba4bb6f38")
"""Namespace of batch idempotency keys: ``uuid5(NAMESPACE_URL,
"https://pypi.org/project/samsar-async/#cli-batch")``."""

LINE_FIELDS: Final = frozenset(REQUEST_FIELDS) - {"extra_headers"}
"""The fields a request line may have: :class:`CompletionRequest`'s, but ``extra_headers``."""


_BOM: Final = codecs.BOM_UTF8
_KEY_FIELD: Final = b"idempotency_key"
_UNICODE_ESCAPE: Final = b"\\u"
_MAX_KEY_CHARS_SHOWN: Final = 80


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fmt_decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def batch_idempotency_key(requests_path: str | os.PathLike[str], line: int, content: bytes) -> str:
    """The ``Idempotency-Key`` of line ``line`` (1-based) of a requests file.

    ``uuid.uuid5(BATCH_KEY_NAMESPACE, name)`` where ``name`` is the absolute,
    symlink-resolved path, a newline, the line number, a newline and the
    SHA-256 hex digest of ``content`` without surrounding whitespace (computed
    over bytes, so any path works). Stable across runs and machines for the
    same file path and line.
    """
    return _derive_key(_key_prefix(requests_path), line, content)


def _key_prefix(requests_path: str | os.PathLike[str]) -> bytes:
    """The namespace and resolved path: what every key of one file starts from.

    Resolving costs a ``realpath`` (several system calls); a file's lines share it.
    """
    return BATCH_KEY_NAMESPACE.bytes + os.fsencode(Path(requests_path).resolve())


def _derive_key(prefix: bytes, line: int, content: bytes) -> str:
    digest = hashlib.sha256(content.strip()).hexdigest()
    name = b"%s\n%d\n%s" % (prefix, line, digest.encode("ascii"))
    sha1 = hashlib.sha1(name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=sha1[:16], version=5))


def _iter_rows(results_path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]] | None]:
    """``(line, row)`` for each readable row of a results file, ``None`` for each unreadable one.

    A missing file has no rows; blank lines are skipped.
    """
    try:
        f = open(results_path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                row = _json.loads(raw)
            except ValueError:
                yield None
                continue
            line = row.get("line") if isinstance(row, dict) else None
            if type(line) is not int:
                yield None
                continue
            yield line, row


def read_done_lines(results_path: str | os.PathLike[str]) -> tuple[set[int], int]:
    """The line numbers whose newest row in ``results_path`` has ``ok: true``,
    and how many rows could not be read (a torn last row after a crash, say).

    A missing file has no rows. Only the set of line numbers is kept in memory.
    """
    done: set[int] = set()
    unreadable = 0
    for item in _iter_rows(results_path):
        if item is None:
            unreadable += 1
            continue
        line, row = item
        if row.get("ok") is True:
            done.add(line)
        else:
            done.discard(line)
    return done, unreadable


def read_key_owners(results_path: str | os.PathLike[str], keys: Container[str]) -> dict[str, int]:
    """For each key of ``keys`` that a row of ``results_path`` carries: the line it was sent for.

    That is the line of the first ``ok`` row carrying the key, else of the
    first row carrying it. Keys are compared without surrounding whitespace.
    Only keys in ``keys`` are kept, so memory stays bounded by ``keys``.
    """
    owners: dict[str, int] = {}
    settled: set[str] = set()  # owned by an ok row: never reassigned
    for item in _iter_rows(results_path):
        if item is None:
            continue
        line, row = item
        key = row.get("idempotency_key")
        if not isinstance(key, str):
            continue
        key = key.strip()
        if key in settled or key not in keys:
            continue
        if row.get("ok") is True:
            owners[key] = line
            settled.add(key)
        else:
            owners.setdefault(key, line)
    return owners


class ResultsWriter:
    """Appends rows to the results file: one write + flush per row, fsync on close.

    The writes are small and local, so they are done inline in the event loop.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed by close()
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    torn = f.read(1) != b"\n"
                if torn:  # a crash cut the last row short: start a new line after it
                    self._file.write(b"\n")
                    self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(_json.dumps(row) + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()


@attrs.frozen
class Malformed:
    """A line that is not a valid request; it is reported, never sent."""

    line: int
    message: str
    idempotency_key: str
    session_id: str | None = None


@attrs.frozen
class _Unreadable:
    reason: str


def _loads_line(raw: bytes) -> Any:
    """A line's JSON value, or why it has none.

    The bytes are decoded as strict UTF-8 first, so that what is accepted does
    not depend on the JSON library (the standard library's ``loads`` would
    take a BOM, UTF-16 or encoded surrogates from bytes; orjson would not).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Unreadable(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start} of the line)"
        )
    try:
        return _json.loads(text)
    except ValueError as exc:
        return _Unreadable(f"not valid JSON ({_one_line(str(exc))})")


def iter_lines(path: str | os.PathLike[str]) -> Generator[tuple[int, bytes], None, None]:
    """``(number, bytes)`` of each non-blank line of a requests file, read lazily.

    Numbers are 1-based and count blank lines too. A UTF-8 byte order mark at
    the start of the file is removed from line 1 (``utf-8-sig`` semantics), so
    a line holding only a BOM is blank.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.strip():
                yield number, raw


def explicit_key(raw: bytes) -> str | None:
    """A line's own ``idempotency_key`` without surrounding whitespace, if it has a usable one.

    Usable: the line is a JSON object whose ``idempotency_key`` is a non-blank
    string. Lines that cannot hold that field name (neither the name nor a
    ``\\u`` escape in their bytes) are not parsed at all.
    """
    if _KEY_FIELD not in raw and _UNICODE_ESCAPE not in raw:
        return None
    obj = _loads_line(raw)
    key = obj.get("idempotency_key") if isinstance(obj, dict) else None
    if not isinstance(key, str):
        return None
    return key.strip() or None


def parse_line(raw: bytes, line: int, key: str) -> CompletionRequest | Malformed:
    """One line of a requests file as a request, or why it is not one.

    ``key`` is the line's derived key (:func:`batch_idempotency_key`): the
    request's key unless the line has its own, and the key of a
    :class:`Malformed` line's row. ``raw`` must not start with a BOM
    (:func:`iter_lines` removes the one a file may start with).
    """
    obj = _loads_line(raw)
    if isinstance(obj, _Unreadable):
        return Malformed(line, f"line {line}: {obj.reason}", key)
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        return Malformed(line, f"line {line}: must be a JSON object, not {kind}", key)
    session_id = obj.get("session_id")
    sid = session_id if isinstance(session_id, str) else None
    unknown = sorted(str(name) for name in obj if name not in LINE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(LINE_FIELDS))
        return Malformed(
            line,
            f"line {line}: unknown field(s) {', '.join(unknown)} (allowed: {allowed})",
            key,
            sid,
        )
    if sid is None or not sid.strip():
        return Malformed(line, f"line {line}: session_id must be a non-empty string", key, sid)
    own_key = obj.get("idempotency_key")
    if own_key is not None:
        if not isinstance(own_key, str) or not own_key.strip():
            return Malformed(
                line, f"line {line}: idempotency_key must be a non-empty string", key, sid
            )
        obj["idempotency_key"] = own_key
    else:
        obj["idempotency_key"] = key
    try:
        return CompletionRequest(**obj)
    except (TypeError, ValueError) as exc:  # InvalidArgumentError is a ValueError
        return Malformed(line, f"line {line}: {_one_line(str(exc))}", key, sid)


def _show_key(key: str) -> str:
    """A short, printable rendering of a line's key for messages."""
    if len(key) > _MAX_KEY_CHARS_SHOWN:
        return repr(key[:_MAX_KEY_CHARS_SHOWN] + "…")
    return repr(key)


@attrs.frozen
class KeyOwners:
    """The line that owns each explicit ``idempotency_key`` of a requests file.

    ``in_file`` maps a key to the first line of the file carrying it;
    ``in_results`` to the line a row of the results file carries it for
    (:func:`read_key_owners`), which wins. Keys are stripped of surrounding
    whitespace.
    """

    in_file: Mapping[str, int] = attrs.field(factory=dict)
    in_results: Mapping[str, int] = attrs.field(factory=dict)

    def refusal(self, line: int, key: str) -> str | None:
        """Why line ``line`` must not be sent with ``key``, or ``None`` if it may."""
        stripped = key.strip()
        first = self.in_file.get(stripped)
        owner = self.in_results.get(stripped, first)
        if owner is None or owner == line:
            return None
        where = "" if owner == first else " (per its row in the results file)"
        return (
            f"line {line}: idempotency_key {_show_key(key)} is already used by line "
            f"{owner}{where}; not sent (every line needs its own key, or none)"
        )


@attrs.frozen
class RequestsScan:
    """What one pass over a requests file found (:func:`scan_requests`)."""

    lines: int
    """Non-blank lines."""
    todo: int
    """Non-blank lines not done yet."""
    first_use: dict[str, int]
    """Each explicit ``idempotency_key`` (stripped) -> the first line carrying it."""


def scan_requests(path: str | os.PathLike[str], done: Container[int]) -> RequestsScan:
    """Count the lines to do and find who carries each explicit key, reading the file once.

    Every line is scanned, done or not, so a key repeated on a later line is
    caught whatever an earlier run did. Only lines that may hold an
    ``idempotency_key`` field are parsed (see :func:`explicit_key`).
    """
    total = todo = 0
    first_use: dict[str, int] = {}
    for number, raw in iter_lines(path):
        total += 1
        if number not in done:
            todo += 1
        key = explicit_key(raw)
        if key is not None:
            first_use.setdefault(key, number)
    return RequestsScan(total, todo, first_use)


def count_todo(path: Path, done: set[int]) -> tuple[int, int]:
    """(non-blank lines, of which not done yet), reading the file once, lazily."""
    total = todo = 0
    for number, _raw in iter_lines(path):
        total += 1
        if number not in done:
            todo += 1
    return total, todo


def iter_todo(
    path: Path, done: Container[int], owners: KeyOwners | None = None
) -> Generator[tuple[int, bytes, CompletionRequest | Malformed], None, None]:
    """``(number, bytes, parsed)`` of each non-blank line not in ``done``, lazily.

    The path is resolved once (it is part of each derived key). With
    ``owners``, a line whose own key belongs to another line becomes a
    :class:`Malformed` naming that line (its row carries the derived key, never
    the duplicate). Without, every line is on its own: :func:`scan_requests`
    and :func:`read_key_owners` build ``owners``.
    """
    prefix = _key_prefix(path)
    with contextlib.closing(iter_lines(path)) as lines:  # closing us closes the file now
        for number, raw in lines:
            if number in done:
                continue
            key = _derive_key(prefix, number, raw)
            item = parse_line(raw, number, key)
            if owners is not None and isinstance(item, CompletionRequest):
                own = item.idempotency_key
                message = owners.refusal(number, own) if own is not None else None
                if message is not None:
                    item = Malformed(number, message, key, item.session_id)
            yield number, raw, item


def iter_requests(
    path: Path,
    done: set[int],
    lines: dict[int, int],
    owners: KeyOwners | None = None,
) -> Generator[CompletionRequest | Malformed, None, None]:
    """The lines still to do, parsed one at a time; ``lines`` maps batch index -> line.

    See :func:`iter_todo` for ``owners``.
    """
    with contextlib.closing(iter_todo(path, done, owners)) as todo:
        for index, (number, _raw, item) in enumerate(todo):
            lines[index] = number
            yield item


def error_info(exc: BaseException) -> dict[str, Any]:
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    return {"type": type(exc).__name__, "message": _one_line(str(exc)), "status": status}


async def result_row(
    result: BatchResult, line: int, images_dir: Path
) -> tuple[dict[str, Any], BaseException | None]:
    request = result.request
    if isinstance(request, Malformed):
        info = {"type": "InvalidArgumentError", "message": request.message, "status": None}
        return make_row(line, request.session_id, request.idempotency_key, error=info), None
    response: Response | None = result.response
    error = result.error
    images: list[str] = []
    if response is not None and response.images:
        try:
            paths = await save_images(response.images, images_dir, overwrite=True)
        except Exception as exc:  # the call succeeded; a re-run replays it and saves again
            error = exc
        else:
            images = [str(path) for path in paths]
    info = None
    if error is not None:
        info = error_info(error)
        if isinstance(error, InvalidArgumentError) and not info["message"].startswith("line "):
            info["message"] = f"line {line}: {info['message']}"
    credits = response.credits if response is not None else getattr(error, "credits", None)
    row = make_row(
        line,
        request.session_id,
        request.idempotency_key,
        response=response,
        images=images,
        error=info,
        charged=getattr(credits, "charged", None),
        remaining=getattr(credits, "remaining", None),
    )
    return row, error


def make_row(
    line: int,
    session_id: str | None,
    key: str | None,
    *,
    response: Response | None = None,
    images: list[str] | None = None,
    error: dict[str, Any] | None = None,
    charged: Decimal | None = None,
    remaining: Decimal | None = None,
) -> dict[str, Any]:
    return {
        "line": line,
        "session_id": session_id,
        "ok": error is None,
        "response_id": response.id if response is not None else None,
        "output_text": response.output_text if response is not None else None,
        "credits_charged": _fmt_decimal(charged),
        "credits_remaining": _fmt_decimal(remaining),
        "images": images or [],
        "error": error,
        "idempotency_key": key,
    }
