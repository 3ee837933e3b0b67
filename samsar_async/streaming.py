"""Streaming events synthesized from a complete response.

Samsar answers a completion in one piece. To let code written against
OpenAI's streaming events (``response.created``, ``response.output_text.delta``,
``response.completed``, ...) run unchanged, :func:`events_from_response`
turns a complete :class:`~samsar_async.models.Response` into the sequence of
events OpenAI would have sent for it.

The event classes live in :mod:`samsar_async.events` and their JSON in
:mod:`samsar_async.converter` (:func:`event_to_dict`, :func:`event_from_dict`);
they are re-exported here, where they were first defined, so that
``from samsar_async.streaming import OutputTextDelta`` keeps working.

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

The JSON the events carry (``response``, ``item``, ``part``) is the JSON the
server sent, or, for a ``Response`` built in code, the converter's
:func:`~samsar_async.converter.model_to_dict`. Where it omits a field
OpenAI's events require, it is filled in: a response without ``object`` gets
``"response"``, an output item without an ``id`` gets
``"{response id}_item_{index}"``, a message without a ``status`` gets
``"completed"`` (``"incomplete"`` when the response is), an image call
without one gets ``"completed"`` when it has a result and ``"failed"``
otherwise. ``response.created`` and ``response.in_progress`` carry the
response with ``status`` ``"in_progress"``, an empty ``output`` and without
the fields of a finished response (``output_text``, ``usage``, ``error``,
``incomplete_details``, ``completed_at``). Everything else is passed on as
received.

``response.image_generation_call.completed`` carries the image
(:attr:`~samsar_async.events.ImageGenerationCompleted.image`), which Response
holds in :attr:`~samsar_async.models.Response.images`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from ._validators import require_int
from .converter import event_from_dict, event_to_dict, model_to_dict

# The event classes moved to samsar_async.events; re-exported for compatibility.
from .events import (
    ContentPartAdded,
    ContentPartDone,
    ErrorEvent,
    ImageGenerationCompleted,
    ImageGenerationInProgress,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    OutputTextDone,
    RefusalDelta,
    RefusalDone,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    StreamEvent,
    UnknownEvent,
)
from .models import ImageGenerationCall, OutputMessage, OutputText, Refusal, Response

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
    "event_to_dict",
    "events_from_response",
]


# --- synthesizing events from a complete response ------------------------------

# Top-level fields that describe a finished response, left out of the
# in-progress snapshot of response.created / response.in_progress.
_FINISHED_FIELDS = frozenset(
    {"output", "output_text", "usage", "status", "error", "incomplete_details", "completed_at"}
)


def check_chunk_chars(chunk_chars: int | None) -> int | None:
    """``chunk_chars`` if it is ``None`` or an integer >= 1, else :class:`InvalidArgumentError`."""
    if chunk_chars is not None:
        require_int("chunk_chars", chunk_chars)
    return chunk_chars


def _chunks(text: str, size: int | None) -> list[str]:
    if not text:
        return []
    if size is None:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


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
                    data["content"] = [model_to_dict(p) for p in item.content]
            elif isinstance(item, ImageGenerationCall) and "result" in data:
                # An image answer's raw result is a placeholder (its image was decoded
                # as the answer arrived): the typed item has the base64 again.
                data["result"] = item.result
        else:
            data = model_to_dict(item)
        items.append(data)
    return items


def _response_dict(response: Response) -> dict[str, Any]:
    """The response's JSON: a copy of the received object, else built from the model."""
    if not response.raw:
        return model_to_dict(response)
    out = dict(response.raw)
    out.setdefault("object", response.object)
    return out


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
