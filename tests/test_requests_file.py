"""Requests files of ``samsar batch``: duplicate idempotency keys, the UTF-8 BOM, odd bytes.

Every batch runs in-process (:func:`samsar_async.cli.run_batch`) against a real
:class:`MockSamsarServer` over loopback; what was sent is read from the server's
request log and ledger. The subprocess path is covered by tests/test_cli.py and
tests/test_requests_file_fuzz.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from samsar_async import AsyncSamsar, RetryPolicy
from samsar_async.cli import BatchSummary, run_batch
from samsar_async.requests_file import (
    BATCH_KEY_NAMESPACE,
    KeyOwners,
    explicit_key,
    iter_lines,
    read_key_owners,
    scan_requests,
)
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = pytest.mark.anyio

BOM = b"\xef\xbb\xbf"


@pytest.fixture
async def client(server: MockSamsarServer) -> AsyncIterator[AsyncSamsar]:
    async with AsyncSamsar(server.api_key, base_url=server.url, retry=RetryPolicy.disabled()) as c:
        yield c


def jsonl(*lines: dict[str, Any] | bytes, end: bytes = b"\n") -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + end for line in lines
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]


def by_line(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The newest row of each line."""
    return {row["line"]: row for row in rows}


def derived_key(requests: Path, line: int, content: bytes) -> str:
    """The documented derivation, computed independently of the package."""
    digest = hashlib.sha256(content.strip()).hexdigest()
    name = f"{requests.resolve()}\n{line}\n{digest}"
    return str(uuid.uuid5(BATCH_KEY_NAMESPACE, name))


def sent(server: MockSamsarServer, key: str) -> list[tuple[str | None, Any]]:
    """(session_id, input) of every completion request the server got with ``key``."""
    return [
        (r.session_id, (r.body or {}).get("input"))
        for r in server.requests
        if r.endpoint == "completion" and r.idempotency_key == key
    ]


async def batch(client: AsyncSamsar, requests: Path, results: Path) -> BatchSummary:
    return await run_batch(client, requests, results, progress="off", concurrency=4)


# --------------------------------------------------------------------------- duplicate keys


