"""Streaming events in the shapes of OpenAI's Responses streaming API.

Samsar answers a completion in one piece. To let code written against
OpenAI's streaming events (``response.created``, ``response.output_text.delta``,
``response.completed``, ...) run unchanged, :func:`events_from_response`
turns a complete :class:`~samsar_async.models.Response` into the sequence of
events OpenAI would have sent for it, and :func:`event_from_dict` decodes such
events back (from an SSE stream, say; see :mod:`samsar_async.sse`).

Every event is a frozen attrs class with a ``type`` (a class variable),
``sequence_number`` and :meth:`to_dict`, which gives OpenAI's JSON shape of the
event. :data:`StreamEvent` is their union.

The order :func:`events_from_response` follows::

    response.created
    response.in_progress
    for each output item:
        response.output_item.added
        message: for each content part:
            response.content_part.added
            output_text: response.output_text.delta (one per part, or per chunk_chars)
                         response.output_text.done
            refusal:     response.refusal.delta, response.refusal.done
            response.content_part.done
        image_generation_call:
            response.image_generation_call.in_progress
            response.image_generation_call.completed  (only when it has an image)
        response.output_item.done
    response.completed | response.incomplete | response.failed

Where Samsar's payload omits a field OpenAI's events require, it is filled in:
a response without ``object`` gets ``"response"``, an output item without an
``id`` gets ``"{response id}_item_{index}"``, a message without a ``status``
gets ``"completed"`` (``"incomplete"`` when the response is), an image call
without one gets ``"completed"`` when it has a result and ``"failed"``
otherwise. ``response.created`` and ``response.in_progress`` carry the
response with ``status`` ``"in_progress"``, an empty ``output`` and without
the fields of a finished response (``output_text``, ``usage``, ``error``,
``incomplete_details``, ``completed_at``). Everything else is passed on as
received.

One addition to OpenAI's shapes: ``response.image_generation_call.completed``
carries the image. :attr:`ImageGenerationCompleted.image` is the
:class:`~samsar_async.images.GeneratedImage`, and :meth:`~ImageGenerationCompleted.to_dict`
adds its base64 as ``"result"``, so the image survives an SSE round trip.
OpenAI's own clients ignore the extra field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import attrs

from .converter import structure_response
from .errors import APIResponseValidationError, InvalidArgumentError, StreamDecodeError
from .images import GeneratedImage
from .models import (
    ImageGenerationCall,
    OutputMessage,
    OutputText,
    Refusal,
    Response,
    UnknownContent,
)

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
    "event_from_dict",
    "events_from_response",
]


# --- events -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ResponseCreated:
    """``response.created``: the response snapshot, ``status`` ``"in_progress"``, no output."""

    type: ClassVar[str] = "response.created"
    sequence_number: int
    response: Mapping[str, Any] = attrs.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "response": dict(self.response),
        }


@attrs.frozen(kw_only=True)
class ResponseInProgress:
    """``response.in_progress``: the same snapshot as :class:`ResponseCreated`."""

    type: ClassVar[str] = "response.in_progress"
    sequence_number: int
    response: Mapping[str, Any] = attrs.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "response": dict(self.response),
        }


@attrs.frozen(kw_only=True)
class ResponseCompleted:
    """``response.completed``: the final response.

    ``response`` is its JSON object (what goes on the wire); ``parsed`` is the
    SDK's :class:`~samsar_async.models.Response`. Synthesized events carry the
    very ``Response`` the call returned (credits and session id included); a
    decoded event carries one parsed from ``response`` (no credits: they are
    HTTP headers, not part of the event).
    """

    type: ClassVar[str] = "response.completed"
    sequence_number: int
    response: Mapping[str, Any] = attrs.field(repr=False)
    parsed: Response | None = attrs.field(default=None, eq=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "response": dict(self.response),
        }


@attrs.frozen(kw_only=True)
class ResponseIncomplete:
    """``response.incomplete``: the final response, cut short (``incomplete_details`` says why).

    Emitted instead of :class:`ResponseCompleted` when the response's status is
    ``"incomplete"`` (for example ``max_output_tokens`` was reached), as OpenAI does.
    """

    type: ClassVar[str] = "response.incomplete"
    sequence_number: int
    response: Mapping[str, Any] = attrs.field(repr=False)
    parsed: Response | None = attrs.field(default=None, eq=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "response": dict(self.response),
        }


@attrs.frozen(kw_only=True)
class ResponseFailed:
    """``response.failed``: the response, ``status`` ``"failed"``, with ``error``.

    The response's ``error`` is an object with ``code`` and ``message``.
    """

    type: ClassVar[str] = "response.failed"
    sequence_number: int
    response: Mapping[str, Any] = attrs.field(repr=False)
    parsed: Response | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def error(self) -> Mapping[str, Any] | None:
        """The response's ``error`` object (``code``, ``message``), if it has one."""
        error = self.response.get("error")
        return error if isinstance(error, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "response": dict(self.response),
        }


