"""Tests of samsar_async.streaming (events) and Assistant.stream, against the mock server."""

from __future__ import annotations

import base64
import json
import typing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from samsar_async import AsyncSamsar, Response
from samsar_async.converter import structure_response
from samsar_async.errors import (
    APIConnectionError,
    InsufficientCreditsError,
    InvalidArgumentError,
    NotFoundError,
    StreamDecodeError,
)
from samsar_async.models import OutputMessage, OutputText, Refusal
from samsar_async.streaming import (
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
    event_from_dict,
    event_to_dict,
    events_from_response,
)
from samsar_async.testing import PNG_SIGNATURE, Fault, MockSamsarServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

try:
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter
except ImportError:  # pragma: no cover - openai is a test dependency
    OPENAI_EVENTS = None
    OPENAI_EVENT_CLASSES: dict[str, Any] = {}
else:
    OPENAI_EVENTS = TypeAdapter(ResponseStreamEvent)
    # type literal -> OpenAI's pydantic class, for readable validation errors
    OPENAI_EVENT_CLASSES = {
        typing.get_args(cls.model_fields["type"].annotation)[0]: cls
        for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
    }

TEXT_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
IMAGE_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.image_generation_call.in_progress",
    "response.image_generation_call.completed",
    "response.output_item.done",
    "response.completed",
]
IMAGE_TOOL = {"type": "image_generation"}


@pytest.fixture
async def server() -> AsyncIterator[MockSamsarServer]:
    async with MockSamsarServer() as srv:
        yield srv


@pytest.fixture
async def client(server: MockSamsarServer) -> AsyncIterator[AsyncSamsar]:
    async with AsyncSamsar(server.api_key, base_url=server.url) as c:
        yield c


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


def types(events: Iterable[StreamEvent]) -> list[str]:
    return [event.type for event in events]


def check_sequence_numbers(events: list[StreamEvent]) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))


def openai_dict(event: StreamEvent) -> dict[str, Any]:
    """The event's dict, validated against OpenAI's pydantic event union when available."""
    data = event_to_dict(event)
    if OPENAI_EVENTS is not None:
        model = OPENAI_EVENT_CLASSES[event.type].model_validate(data)
        assert model.type == event.type
        assert model.sequence_number == event.sequence_number
        # The union (what an OpenAI client decodes with) agrees.
        assert type(OPENAI_EVENTS.validate_python(data)) is type(model)
    return data


def roundtrip(event: StreamEvent) -> StreamEvent:
    return event_from_dict(json.loads(json.dumps(event_to_dict(event))))


def response_from(payload: dict[str, Any]) -> Response:
    return structure_response(payload)


# --- a text answer, through Assistant.stream ---------------------------------


