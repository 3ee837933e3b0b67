"""Image answers decoded as they arrive (issue 13), over real loopback HTTP.

A request offering the ``image_generation`` tool has its answer read in
bounded chunks by :class:`samsar_async._imagebody.ImageBodyReader`: the images
arrive decoded (``response.raw`` keeps placeholders), the base64 text is never
held, and every failure (cap, cut connection, cancellation) drops what was
decoded. Requests without the tool are read whole, as before.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from samsar_async import (
    APIResponseValidationError,
    AsyncSamsar,
    CompletionRequest,
    ImageDecodeError,
    ImageGenerationTool,
    OutcomeUnknownError,
    RetryPolicy,
    _imagebody,
    transport,
)
from samsar_async.images import GeneratedImage, save_image, save_images
from samsar_async.models import ImageGenerationCall
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

TOOL = ImageGenerationTool()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_RETRY = RetryPolicy.disabled()


def picture(size: int) -> bytes:
    """``size`` bytes starting like a PNG; the rest incompressible (the test's truth)."""
    return (PNG_SIGNATURE + os.urandom(size))[:size]


def answer(*items: dict[str, Any], escape_slashes: bool = False) -> bytes:
    body = json.dumps(
        {
            "id": "resp_img",
            "object": "response",
            "status": "completed",
            "output": list(items),
            "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        }
    )
    if escape_slashes:
        body = body.replace("/", "\\/")
    return body.encode()


def call(item_id: str, result: str | None, status: str = "completed") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "image_generation_call", "id": item_id, "status": status}
    if result is not None:
        item["result"] = result
        item["revised_prompt"] = f"prompt of {item_id}"
    return item


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


class Readers:
    """Every ImageBodyReader the transport makes, kept for inspection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, on_feed: Any = None) -> None:
        self.made: list[_imagebody.ImageBodyReader] = []
        self.feeds = 0
        outer = self
        base = _imagebody.ImageBodyReader

        class Watched(base):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                outer.made.append(self)

            def feed(self, chunk: Any) -> None:
                outer.feeds += 1
                if on_feed is not None:
                    on_feed(outer.feeds)
                super().feed(chunk)

        monkeypatch.setattr(_imagebody, "ImageBodyReader", Watched)


async def test_a_large_image_arrives_decoded_and_saves_byte_exact(
    server: MockSamsarServer,
    client: AsyncSamsar,
    session_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = picture(6 * 1024 * 1024 + 1)  # not a multiple of 3: padded base64
    small = picture(1000)
    text = b64(big)
    server.faults.add(
        Fault.body(
            200,
            answer(call("ig_big", text), call("ig_small", b64(small)), escape_slashes=True),
            "application/json",
        )
    )
    readers = Readers(monkeypatch)
    resp = await client.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)
    [reader] = readers.made
    assert readers.feeds > 10  # read in bounded chunks, not whole
    big_image, small_image = resp.images
    # Decoded as it arrived: raw keeps a placeholder, never the base64 text.
    assert _imagebody.placeholder_index(resp.raw["output"][0]["result"]) == 0
    assert big_image.size == len(big)
    assert big_image.mime_type == "image/png"
    assert (big_image.id, big_image.revised_prompt, big_image.index) == (
        "ig_big",
        "prompt of ig_big",
        0,
    )
    assert (big_image.response_id, big_image.session_id) == ("resp_img", session_id)
    [path_big, path_small] = await save_images(resp.images, tmp_path)
    assert path_big.read_bytes() == big
    assert path_small.read_bytes() == small == small_image.data
    assert big_image.data == big
    assert big_image.data is big_image.data  # cached
    assert big_image.b64 == text  # encoded again on demand
    # The typed output has the base64 again, as OpenAI's SDK users read it.
    first = resp.output[0]
    assert isinstance(first, ImageGenerationCall)
    assert first.result == text
    assert resp.output_text == ""
    assert resp.usage is not None
    assert resp.usage.total_tokens == 7
    assert reader._state == "finished"


async def test_invalid_base64_fails_only_when_that_image_is_used(
    server: MockSamsarServer, client: AsyncSamsar, session_id: str, tmp_path: Path
) -> None:
    good = picture(5000)
    server.faults.add(
        Fault.body(
            200,
            answer(call("ig_bad", "AAAA" * 10 + "A$AA"), call("ig_good", b64(good))),
            "application/json",
        )
    )
    resp = await client.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)
    bad, fine = resp.images
    assert fine.data == good
    assert (await save_image(fine, tmp_path / "good.png")).read_bytes() == good
    for use in (lambda: bad.data, lambda: bad.size, lambda: bad.mime_type, lambda: bad.b64):
        with pytest.raises(ImageDecodeError, match=r"'ig_bad'.*offset 41") as info:
            use()
        assert "AAAA" not in str(info.value)
    with pytest.raises(ImageDecodeError, match="ig_bad"):
        await save_image(bad, tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.png"]


async def test_failed_and_empty_calls_yield_no_image(
    server: MockSamsarServer, client: AsyncSamsar, session_id: str
) -> None:
    png = picture(300)
    server.faults.add(
        Fault.body(
            200,
            answer(
                call("ig_failed", b64(png), "failed"), call("ig_empty", ""), call("ig_ok", b64(png))
            ),
            "application/json",
        )
    )
    resp = await client.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)
    [only] = resp.images
    assert (only.id, only.index, only.data) == ("ig_ok", 0, png)
    failed, empty, ok = resp.image_calls
    assert failed.failure_reason == "image generation call status is 'failed'"
    assert failed.result == b64(png)  # its text comes back in output
    assert empty.failure_reason == "image generation call has no result"
    assert ok.result == b64(png)


@pytest.mark.parametrize("compressed", [False, True])
async def test_over_the_cap_is_a_validation_error_and_the_client_goes_on(
    server: MockSamsarServer,
    session_id: str,
    monkeypatch: pytest.MonkeyPatch,
    compressed: bool,
) -> None:
    body = answer(call("ig_1", b64(picture(3 * 1024 * 1024))))
    headers: list[tuple[str, str]] = []
    if compressed:  # no usable Content-Length: the reader's count stops it
        body = gzip.compress(body, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    server.faults.add(Fault.body(200, body, "application/json", headers=headers))
    readers = Readers(monkeypatch)
    async with AsyncSamsar(
        server.api_key, base_url=server.url, max_response_bytes=2 * 1024 * 1024, retry=NO_RETRY
    ) as c:
        with pytest.raises(APIResponseValidationError, match="over the 2097152-byte limit"):
            await c.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)
        if compressed:
            [reader] = readers.made
            assert reader._state == "closed"  # what it had decoded is dropped
            assert reader._images == []
            assert reader._streams == []
        else:
            assert readers.made == []  # refused from its Content-Length, nothing read
        resp = await c.assistant.complete(session_id, "next")
        assert resp.output_text.startswith("Reply")


async def test_a_cut_image_answer_is_outcome_unknown_and_drops_the_images(
    client: AsyncSamsar, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers = Readers(monkeypatch)
    async with MockSamsarServer(image_bytes=2 * 1024 * 1024) as big_server:
        session = big_server.create_session()
        big_server.faults.add(Fault.truncate(after_charge=True))
        async with AsyncSamsar(big_server.api_key, base_url=big_server.url, retry=NO_RETRY) as c:
            with pytest.raises(OutcomeUnknownError):
                await c.assistant.complete(session, "poster", tools=[TOOL], tool_choice=TOOL)
    [reader] = readers.made
    assert readers.feeds > 0
    assert reader._state == "closed"
    assert reader._streams == []


async def test_invalid_json_in_an_image_answer_is_a_validation_error(
    server: MockSamsarServer, client: AsyncSamsar, session_id: str
) -> None:
    body = answer(call("ig_1", b64(picture(2000))))
    server.faults.add(Fault.body(200, body[:-2] + b"]]", "application/json"))
    with pytest.raises(APIResponseValidationError, match="not valid JSON"):
        await client.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)


async def test_cancellation_mid_body_drops_what_was_decoded(
    session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task: asyncio.Task[Any] | None = None

    def cancel_at(feeds: int) -> None:
        if feeds == 3:
            assert task is not None
            task.cancel()  # lands at the reader's next await

    readers = Readers(monkeypatch, cancel_at)
    async with MockSamsarServer(image_bytes=4 * 1024 * 1024) as big_server:
        session = big_server.create_session()
        async with AsyncSamsar(big_server.api_key, base_url=big_server.url) as c:
            task = asyncio.ensure_future(
                c.assistant.complete(session, "poster", tools=[TOOL], tool_choice=TOOL)
            )
            with pytest.raises(asyncio.CancelledError):
                await task
            [reader] = readers.made
            assert reader._state == "closed"
            assert reader._streams == []
            assert reader._images == []
            # The client is unharmed: the next image call works.
            resp = await c.assistant.complete(session, "poster", tools=[TOOL], tool_choice=TOOL)
            assert resp.images[0].size == 4 * 1024 * 1024


async def test_requests_without_the_image_tool_read_the_body_whole(
    server: MockSamsarServer,
    client: AsyncSamsar,
    session_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    png = picture(4000)
    text = b64(png)
    server.faults.add(Fault.body(200, answer(call("ig_1", text)), "application/json"))
    readers = Readers(monkeypatch)
    resp = await client.assistant.complete(session_id, "x")
    assert readers.made == []
    assert resp.raw["output"][0]["result"] == text  # as received
    assert resp.images[0].data == png
    plain = await client.assistant.complete(session_id, "hello")
    assert plain.output_text == "Reply 1 to: hello"
    assert readers.made == []


async def test_extra_body_tools_and_batches_take_the_image_path(
    server: MockSamsarServer,
    client: AsyncSamsar,
    session_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readers = Readers(monkeypatch)
    resp = await client.assistant.complete(
        session_id,
        "draw a poster",
        extra_body={"tools": [{"type": "image_generation", "size": "32x32"}]},
    )
    assert resp.images[0].data.startswith(PNG_SIGNATURE)
    assert len(readers.made) == 1
    requests = [
        CompletionRequest(session_id=session_id, input="a poster", tools=[TOOL], tool_choice=TOOL),
        CompletionRequest(session_id=session_id, input="hello"),
    ]
    async with client.assistant.complete_many(requests, ordered=True) as batch:
        results = [r async for r in batch]
    assert [r.error for r in results] == [None, None]
    image_answer, text_answer = (r.response for r in results)
    assert image_answer is not None
    assert text_answer is not None
    assert image_answer.images[0].mime_type == "image/png"
    assert image_answer.images[0].data.startswith(PNG_SIGNATURE)
    assert text_answer.images == ()
    assert len(readers.made) == 2


async def test_a_pickled_image_response_keeps_its_images(
    server: MockSamsarServer, client: AsyncSamsar, session_id: str
) -> None:
    png = picture(3000)
    server.faults.add(Fault.body(200, answer(call("ig_1", b64(png))), "application/json"))
    resp = await client.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)
    again = pickle.loads(pickle.dumps(resp))
    assert again == resp
    assert again.images[0].data == png


async def test_the_loop_turn_steps_aside_once_its_slice_is_spent() -> None:
    turns = transport._LoopTurns()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    turns.restart()  # a fresh slice: no stepping aside
    pending = asyncio.ensure_future(other())
    await turns.take()
    assert ran == []
    await pending
    turns.since = 0.0  # the slice is long spent: the loop runs everything else first
    pending = asyncio.ensure_future(other())
    await turns.take()
    assert ran == ["other", "other"]
    assert not turns.pending  # a new slice started on the next iteration
    await pending


def test_from_bytes_holds_the_bytes() -> None:
    png = picture(100)
    image = GeneratedImage.from_bytes(bytearray(png), id="mine")
    assert image.data == png
    assert type(image.data) is bytes
    assert (image.size, image.mime_type, image.b64) == (100, "image/png", b64(png))
    assert GeneratedImage.from_b64(image.b64).data == png
    with pytest.raises(Exception, match="data"):
        GeneratedImage.from_bytes(b"")


async def test_retried_and_traced_image_calls_decode_too(
    server: MockSamsarServer, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from samsar_async.hooks import EventHooks

    readers = Readers(monkeypatch)
    statuses: list[int | None] = []

    async def on_response(event: Any) -> None:
        statuses.append(event.status)

    png = picture(70_000)
    server.faults.add(Fault.status(500))
    server.faults.add(Fault.body(200, answer(call("ig_1", b64(png))), "application/json"))
    async with AsyncSamsar(
        server.api_key,
        base_url=server.url,
        retry=RetryPolicy(initial_backoff=0, max_backoff=0),
        event_hooks=EventHooks(on_response=[on_response]),
    ) as c:
        resp = await c.assistant.complete(session_id, "x", tools=[TOOL], tool_choice=TOOL)
    assert statuses == [500, 200]
    assert resp.images[0].data == png
    assert len(readers.made) == 1  # the 500's small error body is read whole