@attrs.frozen(kw_only=True)
class OutputItemAdded:
    """``response.output_item.added``: an output item begins (``item`` is in progress)."""

    type: ClassVar[str] = "response.output_item.added"
    sequence_number: int
    output_index: int
    item: Mapping[str, Any] = attrs.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "output_index": self.output_index,
            "item": dict(self.item),
        }


@attrs.frozen(kw_only=True)
class OutputItemDone:
    """``response.output_item.done``: the complete output item."""

    type: ClassVar[str] = "response.output_item.done"
    sequence_number: int
    output_index: int
    item: Mapping[str, Any] = attrs.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "output_index": self.output_index,
            "item": dict(self.item),
        }


@attrs.frozen(kw_only=True)
class ContentPartAdded:
    """``response.content_part.added``: a content part begins (empty text)."""

    type: ClassVar[str] = "response.content_part.added"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
            "part": dict(self.part),
        }


@attrs.frozen(kw_only=True)
class ContentPartDone:
    """``response.content_part.done``: the complete content part."""

    type: ClassVar[str] = "response.content_part.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
            "part": dict(self.part),
        }


@attrs.frozen(kw_only=True)
class OutputTextDelta:
    """``response.output_text.delta``: more text of a content part."""

    type: ClassVar[str] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
            "delta": self.delta,
            "logprobs": list(self.logprobs),
        }


@attrs.frozen(kw_only=True)
class OutputTextDone:
    """``response.output_text.done``: the whole text of a content part."""

    type: ClassVar[str] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
            "text": self.text,
            "logprobs": list(self.logprobs),
        }


@attrs.frozen(kw_only=True)
class RefusalDelta:
    """``response.refusal.delta``: more refusal text."""

    type: ClassVar[str] = "response.refusal.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
            "delta": self.delta,
        }


@attrs.frozen(kw_only=True)
class RefusalDone:
    """``response.refusal.done``: the whole refusal text."""

    type: ClassVar[str] = "response.refusal.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    refusal: str

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
            "refusal": self.refusal,
        }


@attrs.frozen(kw_only=True)
class ImageGenerationInProgress:
    """``response.image_generation_call.in_progress``: an image is being generated."""

    type: ClassVar[str] = "response.image_generation_call.in_progress"
    sequence_number: int
    item_id: str
    output_index: int

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
        }


def _image_key(image: GeneratedImage | None) -> tuple[str, str] | None:
    return None if image is None else (image.id, image.b64)


