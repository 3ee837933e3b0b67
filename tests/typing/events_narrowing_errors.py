"""What a checker must reject: exactly the lines with an "error" comment (tests/test_typing.py)."""

# pyright: strict
from __future__ import annotations

from samsar_async.events import ErrorEvent, StreamEvent


def not_narrowed(event: StreamEvent) -> str:
    return event.delta  # error: not every event has a delta


def narrowed_to_a_delta(event: StreamEvent) -> str:
    if event.type == "response.output_text.delta":
        return event.text  # error: a delta has no text
    return ""


def optional_parsed(event: StreamEvent) -> str:
    if event.type == "response.completed":
        return event.parsed.output_text  # fine: parsed is never None
    return event.parsed.output_text  # error: most events have no parsed


def wrong_type() -> ErrorEvent:
    return ErrorEvent(sequence_number=0, message="m", type="x")  # error: not an argument
