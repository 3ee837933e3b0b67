"""Session turns: one chain per ``session_id``, never two turns at once.

Samsar keeps each session's response chain on the server, so two turns sent
at once on one ``session_id`` would race for the same chain.
:class:`TurnQueues` (one per client) serializes every completion on a
session id, in call order (FIFO), whoever sends it: a
:class:`~samsar_async.conversation.Conversation`, a direct ``complete`` call
or a batch. Different sessions run in parallel. An entry lives only while a
call on that session is running or waiting, so the registry never grows
beyond the sessions in use.

The promise, exactly: this client *sends* a session's turns one at a time, in
call order; a turn is sent only once the call before it on that session has
ended (its answer read, or its error raised). A call that ends without its
answer after its request went out -- cancelled by its caller, or timed out
waiting -- ends at once, and the session passes to the next turn: the server
may still be running the abandoned request when the next turn arrives. No
client can know when the server finishes a request it stopped waiting for
(the API has no way to ask, and holding the session for a guessed grace
period would delay every turn after a cancellation without guaranteeing
anything); so the SDK does not guess, and says so. To keep a chain strictly
ordered, let a turn finish (or fail) instead of cancelling it mid-flight.
Cancellation *before* a turn is sent (while it waits for its place, or for a
connection) sends nothing. ``tests/test_lifecycle.py`` checks the promise
under a storm of cancellations: every overlap the server sees involves an
abandoned request, never two live calls.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["TurnQueues"]

T = TypeVar("T")


class TurnQueues:
    """Per-session FIFO locks, created on demand and dropped when idle.

    An uncontended call costs three dict operations and no allocation; the
    first caller to find the session busy creates its waiter queue; callers wait on a future each,
    and a finishing call hands the session straight to the oldest waiter
    (no barging), so calls run in the order they arrived.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        # session id -> futures of the calls waiting behind the running one
        # (None: a call is running and nobody waits; no queue is allocated for that)
        self._entries: dict[str, deque[asyncio.Future[None]] | None] = {}

    def __len__(self) -> int:
        """Sessions with a call running or waiting."""
        return len(self._entries)

    def enter(self, session_id: str) -> asyncio.Future[None] | None:
        """Claim ``session_id``: ``None`` when it was free (the caller now holds it),
        else a future to pass to :meth:`wait`. No await: the place in the queue is
        taken at once, in call order."""
        entries = self._entries
        if session_id not in entries:
            entries[session_id] = None
            return None
        waiters = entries[session_id]
        if waiters is None:
            waiters = entries[session_id] = deque()
        turn = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        return turn

    async def wait(self, session_id: str, turn: asyncio.Future[None]) -> None:
        """Wait for the turn :meth:`enter` queued; on return the caller holds the session."""
        try:
            await turn
        except BaseException:
            waiters = self._entries.get(session_id)
            if turn.done() and not turn.cancelled():
                if waiters is not None:
                    self._hand_over(session_id, waiters)  # our turn came: pass it on
            elif waiters is not None and turn in waiters:
                waiters.remove(turn)  # (the holder may already have skipped it)
            raise

    def leave(self, session_id: str) -> None:
        """Release ``session_id`` to the oldest waiting call (or forget it when none)."""
        waiters = self._entries[session_id]
        if waiters is None:
            del self._entries[session_id]
        else:
            self._hand_over(session_id, waiters)

    async def run(self, session_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` once every earlier call on ``session_id`` has finished."""
        turn = self.enter(session_id)
        if turn is not None:
            await self.wait(session_id, turn)
        try:
            return await call()
        finally:
            self.leave(session_id)

    def _hand_over(self, session_id: str, waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._entries[session_id]