@pytest.mark.anyio
async def test_text_response_events(server: MockSamsarServer, client: AsyncSamsar) -> None:
    session_id = server.create_session()
    events = await collect(client.assistant.stream(session_id, "Hello there"))

    assert types(events) == TEXT_SEQUENCE
    check_sequence_numbers(events)
    for event in events:
        openai_dict(event)

    created, in_progress, added, part_added, delta, text_done, part_done, item_done, done = events
    assert isinstance(created, ResponseCreated)
    assert isinstance(in_progress, ResponseInProgress)
    assert isinstance(done, ResponseCompleted)
    response = done.parsed
    assert isinstance(response, Response)
    assert response.output_text == "Reply 1 to: Hello there"
    assert response.credits.charged is not None
    assert response.credits.charged > 0
    assert response.session_id == session_id
    assert server.turns(session_id)[0].response_id == response.id

    snapshot = created.response
    assert snapshot["id"] == response.id
    assert snapshot["status"] == "in_progress"
    assert snapshot["output"] == []
    assert "usage" not in snapshot
    assert "output_text" not in snapshot
    assert in_progress.response == snapshot

    message = response.output[0]
    assert isinstance(message, OutputMessage)
    assert isinstance(added, OutputItemAdded)
    assert added.output_index == 0
    assert added.item == {
        "id": message.id,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    assert isinstance(part_added, ContentPartAdded)
    assert part_added.part == {"type": "output_text", "text": "", "annotations": []}
    assert isinstance(delta, OutputTextDelta)
    assert delta.delta == "Reply 1 to: Hello there"
    assert event_to_dict(delta)["logprobs"] == []
    assert isinstance(text_done, OutputTextDone)
    assert text_done.text == "Reply 1 to: Hello there"
    assert isinstance(part_done, ContentPartDone)
    assert part_done.part["text"] == "Reply 1 to: Hello there"
    for event in (part_added, delta, text_done, part_done):
        assert (event.item_id, event.output_index, event.content_index) == (message.id, 0, 0)
    assert isinstance(item_done, OutputItemDone)
    assert item_done.item["status"] == "completed"
    assert item_done.item["content"] == [part_done.part]
    assert done.response["output"] == [item_done.item]
    assert done.response["status"] == "completed"
    assert done.response["usage"]["total_tokens"] == response.usage.total_tokens  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_stream_and_complete_send_the_same_request(
    server: MockSamsarServer, client: AsyncSamsar
) -> None:
    session_id = server.create_session()
    await collect(client.assistant.stream(session_id, "one", max_output_tokens=50, temperature=0.5))
    await client.assistant.complete(session_id, "one", max_output_tokens=50, temperature=0.5)
    first, second = (r.body for r in server.requests)
    assert first == second


# --- multi-part messages, refusals, chunking ----------------------------------

MULTI = {
    "id": "resp_multi",
    "object": "response",
    "created_at": 1773651000,
    "status": "completed",
    "model": "gpt-5.4",
    "output": [
        {
            "id": "msg_a",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "First part. ", "annotations": []},
                {"type": "output_text", "text": "Second, with ünïcödé 🎉.", "annotations": []},
            ],
        },
        {
            "id": "msg_b",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "refusal", "refusal": "I can't help with that."},
                {"type": "output_text", "text": "", "annotations": []},
            ],
        },
    ],
    "usage": {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 22,
    },
    # Samsar's payloads may omit these; OpenAI's Response type requires them.
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


def test_multi_part_sequence() -> None:
    response = response_from(MULTI)
    events = list(events_from_response(response))
    check_sequence_numbers(events)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.content_part.added",
        # an empty text part has no delta
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    for event in events:
        openai_dict(event)
    deltas = [e for e in events if isinstance(e, OutputTextDelta)]
    # One delta per real output part.
    assert [(d.item_id, d.output_index, d.content_index, d.delta) for d in deltas] == [
        ("msg_a", 0, 0, "First part. "),
        ("msg_a", 0, 1, "Second, with ünïcödé 🎉."),
    ]
    refusal = [e for e in events if isinstance(e, (RefusalDelta, RefusalDone))]
    assert [(e.item_id, e.output_index, e.content_index) for e in refusal] == [("msg_b", 1, 0)] * 2
    assert isinstance(refusal[1], RefusalDone)
    assert refusal[1].refusal == "I can't help with that."
    refusal_added = events[13]
    assert isinstance(refusal_added, ContentPartAdded)
    assert refusal_added.part == {"type": "refusal", "refusal": ""}
    done_items = [e.item for e in events if isinstance(e, OutputItemDone)]
    assert done_items == MULTI["output"]
    final = events[-1]
    assert isinstance(final, ResponseCompleted)
    assert final.parsed is response
    assert final.response == MULTI


def test_events_from_a_response_without_raw_payload() -> None:
    """A Response built in code (no raw JSON) still gives complete events."""
    response = Response(
        id="resp_built",
        status="completed",
        model="m",
        created_at=1,
        output=(
            OutputMessage(
                id="msg_1", content=(OutputText("Hi "), Refusal("no"), OutputText("there"))
            ),
        ),
    )
    events = list(events_from_response(response, chunk_chars=2))
    check_sequence_numbers(events)
    text = "".join(e.delta for e in events if isinstance(e, OutputTextDelta))
    assert text == "Hi there"
    done = next(e for e in events if isinstance(e, OutputItemDone))
    assert done.item == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "Hi ", "annotations": []},
            {"type": "refusal", "refusal": "no"},
            {"type": "output_text", "text": "there", "annotations": []},
        ],
    }
    final = events[-1]
    assert isinstance(final, ResponseCompleted)
    assert final.response["id"] == "resp_built"
    assert final.response["output"] == [done.item]


