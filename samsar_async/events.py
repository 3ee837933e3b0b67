"""Streaming events: OpenAI's Responses streaming events, as a discriminated union.

Every event is a frozen attrs class whose ``type`` is a class variable typed
as the ``Literal`` of its own wire name, so that :data:`StreamEvent` (the
union of them all) narrows under mypy and pyright, either way::

    async for event in client.assistant.stream(session_id, "Write a caption"):
        if event.type == "response.output_text.delta":
            print(event.delta, end="")          # event is an OutputTextDelta here
        match event:
            case ResponseCompleted(parsed=response):
                print(response.usage)
            case ErrorEvent(code=code, message=message):
                print("failed:", code, message)

``type`` is not a constructor argument: an event cannot carry a wrong one.
A decoded event of a type this SDK does not know is an :class:`UnknownEvent`,
whose ``type`` is ``"unknown"`` and whose ``event_type`` is the server's name.

This module holds data only. :func:`samsar_async.converter.event_to_dict`
gives an event's JSON (OpenAI's shape) and
:func:`samsar_async.converter.event_from_dict` reads one back;
:func:`samsar_async.streaming.events_from_response` synthesizes the events of
a complete :class:`~samsar_async.models.Response`.

One addition to OpenAI's shapes: ``response.image_generation_call.completed``
carries the image (:attr:`ImageGenerationCompleted.image`), and its JSON has
the base64 as ``"result"``, so the image survives an SSE round trip. OpenAI's
own clients ignore the extra field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, cast

import attrs

from .models import GeneratedImage, Response

__all__ = [
    "ContentPartAdded",
    "ContentPartDone",
    "ErrorEvent",
    "ImageGenerationCompleted",
    "ImageGenerationInProgress",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputTextDelta",
    "OutputTextDone",
    "RefusalDelta",
    "RefusalDone",
    "ResponseCompleted",
    "ResponseCreated",
    "ResponseFailed",
    "ResponseInProgress",
    "ResponseIncomplete",
    "StreamEvent",
    "UnknownEvent",
]


# The bases below declare no ``type``: each concrete event declares its own, as
# a ``ClassVar[Literal[...]]``, which is what lets ``event.type == "..."`` narrow.


@attrs.frozen(kw_only=True)
class _Event:
    """The base of the known events: ``sequence_number``, their place in the stream."""

    sequence_number: int


@attrs.frozen(kw_only=True)
class _ResponseEvent(_Event):
    """An event carrying the response (its JSON object)."""

    response: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class _FinalResponseEvent(_ResponseEvent):
    """The last event of a response: the response's JSON, and the SDK's parse of it."""

    parsed: Response = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class _ItemEvent(_Event):
    """An event carrying a whole output item."""

    output_index: int
    item: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class _InItemEvent(_Event):
    """An event about an output item, named by id and index."""

    item_id: str
    output_index: int


@attrs.frozen(kw_only=True)
class _InPartEvent(_InItemEvent):
    """An event about a content part of an output message."""

    content_index: int


@attrs.frozen(kw_only=True)
class ResponseCreated(_ResponseEvent):
    """``response.created``: the response snapshot, ``status`` ``"in_progress"``, no output."""

    type: ClassVar[Literal["response.created"]] = "response.created"


@attrs.frozen(kw_only=True)
class ResponseInProgress(_ResponseEvent):
    """``response.in_progress``: the same snapshot as :class:`ResponseCreated`."""

    type: ClassVar[Literal["response.in_progress"]] = "response.in_progress"


@attrs.frozen(kw_only=True)
class ResponseCompleted(_FinalResponseEvent):
    """``response.completed``: the final response.

    ``response`` is its JSON object (what goes on the wire); ``parsed`` is the
    SDK's :class:`~samsar_async.models.Response`, always there. Synthesized
    events carry the very ``Response`` the call returned (credits and session
    id included); a decoded event carries one parsed from ``response`` (no
    credits: they are HTTP headers, not part of the event).
    """

    type: ClassVar[Literal["response.completed"]] = "response.completed"


@attrs.frozen(kw_only=True)
class ResponseIncomplete(_FinalResponseEvent):
    """``response.incomplete``: the final response, cut short (``incomplete_details`` says why).

    Emitted instead of :class:`ResponseCompleted` when the response's status is
    ``"incomplete"`` (for example ``max_output_tokens`` was reached), as OpenAI
    does. ``parsed`` is as in :class:`ResponseCompleted`.
    """

    type: ClassVar[Literal["response.incomplete"]] = "response.incomplete"


@attrs.frozen(kw_only=True)
class ResponseFailed(_FinalResponseEvent):
    """``response.failed``: the response, ``status`` ``"failed"``, with ``error``.

    The response's ``error`` is an object with ``code`` and ``message``.
    ``parsed`` is as in :class:`ResponseCompleted`.
    """

    type: ClassVar[Literal["response.failed"]] = "response.failed"

    @property
    def error(self) -> Mapping[str, Any] | None:
        """The response's ``error`` object (``code``, ``message``), if it has one."""
        error = self.response.get("error")
        return cast("Mapping[str, Any]", error) if isinstance(error, Mapping) else None


