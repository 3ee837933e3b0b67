"""Batches beyond one machine: Ray Data, with exactly-once charging.

Needs the ``ray`` extra (``pip install "samsar-async[ray]"``); the core package
never imports this module.

::

    import ray
    from samsar_async.integrations.ray import complete_dataset

    ray.init()                                   # RAY_ADDRESS, or a local cluster
    ds = ray.data.read_json("requests.jsonl")    # columns: row_key, session_id, input, ...
    results = complete_dataset(ds, job_name="launch-captions", actors=4)
    results.write_json("results/")

How it works:

- Rows are grouped by ``session_id`` (a hash repartition: every row of a
  session lands in one block) and each block is one call of
  :class:`SamsarMapper`, a callable class whose ``__call__`` is an async
  generator: Ray Data runs it on the actor's own event loop, so each actor
  keeps one pooled :class:`~samsar_async.AsyncSamsar` for its whole life and
  runs :meth:`~samsar_async.assistant.Assistant.complete_many` over the block
  at ``concurrency`` calls at once.
- Per-session order: within a block, rows are sent in ascending order of the
  order column (the row key by default); the client keeps each session's
  calls in that order. Different sessions spread across actors.
- Exactly-once charging: each row's ``Idempotency-Key`` is derived from the
  job name and the row's stable key (or taken from an ``idempotency_key``
  column). When Ray retries a failed task or restarts a crashed actor, or you
  re-run the job, already-charged rows are sent again with the same key and
  an idempotent server answers them from its record without charging again.
- Errors are rows (``ok`` false, ``error_type``, ``error_message``), never crashes.
- Credentials reach the workers from the environment: the mapper reads
  ``SAMSAR_API_KEY`` in the worker; the key is never a constructor argument
  (those are pickled into Ray's object store) nor a log line. A local cluster
  started by ``ray.init()`` inherits the driver's environment; on a cluster,
  set the variable where ``ray start`` runs (``runtime_env`` env vars work too,
  but Ray writes them to its ``runtime_env_agent.log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .. import _json
from ..batch import BatchResult
from ..client import AsyncSamsar
from ..config import API_KEY_ENV
from ..errors import InvalidArgumentError
from ..images import save_images
from ..inputs import REQUEST_FIELDS, CompletionRequest
from ..requests_file import (
    KeyOwners,
    Malformed,
    error_info,
    iter_todo,
    make_row,
    scan_requests,
)

if TYPE_CHECKING:
    import pyarrow
    from ray.data import Dataset

__all__ = [
    "RESULT_COLUMNS",
    "ROW_KEY_NAMESPACE",
    "SamsarMapper",
    "complete_dataset",
    "row_idempotency_key",
    "run_batch_file",
]

ROW_KEY_NAMESPACE: Final = uuid.UUID("2f6e0ad4-5d0c-5b7a-9a63-6c1e0b1f3a77")
"""Namespace of the keys :func:`row_idempotency_key` derives."""

RESULT_COLUMNS: Final = (
    "row_key",
    "session_id",
    "ok",
    "response_id",
    "output_text",
    "credits_charged",
    "credits_remaining",
    "images",
    "error_type",
    "error_message",
    "error_status",
    "idempotency_key",
)
"""The columns of every output row (credits are decimal strings)."""

_OPTION_COLUMNS: Final = tuple(
    name
    for name in REQUEST_FIELDS
    if name not in ("session_id", "idempotency_key", "extra_headers")
)
"""The request columns besides ``session_id`` and ``idempotency_key``: derived from
:class:`~samsar_async.inputs.CompletionRequest`."""
_REQUEST_FIELDS: Final = frozenset(_OPTION_COLUMNS) | {"session_id", "idempotency_key"}


def row_idempotency_key(job_name: str, row_key: object) -> str:
    """The ``Idempotency-Key`` of a row: ``uuid5(ROW_KEY_NAMESPACE, f"{job_name}\\n{row_key}")``.

    The same job name and row key give the same key in every run, on every
    machine, so a retried or re-run row is never charged twice by a server
    that honours idempotency keys.
    """
    return str(uuid.uuid5(ROW_KEY_NAMESPACE, f"{job_name}\n{row_key}"))


def _missing(value: Any) -> bool:
    # Arrow nulls arrive as None; pandas-origin floats as NaN.
    return value is None or (isinstance(value, float) and value != value)


def _request_from_row(
    row: dict[str, Any], job_name: str, key_column: str
) -> CompletionRequest | InvalidArgumentError:
    row_key = row.get(key_column)
    if _missing(row_key):
        return InvalidArgumentError(key_column, "every row needs a stable key")
    raw = row.get("request")
    fields: dict[str, Any]
    if isinstance(raw, (str, bytes)):
        try:
            fields = _json.loads(raw)
        except ValueError:
            return InvalidArgumentError("request", f"row {row_key}: not valid JSON")
        if not isinstance(fields, dict):
            return InvalidArgumentError("request", f"row {row_key}: not a JSON object")
        unknown = sorted(str(name) for name in fields if name not in _REQUEST_FIELDS)
        if unknown:
            return InvalidArgumentError(
                "request", f"row {row_key}: unknown field(s) {', '.join(unknown)}"
            )
    else:
        fields = {name: row[name] for name in (*_OPTION_COLUMNS, "session_id") if name in row}
    fields = {name: value for name, value in fields.items() if not _missing(value)}
    session_id = row.get("session_id", fields.get("session_id"))
    if not isinstance(session_id, str) or not session_id.strip():
        return InvalidArgumentError("session_id", f"row {row_key}: must be a non-empty string")
    fields["session_id"] = session_id
    key = row.get("idempotency_key")
    if _missing(key):
        key = fields.get("idempotency_key")
    fields["idempotency_key"] = (
        key if isinstance(key, str) and key else row_idempotency_key(job_name, row_key)
    )
    try:
        return CompletionRequest(**fields)
    except (TypeError, ValueError) as exc:
        return InvalidArgumentError("request", f"row {row_key}: {exc}")


def _fmt(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class SamsarMapper:
    """A Ray Data callable class: one pooled client per actor, ``complete_many`` per block.

    Use it through :func:`complete_dataset`, or directly with
    ``ds.map_batches(SamsarMapper, fn_constructor_kwargs={...}, batch_size=None,
    batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=N))`` after
    grouping the rows of a session into one block.

    Input columns: the row key (``key_column``), ``session_id``, and either
    ``request`` (a JSON object text, as one line of a ``samsar batch`` file) or
    the request's own columns (``input``, ``max_output_tokens``, ``temperature``,
    ``top_p``, ``reasoning``, ``metadata``, ``tools``, ``tool_choice``,
    ``extra_body``); optionally ``idempotency_key``. Output: :data:`RESULT_COLUMNS`.
    """

    def __init__(
        self,
        *,
        job_name: str,
        key_column: str = "row_key",
        order_column: str | None = None,
        concurrency: int = 32,
        base_url: str | None = None,
        images_dir: str | None = None,
        api_key_env: str = API_KEY_ENV,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if not job_name:
            raise InvalidArgumentError("job_name", "must be a non-empty string")
        self.job_name = job_name
        self.key_column = key_column
        self.order_column: str = order_column or key_column
        self.concurrency = concurrency
        self.base_url = base_url
        self.images_dir = images_dir
        self.api_key_env = api_key_env
        self.client_options: dict[str, Any] = dict(client_options or {})
        self._client: AsyncSamsar | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_client(self) -> AsyncSamsar:
        # Created inside the actor's event loop, on first use, and kept for its life.
        if self._client is None:
            self._loop = asyncio.get_running_loop()
            self._client = AsyncSamsar(
                os.environ.get(self.api_key_env), base_url=self.base_url, **self.client_options
            )
        return self._client

    async def __call__(self, batch: pyarrow.Table) -> AsyncIterator[pyarrow.Table]:
        """Complete every row of ``batch``; yields one table of result rows."""
        import pyarrow as pa

        rows = batch.to_pylist()
        order = sorted(range(len(rows)), key=lambda i: rows[i].get(self.order_column))
        requests: list[CompletionRequest | InvalidArgumentError] = [
            _request_from_row(rows[i], self.job_name, self.key_column) for i in order
        ]
        out: list[dict[str, Any] | None] = [None] * len(rows)
        client = self._get_client()
        async with client.assistant.complete_many(
            # Refused rows travel as non-requests: complete_many reports them unsent.
            _Refused.wrap(requests),
            concurrency=self.concurrency,
        ) as results:
            async for result in results:
                row = rows[order[result.index]]
                out[order[result.index]] = await self._result_row(row, result)
        yield pa.Table.from_pylist(out, schema=result_schema())

    async def _result_row(self, row: dict[str, Any], result: BatchResult) -> dict[str, Any]:
        request = result.request
        error = result.error
        if isinstance(request, _Refused):
            error = request.error
        response = result.response
        images: list[str] = []
        if response is not None and response.images and self.images_dir is not None:
            try:
                paths = await save_images(response.images, self.images_dir, overwrite=True)
            except Exception as exc:  # the call succeeded; a re-run replays it and saves again
                error = exc
            else:
                images = [str(path) for path in paths]
        credits = response.credits if response is not None else getattr(error, "credits", None)
        info = error_info(error) if error is not None else None
        session_id = row.get("session_id")
        key = request.idempotency_key if isinstance(request, CompletionRequest) else None
        return {
            "row_key": str(row.get(self.key_column)),
            "session_id": session_id if isinstance(session_id, str) else None,
            "ok": error is None,
            "response_id": response.id if response is not None else None,
            "output_text": response.output_text if response is not None else None,
            "credits_charged": _fmt(getattr(credits, "charged", None)),
            "credits_remaining": _fmt(getattr(credits, "remaining", None)),
            "images": images,
            "error_type": info["type"] if info else None,
            "error_message": info["message"] if info else None,
            "error_status": info["status"] if info else None,
            "idempotency_key": key,
        }

    def __del__(self) -> None:
        # Best effort: Ray deletes the mapper when the pool lets the actor go.
        client, loop = self._client, self._loop
        if client is None or loop is None or loop.is_closed() or not loop.is_running():
            return
        with contextlib.suppress(Exception):  # the actor is going away anyway
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)


class _Refused:
    """A row refused before sending; ``complete_many`` turns it into an error result."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgumentError) -> None:
        self.error = error

    @staticmethod
    def wrap(
        items: Iterable[CompletionRequest | InvalidArgumentError],
    ) -> Iterable[CompletionRequest]:
        wrapped: list[Any] = [
            item if isinstance(item, CompletionRequest) else _Refused(item) for item in items
        ]
        return wrapped