@pytest.mark.parametrize("chunk_chars", [1, 2, 3, 5, 7, 1000])
def test_chunk_chars_splits_and_reassembles(chunk_chars: int) -> None:
    response = response_from(MULTI)
    events = list(events_from_response(response, chunk_chars=chunk_chars))
    check_sequence_numbers(events)
    for output_index, content_index, text in [
        (0, 0, "First part. "),
        (0, 1, "Second, with ünïcödé 🎉."),
    ]:
        deltas = [
            e.delta
            for e in events
            if isinstance(e, OutputTextDelta)
            and (e.output_index, e.content_index) == (output_index, content_index)
        ]
        assert "".join(deltas) == text
        assert all(len(d) == chunk_chars for d in deltas[:-1])
        assert 1 <= len(deltas[-1]) <= chunk_chars
        assert len(deltas) == -(-len(text) // chunk_chars)
    refusal = "".join(e.delta for e in events if isinstance(e, RefusalDelta))
    assert refusal == "I can't help with that."


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_chunk_chars_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="chunk_chars"):
        events_from_response(response_from(MULTI), chunk_chars=bad)


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [0, -3, 2.0])
async def test_stream_refuses_bad_chunk_chars_at_call(
    server: MockSamsarServer, client: AsyncSamsar, bad: Any
) -> None:
    session_id = server.create_session()
    with pytest.raises(InvalidArgumentError, match="chunk_chars"):
        client.assistant.stream(session_id, "hi", chunk_chars=bad)
    assert server.requests == []


@pytest.mark.anyio
async def test_stream_chunk_chars(server: MockSamsarServer, client: AsyncSamsar) -> None:
    session_id = server.create_session()
    events = await collect(client.assistant.stream(session_id, "typing effect", chunk_chars=4))
    check_sequence_numbers(events)
    deltas = [e.delta for e in events if isinstance(e, OutputTextDelta)]
    assert "".join(deltas) == "Reply 1 to: typing effect"
    assert [len(d) for d in deltas] == [4, 4, 4, 4, 4, 4, 1]


# --- images --------------------------------------------------------------------


@pytest.mark.anyio
async def test_image_response_event_carries_the_image(
    server: MockSamsarServer, client: AsyncSamsar
) -> None:
    session_id = server.create_session()
    events = await collect(
        client.assistant.stream(
            session_id, "A launch poster", tools=[IMAGE_TOOL], tool_choice=IMAGE_TOOL
        )
    )
    assert types(events) == IMAGE_SEQUENCE
    check_sequence_numbers(events)
    for event in events:
        openai_dict(event)

    added, in_progress, completed, item_done, final = events[2:]
    assert isinstance(final, ResponseCompleted)
    response = final.parsed
    assert response is not None
    call = response.image_calls[0]
    assert isinstance(added, OutputItemAdded)
    assert added.item == {"id": call.id, "type": "image_generation_call", "status": "in_progress"}
    assert isinstance(in_progress, ImageGenerationInProgress)
    assert (in_progress.item_id, in_progress.output_index) == (call.id, 0)
    assert isinstance(completed, ImageGenerationCompleted)
    assert (completed.item_id, completed.output_index) == (call.id, 0)
    assert completed.image is response.images[0]
    png = base64.b64decode(completed.image.b64, validate=True)
    assert png.startswith(PNG_SIGNATURE)
    assert completed.image.revised_prompt == "Image 1 for: A launch poster"
    assert completed.image.session_id == session_id
    data = event_to_dict(completed)
    assert data["result"] == call.result
    # The image survives a JSON round trip.
    decoded = roundtrip(completed)
    assert isinstance(decoded, ImageGenerationCompleted)
    assert decoded == completed
    assert decoded.image is not None
    assert base64.b64decode(decoded.image.b64) == png
    assert decoded.image.id == call.id
    assert isinstance(item_done, OutputItemDone)
    assert item_done.item["result"] == call.result
    assert item_done.item["status"] == "completed"


