"""``samsar batch``: :func:`run_batch` (resumable, one result row per line), the row recorder
and summary shared with the Ray path (``--ray``), and the report on stderr.

The batch-file format, resume rules and idempotency keys are described in
:mod:`samsar_async.cli` and implemented in :mod:`samsar_async.requests_file`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import attrs

from ..config import API_KEY_ENV, BASE_URL_ENV
from ..errors import AuthenticationError, CreditBudgetExceededError, InsufficientCreditsError
from ..requests_file import (
    KeyOwners,
    ResultsWriter,
    iter_requests,
    read_done_lines,
    read_key_owners,
    result_row,
    scan_requests,
)
from .exits import (
    EXIT_BATCH_FAILED,
    EXIT_CREDITS,
    EXIT_OK,
    CLIError,
    _describe,
    _err,
    exit_code_for,
)
from .progress import _make_progress
from .support import _client, _fmt_credits, _run

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from ..client import AsyncSamsar
    from ..inputs import CompletionRequest
    from .progress import _Progress

__all__ = ["BatchSummary", "run_batch"]

DEFAULT_BATCH_CONCURRENCY: Final = 16
MAX_LOGGED_FAILURES: Final = 10
"""Failed batch lines reported on stderr one by one; the rest are only in the results."""

_CREDIT_ERRORS: Final = frozenset(
    {InsufficientCreditsError.__name__, CreditBudgetExceededError.__name__}
)


@attrs.define
class BatchSummary:
    """What one ``run_batch`` did."""

    lines: int = 0
    """Non-blank lines in the requests file."""
    skipped: int = 0
    """Lines skipped because an earlier run succeeded on them."""
    ok: int = 0
    failed: int = 0
    credits_charged: Decimal = Decimal(0)
    """Sum of ``x-credits-charged`` over this run's successful lines."""
    credits_remaining: Decimal | None = None
    images: int = 0
    errors: Counter[str] = attrs.field(factory=Counter)
    """Failures of this run by error type."""
    credit_failures: int = 0
    unreadable_rows: int = 0
    aborted: BaseException | None = None
    """The error that stopped the batch early (a refused API key)."""

    @property
    def exit_code(self) -> int:
        """The documented exit code of ``samsar batch`` for this outcome."""
        if self.aborted is not None:
            return exit_code_for(self.aborted)
        if self.credit_failures:
            return EXIT_CREDITS
        return EXIT_BATCH_FAILED if self.failed else EXIT_OK


@attrs.frozen
class _Plan:
    """What a run has to do, from the requests file and what earlier runs wrote."""

    source: Path
    """The requests file, resolved."""
    done: set[int]
    todo: int
    owners: KeyOwners


def _prepare_batch(
    requests_path: str | os.PathLike[str], out: Path, summary: BatchSummary
) -> _Plan:
    """Read what earlier runs did and scan the requests file once (twice the results
    file when some lines carry their own ``idempotency_key``)."""
    source = Path(requests_path).resolve()
    done, summary.unreadable_rows = read_done_lines(out)
    scan = scan_requests(source, done)
    summary.lines = scan.lines
    summary.skipped = scan.lines - scan.todo
    in_results = read_key_owners(out, scan.first_use) if scan.first_use and scan.todo else {}
    return _Plan(source, done, scan.todo, KeyOwners(scan.first_use, in_results))


def _images_dir(out: Path, images_dir: str | os.PathLike[str] | None) -> Path:
    """Where a batch saves images: ``images_dir``, else ``RESULTS-images`` next to ``out``."""
    return Path(images_dir) if images_dir is not None else out.parent / f"{out.stem}-images"


