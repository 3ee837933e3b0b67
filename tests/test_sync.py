"""Samsar, the sync client, against a MockSamsarServer running on its own thread and loop.

The server has a loop of its own (a blocking portal), so that the client's
calls can block the test's thread, or even a running loop, without blocking it.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from samsar_async import (
    AsyncSamsar,
    ClientClosedError,
    CompletionRequest,
    InvalidArgumentError,
    NotFoundError,
    Response,
    RetryPolicy,
    Samsar,
)
from samsar_async.images import save_image
from samsar_async.streaming import ErrorEvent, OutputTextDelta, ResponseCompleted
from samsar_async.testing import MockSamsarServer

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


class Threaded:
    """A MockSamsarServer on its own loop; ``call`` runs server coroutines there."""

    def __init__(self, portal: BlockingPortal, server: MockSamsarServer) -> None:
        self.portal = portal
        self.server = server

    def wait_until(self, predicate: Any) -> None:
        self.portal.call(lambda: self.server.wait_until(predicate, timeout=30))


@pytest.fixture
def threaded() -> Iterator[Threaded]:
    with start_blocking_portal("asyncio") as portal:
        server = MockSamsarServer()
        portal.call(server.start)
        try:
            yield Threaded(portal, server)
        finally:
            portal.call(server.resume)
            portal.call(server.close)


@pytest.fixture
def server(threaded: Threaded) -> MockSamsarServer:
    return threaded.server


@pytest.fixture
def client(server: MockSamsarServer) -> Iterator[Samsar]:
    fast = RetryPolicy(initial_backoff=0, max_backoff=0)
    with Samsar(server.api_key, base_url=server.url, retry=fast) as c:
        yield c


def portal_threads() -> set[threading.Thread]:
    """Every live thread: the client's portal thread is the one that appears.

    (Not found by name: anyio names it only from 4.x versions newer than our minimum.)
    """
    return set(threading.enumerate())


def test_complete_returns_the_async_clients_response(
    server: MockSamsarServer, client: Samsar
) -> None:
    session_id = server.create_session()
    response = client.assistant.complete(session_id, "Hello sync", max_output_tokens=50)
    assert isinstance(response, Response)
    assert response.output_text == "Reply 1 to: Hello sync"
    assert response.session_id == session_id
    assert response.credits is not None
    assert response.credits.charged == server.ledger[0].credits
    assert server.requests[0].idempotency_key == response.idempotency_key
    assert server.turns(session_id)[0].response_id == response.id


def test_lifecycle_joins_the_thread(server: MockSamsarServer) -> None:
    before = portal_threads()
    client = Samsar(server.api_key, base_url=server.url)
    assert client.state == "unopened"
    assert portal_threads() == before  # nothing started yet
    session_id = server.create_session()
    client.assistant.complete(session_id, "hi")
    assert client.state == "open"
    started = portal_threads() - before
    assert len(started) == 1
    client.close()
    assert client.state == "closed"
    assert not any(t.is_alive() for t in started)
    client.close()  # idempotent
    with pytest.raises(ClientClosedError):
        client.assistant.complete(session_id, "again")
    with pytest.raises(ClientClosedError), client:
        pass
    assert len(server.requests) == 1


def test_same_errors_and_argument_checks(server: MockSamsarServer, client: Samsar) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.assistant.complete("f" * 24, "anyone?")
    assert caught.value.status_code == 404
    assert caught.value.idempotency_key == server.requests[0].idempotency_key
    with pytest.raises(InvalidArgumentError) as bad:
        client.assistant.complete("abc", "hi", temperature=5)
    assert bad.value.field == "temperature"
    with pytest.raises(InvalidArgumentError):
        client.assistant.complete("", "hi")
    assert len(server.requests) == 1  # the bad calls sent nothing


def test_key_not_in_repr(server: MockSamsarServer, client: Samsar) -> None:
    assert server.api_key not in repr(client)
    assert repr(client) == f"<Samsar base_url={server.url!r} state=unopened>"


def test_system_prompt(server: MockSamsarServer, client: Samsar) -> None:
    stored = client.assistant.set_system_prompt("You write short launch captions.")
    assert stored.system_prompt == "You write short launch captions."
    assert server.system_prompt() == "You write short launch captions."
    client.assistant.clear_system_prompt()
    assert server.system_prompt() is None


def test_stream_is_a_plain_iterator(server: MockSamsarServer, client: Samsar) -> None:
    session_id = server.create_session()
    events = list(client.assistant.stream(session_id, "Stream me", chunk_chars=3))
    types = [e.type for e in events]
    assert types[:4] == TEXT_SEQUENCE[:4]
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if isinstance(e, OutputTextDelta))
    assert text == "Reply 1 to: Stream me"
    final = events[-1]
    assert isinstance(final, ResponseCompleted)
    assert final.parsed is not None
    assert final.parsed.credits is not None
    # A failed call is one error event; bad arguments raise.
    (error,) = list(client.assistant.stream("f" * 24, "x"))
    assert isinstance(error, ErrorEvent)
    assert error.code == "NotFoundError"
    with pytest.raises(InvalidArgumentError):
        client.assistant.stream(session_id, "x", chunk_chars=0)


def test_leaving_a_stream_early_closes_it(server: MockSamsarServer, client: Samsar) -> None:
    session_id = server.create_session()
    events = client.assistant.stream(session_id, "first")
    assert next(events).type == "response.created"
    events.close()  # type: ignore[attr-defined]
    with pytest.raises(StopIteration):
        next(events)
    assert client.assistant.complete(session_id, "next").output_text == "Reply 2 to: next"


def test_session_helper(server: MockSamsarServer, client: Samsar) -> None:
    session_id = server.create_session()
    chat = client.assistant.conversation(session_id)
    assert chat.send("one").output_text == "Reply 1 to: one"
    assert chat.send("two").output_text == "Reply 2 to: two"
    with pytest.raises(InvalidArgumentError):
        chat.send("three", top_p=9)
    assert [t.ok for t in chat.turns] == [True, True, False]
    assert chat.credits_charged == sum(c.credits for c in server.ledger)
    assert chat.usage.total_tokens > 0
    assert chat.last_response is not None
    assert chat.last_response.output_text == "Reply 2 to: two"


def test_generate_image_and_save_it_through_run(
    server: MockSamsarServer, client: Samsar, tmp_path: pathlib.Path
) -> None:
    session_id = server.create_session()
    response = client.assistant.conversation(session_id).generate_image("a logo", size="64x64")
    (image,) = response.images
    path = client.run(save_image, image, tmp_path / "logo.png")
    assert path.read_bytes() == image.data


def test_complete_many_is_a_plain_iterator(server: MockSamsarServer, client: Samsar) -> None:
    sessions = [server.create_session() for _ in range(3)]
    requests = [CompletionRequest(session_id=sessions[i % 3], input=f"q{i}") for i in range(9)]
    with client.assistant.complete_many(requests, concurrency=4, ordered=True) as results:
        got = list(results)
    assert [r.index for r in got] == list(range(9))
    assert all(r.ok for r in got)
    assert [r.response.output_text for r in got if r.response][:3] == [
        "Reply 1 to: q0",
        "Reply 1 to: q1",
        "Reply 1 to: q2",
    ]
    assert results.credits_remaining == server.balance()
    # Without ``with``: iterating to the end closes it.
    last = CompletionRequest(session_id=sessions[0], input="last")
    again = client.assistant.complete_many([last])
    (result,) = list(again)
    assert result.response is not None
    assert result.response.output_text == "Reply 4 to: last"
    assert server.session_overlaps == 0


def test_closing_a_batch_cancels_the_rest(threaded: Threaded, client: Samsar) -> None:
    server = threaded.server
    session_ids = [server.create_session() for _ in range(6)]
    server.pause()
    results = client.assistant.complete_many(
        [CompletionRequest(session_id=s, input="hi") for s in session_ids], concurrency=2
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: list(results))  # blocks: the server holds the calls
        threaded.wait_until(lambda s: s.held == 2)
        results.close()  # from another thread
        assert waiting.result() == []
    # The batch was cancelled: nothing more is sent once the server resumes.
    threaded.portal.call(server.resume)
    threaded.wait_until(lambda s: s.in_flight == 0)
    assert len(server.requests) == 2
    with pytest.raises(StopIteration):
        next(results)
    # The client is still fine.
    assert client.assistant.complete(session_ids[5], "ok").output_text.endswith("ok")


def test_many_threads_at_once(server: MockSamsarServer) -> None:
    shared = server.create_session()
    own = [server.create_session() for _ in range(12)]

    def work(n: int) -> list[str]:
        texts = [client.assistant.complete(own[n], f"t{n}-{i}").output_text for i in range(4)]
        texts.append(client.assistant.complete(shared, f"shared {n}").output_text)
        return texts

    with (
        Samsar(server.api_key, base_url=server.url, max_connections=4) as client,
        concurrent.futures.ThreadPoolExecutor(12) as pool,
    ):
        outcomes = list(pool.map(work, range(12)))
    for n, texts in enumerate(outcomes):
        assert texts[:4] == [f"Reply {i + 1} to: t{n}-{i}" for i in range(4)]
    # The shared session's turns never overlapped, and each got its own place in the chain.
    assert server.session_overlaps == 0
    assert sorted(int(t[-1].split()[1]) for t in outcomes) == list(range(1, 13))
    assert len(server.turns(shared)) == 12
    assert len(server.ledger) == 12 * 5
    # One pool: at most max_connections connections for 60 calls.
    assert len(server.peers) <= 4


def test_close_cancels_calls_in_other_threads(threaded: Threaded) -> None:
    server = threaded.server
    session_id = server.create_session()
    client = Samsar(server.api_key, base_url=server.url)
    server.pause()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.assistant.complete, session_id, "held")
        threaded.wait_until(lambda s: s.held == 1)
        client.close()
        with pytest.raises(ClientClosedError):
            pending.result()
    assert client.state == "closed"


@pytest.mark.anyio
async def test_inside_a_running_loop(server: MockSamsarServer) -> None:
    """As in a notebook: the caller's loop is running; the client runs on its own."""
    session_id = server.create_session()
    with Samsar(server.api_key, base_url=server.url) as client:
        assert client.assistant.complete(session_id, "in a loop").output_text == (
            "Reply 1 to: in a loop"
        )
        assert [e.type for e in client.assistant.stream(session_id, "again")] == TEXT_SEQUENCE