@attrs.frozen(kw_only=True)
class ImageGenerationCompleted:
    """``response.image_generation_call.completed``: the image is ready, and here.

    Unlike OpenAI's event, this one carries the image: ``image`` is the
    :class:`~samsar_async.images.GeneratedImage` (``None`` when decoding an
    event without one, such as OpenAI's), and :meth:`to_dict` adds its base64
    as ``"result"``. Events compare images by id and base64.
    """

    type: ClassVar[str] = "response.image_generation_call.completed"
    sequence_number: int
    item_id: str
    output_index: int
    image: GeneratedImage | None = attrs.field(default=None, eq=_image_key)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event, plus ``"result"`` (the base64 image) when known."""
        out: dict[str, Any] = {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "item_id": self.item_id,
            "output_index": self.output_index,
        }
        if self.image is not None:
            out["result"] = self.image.b64
        return out


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """``error``: the stream failed; nothing follows it.

    :meth:`Assistant.stream <samsar_async.assistant.Assistant.stream>` yields
    one when the call fails: ``code`` is the exception's class name (such as
    ``"InsufficientCreditsError"``), ``message`` its text (which starts with
    the HTTP status when there is one) and ``param`` the field the server
    named, if any. ``error`` is the exception itself; it is not sent over the
    wire.
    """

    type: ClassVar[str] = "error"
    sequence_number: int
    message: str
    code: str | None = None
    param: str | None = None
    error: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }


@attrs.frozen
class UnknownEvent:
    """A decoded event of a type this SDK version does not know; ``data`` is all of it."""

    type: str
    data: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def sequence_number(self) -> int | None:
        """The event's ``sequence_number``, when it has an integer one."""
        value = self.data.get("sequence_number")
        return value if type(value) is int else None

    def to_dict(self) -> dict[str, Any]:
        """The event as it was decoded."""
        return dict(self.data)


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
"""Any streaming event."""


# --- synthesizing events from a complete response ------------------------------

# Top-level fields that describe a finished response, left out of the
# in-progress snapshot of response.created / response.in_progress.
_FINISHED_FIELDS = frozenset(
    {"output", "output_text", "usage", "status", "error", "incomplete_details", "completed_at"}
)


def check_chunk_chars(chunk_chars: int | None) -> int | None:
    """``chunk_chars`` if it is ``None`` or an integer >= 1, else :class:`InvalidArgumentError`."""
    if chunk_chars is not None and (
        isinstance(chunk_chars, bool) or not isinstance(chunk_chars, int) or chunk_chars < 1
    ):
        raise InvalidArgumentError("chunk_chars", "must be an integer >= 1 or None")
    return chunk_chars


def _chunks(text: str, size: int | None) -> list[str]:
    if not text:
        return []
    if size is None:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


def _part_dict(part: Any) -> dict[str, Any]:
    if isinstance(part, OutputText):
        return {"type": "output_text", "text": part.text, "annotations": list(part.annotations)}
    if isinstance(part, Refusal):
        return {"type": "refusal", "refusal": part.refusal}
    assert isinstance(part, UnknownContent)
    return dict(part.data)


def _derived_item(item: Any) -> dict[str, Any]:
    """An output item's JSON built from the model (when the raw payload is not at hand)."""
    if isinstance(item, OutputMessage):
        out: dict[str, Any] = {"id": item.id, "type": "message", "role": item.role}
        if item.status is not None:
            out["status"] = item.status
        out["content"] = [_part_dict(p) for p in item.content]
        return out
    if isinstance(item, ImageGenerationCall):
        out = {"id": item.id, "type": "image_generation_call"}
        if item.status is not None:
            out["status"] = item.status
        if item.revised_prompt is not None:
            out["revised_prompt"] = item.revised_prompt
        out["result"] = item.result
        return out
    return dict(item.data)


def _item_dicts(response: Response) -> list[dict[str, Any]]:
    """The JSON of each output item: the received object when available, else derived."""
    raw_output = response.raw.get("output") if isinstance(response.raw, Mapping) else None
    aligned = isinstance(raw_output, list) and len(raw_output) == len(response.output)
    items: list[dict[str, Any]] = []
    for index, item in enumerate(response.output):
        raw = raw_output[index] if aligned else None  # type: ignore[index]
        if isinstance(raw, Mapping) and raw.get("type") == item.type and raw.get("id") == item.id:
            data = dict(raw)
            if isinstance(item, OutputMessage):
                content = data.get("content")
                if not (isinstance(content, list) and len(content) == len(item.content)):
                    data["content"] = [_part_dict(p) for p in item.content]
        else:
            data = _derived_item(item)
        items.append(data)
    return items


def _response_dict(response: Response) -> dict[str, Any]:
    if response.raw:
        out = dict(response.raw)
        out.setdefault("object", response.object)
        return out
    usage = response.usage
    return {
        "id": response.id,
        "object": response.object,
        "created_at": response.created_at,
        "status": response.status,
        "model": response.model,
        "output": [],
        "output_text": response.output_text,
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
    }