async def run_batch(
    client: AsyncSamsar,
    requests_path: str | os.PathLike[str],
    results_path: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    concurrency: int = DEFAULT_BATCH_CONCURRENCY,
    min_credits: Decimal | None = None,
    progress: str = "auto",
    progress_every: int | None = None,
    label: str = "batch",
) -> BatchSummary:
    """Run (or resume) the batch of ``samsar batch``; see :mod:`samsar_async.cli`.

    Failed lines are results, not exceptions. A refused API key (401) stops
    the batch (``summary.aborted``). Cancellation stops it too; every row
    written so far is flushed and fsynced.
    """
    out = Path(results_path)
    pictures = _images_dir(out, images_dir)
    summary = BatchSummary()
    plan = _prepare_batch(requests_path, out, summary)
    if summary.unreadable_rows:
        _err(f"note: ignored {summary.unreadable_rows} unreadable row(s) in {out}")
    if not plan.todo:
        return summary
    lines: dict[int, int] = {}
    requests = iter_requests(plan.source, plan.done, lines, plan.owners)
    recorder = _Recorder(
        summary,
        ResultsWriter(out),
        _make_progress(progress, label, plan.todo, progress_every),
        label,
        out,
    )
    try:
        # Malformed lines travel as non-CompletionRequest items: complete_many turns
        # them into error results without sending anything; their rows name the line.
        run = client.assistant.complete_many(
            cast("Iterator[CompletionRequest]", requests),
            concurrency=concurrency,
            min_credits=min_credits,
        )
        async with run:
            async for result in run:
                line = lines.pop(result.index)
                row, error = await result_row(result, line, pictures)
                if recorder.record(row, error):
                    break
    finally:
        requests.close()
        recorder.close()
    return summary


class _Recorder:
    """Writes result rows and keeps the summary and the progress display up to date."""

    def __init__(
        self,
        summary: BatchSummary,
        writer: ResultsWriter,
        display: _Progress,
        label: str,
        out: Path,
    ) -> None:
        self.summary = summary
        self.writer = writer
        self.display = display
        self.label = label
        self.out = out
        self.logged = 0

    def record(self, row: dict[str, Any], error: BaseException | None) -> bool:
        """Account for one row; True when the batch must stop (the API key was refused)."""
        summary = self.summary
        self.writer.write(row)
        charged = Decimal(row["credits_charged"]) if row["ok"] and row["credits_charged"] else None
        self.display.advance(row["ok"], charged)
        if row["credits_remaining"] is not None:
            summary.credits_remaining = Decimal(row["credits_remaining"])
        if row["ok"]:
            summary.ok += 1
            summary.images += len(row["images"])
            if charged is not None:
                summary.credits_charged += charged
            return False
        summary.failed += 1
        info = row["error"]
        summary.errors[info["type"]] += 1
        if info["type"] in _CREDIT_ERRORS:
            summary.credit_failures += 1
        if self.logged < MAX_LOGGED_FAILURES:
            self.logged += 1
            line = row["line"]
            message = info["message"]
            where = "" if message.startswith(f"line {line}:") else f"line {line}: "
            self.display.log(f"{self.label}: {where}{info['type']}: {message}")
            if self.logged == MAX_LOGGED_FAILURES:
                self.display.log(f"{self.label}: further failures are only in {self.out}")
        if info["type"] == AuthenticationError.__name__:
            summary.aborted = error or AuthenticationError(
                info["message"], status_code=info["status"] or 401
            )
            return True
        return False

    def close(self) -> None:
        try:
            self.display.close()
        finally:
            self.writer.close()


# --------------------------------------------------------------------------- the command


