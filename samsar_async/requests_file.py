"""JSONL batch files: one request per line, one result row per line, resumable.

The format of ``samsar batch`` (see :mod:`samsar_async.cli`), shared with the
Ray integration so that both produce the same rows and the same idempotency
keys: a line run on one machine and re-run on a cluster is never charged twice.

- :func:`batch_idempotency_key`: the key of a line, stable across runs.
- :func:`parse_line`: a line to a :class:`CompletionRequest`, or :class:`Malformed`.
- :func:`result_row`: a :class:`~samsar_async.batch.BatchResult` to a result row.
- :func:`read_done_lines` and :class:`ResultsWriter`: resuming and appending.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Generator
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
    "Malformed",
    "ResultsWriter",
    "batch_idempotency_key",
    "count_todo",
    "error_info",
    "iter_requests",
    "make_row",
    "parse_line",
    "read_done_lines",
    "result_row",
]

BATCH_KEY_NAMESPACE: Final = uuid.UUID("70cd1133-fdc8-5999-bef3-12eba4bb6f38")
"""Namespace of batch idempotency keys: ``uuid5(NAMESPACE_URL,
"https://pypi.org/project/samsar-async/#cli-batch")``."""

LINE_FIELDS: Final = frozenset(REQUEST_FIELDS) - {"extra_headers"}
"""The fields a request line may have: :class:`CompletionRequest`'s, but ``extra_headers``."""


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
    path = os.fsencode(Path(requests_path).resolve())
    digest = hashlib.sha256(content.strip()).hexdigest()
    name = b"%s\n%d\n%s" % (path, line, digest.encode("ascii"))
    sha1 = hashlib.sha1(BATCH_KEY_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=sha1[:16], version=5))


def read_done_lines(results_path: str | os.PathLike[str]) -> tuple[set[int], int]:
    """The line numbers whose newest row in ``results_path`` has ``ok: true``,
    and how many rows could not be read (a torn last row after a crash, say).

    A missing file has no rows. Only the set of line numbers is kept in memory.
    """
    done: set[int] = set()
    unreadable = 0
    try:
        f = open(results_path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return done, 0
    with f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                row = _json.loads(raw)
            except ValueError:
                unreadable += 1
                continue
            line = row.get("line") if isinstance(row, dict) else None
            if type(line) is not int:
                unreadable += 1
                continue
            if row.get("ok") is True:
                done.add(line)
            else:
                done.discard(line)
    return done, unreadable


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


def parse_line(raw: bytes, line: int, key: str) -> CompletionRequest | Malformed:
    try:
        obj = _json.loads(raw)
    except ValueError as exc:
        return Malformed(line, f"line {line}: not valid JSON ({_one_line(str(exc))})", key)
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
    except InvalidArgumentError as exc:
        return Malformed(line, f"line {line}: {exc}", key, sid)


def count_todo(path: Path, done: set[int]) -> tuple[int, int]:
    """(non-blank lines, of which not done yet), reading the file once, lazily."""
    total = todo = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                total += 1
                if number not in done:
                    todo += 1
    return total, todo


def iter_requests(
    path: Path, done: set[int], lines: dict[int, int]
) -> Generator[CompletionRequest | Malformed, None, None]:
    """The lines still to do, parsed one at a time; ``lines`` maps batch index -> line."""
    index = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number in done or not raw.strip():
                continue
            key = batch_idempotency_key(path, number, raw)
            lines[index] = number
            index += 1
            yield parse_line(raw, number, key)


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
