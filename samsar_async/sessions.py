"""Session turns: one chain per ``session_id``, never two turns at once.

Samsar keeps each session's response chain on the server, so two turns sent
at once on one ``session_id`` would race for the same chain.
:class:`SessionLocks` (one per client) serializes every completion on a
session id, in call order (FIFO), whoever sends it: a :class:`Session`, a
direct ``complete`` call or a batch. Different sessions run in parallel. An
entry lives only while a call on that session is running or waiting, so the
registry never grows beyond the sessions in use.

:class:`Session` is the conversation helper::

    chat = client.assistant.session("67df0d8ebc4f9d0b7f4fd123")
    r1 = await chat.send("Write a short product launch caption.")
    img = await chat.generate_image("Create a clean launch poster.", size="1024x1024")
    chat.turns, chat.credits_charged, chat.usage
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .inputs import ImageGenerationTool
from .models import Response, Usage

if TYPE_CHECKING:
    from .assistant import Assistant
    from .inputs import CompletionInput

__all__ = ["Session", "SessionLocks", "Turn"]

T = TypeVar("T")


class SessionLocks:
    """Per-session FIFO locks, created on demand and dropped when idle.

    An uncontended call costs two dict operations: a session with no call
    running gets an empty waiter queue; later callers wait on a future each,
    and a finishing call hands the session straight to the oldest waiter
    (no barging), so calls run in the order they arrived.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        # session id -> futures of the calls waiting behind the running one
        self._entries: dict[str, deque[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        """Sessions with a call running or waiting."""
        return len(self._entries)

    def enter(self, session_id: str) -> asyncio.Future[None] | None:
        """Claim ``session_id``: ``None`` when it was free (the caller now holds it),
        else a future to pass to :meth:`wait`. No await: the place in the queue is
        taken at once, in call order."""
        waiters = self._entries.get(session_id)
        if waiters is None:
            self._entries[session_id] = deque()
            return None
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
        self._hand_over(session_id, self._entries[session_id])

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


@attrs.frozen
class Turn:
    """One turn of a :class:`Session`: what was sent and what came back.

    Exactly one of ``response`` and ``error`` is set.
    """

    input: Any
    response: Response | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the turn succeeded."""
        return self.response is not None

    @property
    def credits_charged(self) -> Decimal:
        """Credits this turn charged (0 when unknown or failed before charging)."""
        if self.response is not None and self.response.credits.charged is not None:
            return self.response.credits.charged
        return Decimal(0)


@attrs.define(eq=False)
class Session:
    """A conversation on one ``session_id``; get one with ``client.assistant.session(id)``.

    Turns are sent in call order and never overlap (the client serializes
    them). A failed turn is recorded (its ``error`` set) and does not break
    the next one; the error is raised to the caller as usual.
    """

    _assistant: Assistant = attrs.field(repr=False)
    session_id: str
    turns: list[Turn] = attrs.field(factory=list, repr=False)

    @property
    def last_response(self) -> Response | None:
        """The newest successful turn's response."""
        for turn in reversed(self.turns):
            if turn.response is not None:
                return turn.response
        return None

    @property
    def credits_charged(self) -> Decimal:
        """Credits charged by this session's turns so far (exact)."""
        return sum((t.credits_charged for t in self.turns), Decimal(0))

    @property
    def usage(self) -> Usage:
        """Token usage summed over the successful turns."""
        total = Usage()
        for turn in self.turns:
            if turn.response is not None and turn.response.usage is not None:
                total = total + turn.response.usage
        return total

    async def send(self, input: CompletionInput | None = None, **options: Any) -> Response:
        """Send a turn; takes every option of :meth:`Assistant.complete`."""
        try:
            response = await self._assistant.complete(self.session_id, input, **options)
        except Exception as exc:
            self.turns.append(Turn(input=input, error=exc))
            raise
        self.turns.append(Turn(input=input, response=response))
        return response

    async def generate_image(
        self,
        prompt: CompletionInput,
        *,
        size: str | None = None,
        quality: str | None = None,
        format: str | None = None,
        background: str | None = None,
        **options: Any,
    ) -> Response:
        """A turn that forces the ``image_generation`` tool with these options.

        A follow-up call on the same session edits the previous image: Samsar
        keeps the chain.
        """
        tool = ImageGenerationTool(size=size, quality=quality, format=format, background=background)
        return await self.send(prompt, tools=[tool], tool_choice=tool, **options)