def test_the_async_client_is_the_same_core(server: MockSamsarServer, client: Samsar) -> None:
    assert isinstance(client.async_client, AsyncSamsar)
    assert client.async_client.base_url == client.base_url == server.url


def test_an_interrupt_while_waiting_cancels_the_call(threaded: Threaded, client: Samsar) -> None:
    """Ctrl-C during a call: KeyboardInterrupt here, and the call is cancelled on the loop."""
    server = threaded.server
    session_id = server.create_session()
    server.pause()
    main = threading.get_ident()

    def interrupt() -> None:
        threaded.wait_until(lambda s: s.held == 1)
        signal.pthread_kill(main, signal.SIGINT)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            pool.submit(interrupt)
            with pytest.raises(KeyboardInterrupt):
                client.assistant.complete(session_id, "held")
            # The cancelled call gave up its session's turn: the next call on the same
            # session reaches the server while the first request is still held there.
            second = pool.submit(client.assistant.complete, session_id, "next")
            threaded.wait_until(lambda s: s.held == 2)
        finally:
            threaded.portal.call(server.resume)
        assert second.result().output_text.endswith("next")


def test_constructor_mirrors_the_async_client() -> None:
    """Samsar takes AsyncSamsar's arguments (http_session aside: a session belongs to a loop)."""
    import inspect

    from samsar_async import AsyncSamsar

    sync_params = set(inspect.signature(Samsar.__init__).parameters) - {"self"}
    async_params = set(inspect.signature(AsyncSamsar.__init__).parameters) - {"self"}
    assert sync_params == async_params - {"http_session"}
    with_sync = set(inspect.signature(Samsar.with_options).parameters)
    assert with_sync == set(inspect.signature(AsyncSamsar.with_options).parameters)
