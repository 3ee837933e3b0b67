"""One timer for the deadlines of many attempts that share a timeout.

aiohttp bounds each request's total time with timers of its own: a
``TimerHandle`` scheduled and cancelled, a ``TimeoutHandle``, and a
``TimerContext`` entered around every wait. On a small answer that is about
30,000 instructions per request on asyncio and 20,000 on uvloop (raw aiohttp
with and without a total timeout, callgrind), some 5% of a whole call. Most
attempts share one timeout (the client's), so their deadlines fall in the
order they start: :class:`Deadlines` keeps them in one insertion-ordered dict,
with one timer armed for the oldest. An attempt whose time is up has its task
cancelled, as aiohttp's own timer does, and the transport turns that
cancellation into a read timeout (:meth:`Deadlines.timed_out`).

Per attempt that is one dict insertion and one removal. The timer is re-armed
only when it fires (about once per timeout span while calls keep coming), never
per call. Deadlines are in the loop's time (``loop.time()``), as its timers are.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

__all__ = ["Deadlines"]

Task = asyncio.Task[Any]


class Deadlines:
    """The running attempts that share the timeout ``span`` (seconds), on ``loop``.

    :meth:`add` an attempt's task when it starts and :meth:`remove` it when it
    ends, in the same task; nothing else is needed while it runs in time. Tasks
    must be added in the order they start (their deadlines are then in order).
    """

    __slots__ = ("before", "clock", "entries", "expired", "loop", "span", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, span: float) -> None:
        self.loop = loop
        # asyncio's loop.time() is time.monotonic() behind a Python frame: called directly.
        self.clock = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self.span = span
        self.entries: dict[Task, float] = {}
        """Running attempts, oldest first: task -> deadline (loop time)."""
        self.before: dict[Task, int] = {}
        """Running attempts whose task was being cancelled already when they started ->
        its ``cancelling()`` count then (rare: other tasks are not in it)."""
        self.expired: dict[Task, int] = {}
        """Tasks cancelled for their deadline -> their ``cancelling()`` count when their
        attempt started: more than that when the cancellation arrives means someone
        else cancelled the task too (as aiohttp's own timer judges it)."""
        self.timer: asyncio.TimerHandle | None = None

    def add(self, task: Task) -> None:
        """``task`` starts an attempt now; it must end within :attr:`span` seconds."""
        deadline = self.entries[task] = self.clock() + self.span
        if sys.version_info >= (3, 11):  # (3.10 counts no cancellations)
            count = task.cancelling()
            if count:
                self.before[task] = count
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)

    def remove(self, task: Task) -> None:
        """``task``'s attempt ended (in time or not)."""
        self.entries.pop(task, None)
        if self.before:
            self.before.pop(task, None)
        if self.expired:  # a deadline's cancellation that did not reach timed_out()
            self.timed_out(task)

    def timed_out(self, task: Task) -> bool:
        """Whether the ``CancelledError`` raised in ``task``'s attempt is its deadline's.

        Then the cancellation is taken back (``Task.uncancel()``) and the caller
        raises a timeout instead; ``False`` when the task was not cancelled by
        its deadline, or was also cancelled by someone else (that goes on).
        """
        before = self.expired.pop(task, None)
        if before is None:
            return False
        if sys.version_info >= (3, 11):
            return task.uncancel() <= before
        return True  # pragma: no cover - no cancellation counts on 3.10 (aiohttp's the same)

    def _expire(self) -> None:
        """Cancel the attempts whose deadline passed; arm the timer for the next one."""
        self.timer = None
        now = self.clock()
        entries = self.entries
        due: list[Task] = []
        for task, deadline in entries.items():
            if deadline > now:  # (a timer may run a little early: this one waits on)
                self.timer = self.loop.call_at(deadline, self._expire)
                break
            due.append(task)
        for task in due:
            del entries[task]
            self.expired[task] = self.before.pop(task, 0) if self.before else 0
            task.cancel()

    def close(self) -> None:
        """The pool closed: stop the timer if no attempt is running. Attempts still
        running (on a session or connector of the user's, which stays open) keep
        their deadlines; the timer stops once they are done."""
        if self.timer is not None and not self.entries:
            self.timer.cancel()
            self.timer = None