def test_failed_image_call_has_no_completed_event() -> None:
    payload = {
        "id": "resp_img",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-5.4",
        "output": [
            {"id": "ig_1", "type": "image_generation_call", "status": "failed", "result": None},
            {"id": "ig_2", "type": "image_generation_call", "result": "aGVsbG8="},
        ],
    }
    events = list(events_from_response(response_from(payload)))
    check_sequence_numbers(events)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.output_item.done",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.completed",
        "response.output_item.done",
        "response.completed",
    ]
    completed = events[7]
    assert isinstance(completed, ImageGenerationCompleted)
    assert completed.item_id == "ig_2"
    assert completed.output_index == 1
    assert completed.image is not None
    assert completed.image.b64 == "aGVsbG8="
    done = [e.item for e in events if isinstance(e, OutputItemDone)]
    assert done[0]["status"] == "failed"
    # A call without a status but with a result is filled in as completed.
    assert done[1]["status"] == "completed"


# --- unknown things, incomplete and failed responses ------------------------------


def test_unknown_items_and_parts_pass_through() -> None:
    search = {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "samsar"},
    }
    hologram = {"type": "output_hologram", "frames": [1, 2, 3]}
    payload = {
        "id": "resp_unknown",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-5.4",
        "output": [
            search,
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [hologram, {"type": "output_text", "text": "ok", "annotations": []}],
            },
        ],
    }
    events = list(events_from_response(response_from(payload)))
    check_sequence_numbers(events)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.content_part.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, done = events[2], events[3]
    assert isinstance(added, OutputItemAdded)
    assert isinstance(done, OutputItemDone)
    assert added.item == done.item == search
    part_added, part_done = events[5], events[6]
    assert isinstance(part_added, ContentPartAdded)
    assert isinstance(part_done, ContentPartDone)
    assert part_added.part == part_done.part == hologram
    assert part_added.content_index == 0
    assert event_to_dict(events[8])["content_index"] == 1


def test_missing_item_ids_and_statuses_are_filled_in() -> None:
    payload = {
        "id": "resp_123",
        "object": "response",
        "created_at": 1773651000,
        "status": "completed",
        "model": "gpt-5.4",
        "output_text": "Meet the new drop.",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Meet the new drop.", "annotations": []}
                ],
            }
        ],
        "usage": {"input_tokens": 482, "output_tokens": 43, "total_tokens": 525},
    }
    events = list(events_from_response(response_from(payload)))
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {"resp_123_item_0"}
    done = next(e for e in events if isinstance(e, OutputItemDone))
    assert done.item["id"] == "resp_123_item_0"
    assert done.item["status"] == "completed"
    # The payload itself is left alone.
    assert "id" not in payload["output"][0]  # type: ignore[index]


@pytest.mark.anyio
async def test_incomplete_response_ends_with_response_incomplete(
    server: MockSamsarServer, client: AsyncSamsar
) -> None:
    session_id = server.create_session()
    events = await collect(
        client.assistant.stream(session_id, "a long question indeed", max_output_tokens=3)
    )
    check_sequence_numbers(events)
    assert types(events) == [*TEXT_SEQUENCE[:-1], "response.incomplete"]
    for event in events:
        openai_dict(event)
    final = events[-1]
    assert isinstance(final, ResponseIncomplete)
    assert final.response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final.parsed is not None
    assert final.parsed.output_text == "Reply 1 to:"
    done = next(e for e in events if isinstance(e, OutputItemDone))
    assert done.item["status"] == "incomplete"


