"""The conversation helper: turns on one ``session_id``, in order, with their bookkeeping.

::

    chat = client.assistant.conversation("67df0d8ebc4f9d0b7f4fd123")
    r1 = await chat.send("Write a short product launch caption.")
    img = await chat.generate_image("Create a clean launch poster.", size="1024x1024")
    chat.turns, chat.credits_charged, chat.usage

Turns never overlap: the client serializes every completion on a session id
(see :mod:`samsar_async._turns`), whoever sends it.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from .inputs import ImageGenerationTool
from .models import Response, Usage

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .inputs import CompletionInput, CompletionOptions

__all__ = ["Conversation", "Turn"]


@attrs.frozen
class Turn:
    """One turn of a :class:`Conversation`: what was sent and what came back.

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


_Complete = Callable[..., Awaitable[Response]]


@attrs.define(eq=False)
class Conversation:
    """Turns on one ``session_id``; get one with ``client.assistant.conversation(id)``.

    Turns are sent in call order and never overlap (the client serializes
    them). A failed turn is recorded (its ``error`` set) and does not break
    the next one; the error is raised to the caller as usual.
    """

    _complete: _Complete = attrs.field(repr=False, alias="complete")
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

    async def send(
        self, input: CompletionInput | None = None, **options: Unpack[CompletionOptions]
    ) -> Response:
        """Send a turn; takes every option of
        :meth:`Assistant.complete <samsar_async.assistant.Assistant.complete>`."""
        try:
            response = await self._complete(self.session_id, input, **options)
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
        **options: Unpack[CompletionOptions],
    ) -> Response:
        """A turn that forces the ``image_generation`` tool with these options.

        A follow-up call on the same session edits the previous image: Samsar
        keeps the chain.
        """
        tool = ImageGenerationTool(size=size, quality=quality, format=format, background=background)
        options["tools"] = [tool]
        options["tool_choice"] = tool
        return await self.send(prompt, **options)


def __getattr__(name: str) -> Any:
    """``Session``: deprecated alias of :class:`Conversation` (removed in the next release)."""
    if name != "Session":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        "samsar_async.conversation.Session is renamed Conversation",
        DeprecationWarning,
        stacklevel=2,
    )
    return Conversation
