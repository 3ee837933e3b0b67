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

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NamedTuple, cast, get_args

import attrs

from .converter import structure_response
from .errors import APIResponseValidationError, InvalidArgumentError, StreamDecodeError
from .models import (
    GeneratedImage,
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

# attrs metadata of a field that exists in Python only: to_dict leaves it out and
# event_from_dict does not read it (it derives it from the wire fields, if at all).
_ON_WIRE = "samsar_async.on_wire"
_PYTHON_ONLY = {_ON_WIRE: False}


@attrs.frozen(kw_only=True)
class _Event:
    """The base of the events: ``type``, ``sequence_number`` and :meth:`to_dict`.

    The other fields of a subclass go on the wire under their own names, in
    declaration order (or ``_wire_order``): mappings as dicts, tuples as lists.
    Fields with ``metadata=_PYTHON_ONLY`` are left out. :func:`event_from_dict`
    reads and checks them in the same order, by annotation (see ``_CODECS``).
    """

    type: ClassVar[str]
    # All the wire fields in wire order, where that is not the declaration order.
    _wire_order: ClassVar[tuple[str, ...]] = ()
    sequence_number: int

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event."""
        out: dict[str, Any] = {"type": self.type}
        for field in _wire_fields(self.__class__):
            out[field.name] = field.encode(getattr(self, field.name))
        return out


@attrs.frozen(kw_only=True)
class _ResponseEvent(_Event):
    """An event carrying the response (its JSON object)."""

    response: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class _FinalResponseEvent(_ResponseEvent):
    """The last event of a response: the response, and the SDK's parse of it."""

    parsed: Response | None = attrs.field(default=None, eq=False, repr=False, metadata=_PYTHON_ONLY)


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

    type: ClassVar[str] = "response.created"


@attrs.frozen(kw_only=True)
class ResponseInProgress(_ResponseEvent):
    """``response.in_progress``: the same snapshot as :class:`ResponseCreated`."""

    type: ClassVar[str] = "response.in_progress"


@attrs.frozen(kw_only=True)
class ResponseCompleted(_FinalResponseEvent):
    """``response.completed``: the final response.

    ``response`` is its JSON object (what goes on the wire); ``parsed`` is the
    SDK's :class:`~samsar_async.models.Response`. Synthesized events carry the
    very ``Response`` the call returned (credits and session id included); a
    decoded event carries one parsed from ``response`` (no credits: they are
    HTTP headers, not part of the event).
    """

    type: ClassVar[str] = "response.completed"


@attrs.frozen(kw_only=True)
class ResponseIncomplete(_FinalResponseEvent):
    """``response.incomplete``: the final response, cut short (``incomplete_details`` says why).

    Emitted instead of :class:`ResponseCompleted` when the response's status is
    ``"incomplete"`` (for example ``max_output_tokens`` was reached), as OpenAI does.
    """

    type: ClassVar[str] = "response.incomplete"


@attrs.frozen(kw_only=True)
class ResponseFailed(_FinalResponseEvent):
    """``response.failed``: the response, ``status`` ``"failed"``, with ``error``.

    The response's ``error`` is an object with ``code`` and ``message``.
    """

    type: ClassVar[str] = "response.failed"

    @property
    def error(self) -> Mapping[str, Any] | None:
        """The response's ``error`` object (``code``, ``message``), if it has one."""
        error = self.response.get("error")
        return error if isinstance(error, Mapping) else None


@attrs.frozen(kw_only=True)
class OutputItemAdded(_ItemEvent):
    """``response.output_item.added``: an output item begins (``item`` is in progress)."""

    type: ClassVar[str] = "response.output_item.added"


@attrs.frozen(kw_only=True)
class OutputItemDone(_ItemEvent):
    """``response.output_item.done``: the complete output item."""

    type: ClassVar[str] = "response.output_item.done"


@attrs.frozen(kw_only=True)
class ContentPartAdded(_InPartEvent):
    """``response.content_part.added``: a content part begins (empty text)."""

    type: ClassVar[str] = "response.content_part.added"
    part: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class ContentPartDone(_InPartEvent):
    """``response.content_part.done``: the complete content part."""

    type: ClassVar[str] = "response.content_part.done"
    part: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class OutputTextDelta(_InPartEvent):
    """``response.output_text.delta``: more text of a content part."""

    type: ClassVar[str] = "response.output_text.delta"
    delta: str
    logprobs: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class OutputTextDone(_InPartEvent):
    """``response.output_text.done``: the whole text of a content part."""

    type: ClassVar[str] = "response.output_text.done"
    text: str
    logprobs: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class RefusalDelta(_InPartEvent):
    """``response.refusal.delta``: more refusal text."""

    type: ClassVar[str] = "response.refusal.delta"
    delta: str


@attrs.frozen(kw_only=True)
class RefusalDone(_InPartEvent):
    """``response.refusal.done``: the whole refusal text."""

    type: ClassVar[str] = "response.refusal.done"
    refusal: str


@attrs.frozen(kw_only=True)
class ImageGenerationInProgress(_InItemEvent):
    """``response.image_generation_call.in_progress``: an image is being generated."""

    type: ClassVar[str] = "response.image_generation_call.in_progress"


def _image_key(image: GeneratedImage | None) -> tuple[str, str] | None:
    return None if image is None else (image.id, image.b64)


@attrs.frozen(kw_only=True)
class ImageGenerationCompleted(_InItemEvent):
    """``response.image_generation_call.completed``: the image is ready, and here.

    Unlike OpenAI's event, this one carries the image: ``image`` is the
    :class:`~samsar_async.images.GeneratedImage` (``None`` when decoding an
    event without one, such as OpenAI's), and :meth:`to_dict` adds its base64
    as ``"result"``. Events compare images by id and base64.
    """

    type: ClassVar[str] = "response.image_generation_call.completed"
    image: GeneratedImage | None = attrs.field(default=None, eq=_image_key, metadata=_PYTHON_ONLY)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this event, plus ``"result"`` (the base64 image) when known."""
        out = super().to_dict()
        if self.image is not None:
            out["result"] = self.image.b64
        return out


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

    type: ClassVar[str] = "error"
    # On the wire ``code`` comes first, as in OpenAI's events.
    _wire_order: ClassVar[tuple[str, ...]] = ("sequence_number", "code", "message", "param")
    message: str
    code: str | None = None
    param: str | None = None
    error: BaseException | None = attrs.field(
        default=None, eq=False, repr=False, metadata=_PYTHON_ONLY
    )


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
    seq = itertools.count()
    full = _response_dict(response)
    snapshot = {k: v for k, v in full.items() if k not in _FINISHED_FIELDS}
    snapshot.update(status="in_progress", output=[])
    yield ResponseCreated(sequence_number=next(seq), response=snapshot)
    yield ResponseInProgress(sequence_number=next(seq), response=snapshot)

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
            yield OutputItemAdded(sequence_number=next(seq), output_index=index, item=added)
            parts: list[Any] = data["content"]
            for j, (part, part_data) in enumerate(zip(item.content, parts, strict=True)):
                at: dict[str, Any] = {"item_id": item_id, "output_index": index, "content_index": j}
                if isinstance(part, OutputText):
                    empty = {**part_data, "text": "", "annotations": []}
                    yield ContentPartAdded(sequence_number=next(seq), part=empty, **at)
                    for chunk in _chunks(part.text, chunk_chars):
                        yield OutputTextDelta(sequence_number=next(seq), delta=chunk, **at)
                    yield OutputTextDone(sequence_number=next(seq), text=part.text, **at)
                elif isinstance(part, Refusal):
                    empty = {**part_data, "refusal": ""}
                    yield ContentPartAdded(sequence_number=next(seq), part=empty, **at)
                    for chunk in _chunks(part.refusal, chunk_chars):
                        yield RefusalDelta(sequence_number=next(seq), delta=chunk, **at)
                    yield RefusalDone(sequence_number=next(seq), refusal=part.refusal, **at)
                else:
                    yield ContentPartAdded(sequence_number=next(seq), part=part_data, **at)
                yield ContentPartDone(sequence_number=next(seq), part=part_data, **at)
        elif isinstance(item, ImageGenerationCall):
            item_id = item.id or f"{response.id}_item_{index}"
            data["id"] = item_id
            ok = item.failure_reason is None and item.result is not None
            if not isinstance(data.get("status"), str):
                data["status"] = "completed" if ok else "failed"
            added = {"id": item_id, "type": "image_generation_call", "status": "in_progress"}
            yield OutputItemAdded(sequence_number=next(seq), output_index=index, item=added)
            at = {"item_id": item_id, "output_index": index}
            yield ImageGenerationInProgress(sequence_number=next(seq), **at)
            if ok:
                # Response.images holds exactly the calls with an image, in output order.
                yield ImageGenerationCompleted(sequence_number=next(seq), image=next(images), **at)
        else:
            yield OutputItemAdded(sequence_number=next(seq), output_index=index, item=data)
        yield OutputItemDone(sequence_number=next(seq), output_index=index, item=data)
        done_items.append(data)

    final = {**full, "output": done_items}
    if response.status == "incomplete":
        yield ResponseIncomplete(sequence_number=next(seq), response=final, parsed=response)
    elif response.status == "failed":
        yield ResponseFailed(sequence_number=next(seq), response=final, parsed=response)
    else:
        yield ResponseCompleted(sequence_number=next(seq), response=final, parsed=response)


# --- the wire format: encoding and decoding ----------------------------------------

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

    def array(self, field: str) -> tuple[Any, ...]:
        """A JSON array as a tuple; a missing or null one is empty."""
        value = self.data.get(field)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(field, "an array")
        return tuple(value)


def _as_is(value: Any) -> Any:
    return value


# How a field goes on the wire and is read back, by its annotation (a string,
# with ``from __future__ import annotations``).
_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[_Fields, str], Any]]] = {
    "int": (_as_is, _Fields.integer),
    "str": (_as_is, _Fields.string),
    "str | None": (_as_is, _Fields.opt_string),
    "Mapping[str, Any]": (dict, _Fields.mapping),
    "tuple[Any, ...]": (list, _Fields.array),
}


class _WireField(NamedTuple):
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[_Fields, str], Any]


_WIRE_FIELDS: dict[type[_Event], tuple[_WireField, ...]] = {}


def _wire_fields(cls: type[_Event]) -> tuple[_WireField, ...]:
    """The fields of ``cls`` that go on the wire (all but ``type``), in wire order."""
    wire = _WIRE_FIELDS.get(cls)
    if wire is None:
        fields = attrs.fields_dict(cls)
        names = cls._wire_order or [n for n, f in fields.items() if f.metadata.get(_ON_WIRE, True)]
        wire = tuple(_WireField(name, *_CODECS[str(fields[name].type)]) for name in names)
        _WIRE_FIELDS[cls] = wire
    return wire


def _derive_parsed(f: _Fields, values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parsed = structure_response(values["response"])
    except APIResponseValidationError as exc:
        raise StreamDecodeError(f"{f.kind} event: {exc.message}") from None
    return {"parsed": parsed}


def _derive_image(f: _Fields, values: Mapping[str, Any]) -> dict[str, Any]:
    result = f.opt_string("result")
    return {"image": GeneratedImage(id=values["item_id"], b64=result) if result else None}


# Python-only fields a decoded event derives from its wire fields (and, for the
# image, from our extra "result").
_DERIVED: dict[type[_Event], Callable[[_Fields, Mapping[str, Any]], dict[str, Any]]] = {
    ResponseCompleted: _derive_parsed,
    ResponseIncomplete: _derive_parsed,
    ResponseFailed: _derive_parsed,
    ImageGenerationCompleted: _derive_image,
}

# type -> event class, for every member of StreamEvent but UnknownEvent.
_EVENT_CLASSES: dict[str, type[_Event]] = {
    cls.type: cls for cls in get_args(StreamEvent) if issubclass(cls, _Event)
}
for _cls in _EVENT_CLASSES.values():
    _wire_fields(_cls)  # fail at import, not at the first event, on a field without a codec


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
    cls = _EVENT_CLASSES.get(kind)
    if cls is None:
        return UnknownEvent(kind, dict(data))
    f = _Fields(kind, data)
    values = {field.name: field.decode(f, field.name) for field in _wire_fields(cls)}
    derive = _DERIVED.get(cls)
    if derive is not None:
        values.update(derive(f, values))
    return cast("StreamEvent", cls(**values))