def test_failed_response_ends_with_response_failed() -> None:
    payload = {
        "id": "resp_failed",
        "object": "response",
        "created_at": 1,
        "status": "failed",
        "model": "gpt-5.4",
        "output": [],
        "error": {"code": "server_error", "message": "the model failed"},
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    events = list(events_from_response(response_from(payload)))
    assert types(events) == ["response.created", "response.in_progress", "response.failed"]
    for event in events:
        openai_dict(event)
    final = events[-1]
    assert isinstance(final, ResponseFailed)
    assert final.response["status"] == "failed"
    assert final.error == {"code": "server_error", "message": "the model failed"}
    assert "error" not in event_to_dict(events[0])["response"]


# --- OpenAI shapes and decoding ----------------------------------------------------


def every_event() -> list[StreamEvent]:
    """At least one event of every type."""
    response = response_from(MULTI)
    image = response_from(
        {
            "id": "resp_i",
            "created_at": 1,
            "model": "m",
            "status": "completed",
            "output": [{"id": "ig_1", "type": "image_generation_call", "result": "aGk="}],
            "parallel_tool_calls": False,
            "tool_choice": {"type": "image_generation"},
            "tools": [{"type": "image_generation"}],
        }
    )
    events: list[StreamEvent] = [
        *events_from_response(response, chunk_chars=4),
        *events_from_response(image),
        ImageGenerationCompleted(sequence_number=3, item_id="ig_9", output_index=0),
        ResponseIncomplete(
            sequence_number=9,
            response={**MULTI, "status": "incomplete"},
            parsed=response_from({**MULTI, "status": "incomplete"}),
        ),
        ResponseFailed(
            sequence_number=9,
            response={**MULTI, "status": "failed", "output": []},
            parsed=response_from({**MULTI, "status": "failed", "output": []}),
        ),
        ErrorEvent(sequence_number=0, code="NotFoundError", message="404 Not Found", param="x"),
        ErrorEvent(sequence_number=0, message="no code"),
        UnknownEvent("response.hologram.delta", {"type": "response.hologram.delta", "x": [1]}),
    ]
    return events


def test_every_event_type_is_covered() -> None:
    from samsar_async import streaming

    expected = {
        getattr(streaming, name).type
        for name in streaming.__all__
        if isinstance(getattr(getattr(streaming, name), "type", None), str)
    }
    assert expected <= set(types(every_event()))


@pytest.mark.skipif(OPENAI_EVENTS is None, reason="openai is not installed")
def test_to_dict_matches_openai_event_types() -> None:
    for event in every_event():
        if isinstance(event, UnknownEvent):
            continue
        data = openai_dict(event)
        model = OPENAI_EVENT_CLASSES[event.type].model_validate(data)
        dumped = model.model_dump(mode="json", exclude_unset=True)
        # Validation proved OpenAI's required fields are there; the plain ones keep
        # their values, and the one field OpenAI's types do not know is our "result"
        # on image_generation_call.completed.
        extra = set(data) - set(type(model).model_fields)
        if isinstance(event, ImageGenerationCompleted) and event.image is not None:
            assert extra == {"result"}
        else:
            assert extra == set(), event.type
        for key in dumped:
            if key not in ("response", "item", "part"):
                assert dumped[key] == data[key], (event.type, key)


def test_event_from_dict_round_trips_every_event() -> None:
    for event in every_event():
        decoded = roundtrip(event)
        assert type(decoded) is type(event)
        assert decoded == event
        assert event_to_dict(decoded) == json.loads(json.dumps(event_to_dict(event)))


def test_decoded_completed_event_is_parsed() -> None:
    final = list(events_from_response(response_from(MULTI)))[-1]
    decoded = roundtrip(final)
    assert isinstance(decoded, ResponseCompleted)
    assert decoded.parsed is not None
    assert decoded.parsed.id == "resp_multi"
    assert decoded.parsed.output == response_from(MULTI).output
    assert decoded.parsed.output_text == "First part. Second, with ünïcödé 🎉."


def test_unknown_event_type() -> None:
    data = {"type": "response.reasoning_summary_text.delta", "sequence_number": 4, "delta": "x"}
    event = event_from_dict(data)
    assert isinstance(event, UnknownEvent)
    assert event.type == "unknown"
    assert event.event_type == "response.reasoning_summary_text.delta"
    assert event.sequence_number == 4
    assert event_to_dict(event) == data
    assert UnknownEvent("x", {"type": "x"}).sequence_number is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "JSON object"),
        ("response.created", "JSON object"),
        ({}, "'type'"),
        ({"type": 3}, "'type'"),
        ({"type": "response.output_text.delta"}, "'sequence_number' must be an integer"),
        (
            {
                "type": "response.output_text.delta",
                "sequence_number": "1",
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "delta": "x",
            },
            "'sequence_number' must be an integer, got str",
        ),
        (
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
            },
            "response.output_text.delta event: 'delta' must be a string, got nothing",
        ),
        (
            {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0},
            "'item' must be an object",
        ),
        ({"type": "error", "sequence_number": 1, "code": None}, "'message' must be a string"),
        (
            {"type": "error", "sequence_number": 1, "message": "m", "code": 5},
            "'code' must be a string or null",
        ),
        (
            {"type": "response.completed", "sequence_number": 1, "response": {"object": "x"}},
            "response.completed event: .*response",
        ),
        (
            {
                "type": "response.image_generation_call.completed",
                "sequence_number": 1,
                "item_id": "ig",
                "output_index": 0,
                "result": 12,
            },
            "'result' must be a string or null",
        ),
        (
            {
                "type": "response.output_text.done",
                "sequence_number": 1,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "text": "t",
                "logprobs": {},
            },
            "'logprobs' must be an array",
        ),
    ],
)
def test_event_from_dict_malformed(data: Any, match: str) -> None:
    with pytest.raises(StreamDecodeError, match=match):
        event_from_dict(data)
    assert issubclass(StreamDecodeError, ValueError)


