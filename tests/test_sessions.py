"""Session turns: FIFO per session id, parallel across sessions, bookkeeping."""

from __future__ import annotations

from decimal import Decimal

import anyio
import pytest

from samsar_async import (
    AsyncSamsar,
    InputImage,
    Message,
    NotFoundError,
    Response,
)
from samsar_async._turns import TurnQueues
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio


async def test_twenty_sends_at_once_run_in_order(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    server.latency = 0.002  # each turn takes a moment, so overlaps would show
    chat = client.assistant.conversation(session_id)
    results: dict[int, Response] = {}

    async def send(i: int) -> None:
        results[i] = await chat.send(f"turn {i}")

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(send, i)

    for i in range(20):
        assert results[i].output_text == f"Reply {i + 1} to: turn {i}"
    assert server.session_overlaps == 0
    logged = [r.body["input"] for r in server.requests]
    assert logged == [f"turn {i}" for i in range(20)]
    assert [t.input for t in chat.turns] == [f"turn {i}" for i in range(20)]
    assert len(client._turns or ()) == 0  # the registry is empty when idle


async def test_direct_calls_and_helper_share_the_order(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    server.pause()
    chat = client.assistant.conversation(session_id)
    async with anyio.create_task_group() as tg:
        tg.start_soon(chat.send, "a")
        await server.wait_until(lambda s: s.held == 1)
        tg.start_soon(client.assistant.complete, session_id, "b")
        tg.start_soon(chat.send, "c")
        # Nothing else reached the server while "a" holds the session.
        await anyio.wait_all_tasks_blocked()
        assert len(server.requests) == 1
        server.resume()
    assert [r.body["input"] for r in server.requests] == ["a", "b", "c"]
    assert server.session_overlaps == 0


async def test_sessions_run_in_parallel(client: AsyncSamsar, server: MockSamsarServer) -> None:
    server.pause()
    sessions = [server.create_session() for _ in range(10)]
    async with anyio.create_task_group() as tg:
        for s in sessions:
            tg.start_soon(client.assistant.complete, s, "x")
        await server.wait_until(lambda srv: srv.held == 10)  # every session at once
        server.resume()
    assert server.max_sessions_in_flight == 10
    assert server.session_overlaps == 0


async def test_serialization_can_be_turned_off(server: MockSamsarServer, session_id: str) -> None:
    server.pause()
    async with AsyncSamsar(server.api_key, base_url=server.url, serialize_sessions=False) as c:
        assert c._turns is None
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(c.assistant.complete, session_id, f"{i}")
            await server.wait_until(lambda s: s.held == 3)  # all three at once
            server.resume()
    assert server.session_overlaps > 0


async def test_turn_bookkeeping_and_failed_turns(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str
) -> None:
    chat = client.assistant.conversation(session_id)
    r1 = await chat.send("Write a short product launch caption.")
    server.faults.add(Fault.status(400))
    with pytest.raises(Exception, match="400"):
        await chat.send("this one fails")
    r3 = await chat.send()  # no input: from the history
    assert r3.output_text.startswith("Reply 2 to: (history)")
    assert [t.ok for t in chat.turns] == [True, False, True]
    assert chat.turns[1].error is not None
    assert chat.last_response is r3
    expected = r1.credits.charged + r3.credits.charged  # type: ignore[operator]
    assert chat.credits_charged == expected
    assert isinstance(chat.credits_charged, Decimal)
    assert chat.usage == r1.usage + r3.usage  # type: ignore[operator]
    assert chat.session_id == session_id


async def test_multimodal_turn_and_image_edits(
    client: AsyncSamsar, server: MockSamsarServer, session_id: str, tmp_path: object
) -> None:
    from tests.test_inputs import tiny_png

    chat = client.assistant.conversation(session_id)
    hero = InputImage.from_bytes(tiny_png())
    r2 = await chat.send([Message.user("Describe the hero image", hero)])
    assert "[1 image" in r2.output_text
    img = await chat.generate_image("Create a clean launch poster.", size="64x64", quality="high")
    assert len(img.images) == 1
    body = server.requests[-1].body
    assert body["tools"] == [{"type": "image_generation", "size": "64x64", "quality": "high"}]
    assert body["tool_choice"] == {"type": "image_generation"}
    edit = await chat.generate_image("Same poster, dark background.")
    assert len(edit.images) == 1
    assert [t.response.id for t in chat.turns if t.response] == [r2.id, img.id, edit.id]
    assert len(server.turns(session_id)) == 3  # one chain, three turns


async def test_session_id_checked_up_front(client: AsyncSamsar) -> None:
    with pytest.raises(ValueError, match="session_id"):
        client.assistant.conversation("")
    with pytest.raises(NotFoundError):
        await client.assistant.conversation("f" * 24).send("x")


async def test_locks_survive_cancelled_waiters() -> None:
    locks = TurnQueues()
    order: list[str] = []
    gate = anyio.Event()

    async def first() -> None:
        await gate.wait()
        order.append("first")

    async def record(name: str) -> None:
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(locks.run, "s", first)
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await locks.run("s", lambda: record("cancelled"))
        tg.start_soon(locks.run, "s", lambda: record("third"))
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert order == ["first", "third"]
    assert len(locks) == 0
