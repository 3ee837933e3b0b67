"""The core client against a real MockSamsarServer over loopback HTTP."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio
import anyio.from_thread
import pytest

from samsar_async import (
    APIResponseValidationError,
    APIStatusError,
    AsyncSamsar,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ImageGenerationCall,
    ImageGenerationTool,
    InputImage,
    InputText,
    InsufficientCreditsError,
    InternalServerError,
    InvalidArgumentError,
    Message,
    NotFoundError,
    OutputMessage,
    OutputText,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    Timeout,
    UnknownContent,
    UnknownOutputItem,
)
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy.disabled()


def last_body(server: MockSamsarServer) -> Any:
    return server.requests[-1].body


async def test_set_and_clear_system_prompt(client: AsyncSamsar, server: MockSamsarServer) -> None:
    sp = await client.assistant.set_system_prompt("You are the launch assistant for Acme.")
    assert sp.system_prompt == "You are the launch assistant for Acme."
    assert (sp.model, sp.selected_assistant_model) == ("gpt-5.4", "GPT5.4")
    assert server.system_prompt() == "You are the launch assistant for Acme."
    assert last_body(server) == {"system_prompt": "You are the launch assistant for Acme."}

    cleared = await client.assistant.set_system_prompt(None)
    assert cleared.system_prompt is None
    assert last_body(server) == {"system_prompt": None}  # JSON null, as documented
    await client.assistant.set_system_prompt("x")
    await client.assistant.clear_system_prompt()
    assert server.system_prompt() is None
    assert last_body(server) == {"system_prompt": None}


async def test_complete_text(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    resp = await client.assistant.complete(session_id, "Write a caption", max_output_tokens=300)
    assert resp.output_text == "Reply 1 to: Write a caption"
    assert resp.id.startswith("resp_")
    assert resp.status == "completed"
    assert resp.model == "gpt-5.4"
    assert resp.object == "response"
    assert isinstance(resp.created_at, int)
    assert resp.usage is not None
    assert resp.usage.total_tokens > 0
    [message] = resp.output
    assert isinstance(message, OutputMessage)
    assert message.text == resp.output_text
    assert isinstance(message.content[0], OutputText)
    assert resp.session_id == session_id
    assert resp.idempotency_key == server.requests[-1].idempotency_key
    assert resp.idempotency_key is not None
    assert re.fullmatch(r"samsar-[0-9a-f]{24}-[0-9]+", resp.idempotency_key)
    assert resp.raw["id"] == resp.id
    assert resp.images == ()
    # Credits are exact decimals from the headers, matching the server's ledger.
    [charge] = server.ledger
    assert resp.credits.charged == charge.credits
    assert resp.credits.remaining == server.balance()
    assert isinstance(resp.credits.charged, Decimal)
    assert last_body(server) == {
        "session_id": session_id,
        "input": "Write a caption",
        "max_output_tokens": 300,
    }


async def test_options_left_as_none_are_not_sent(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    await client.assistant.complete(session_id)
    assert last_body(server) == {"session_id": session_id}
    await client.assistant.complete(
        session_id,
        "hi",
        temperature=0.5,
        top_p=0.9,
        reasoning={"effort": "low"},
        metadata={"k": "v"},
        tool_choice="auto",
        extra_body={"store": True},
        extra_headers={"X-Trace": "abc"},
    )
    assert last_body(server) == {
        "session_id": session_id,
        "input": "hi",
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning": {"effort": "low"},
        "metadata": {"k": "v"},
        "tool_choice": "auto",
        "store": True,
    }
    assert server.requests[-1].headers["X-Trace"] == "abc"


async def test_no_input_answers_from_history(client: AsyncSamsar, session_id: str) -> None:
    await client.assistant.complete(session_id, "first")
    resp = await client.assistant.complete(session_id)
    assert resp.output_text == "Reply 2 to: (history) first"


# The doc's sample request bodies, built from builders, serialize to exactly the doc's JSON.
DOC_SESSION = "67df0d8ebc4f9d0b7f4fd123"


async def _sent_body(server: MockSamsarServer, **kwargs: Any) -> Any:
    session = server.create_session()
    async with AsyncSamsar(server.api_key, base_url=server.url) as c:
        await c.assistant.complete(session, **kwargs)
    body = server.requests[-1].body
    body["session_id"] = DOC_SESSION  # the doc's id; the mock hands out its own
    return body


async def test_doc_sample_request(server: MockSamsarServer) -> None:
    body = await _sent_body(
        server,
        input=[Message.user(InputText("Write a short product launch caption for this session."))],
        max_output_tokens=300,
    )
    assert body == json.loads("""{
"session_id": "67df0d8ebc4f9d0b7f4fd123",
"input": [
{
"role": "user",
"content": [
{ "type": "input_text", "text": "Write a short product launch caption for this session." }
]
}
],
"max_output_tokens": 300
}""")


async def test_doc_multimodal_example(server: MockSamsarServer) -> None:
    body = await _sent_body(
        server,
        input=[
            Message.user(
                InputText("Describe the hero image and turn it into a headline."),
                InputImage("https://cdn.example.com/launch-hero.png"),
            )
        ],
    )
    assert body == json.loads("""{
"session_id": "67df0d8ebc4f9d0b7f4fd123",
"input": [
{
"role": "user",
"content": [
{ "type": "input_text", "text": "Describe the hero image and turn it into a headline." },
{ "type": "input_image", "image_url": "https://cdn.example.com/launch-hero.png" }
]
}
]
}""")


async def test_doc_image_generation_example(server: MockSamsarServer) -> None:
    body = await _sent_body(
        server,
        input="Create a clean launch-poster image for this session.",
        tools=[ImageGenerationTool(size="1024x1024", quality="high")],
        tool_choice=ImageGenerationTool(),
    )
    assert body == json.loads("""{
"session_id": "67df0d8ebc4f9d0b7f4fd123",
"input": "Create a clean launch-poster image for this session.",
"tools": [
{
"type": "image_generation",
"size": "1024x1024",
"quality": "high"
}
],
"tool_choice": {
"type": "image_generation"
}
}""")


async def test_every_input_form(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    hero = InputImage("https://cdn.example.com/launch-hero.png")
    forms: list[tuple[Any, Any]] = [
        ("plain", "plain"),
        (Message.user("single"), {"role": "user", "content": "single"}),
        (
            [Message.system("be brief"), Message.user("many")],
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "many"}],
        ),
        (
            [InputText("parts"), hero],
            [
                {"type": "input_text", "text": "parts"},
                {"type": "input_image", "image_url": "https://cdn.example.com/launch-hero.png"},
            ],
        ),
        ({"role": "user", "content": "raw dict"}, {"role": "user", "content": "raw dict"}),
    ]
    for value, wire in forms:
        resp = await client.assistant.complete(session_id, value)
        assert last_body(server)["input"] == wire
        assert resp.output_text.startswith("Reply ")


async def test_image_generation(client: AsyncSamsar, session_id: str) -> None:
    tool = ImageGenerationTool(size="64x64")
    resp = await client.assistant.complete(session_id, "poster", tools=[tool], tool_choice=tool)
    [call] = resp.output
    assert isinstance(call, ImageGenerationCall)
    assert call.failure_reason is None
    [image] = resp.images
    assert image.id == call.id
    assert image.revised_prompt == call.revised_prompt
    assert image.response_id == resp.id
    assert image.session_id == session_id
    assert resp.output_text == ""


async def test_alias_prefix(server: MockSamsarServer, session_id: str) -> None:
    assert server.alias_url.endswith("/api/v1")
    async with AsyncSamsar(server.api_key, base_url=server.alias_url) as c:
        resp = await c.assistant.complete(session_id, "via alias")
    assert resp.output_text == "Reply 1 to: via alias"
    assert server.requests[-1].path == "/api/v1/assistant/completion"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, InternalServerError),
        (418, APIStatusError),
    ],
)
async def test_status_errors(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str, status: int, cls: type
) -> None:
    server.faults.add(Fault.status(status), times=None)
    with pytest.raises(cls) as info:
        await client.assistant.complete(session_id, "x", retry=NO_RETRY)
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert info.value.idempotency_key == server.requests[-1].idempotency_key


async def test_real_errors_from_the_server(client: AsyncSamsar, server: MockSamsarServer) -> None:
    with pytest.raises(NotFoundError, match="404"):
        await client.assistant.complete("0" * 24, "x")
    other = server.create_session(server.add_account())
    with pytest.raises(PermissionDeniedError):
        await client.assistant.complete(other, "x")
    async with AsyncSamsar("sk-wrong", base_url=server.url) as bad:
        with pytest.raises(AuthenticationError):
            await bad.assistant.complete(server.create_session(), "x")
        with pytest.raises(AuthenticationError):
            await bad.assistant.set_system_prompt("x")
    poor = server.add_account(credits=Decimal("0"))
    async with AsyncSamsar(poor, base_url=server.url) as c:
        with pytest.raises(InsufficientCreditsError) as info:
            await c.assistant.complete(server.create_session(poor), "x")
    assert info.value.credits.charged == 0
    assert info.value.credits.remaining == Decimal(0)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"error": {"message": "nested message"}}', "application/json", "nested message"),
        (b'{"error": "flat error"}', "application/json", "flat error"),
        (b'{"message": "top message"}', "application/json", "top message"),
        (b'{"detail": "detail text"}', "application/json", "detail text"),
        (b"plain text failure", "text/plain", "plain text failure"),
        (
            b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>",
            "text/html",
            "502 Bad Gateway",
        ),
    ],
)
async def test_error_messages_from_any_body_shape(
    client: AsyncSamsar,
    server: MockSamsarServer,
    session_id: str,
    body: bytes,
    content_type: str,
    message: str,
) -> None:
    server.faults.add(Fault.body(400, body, content_type))
    with pytest.raises(BadRequestError) as info:
        await client.assistant.complete(session_id, "x")
    assert message in str(info.value)


async def test_unknown_fields_and_item_types_survive(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    payload = {
        "id": "resp_future",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-9",
        "brand_new_field": {"nested": True},
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Hello ", "annotations": [], "extra": 1},
                    {"type": "output_audio", "data": "..."},
                    {"type": "output_text", "text": "world"},
                ],
            },
            {"id": "ws_1", "type": "web_search_call", "status": "completed"},
            {"type": "image_generation_call", "id": "ig_1", "status": "failed"},
        ],
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3, "new": 4},
    }
    server.faults.add(
        Fault.body(200, json.dumps(payload).encode(), "application/json; charset=utf-8")
    )
    resp = await client.assistant.complete(session_id, "x")
    assert resp.output_text == "Hello world"  # no output_text field: concatenated parts
    message, unknown, failed = resp.output
    assert isinstance(message, OutputMessage)
    assert isinstance(message.content[1], UnknownContent)
    assert message.content[1].type == "output_audio"
    assert isinstance(unknown, UnknownOutputItem)
    assert unknown.type == "web_search_call"
    assert unknown.data["status"] == "completed"
    assert isinstance(failed, ImageGenerationCall)
    assert failed.failure_reason is not None
    assert resp.images == ()
    assert resp.raw["brand_new_field"] == {"nested": True}


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"hello", "text/plain", "content type"),
        (b"[1, 2]", "application/json", "not an object"),
        (b'{"id": 5}', "application/json", "response.id"),
        # Read from the JSON only when first accessed, but checked when the answer arrives:
        (b'{"id": "r", "status": 3}', "application/json", "response.status"),
        (b'{"id": "r", "model": []}', "application/json", "response.model"),
        (b'{"id": "r", "object": {}}', "application/json", "response.object"),
        (b'{"id": "r", "created_at": true}', "application/json", "response.created_at"),
        (b'{"id": "r", "created_at": "now"}', "application/json", "response.created_at"),
        (b'{"id": "r", "usage": [1]}', "application/json", "response.usage"),
        (b'{"id": "r", "output": {}}', "application/json", "response.output"),
        (
            b'{"id": "r", "output": [{"type": "message", "content": 3}]}',
            "application/json",
            "output",
        ),
    ],
)
async def test_malformed_success_bodies(
    client: AsyncSamsar,
    server: MockSamsarServer,
    session_id: str,
    body: bytes,
    content_type: str,
    fragment: str,
) -> None:
    server.faults.add(Fault.body(200, body, content_type), times=None)
    with pytest.raises(APIResponseValidationError) as info:
        await client.assistant.complete(session_id, "x")
    assert fragment in str(info.value)
    assert info.value.status_code == 200
    assert len(server.requests) == 1  # never retried


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"session_id": ""}, "session_id"),
        ({"session_id": "   "}, "session_id"),
        ({"session_id": None}, "session_id"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": -5}, "max_output_tokens"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"tools": "image_generation"}, "tools"),
        ({"tools": [3]}, "tools[0]"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"metadata": ["a"]}, "metadata"),
        ({"input": 42}, "input"),
        ({"idempotency_key": ""}, "idempotency_key"),
    ],
)
async def test_bad_input_refused_before_any_network_call(
    client: AsyncSamsar, server: MockSamsarServer, kwargs: dict[str, Any], field: str
) -> None:
    args = {"session_id": "67df0d8ebc4f9d0b7f4fd123", "input": "x", **kwargs}
    with pytest.raises(InvalidArgumentError) as info:
        await client.assistant.complete(**args)
    assert info.value.field == field
    assert field in str(info.value)
    assert server.requests == []
    assert client.state == "unopened"  # nothing was even connected


async def test_closed_client_and_states(server: MockSamsarServer, session_id: str) -> None:
    c = AsyncSamsar(server.api_key, base_url=server.url)
    assert c.state == "unopened"
    await c.assistant.complete(session_id, "x")
    assert c.state == "open"
    await c.close()
    assert c.state == "closed"
    await c.close()  # idempotent
    with pytest.raises(ClientClosedError):
        await c.assistant.complete(session_id, "x")
    with pytest.raises(ClientClosedError):
        async with c:
            pass


def test_client_created_outside_a_loop_works_inside_one(
    server_url_key: tuple[str, str, str],
) -> None:
    url, key, session = server_url_key
    c = AsyncSamsar(key, base_url=url)  # no running loop here

    async def use() -> str:
        async with c:
            return (await c.assistant.complete(session, "later")).output_text

    assert anyio.run(use) == "Reply 1 to: later"


@pytest.fixture
def server_url_key() -> Iterator[tuple[str, str, str]]:
    """A server on its own thread's event loop, for a client built outside any loop."""
    with anyio.from_thread.start_blocking_portal() as portal:
        server = portal.call(MockSamsarServer)
        with portal.wrap_async_context_manager(server):
            yield server.url, server.api_key, portal.call(server.create_session)