@attrs.frozen(kw_only=True)
class OutputItemAdded(_ItemEvent):
    """``response.output_item.added``: an output item begins (``item`` is in progress)."""

    type: ClassVar[Literal["response.output_item.added"]] = "response.output_item.added"


@attrs.frozen(kw_only=True)
class OutputItemDone(_ItemEvent):
    """``response.output_item.done``: the complete output item."""

    type: ClassVar[Literal["response.output_item.done"]] = "response.output_item.done"


@attrs.frozen(kw_only=True)
class ContentPartAdded(_InPartEvent):
    """``response.content_part.added``: a content part begins (empty text)."""

    type: ClassVar[Literal["response.content_part.added"]] = "response.content_part.added"
    part: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class ContentPartDone(_InPartEvent):
    """``response.content_part.done``: the complete content part."""

    type: ClassVar[Literal["response.content_part.done"]] = "response.content_part.done"
    part: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class OutputTextDelta(_InPartEvent):
    """``response.output_text.delta``: more text of a content part."""

    type: ClassVar[Literal["response.output_text.delta"]] = "response.output_text.delta"
    delta: str
    logprobs: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class OutputTextDone(_InPartEvent):
    """``response.output_text.done``: the whole text of a content part."""

    type: ClassVar[Literal["response.output_text.done"]] = "response.output_text.done"
    text: str
    logprobs: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class RefusalDelta(_InPartEvent):
    """``response.refusal.delta``: more refusal text."""

    type: ClassVar[Literal["response.refusal.delta"]] = "response.refusal.delta"
    delta: str


@attrs.frozen(kw_only=True)
class RefusalDone(_InPartEvent):
    """``response.refusal.done``: the whole refusal text."""

    type: ClassVar[Literal["response.refusal.done"]] = "response.refusal.done"
    refusal: str


@attrs.frozen(kw_only=True)
class ImageGenerationInProgress(_InItemEvent):
    """``response.image_generation_call.in_progress``: an image is being generated."""

    type: ClassVar[Literal["response.image_generation_call.in_progress"]] = (
        "response.image_generation_call.in_progress"
    )


def _image_key(image: GeneratedImage | None) -> tuple[str, str] | None:
    return None if image is None else (image.id, image.b64)


@attrs.frozen(kw_only=True)
class ImageGenerationCompleted(_InItemEvent):
    """``response.image_generation_call.completed``: the image is ready, and here.

    Unlike OpenAI's event, this one carries the image: ``image`` is the
    :class:`~samsar_async.models.GeneratedImage` (``None`` when decoding an
    event without one, such as OpenAI's), and the event's JSON has its base64
    as ``"result"``. Events compare images by id and base64.
    """

    type: ClassVar[Literal["response.image_generation_call.completed"]] = (
        "response.image_generation_call.completed"
    )
    image: GeneratedImage | None = attrs.field(default=None, eq=_image_key)


@attrs.frozen(kw_only=True)
class ErrorEvent(_Event):
    """``error``: the stream failed; nothing follows it.

    :meth:`Assistant.stream <samsar_async.assistant.Assistant.stream>` yields
    one when the call fails: ``code`` is the exception's class name (such as
    ``"InsufficientCreditsError"``), ``message`` its text (which starts with
    the HTTP status when there is one) and ``param`` the field the server
    named, if any. ``error`` is the exception itself; it is not sent over the
    wire.
    """

    type: ClassVar[Literal["error"]] = "error"
    # Declared in wire order: ``code`` comes first, as in OpenAI's events.
    code: str | None = None
    message: str
    param: str | None = None
    error: BaseException | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class UnknownEvent:
    """A decoded event of a type this SDK version does not know.

    ``type`` is ``"unknown"`` (so that it narrows like the others);
    ``event_type`` is the type the server sent and ``data`` the whole event,
    which is also its JSON when it is sent on.
    """

    type: ClassVar[Literal["unknown"]] = "unknown"
    event_type: str
    data: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def sequence_number(self) -> int | None:
        """The event's ``sequence_number``, when it has an integer one."""
        value = self.data.get("sequence_number")
        return value if type(value) is int else None


StreamEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | RefusalDelta
    | RefusalDone
    | ImageGenerationInProgress
    | ImageGenerationCompleted
    | ErrorEvent
    | UnknownEvent
)
"""Any streaming event: a union discriminated by ``type``."""
