"""Stream events narrow, under ``mypy --strict`` and ``pyright --strict``.

Checked by tests/test_typing.py (both checkers must report nothing here), and
run there on real events. Both patterns from the README: ``event.type == ...``
and ``match event``.
"""

# pyright: strict

from __future__ import annotations

from samsar_async.events import (
    ErrorEvent,
    ImageGenerationCompleted,
    OutputItemDone,
    OutputTextDelta,
    RefusalDone,
    ResponseCompleted,
    ResponseIncomplete,
    StreamEvent,
    UnknownEvent,
)
from samsar_async.models import Response


def by_type(event: StreamEvent) -> str:
    """A line for ``event``, narrowing with ``event.type == ...``."""
    if event.type == "response.output_text.delta":
        return event.delta
    if event.type == "response.refusal.done":
        return f"refused: {event.refusal}"
    if event.type == "response.output_item.done":
        return f"item {event.item.get('id')}"
    if event.type == "response.completed":
        response: Response = event.parsed  # never None
        return f"done: {response.output_text}"
    if event.type == "response.incomplete":
        return f"cut short: {event.parsed.output_text}"
    if event.type == "response.image_generation_call.completed":
        return "no image" if event.image is None else f"image {event.image.id}"
    if event.type == "error":
        return f"failed: {event.code}: {event.message}"
    if event.type == "unknown":
        return f"unknown: {event.event_type}"
    return event.type


def by_match(event: StreamEvent) -> str:
    """The same line for ``event``, narrowing with ``match``."""
    match event:
        case OutputTextDelta(delta=delta):
            return delta
        case RefusalDone(refusal=refusal):
            return f"refused: {refusal}"
        case OutputItemDone(item=item):
            return f"item {item.get('id')}"
        case ResponseCompleted(parsed=response):
            return f"done: {response.output_text}"
        case ResponseIncomplete():
            return f"cut short: {event.parsed.output_text}"
        case ImageGenerationCompleted(image=None):
            return "no image"
        case ImageGenerationCompleted(image=image) if image is not None:
            return f"image {image.id}"
        case ErrorEvent(code=code, message=message):
            return f"failed: {code}: {message}"
        case UnknownEvent(event_type=name):
            return f"unknown: {name}"
        case _:
            return event.type


def sequence_numbers(events: list[StreamEvent]) -> list[int | None]:
    """Every event has a ``sequence_number`` (``None`` only for an unknown event without one)."""
    return [event.sequence_number for event in events]