def events_from_response(
    response: Response, *, chunk_chars: int | None = None
) -> Iterator[StreamEvent]:
    """The events OpenAI's streaming API would send for ``response``, in order.

    Each ``output_text`` part becomes one ``response.output_text.delta``
    (none for an empty part); with ``chunk_chars=N`` it becomes deltas of
    ``N`` characters (code points) each, the last one shorter, for a typing
    effect. Refusals are split the same way. Output items and content parts
    of types this SDK does not know are passed on as they were received
    (``added`` then ``done``, nothing in between). Sequence numbers start at 0
    and increase by 1. The last event is :class:`ResponseCompleted`, or
    :class:`ResponseIncomplete` / :class:`ResponseFailed` when the response's
    status is ``"incomplete"`` / ``"failed"``. See the module docstring for
    the fields filled in where Samsar's payload omits them.

    Raises :class:`~samsar_async.errors.InvalidArgumentError` (before any
    event) when ``chunk_chars`` is not ``None`` or an integer >= 1.
    """
    check_chunk_chars(chunk_chars)
    return _events(response, chunk_chars)


def _events(response: Response, chunk_chars: int | None) -> Iterator[StreamEvent]:
    seq = 0

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq - 1

    full = _response_dict(response)
    snapshot = {k: v for k, v in full.items() if k not in _FINISHED_FIELDS}
    snapshot.update(status="in_progress", output=[])
    yield ResponseCreated(sequence_number=next_seq(), response=snapshot)
    yield ResponseInProgress(sequence_number=next_seq(), response=snapshot)

    images = iter(response.images)
    done_items: list[dict[str, Any]] = []
    for index, (item, data) in enumerate(zip(response.output, _item_dicts(response), strict=True)):
        if isinstance(item, OutputMessage):
            item_id = item.id or f"{response.id}_item_{index}"
            data["id"] = item_id
            if not isinstance(data.get("status"), str):
                data["status"] = "incomplete" if response.status == "incomplete" else "completed"
            added = {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": item.role,
            }
            yield OutputItemAdded(sequence_number=next_seq(), output_index=index, item=added)
            parts: list[Any] = data["content"]
            for j, (part, part_data) in enumerate(zip(item.content, parts, strict=True)):
                if isinstance(part, OutputText):
                    empty = {**part_data, "text": "", "annotations": []}
                    yield ContentPartAdded(
                        sequence_number=next_seq(),
                        item_id=item_id,
                        output_index=index,
                        content_index=j,
                        part=empty,
                    )
                    for chunk in _chunks(part.text, chunk_chars):
                        yield OutputTextDelta(
                            sequence_number=next_seq(),
                            item_id=item_id,
                            output_index=index,
                            content_index=j,
                            delta=chunk,
                        )
                    yield OutputTextDone(
                        sequence_number=next_seq(),
                        item_id=item_id,
                        output_index=index,
                        content_index=j,
                        text=part.text,
                    )
                elif isinstance(part, Refusal):
                    empty = {**part_data, "refusal": ""}
                    yield ContentPartAdded(
                        sequence_number=next_seq(),
                        item_id=item_id,
                        output_index=index,
                        content_index=j,
                        part=empty,
                    )
                    for chunk in _chunks(part.refusal, chunk_chars):
                        yield RefusalDelta(
                            sequence_number=next_seq(),
                            item_id=item_id,
                            output_index=index,
                            content_index=j,
                            delta=chunk,
                        )
                    yield RefusalDone(
                        sequence_number=next_seq(),
                        item_id=item_id,
                        output_index=index,
                        content_index=j,
                        refusal=part.refusal,
                    )
                else:
                    yield ContentPartAdded(
                        sequence_number=next_seq(),
                        item_id=item_id,
                        output_index=index,
                        content_index=j,
                        part=part_data,
                    )
                yield ContentPartDone(
                    sequence_number=next_seq(),
                    item_id=item_id,
                    output_index=index,
                    content_index=j,
                    part=part_data,
                )
        elif isinstance(item, ImageGenerationCall):
            item_id = item.id or f"{response.id}_item_{index}"
            data["id"] = item_id
            ok = item.failure_reason is None and item.result is not None
            if not isinstance(data.get("status"), str):
                data["status"] = "completed" if ok else "failed"
            added = {"id": item_id, "type": "image_generation_call", "status": "in_progress"}
            yield OutputItemAdded(sequence_number=next_seq(), output_index=index, item=added)
            yield ImageGenerationInProgress(
                sequence_number=next_seq(), item_id=item_id, output_index=index
            )
            if ok:
                # Response.images holds exactly the calls with an image, in output order.
                yield ImageGenerationCompleted(
                    sequence_number=next_seq(),
                    item_id=item_id,
                    output_index=index,
                    image=next(images),
                )
        else:
            yield OutputItemAdded(sequence_number=next_seq(), output_index=index, item=data)
        yield OutputItemDone(sequence_number=next_seq(), output_index=index, item=data)
        done_items.append(data)

    final = {**full, "output": done_items}
    if response.status == "incomplete":
        yield ResponseIncomplete(sequence_number=next_seq(), response=final, parsed=response)
    elif response.status == "failed":
        yield ResponseFailed(sequence_number=next_seq(), response=final, parsed=response)
    else:
        yield ResponseCompleted(sequence_number=next_seq(), response=final, parsed=response)