def test_event_from_dict_accepts_openai_events_without_our_extras() -> None:
    event = event_from_dict(
        {
            "type": "response.image_generation_call.completed",
            "sequence_number": 5,
            "item_id": "ig_1",
            "output_index": 0,
        }
    )
    assert isinstance(event, ImageGenerationCompleted)
    assert event.image is None
    delta = event_from_dict(
        {
            "type": "response.output_text.delta",
            "sequence_number": 6,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
            "obfuscation": "abc",
        }
    )
    assert delta == OutputTextDelta(
        sequence_number=6, item_id="msg_1", output_index=0, content_index=0, delta="Hi"
    )


# --- failures of Assistant.stream ------------------------------------------------


async def single_error(events: AsyncIterator[StreamEvent]) -> ErrorEvent:
    """The stream's one event, an ErrorEvent; the stream then ends normally."""
    first = await events.__anext__()
    with pytest.raises(StopAsyncIteration):
        await events.__anext__()
    assert isinstance(first, ErrorEvent)
    return first


@pytest.mark.anyio
async def test_insufficient_credits_is_an_error_event(
    server: MockSamsarServer, client: AsyncSamsar
) -> None:
    session_id = server.create_session()
    server.faults.add(Fault.status(402))
    event = await single_error(client.assistant.stream(session_id, "Hello"))
    assert event.sequence_number == 0
    assert event.code == "InsufficientCreditsError"
    assert event.message.startswith("402 Payment Required")
    assert isinstance(event.error, InsufficientCreditsError)
    assert event_to_dict(event) == {
        "type": "error",
        "sequence_number": 0,
        "code": "InsufficientCreditsError",
        "message": str(event.error),
        "param": None,
    }
    openai_dict(event)


@pytest.mark.anyio
async def test_unknown_session_is_an_error_event_naming_the_param(
    server: MockSamsarServer, client: AsyncSamsar
) -> None:
    event = await single_error(client.assistant.stream("0" * 24, "Hello"))
    assert event.code == "NotFoundError"
    assert event.param == "session_id"
    assert "session not found" in event.message
    assert isinstance(event.error, NotFoundError)