def _cmd_batch(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _batch_ray(args)
    return _run(lambda: _batch(args))


def _batch_ray(args: argparse.Namespace) -> int:
    """``samsar batch --ray``: the same batch through Ray Data (blocking, no event loop here)."""
    _check_batch_paths(args.requests, args.out)
    try:
        import ray

        from ..integrations.ray import run_batch_file
    except ImportError:
        raise CLIError('--ray needs the ray extra: pip install "samsar-async[ray]"') from None
    # The same checks as the single-machine path (key, base URL); nothing is sent here.
    _client(args)
    key = args.api_key if args.api_key is not None else os.environ[API_KEY_ENV]
    # A local cluster's workers inherit this environment; on a cluster, set the
    # variable where `ray start` runs. The key is never pickled or logged.
    os.environ[API_KEY_ENV] = key
    started = time.monotonic()
    out = Path(args.out)
    pictures = _images_dir(out, args.images_dir or None)
    summary = BatchSummary()
    plan = _prepare_batch(args.requests, out, summary)
    if summary.unreadable_rows:
        _err(f"note: ignored {summary.unreadable_rows} unreadable row(s) in {out}")
    if plan.todo:
        ray.init(
            address=args.ray or None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        display = _make_progress(args.progress, "batch", plan.todo, args.progress_every)
        recorder = _Recorder(summary, ResultsWriter(out), display, "batch", out)
        base_url = args.base_url or os.environ.get(BASE_URL_ENV)
        try:
            for row in run_batch_file(
                plan.source,
                plan.done,
                owners=plan.owners,
                images_dir=pictures,
                base_url=base_url,
                actors=args.actors,
                concurrency=args.concurrency,
                client_options=None if args.timeout is None else {"timeout": args.timeout},
            ):
                if recorder.record(row, None):
                    break
        finally:
            recorder.close()
            ray.shutdown()
    return _finish_batch(summary, args.out, started)


def _check_batch_paths(requests: str, out: str) -> None:
    source = Path(requests)
    if not source.is_file():
        raise CLIError(f"{requests}: no such file")
    try:
        with open(source, "rb"):
            pass
    except OSError as exc:
        raise CLIError(f"{requests}: {exc.strerror or exc}") from None
    target = Path(out)
    if target.exists() and target.resolve() == source.resolve():
        raise CLIError("--out must not be the requests file")
    if target.is_dir():
        raise CLIError(f"--out {out} is a directory")


async def _batch(args: argparse.Namespace) -> int:
    _check_batch_paths(args.requests, args.out)
    started = time.monotonic()
    options: dict[str, Any] = {}
    if args.concurrency > 100:
        options["max_connections"] = args.concurrency
    summary = BatchSummary()
    try:
        async with _client(args, **options) as client:
            summary = await run_batch(
                client,
                args.requests,
                args.out,
                images_dir=args.images_dir,
                concurrency=args.concurrency,
                min_credits=args.min_credits,
                progress=args.progress,
                progress_every=args.progress_every,
            )
    except asyncio.CancelledError:
        _err(f"batch interrupted; results so far are in {args.out}: re-run the same command")
        raise
    return _finish_batch(summary, args.out, started)


def _finish_batch(summary: BatchSummary, out: str, started: float) -> int:
    """Report a finished (or stopped) batch on stderr; returns its exit code."""
    _report_batch(summary, out, time.monotonic() - started)
    if summary.aborted is not None:
        _err(f"error: {_describe(summary.aborted)} (batch stopped; fix it and re-run)")
    return summary.exit_code


def _report_batch(summary: BatchSummary, out: str, elapsed: float) -> None:
    if summary.lines and summary.skipped == summary.lines:
        _err(f"batch: nothing to do: all {summary.lines} lines already succeeded (see {out})")
        return
    parts = [f"batch: {summary.ok} ok, {summary.failed} failed"]
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (done earlier)")
    parts.append(f"of {summary.lines} lines in {elapsed:.1f}s")
    text = ", ".join(parts[:-1]) + " " + parts[-1]
    text += f"; {_fmt_credits(summary.credits_charged)} credits charged"
    if summary.credits_remaining is not None:
        text += f", {_fmt_credits(summary.credits_remaining)} remaining"
    if summary.images:
        text += f"; {summary.images} image(s) saved"
    _err(text)
    if summary.errors:
        by_type = ", ".join(f"{name} x{count}" for name, count in summary.errors.most_common())
        _err(f"batch: failures: {by_type}; re-run the same command to retry them (rows in {out})")