def result_schema() -> pyarrow.Schema:
    """The Arrow schema of the output rows."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_key", pa.string()),
            ("session_id", pa.string()),
            ("ok", pa.bool_()),
            ("response_id", pa.string()),
            ("output_text", pa.string()),
            ("credits_charged", pa.string()),
            ("credits_remaining", pa.string()),
            ("images", pa.list_(pa.string())),
            ("error_type", pa.string()),
            ("error_message", pa.string()),
            ("error_status", pa.int64()),
            ("idempotency_key", pa.string()),
        ]
    )


def complete_dataset(
    ds: Dataset,
    *,
    job_name: str,
    key_column: str = "row_key",
    order_column: str | None = None,
    actors: int = 2,
    concurrency: int = 32,
    partitions: int | None = None,
    base_url: str | None = None,
    images_dir: str | None = None,
    num_cpus: float = 0.25,
    mapper: type[SamsarMapper] = SamsarMapper,
    mapper_options: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
) -> Dataset:
    """Complete every row of ``ds`` on a pool of ``actors``; returns the lazy result dataset.

    Rows sharing a ``session_id`` go to one block (a hash repartition into
    ``partitions`` blocks, ``4 * actors`` by default) and are sent in ascending
    ``order_column`` (default: ``key_column``). ``images_dir`` must be a path
    every worker can write (shared storage on a cluster). ``num_cpus`` is what
    each actor reserves: the work is I/O, so a fraction leaves CPUs to Ray.
    ``mapper`` (a :class:`SamsarMapper` subclass) and ``mapper_options`` (more
    constructor arguments) customize the per-actor work; ``client_options`` are
    passed to each actor's :class:`~samsar_async.AsyncSamsar`. Never put the API
    key in any of them: they are pickled into Ray's object store.
    """
    import ray.data

    if actors < 1:
        raise InvalidArgumentError("actors", "must be >= 1")
    blocks = partitions if partitions is not None else 4 * actors
    grouped = ds.repartition(blocks, keys=["session_id"])
    return grouped.map_batches(
        mapper,
        fn_constructor_kwargs={
            "job_name": job_name,
            "key_column": key_column,
            "order_column": order_column,
            "concurrency": concurrency,
            "base_url": base_url,
            "images_dir": images_dir,
            "client_options": client_options,
            **(mapper_options or {}),
        },
        batch_size=None,  # one batch per block: a session is never split
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        num_cpus=num_cpus,
    )


def run_batch_file(
    requests_path: str | os.PathLike[str],
    done: set[int],
    *,
    owners: KeyOwners | None = None,
    images_dir: str | os.PathLike[str],
    base_url: str | None = None,
    actors: int = 2,
    concurrency: int = 32,
    client_options: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The result rows of ``samsar batch --ray``: the lines of a requests file not in ``done``.

    Lines are parsed on the driver with the single-machine rules and sent with
    the same idempotency keys (:func:`~samsar_async.requests_file.batch_idempotency_key`),
    so a file may be resumed on one machine after a cluster run and vice versa
    without charging a line twice. Rows come in the single-machine format
    (``line``, ``error`` as ``{type, message, status}``, ...) as Ray finishes
    them. Ray must already be initialized (``ray.init()``).

    The file is read with the same rules too (:func:`~samsar_async.requests_file.iter_todo`):
    a UTF-8 BOM at its start is ignored, and a line repeating another line's
    own ``idempotency_key`` gets an error row naming that line and is never
    sent. ``owners`` says which line owns each key (``samsar batch --ray``
    passes what it read from the results file too); by default it is computed
    from the requests file alone.
    """
    import ray.data

    source = Path(requests_path).resolve()
    if owners is None:
        owners = KeyOwners(scan_requests(source, done).first_use)
    items: list[dict[str, Any]] = []
    for number, raw, request in iter_todo(source, done, owners):
        if isinstance(request, Malformed):
            info = {"type": "InvalidArgumentError", "message": request.message, "status": None}
            yield make_row(number, request.session_id, request.idempotency_key, error=info)
            continue
        items.append(
            {
                "row_key": number,
                "session_id": request.session_id,
                "request": raw.decode("utf-8", "replace"),
                "idempotency_key": request.idempotency_key,
            }
        )
    if not items:
        return
    results = complete_dataset(
        ray.data.from_items(items),
        job_name=str(source),
        actors=actors,
        concurrency=concurrency,
        base_url=base_url,
        images_dir=str(images_dir),
        client_options=client_options,
    )
    for row in results.iter_rows():
        error = None
        if not row["ok"]:
            error = {
                "type": row["error_type"],
                "message": row["error_message"],
                "status": row["error_status"],
            }
        yield {
            "line": int(row["row_key"]),
            "session_id": row["session_id"],
            "ok": bool(row["ok"]),
            "response_id": row["response_id"],
            "output_text": row["output_text"],
            "credits_charged": row["credits_charged"],
            "credits_remaining": row["credits_remaining"],
            "images": list(row["images"] or []),
            "error": error,
            "idempotency_key": row["idempotency_key"],
        }