async def test_api_key_never_leaks(
    server: MockSamsarServer, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-super-secret-value-123"
    caplog.set_level(logging.DEBUG)
    c = AsyncSamsar(
        secret, base_url=server.url, retry=RetryPolicy(initial_backoff=0, max_backoff=0)
    )
    assert secret not in repr(c)
    assert secret not in repr(c._transport)
    async with c:
        with pytest.raises(AuthenticationError) as info:
            await c.assistant.complete(session_id, "x")
        server.faults.add(Fault.status(503, retry_after="0"))
        with pytest.raises(AuthenticationError) as info2:
            await c.assistant.complete(session_id, "x")
    texts = [str(info.value), repr(info.value), str(info2.value), repr(info2.value)]
    texts += [str(a) for a in info2.value.attempts]
    texts.append(caplog.text)
    assert caplog.text  # DEBUG attempt lines were logged
    for text in texts:
        assert secret not in text


async def test_connection_cap(server: MockSamsarServer) -> None:
    server.pause()
    sessions = [server.create_session() for _ in range(60)]
    client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=4)
    async with client, anyio.create_task_group() as tg:
        for s in sessions:
            tg.start_soon(client.assistant.complete, s, "x")
        await server.wait_until(lambda srv: srv.held == 4)  # four calls at once...
        await anyio.wait_all_tasks_blocked()
        assert server.in_flight == 4  # ...and no fifth while they hold their connections
        server.resume()
    assert len(server.ledger) == 60
    assert server.max_in_flight == 4
    assert len(server.peers) <= 4  # connections are pooled and reused


async def test_idempotency_keys_are_unique_and_fork_safe(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    from samsar_async import _base_client

    keys = {_base_client._new_key() for _ in range(1000)}
    assert len(keys) == 1000
    prefix = _base_client._Keys.prefix
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new random part, so no key repeats the parent's
        os.close(read)
        os.write(write, _base_client._new_key().encode())
        os._exit(0)
    os.close(write)
    child_key = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert not child_key.startswith(prefix)
    assert re.fullmatch(r"samsar-[0-9a-f]{24}-1", child_key)


async def test_base_url_and_timeout_are_read_only() -> None:
    # Assigning them would bypass the checks made when the client is made (and the
    # URLs and attempt timeouts derived from them once): another value needs another
    # client, or with_options(timeout=...).
    client = AsyncSamsar("sk-test", base_url="https://api.example.com/v1/")
    assert client.base_url == "https://api.example.com/v1"
    with pytest.raises(AttributeError):
        client.base_url = "http://evil.example"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        client.timeout = Timeout(total=1)  # type: ignore[misc]
    patient = client.with_options(timeout=Timeout(total=1800))
    assert patient.timeout.total == 1800
    assert client.timeout.total != 1800