# --- decoding --------------------------------------------------------------------

_MISSING = object()


class _Fields:
    """Typed field access on an event dict; errors name the event type and field."""

    __slots__ = ("data", "kind")

    def __init__(self, kind: str, data: Mapping[str, Any]) -> None:
        self.kind = kind
        self.data = data

    def error(self, field: str, expected: str) -> StreamDecodeError:
        value = self.data.get(field, _MISSING)
        got = "nothing" if value is _MISSING else type(value).__name__
        return StreamDecodeError(f"{self.kind} event: {field!r} must be {expected}, got {got}")

    def integer(self, field: str) -> int:
        value = self.data.get(field)
        if type(value) is not int:
            raise self.error(field, "an integer")
        return value

    def string(self, field: str) -> str:
        value = self.data.get(field)
        if type(value) is not str:
            raise self.error(field, "a string")
        return value

    def opt_string(self, field: str) -> str | None:
        value = self.data.get(field)
        if value is not None and type(value) is not str:
            raise self.error(field, "a string or null")
        return value

    def mapping(self, field: str) -> dict[str, Any]:
        value = self.data.get(field)
        if not isinstance(value, dict):
            raise self.error(field, "an object")
        return value

    def logprobs(self) -> tuple[Any, ...]:
        value = self.data.get("logprobs")
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error("logprobs", "an array")
        return tuple(value)


def _parse(kind: str, response: dict[str, Any]) -> Response:
    try:
        return structure_response(response)
    except APIResponseValidationError as exc:
        raise StreamDecodeError(f"{kind} event: {exc.message}") from None


def _decode_snapshot(kind: str, f: _Fields) -> StreamEvent:
    seq, response = f.integer("sequence_number"), f.mapping("response")
    if kind == ResponseCreated.type:
        return ResponseCreated(sequence_number=seq, response=response)
    if kind == ResponseInProgress.type:
        return ResponseInProgress(sequence_number=seq, response=response)
    parsed = _parse(kind, response)
    if kind == ResponseCompleted.type:
        return ResponseCompleted(sequence_number=seq, response=response, parsed=parsed)
    if kind == ResponseIncomplete.type:
        return ResponseIncomplete(sequence_number=seq, response=response, parsed=parsed)
    return ResponseFailed(sequence_number=seq, response=response, parsed=parsed)


def _decode_item(kind: str, f: _Fields) -> StreamEvent:
    cls = OutputItemAdded if kind == OutputItemAdded.type else OutputItemDone
    return cls(
        sequence_number=f.integer("sequence_number"),
        output_index=f.integer("output_index"),
        item=f.mapping("item"),
    )


