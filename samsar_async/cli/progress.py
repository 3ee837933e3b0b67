"""Progress displays of ``samsar batch`` and ``samsar demo`` on stderr: none, plain lines, or a
rich bar (``--progress``). rich is imported only when a rich bar is shown."""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from typing import Final, Protocol

from .exits import _PROG, _err
from .support import _fmt_credits

_INSTALL_HINT: Final = 'the progress bar needs rich: pip install "samsar-async[cli]"'


class _Progress(Protocol):
    def advance(self, ok: bool, credits: Decimal | None) -> None: ...

    def log(self, message: str) -> None: ...

    def close(self) -> None: ...


class _Counts:
    """Counters shared by the progress displays."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.credits = Decimal(0)
        self.started = time.monotonic()

    def add(self, ok: bool, credits: Decimal | None) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        if credits is not None:
            self.credits += credits

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        rate = self.rate()
        if not rate:
            return "-:--:--"
        seconds = int((self.total - self.done) / rate)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _NoProgress:
    """No display; messages are plain lines on stderr."""

    def advance(self, ok: bool, credits: Decimal | None) -> None:
        pass

    def log(self, message: str) -> None:
        _err(message)

    def close(self) -> None:
        pass


class _PlainProgress(_NoProgress):
    """One line on stderr every ``every`` results (default: every 10%, at most 1000)."""

    def __init__(self, label: str, total: int, every: int | None = None) -> None:
        self._label = label
        self._counts = _Counts(total)
        self._every = every or max(1, min(1000, total // 10))

    def advance(self, ok: bool, credits: Decimal | None) -> None:
        counts = self._counts
        counts.add(ok, credits)
        if counts.done % self._every == 0 or counts.done == counts.total:
            percent = 100 * counts.done // counts.total if counts.total else 100
            _err(
                f"{self._label}: {counts.done}/{counts.total} ({percent}%), "
                f"{counts.failed} failed, {counts.rate():.1f}/s, ETA {counts.eta()}, "
                f"{_fmt_credits(counts.credits)} credits"
            )


class _RichProgress:
    """A rich progress bar on stderr: done/total, failed, rate, ETA, credits spent."""

    def __init__(self, label: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._counts = _Counts(total)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[credits]} credits"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(label, total=total, failed=0, rate="0.0", credits="0")
        self._progress.start()

    def advance(self, ok: bool, credits: Decimal | None) -> None:
        counts = self._counts
        counts.add(ok, credits)
        self._progress.update(
            self._task,
            advance=1,
            failed=counts.failed,
            rate=f"{counts.rate():.1f}",
            credits=_fmt_credits(counts.credits),
        )

    def log(self, message: str) -> None:
        self._progress.console.print(f"{_PROG}: {message}", markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def _make_progress(mode: str, label: str, total: int, every: int | None) -> _Progress:
    if mode == "off":
        return _NoProgress()
    if mode == "plain" or (mode == "auto" and not sys.stderr.isatty()):
        return _PlainProgress(label, total, every)
    try:
        return _RichProgress(label, total)
    except ImportError:
        _err(f"note: {_INSTALL_HINT}; showing plain progress")
        return _PlainProgress(label, total, every)