async def test_repeated_key_in_one_file_is_refused_and_never_sent(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    s1, s2 = server.create_session(), server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_bytes(
        jsonl(
            {"session_id": s1, "input": "first", "idempotency_key": "adv-dup-key"},  # 1
            {"session_id": s2, "input": "second", "idempotency_key": "adv-dup-key"},  # 2
            {"session_id": s2, "input": "third"},  # 3
            {"session_id": s1, "input": "fourth", "idempotency_key": "adv-dup-key"},  # 4
            {"session_id": s2, "input": "fifth", "idempotency_key": "other-key"},  # 5
        )
    )
    summary = await batch(client, requests, results)
    assert (summary.ok, summary.failed) == (3, 2)
    rows = read_rows(results)
    assert sorted(row["line"] for row in rows) == [1, 2, 3, 4, 5]  # one row per line
    rows_by_line = by_line(rows)
    for line in (2, 4):
        row = rows_by_line[line]
        assert row["ok"] is False
        assert row["response_id"] is None
        assert row["error"]["type"] == "InvalidArgumentError"
        assert row["error"]["message"].startswith(
            f"line {line}: idempotency_key 'adv-dup-key' is already used by line 1;"
        )
        # The row never carries the duplicate key: a resume must not take it as the owner.
        raw = requests.read_bytes().splitlines()[line - 1]
        assert row["idempotency_key"] == derived_key(requests, line, raw)
    assert rows_by_line[1]["ok"]
    assert rows_by_line[1]["output_text"] == "Reply 1 to: first"
    assert rows_by_line[2]["session_id"] == s2
    # Nothing was sent for lines 2 and 4: the key went out once, with line 1's request.
    assert sent(server, "adv-dup-key") == [(s1, "first")]
    assert len(server.ledger) == 3
    assert len({charge.idempotency_key for charge in server.ledger}) == 3

    # A resume refuses them again, still naming line 1, and still sends nothing for them.
    again = await batch(client, requests, results)
    assert (again.skipped, again.ok, again.failed) == (3, 0, 2)
    new_rows = read_rows(results)[len(rows) :]
    assert sorted(row["line"] for row in new_rows) == [2, 4]
    assert all("already used by line 1" in row["error"]["message"] for row in new_rows)
    assert sent(server, "adv-dup-key") == [(s1, "first")]
    assert len(server.ledger) == 3


async def test_owner_that_failed_is_retried_and_keeps_its_key(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    # Line 1 fails at the server (no charge, no record); line 2's refusal row may
    # well be written before line 1's. On the resume the owner is still line 1.
    requests.write_bytes(
        jsonl(
            {"session_id": sid, "input": "one", "idempotency_key": "k"},
            {"session_id": sid, "input": "two", "idempotency_key": "k"},
        )
    )
    server.faults.add(Fault.status(400), path="completion")  # before any charge or record
    summary = await batch(client, requests, results)
    assert (summary.ok, summary.failed) == (0, 2)
    summary = await batch(client, requests, results)
    assert (summary.ok, summary.failed) == (1, 1)
    rows = by_line(read_rows(results))
    assert rows[1]["ok"] is True
    assert "already used by line 1" in rows[2]["error"]["message"]
    assert sent(server, "k") == [(sid, "one"), (sid, "one")]
    assert [charge.idempotency_key for charge in server.ledger] == ["k"]


async def test_key_repeated_against_a_results_row_of_another_line(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    s1, s2 = server.create_session(), server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_bytes(jsonl({"session_id": s1, "input": "original", "idempotency_key": "k7"}))
    assert (await batch(client, requests, results)).ok == 1
    # The file is edited (against the advice): line 1 changes, line 2 now carries k7.
    requests.write_bytes(
        jsonl(
            {"session_id": s1, "input": "changed"},
            {"session_id": s2, "input": "new", "idempotency_key": "k7"},
        )
    )
    summary = await batch(client, requests, results)
    assert (summary.skipped, summary.ok, summary.failed) == (1, 0, 1)
    row = read_rows(results)[-1]
    assert row["line"] == 2
    assert row["error"]["message"] == (
        "line 2: idempotency_key 'k7' is already used by line 1 (per its row in the "
        "results file); not sent (every line needs its own key, or none)"
    )
    assert sent(server, "k7") == [(s1, "original")]
    assert len(server.ledger) == 1


def test_read_key_owners_keeps_only_asked_keys_and_prefers_ok_rows(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    assert read_key_owners(results, {"a"}) == {}  # no file yet
    results.write_bytes(
        b'{"line": 4, "ok": false, "idempotency_key": "a"}\n'
        b'{"line": 2, "ok": true, "idempotency_key": " a "}\n'
        b'{"line": 9, "ok": true, "idempotency_key": "a"}\n'
        b'{"line": 3, "ok": false, "idempotency_key": "b"}\n'
        b'{"line": 5, "ok": false, "idempotency_key": "b"}\n'
        b'{"line": 6, "ok": true, "idempotency_key": "not asked"}\n'
        b'{"line": 7, "ok": true, "idempotency_key": null}\n'
        b'{"line": 8, "ok": tr'
    )
    assert read_key_owners(results, {"a", "b", "c"}) == {"a": 2, "b": 3}


def test_key_owners_compare_keys_without_surrounding_whitespace() -> None:
    owners = KeyOwners({"k": 3}, {"r": 8})
    assert owners.refusal(3, "k") is None
    assert owners.refusal(3, " k\t") is None
    assert owners.refusal(5, "k ") == (
        "line 5: idempotency_key 'k ' is already used by line 3; not sent "
        "(every line needs its own key, or none)"
    )
    assert "by line 8 (per its row in the results file)" in (owners.refusal(1, "r") or "")
    assert owners.refusal(1, "unknown") is None
    # A hostile length: still refused, and the message stays short.
    message = KeyOwners({"x" * 5000: 1}).refusal(2, "x" * 5000)
    assert message is not None
    assert message.startswith("line 2: idempotency_key 'xxxx")
    assert len(message) < 250


def test_scan_keeps_only_explicit_keys_and_counts_lines(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    lines: list[dict[str, Any] | bytes] = [
        {"session_id": "s", "input": f"r{i}"} for i in range(500)
    ]
    lines[10] = {"session_id": "s", "idempotency_key": "a"}
    lines[20] = {"session_id": "s", "idempotency_key": "b"}
    lines[30] = {"session_id": "s", "idempotency_key": " a"}
    lines[40] = {"session_id": "s", "\u0069dempotency_key": "c"}  # spelled with an escape
    lines[41] = b'{"session_id": "s", "\\u0069dempotency_key": "d"}'
    lines[50] = b"   "
    lines[60] = b'{"idempotency_key": 5}'
    requests.write_bytes(jsonl(*lines))
    scan = scan_requests(requests, {1, 2, 51, 1000})
    assert scan.first_use == {"a": 11, "b": 21, "c": 41, "d": 42}
    assert (scan.lines, scan.todo) == (499, 497)  # line 51 is blank
    assert explicit_key(b'{"input": "no key here"}') is None
    assert explicit_key(b'{"idempotency_key": "  "}') is None
    assert explicit_key(b'["idempotency_key"]') is None


# --------------------------------------------------------------------------- BOM, CRLF, bytes


async def test_bom_at_the_start_of_the_file_is_ignored(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    line1 = json.dumps({"session_id": sid, "input": "hello"}).encode()
    requests.write_bytes(BOM + line1 + b"\r\n" + json.dumps({"session_id": sid}).encode() + b"\r\n")
    summary = await batch(client, requests, results)
    assert (summary.lines, summary.ok, summary.failed) == (2, 2, 0)
    rows = by_line(read_rows(results))
    assert rows[1]["output_text"] == "Reply 1 to: hello"
    # The BOM is not part of line 1: its key is that of the same line without it.
    assert rows[1]["idempotency_key"] == derived_key(requests, 1, line1)
    assert [charge.idempotency_key for charge in server.ledger] == [
        rows[1]["idempotency_key"],
        rows[2]["idempotency_key"],
    ]


async def test_a_bom_only_first_line_is_blank(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_bytes(BOM + b"\n" + jsonl({"session_id": sid, "input": "x"}))
    assert [number for number, _ in iter_lines(requests)] == [2]
    summary = await batch(client, requests, results)
    assert (summary.lines, summary.ok) == (1, 1)
    assert [row["line"] for row in read_rows(results)] == [2]


async def test_bom_elsewhere_and_bytes_that_are_not_utf8_are_error_rows(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    sid = server.create_session()
    good = json.dumps({"session_id": sid, "input": "ok"}).encode()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_bytes(
        good + b"\n"
        + BOM + good + b"\n"  # 2: a BOM that does not start the file
        + b'{"session_id": "' + sid.encode() + b'", "input": "caf\xe9"}\n'  # 3: Latin-1
        + b'{"session_id": "' + sid.encode() + b'", "input": "\xed\xa0\x80"}\n'  # 4: surrogate
        + b'\xff\xfe{\x00}\x00\n'  # 5: UTF-16
        + good  # 6: no final newline
    )  # fmt: skip
    summary = await batch(client, requests, results)
    assert (summary.lines, summary.ok, summary.failed) == (6, 2, 4)
    rows = by_line(read_rows(results))
    assert rows[1]["ok"]
    assert rows[6]["ok"]
    assert rows[2]["error"]["message"].startswith("line 2: not valid JSON (")
    assert "BOM" in rows[2]["error"]["message"]
    assert (
        rows[3]["error"]["message"]
        == "line 3: not valid UTF-8 (byte 0xe9 at offset 56 of the line)"
    )
    assert rows[4]["error"]["message"].startswith("line 4: not valid UTF-8 (byte 0xed")
    assert rows[5]["error"]["message"].startswith("line 5: not valid UTF-8 (byte 0xff at offset 0")
    assert {row["error"]["type"] for n, row in rows.items() if n in (2, 3, 4, 5)} == {
        "InvalidArgumentError"
    }
    assert len(server.ledger) == 2


# --------------------------------------------------------------------------- images in a batch


async def test_images_dir_that_is_a_file_gives_an_image_save_error_row_then_a_free_replay(
    server: MockSamsarServer, client: AsyncSamsar, tmp_path: Path
) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_bytes(
        jsonl(
            {
                "session_id": sid,
                "input": "draw a poster",
                "tools": [{"type": "image_generation", "size": "16x16"}],
                "tool_choice": {"type": "image_generation"},
            }
        )
    )
    blocker = tmp_path / "pics"
    blocker.write_bytes(b"a file where the images directory should be")
    summary = await run_batch(client, requests, results, images_dir=blocker / "sub", progress="off")
    assert summary.failed == 1
    row = read_rows(results)[0]
    assert row["error"]["type"] == "ImageSaveError"
    assert "Not a directory" in row["error"]["message"]
    assert len(server.ledger) == 1
    assert blocker.read_bytes().startswith(b"a file")

    blocker.unlink()
    summary = await run_batch(client, requests, results, images_dir=blocker / "sub", progress="off")
    assert summary.ok == 1
    row = read_rows(results)[-1]
    assert Path(row["images"][0]).parent == (blocker / "sub").resolve()
    assert len(server.ledger) == 1  # the call was replayed from its key, not charged again