def _decode_part(kind: str, f: _Fields) -> StreamEvent:
    cls = ContentPartAdded if kind == ContentPartAdded.type else ContentPartDone
    return cls(
        sequence_number=f.integer("sequence_number"),
        item_id=f.string("item_id"),
        output_index=f.integer("output_index"),
        content_index=f.integer("content_index"),
        part=f.mapping("part"),
    )


def _decode_text(kind: str, f: _Fields) -> StreamEvent:
    seq, item_id = f.integer("sequence_number"), f.string("item_id")
    output_index, content_index = f.integer("output_index"), f.integer("content_index")
    if kind == OutputTextDelta.type:
        return OutputTextDelta(
            sequence_number=seq,
            item_id=item_id,
            output_index=output_index,
            content_index=content_index,
            delta=f.string("delta"),
            logprobs=f.logprobs(),
        )
    if kind == OutputTextDone.type:
        return OutputTextDone(
            sequence_number=seq,
            item_id=item_id,
            output_index=output_index,
            content_index=content_index,
            text=f.string("text"),
            logprobs=f.logprobs(),
        )
    if kind == RefusalDelta.type:
        return RefusalDelta(
            sequence_number=seq,
            item_id=item_id,
            output_index=output_index,
            content_index=content_index,
            delta=f.string("delta"),
        )
    return RefusalDone(
        sequence_number=seq,
        item_id=item_id,
        output_index=output_index,
        content_index=content_index,
        refusal=f.string("refusal"),
    )


def _decode_image(kind: str, f: _Fields) -> StreamEvent:
    seq, item_id, output_index = (
        f.integer("sequence_number"),
        f.string("item_id"),
        f.integer("output_index"),
    )
    if kind == ImageGenerationInProgress.type:
        return ImageGenerationInProgress(
            sequence_number=seq, item_id=item_id, output_index=output_index
        )
    result = f.opt_string("result")
    image = GeneratedImage(id=item_id, b64=result) if result else None
    return ImageGenerationCompleted(
        sequence_number=seq, item_id=item_id, output_index=output_index, image=image
    )


def _decode_error(kind: str, f: _Fields) -> StreamEvent:
    return ErrorEvent(
        sequence_number=f.integer("sequence_number"),
        code=f.opt_string("code"),
        message=f.string("message"),
        param=f.opt_string("param"),
    )


_DECODERS = {
    ResponseCreated.type: _decode_snapshot,
    ResponseInProgress.type: _decode_snapshot,
    ResponseCompleted.type: _decode_snapshot,
    ResponseIncomplete.type: _decode_snapshot,
    ResponseFailed.type: _decode_snapshot,
    OutputItemAdded.type: _decode_item,
    OutputItemDone.type: _decode_item,
    ContentPartAdded.type: _decode_part,
    ContentPartDone.type: _decode_part,
    OutputTextDelta.type: _decode_text,
    OutputTextDone.type: _decode_text,
    RefusalDelta.type: _decode_text,
    RefusalDone.type: _decode_text,
    ImageGenerationInProgress.type: _decode_image,
    ImageGenerationCompleted.type: _decode_image,
    ErrorEvent.type: _decode_error,
}


def event_from_dict(data: Mapping[str, Any]) -> StreamEvent:
    """The event a JSON object (OpenAI's shape, as :meth:`to_dict` gives) describes.

    A ``type`` this SDK does not know gives an :class:`UnknownEvent` holding
    ``data``. Unknown fields are ignored. Raises
    :class:`~samsar_async.errors.StreamDecodeError` when ``data`` is not an
    object, has no string ``type``, or a field of a known type is missing or
    of the wrong type. ``response.completed`` / ``response.incomplete`` /
    ``response.failed`` events also get their ``parsed``
    :class:`~samsar_async.models.Response`.
    """
    if not isinstance(data, Mapping):
        raise StreamDecodeError(f"an event must be a JSON object, not {type(data).__name__}")
    kind = data.get("type")
    if type(kind) is not str:
        raise StreamDecodeError("an event must have a string 'type'")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return UnknownEvent(kind, dict(data))
    return decoder(kind, _Fields(kind, data))
