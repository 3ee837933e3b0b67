"""The public surface: one definition of a request, deprecated aliases, names, states."""

from __future__ import annotations

import inspect
import warnings

import attrs
import pytest

import samsar_async
from samsar_async import (
    AsyncSamsar,
    ClientState,
    CompletionOptions,
    CompletionRequest,
    Conversation,
    CreditBudgetExceededError,
    ImageGenerationTool,
    InvalidArgumentError,
)
from samsar_async.assistant import Assistant
from samsar_async.conversation import Conversation as ConversationClass
from samsar_async.inputs import REQUEST_FIELDS
from samsar_async.integrations import ray as ray_integration  # importable without ray
from samsar_async.requests_file import LINE_FIELDS
from samsar_async.testing import MockSamsarServer

PER_CALL = {"timeout", "retry"}


def test_complete_takes_exactly_the_request_fields() -> None:
    params = inspect.signature(Assistant.complete).parameters
    assert set(params) - {"self"} == set(REQUEST_FIELDS) | PER_CALL
    for name in REQUEST_FIELDS:
        default = attrs.fields_dict(CompletionRequest)[name].default
        if name != "session_id":
            assert params[name].default == default, name


def test_options_typeddict_matches_the_request() -> None:
    keys = set(CompletionOptions.__annotations__)
    assert keys == (set(REQUEST_FIELDS) - {"session_id", "input"}) | PER_CALL


def test_derived_field_lists() -> None:
    assert set(LINE_FIELDS) == set(REQUEST_FIELDS) - {"extra_headers"}
    assert set(ray_integration._OPTION_COLUMNS) == set(REQUEST_FIELDS) - {
        "session_id",
        "idempotency_key",
        "extra_headers",
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"session_id": ""}, "session_id"),
        ({"session_id": 5}, "session_id"),
        ({"session_id": "s", "max_output_tokens": 0}, "max_output_tokens"),
        ({"session_id": "s", "max_output_tokens": True}, "max_output_tokens"),
        ({"session_id": "s", "temperature": 3}, "temperature"),
        ({"session_id": "s", "top_p": -1}, "top_p"),
        ({"session_id": "s", "metadata": [1]}, "metadata"),
        ({"session_id": "s", "tools": "image"}, "tools"),
        ({"session_id": "s", "tools": [3]}, "tools[0]"),
        ({"session_id": "s", "tool_choice": "always"}, "tool_choice"),
        ({"session_id": "s", "idempotency_key": " "}, "idempotency_key"),
        ({"session_id": "s", "input": 3}, "input"),
    ],
)
def test_completion_request_is_validated_when_built(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        CompletionRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_builders_are_hashable_and_validated() -> None:
    tool = ImageGenerationTool(size="1024x1024", extra={"partial_images": 1})
    assert hash(tool) == hash(ImageGenerationTool(size="1024x1024", extra={"partial_images": 1}))
    assert tool == ImageGenerationTool(size="1024x1024", extra={"partial_images": 1})
    assert len({CompletionRequest(session_id="s", metadata={"a": "b"}, input=["x"])}) == 1
    with pytest.raises(InvalidArgumentError, match="size"):
        ImageGenerationTool(size=123)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="output_compression"):
        ImageGenerationTool(output_compression=-1)


def test_deprecated_aliases_warn_and_resolve() -> None:
    with pytest.warns(DeprecationWarning, match="CreditBudgetExceededError"):
        old = samsar_async.CreditBudgetExceeded  # type: ignore[attr-defined]
    assert old is CreditBudgetExceededError
    with pytest.warns(DeprecationWarning, match="Conversation"):
        assert samsar_async.Session is Conversation  # type: ignore[attr-defined]
    from samsar_async import errors

    with pytest.warns(DeprecationWarning, match="renamed"):
        assert errors.CreditBudgetExceeded is CreditBudgetExceededError  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        samsar_async.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.anyio
async def test_client_state_is_an_enum(server: MockSamsarServer) -> None:
    c = AsyncSamsar(server.api_key, base_url=server.url)
    assert c.state is ClientState.UNOPENED
    assert c.state == "unopened"  # a str enum: old comparisons keep working
    async with c:
        await c.assistant.set_system_prompt(None)
        assert c.state is ClientState.OPEN
    assert c.state is ClientState.CLOSED
    assert "state=closed" in repr(c)


@pytest.mark.anyio
async def test_conversation_and_deprecated_session_method(
    client: AsyncSamsar, session_id: str
) -> None:
    chat = client.assistant.conversation(session_id)
    assert isinstance(chat, ConversationClass)
    with pytest.warns(DeprecationWarning, match="conversation"):
        old = client.assistant.session(session_id)
    assert old.session_id == session_id
    resp = await chat.send("hello", max_output_tokens=20)
    assert chat.last_response is resp


def test_internals_are_private() -> None:
    public = {name for name in dir(AsyncSamsar) if not name.startswith("_")}
    assert {"post", "transport", "session_locks", "new_idempotency_key"}.isdisjoint(public)
    assert {"assistant", "close", "state"} <= public


def test_every_export_is_documented() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated name in __all__
        for name in samsar_async.__all__:
            obj = getattr(samsar_async, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, name