@pytest.mark.anyio
async def test_a_real_low_balance_is_an_error_event(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    server.set_balance(None, 0)
    async with AsyncSamsar(server.api_key, base_url=server.url) as client:
        event = await single_error(client.assistant.stream(session_id, "Hello"))
    assert isinstance(event.error, InsufficientCreditsError)
    assert "insufficient credits" in event.message


@pytest.mark.anyio
async def test_connection_failure_is_an_error_event(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    server.faults.add(Fault.disconnect())
    async with AsyncSamsar(server.api_key, base_url=server.url, retry=None) as client:
        event = await single_error(client.assistant.stream(session_id, "Hello"))
    assert isinstance(event.error, APIConnectionError)
    assert event.code == type(event.error).__name__


@pytest.mark.anyio
@pytest.mark.parametrize(("session_id", "input"), [("   ", "hi"), ("s" * 24, 42), ("s" * 24, [])])
async def test_bad_arguments_raise_before_any_event(
    server: MockSamsarServer, client: AsyncSamsar, session_id: Any, input: Any
) -> None:
    events = client.assistant.stream(session_id, input)
    with pytest.raises(InvalidArgumentError):
        await events.__anext__()
    assert server.requests == []


@pytest.mark.anyio
async def test_unknown_option_raises(server: MockSamsarServer, client: AsyncSamsar) -> None:
    events = client.assistant.stream(server.create_session(), "hi", max_tokens=5)
    with pytest.raises(TypeError):
        await events.__anext__()


@pytest.mark.anyio
async def test_cancellation_is_not_swallowed(server: MockSamsarServer, client: AsyncSamsar) -> None:
    session_id = server.create_session()
    server.pause()
    received: list[StreamEvent] = []
    ended = anyio.Event()

    async def consume() -> None:
        try:
            async for event in client.assistant.stream(session_id, "Hello"):
                received.append(event)
        finally:
            ended.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await server.wait_until(lambda s: s.held == 1)
            scope.cancel()
    assert scope.cancelled_caught
    assert ended.is_set()
    assert received == []
    server.resume()
    # The client still works afterwards.
    events = await collect(client.assistant.stream(session_id, "Again"))
    assert types(events) == TEXT_SEQUENCE


# --- the union: literal types, the converter ----------------------------------------


def test_every_event_type_is_its_own_literal() -> None:
    """Each class's ``type`` is a ClassVar typed as the Literal of its value, and unique."""
    from samsar_async import events as events_module

    seen: set[str] = set()
    for cls in typing.get_args(StreamEvent):
        hint = typing.get_type_hints(cls, vars(events_module))["type"]
        assert typing.get_origin(hint) is typing.ClassVar, cls
        (literal,) = typing.get_args(hint)
        assert typing.get_args(literal) == (cls.type,), cls
        assert cls.type not in seen
        seen.add(cls.type)
    assert "unknown" in seen


def test_type_is_not_an_argument() -> None:
    with pytest.raises(TypeError):
        OutputTextDelta(  # type: ignore[call-arg]
            sequence_number=0,
            item_id="m",
            output_index=0,
            content_index=0,
            delta="x",
            type="error",
        )
    with pytest.raises(TypeError):
        UnknownEvent("x", {"type": "x"}, type="x")  # type: ignore[call-arg]


def test_final_events_require_parsed() -> None:
    with pytest.raises(TypeError, match="parsed"):
        ResponseCompleted(sequence_number=0, response=MULTI)  # type: ignore[call-arg]


def test_the_converter_structures_the_union() -> None:
    from samsar_async.converter import converter, load_event_hooks

    load_event_hooks()  # built on first use: event_from_dict() etc. do it themselves

    data = {
        "type": "response.output_text.delta",
        "sequence_number": 1,
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi",
    }
    event = converter.structure(data, StreamEvent)
    assert event == event_from_dict(data)
    assert converter.unstructure(event) == event_to_dict(event) == {**data, "logprobs": []}
    with pytest.raises(StreamDecodeError, match="'delta' must be a string, got nothing"):
        converter.structure({k: v for k, v in data.items() if k != "delta"}, StreamEvent)
    unknown = converter.structure({"type": "x.y", "n": 1}, StreamEvent)
    assert unknown == UnknownEvent("x.y", {"type": "x.y", "n": 1})


def test_unknown_types_are_not_remembered() -> None:
    """A stream of made-up types leaves the converter's dispatch table as it was."""
    from samsar_async import converter

    event_from_dict({"type": "response.made_up", "sequence_number": 0})
    before = dict(converter._EVENT_STRUCTURE_HOOKS)
    for i in range(1000):
        event = event_from_dict({"type": f"response.made_up_{i}", "sequence_number": i})
        assert isinstance(event, UnknownEvent)
        assert event.event_type == f"response.made_up_{i}"
    assert before == converter._EVENT_STRUCTURE_HOOKS


def test_decoded_unknown_event_keeps_a_copy() -> None:
    data = {"type": "response.future", "sequence_number": 1}
    event = event_from_dict(data)
    data["sequence_number"] = 2
    assert event.sequence_number == 1
    assert event_to_dict(event) is not event_to_dict(event)
