"""Hypothesis: drawn requests files through ``samsar batch`` and a resume.

Each example writes a requests file mixing valid lines, lines repeating another
line's ``idempotency_key``, malformed lines (bad JSON, bytes that are not UTF-8,
a BOM that does not start the file, unknown fields, no session), blank lines,
CRLF and LF line ends, a BOM starting the file and huge lines. It runs the batch
against a fresh :class:`MockSamsarServer` with a few drawn server faults, then
runs it again (the resume) with none. Properties:

- each run writes exactly one row per line it had to do: every non-blank line
  in the first run, every line whose row was not ``ok`` in the resume;
- after the resume each line's newest row is what the line deserves: ``ok``,
  or an error row whose message starts with ``line N:`` and says why (a
  repeated key names the line that owns it), or the API's own error;
- nothing is sent for a refused line, every key the server saw belongs to
  exactly one line (a key is never sent with two lines' requests), and no key
  is charged twice: one charge per ``ok`` line, under that line's key.

The number of examples scales with the active Hypothesis profile (a quarter
of its ``max_examples``, at least 5; the subprocess test runs 2 at most).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsar_async import AsyncSamsar, RetryPolicy
from samsar_async.cli import run_batch
from samsar_async.requests_file import BATCH_KEY_NAMESPACE
from samsar_async.testing import Fault, MockSamsarServer

pytestmark = [pytest.mark.anyio, pytest.mark.fuzz]

BOM = b"\xef\xbb\xbf"
REPO_ROOT = Path(__file__).resolve().parents[1]
KEYS = ("k1", "k2", "K1", "key-with-\u00e9")
"""Explicit keys are drawn from a small pool so that repeats are common."""
SESSIONS = 3
UNKNOWN_SESSION = -1
"""Index of a well-formed session id the server does not know (a 404)."""
EXAMPLES = max(5, settings().max_examples // 4)
HANG_GUARD = 120.0

GARBAGE: tuple[tuple[bytes, str], ...] = (
    (b"not json", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b'{"session_id": "abc"', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"a string"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"session_id": "caf\xe9"}', "not valid UTF-8"),
    (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),
    (BOM + b'{"session_id": "abc"}', "not valid JSON"),  # a BOM that does not start the file
)


@attrs.frozen
class Line:
    """One drawn line and what it deserves."""

    kind: str
    """blank, valid, garbage, unknown_field, no_session, bad_key."""
    content: bytes
    """The line's bytes, without its line end."""
    key: str | None = None
    """The explicit idempotency_key it carries (its JSON says so)."""
    session: int | None = None
    reason: str = ""
    """For a malformed line: words its error message must contain."""


# --------------------------------------------------------------------------- strategies

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def dumps(obj: dict[str, Any], ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode()


@st.composite
def lines(draw: st.DrawFn, sessions: list[str]) -> Line:
    kind = draw(
        st.sampled_from(
            [
                *("blank", "valid", "valid", "valid", "huge", "garbage", "unknown_field"),
                *("no_session", "bad_key", "noise"),
            ]
        )
    )
    ascii_only = draw(st.booleans())
    key = draw(st.none() | st.sampled_from(KEYS))
    index = draw(st.sampled_from([*range(SESSIONS), UNKNOWN_SESSION]))
    sid = sessions[index] if index != UNKNOWN_SESSION else "0" * 24
    if kind == "blank":
        return Line("blank", draw(st.sampled_from([b"", b" ", b"\t", b"  \t "])))
    if kind in ("valid", "huge"):
        obj: dict[str, Any] = {"session_id": sid}
        text = "x" * draw(st.integers(64 * 1024, 256 * 1024)) if kind == "huge" else draw(TEXT)
        obj["input"] = text
        if draw(st.booleans()):
            obj["max_output_tokens"] = draw(st.integers(1, 30))
        if key is not None:
            obj["idempotency_key"] = key
        return Line("valid", dumps(obj, ascii_only), key, index)
    if kind == "garbage":
        content, reason = draw(st.sampled_from(GARBAGE))
        return Line("garbage", content, reason=reason)
    if kind == "noise":  # random bytes that cannot be UTF-8 (and hold no line end)
        tail = draw(st.binary(max_size=64).map(lambda b: b.replace(b"\n", b"")))
        return Line("garbage", b"\xff" + tail, reason="not valid UTF-8")
    if kind == "unknown_field":
        obj = {"session_id": sid, "input": draw(TEXT), "colour": "red"}
        if key is not None:
            obj["idempotency_key"] = key
        return Line("unknown_field", dumps(obj, ascii_only), key, reason="unknown field(s) colour")
    if kind == "no_session":
        obj = {"input": draw(TEXT), "session_id": draw(st.sampled_from([None, "", "  ", 5]))}
        if key is not None:
            obj["idempotency_key"] = key
        return Line("no_session", dumps(obj, ascii_only), key, reason="session_id must be")
    obj = {"session_id": sid, "idempotency_key": draw(st.sampled_from(["", "   ", 7, None]))}
    if obj["idempotency_key"] is None:
        obj["idempotency_key"] = ["k1"]
    return Line("bad_key", dumps(obj, ascii_only), reason="idempotency_key must be")


@attrs.frozen
class RequestsFile:
    lines: tuple[Line, ...]
    data: bytes
    bom: bool


@st.composite
def requests_files(draw: st.DrawFn, sessions: list[str]) -> RequestsFile:
    drawn = draw(st.lists(lines(sessions), min_size=1, max_size=12))
    huge = [i for i, line in enumerate(drawn) if len(line.content) > 10_000]
    for i in huge[1:]:  # at most one huge line per file: keep examples fast
        drawn[i] = Line("blank", b"")
    # A line that starts with a BOM only stays malformed after the BOM that starts the file.
    bom = draw(st.booleans()) or drawn[0].content.startswith(BOM)
    ends = draw(
        st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(drawn), max_size=len(drawn))
    )
    if not draw(st.booleans()):
        ends[-1] = b""  # no line end after the last line
    data = (BOM if bom else b"") + b"".join(
        line.content + end for line, end in zip(drawn, ends, strict=True)
    )
    return RequestsFile(tuple(drawn), data, bom)


FAULTS = st.lists(
    st.sampled_from(["400", "disconnect_after_charge", "502_after_charge"]), max_size=3
)


def make_fault(name: str) -> Fault:
    if name == "400":
        return Fault.status(400)
    if name == "disconnect_after_charge":
        return Fault.disconnect(after_charge=True)
    return Fault.status(502, after_charge=True)


# --------------------------------------------------------------------------- the oracle


def derived_key(requests: Path, number: int, content: bytes) -> str:
    digest = hashlib.sha256(content.strip()).hexdigest()
    return str(uuid.uuid5(BATCH_KEY_NAMESPACE, f"{requests.resolve()}\n{number}\n{digest}"))


@attrs.frozen
class Expected:
    """What each non-blank line (by number) deserves, and the key it is sent with."""

    refused: dict[int, str]
    """Line -> words of its InvalidArgumentError message (nothing sent)."""
    sent_key: dict[int, str]
    """Line -> the key it goes out with, for every line that is sent."""
    not_found: set[int]
    """Sent lines whose session does not exist (404)."""

    @property
    def lines(self) -> set[int]:
        return set(self.refused) | set(self.sent_key)


def expect(requests: Path, drawn: RequestsFile) -> Expected:
    owners: dict[str, int] = {}
    for number, line in enumerate(drawn.lines, 1):
        if line.key is not None:
            owners.setdefault(line.key, number)
    refused: dict[int, str] = {}
    sent_key: dict[int, str] = {}
    not_found: set[int] = set()
    for number, line in enumerate(drawn.lines, 1):
        if line.kind == "blank":
            continue
        if line.kind != "valid":
            refused[number] = line.reason
        elif line.key is not None and owners[line.key] != number:
            refused[number] = (
                f"idempotency_key {line.key!r} is already used by line {owners[line.key]};"
            )
        else:
            sent_key[number] = line.key or derived_key(requests, number, line.content)
            if line.session == UNKNOWN_SESSION:
                not_found.add(number)
    return Expected(refused, sent_key, not_found)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]


def check(
    server: MockSamsarServer,
    expected: Expected,
    first: list[dict[str, Any]],
    resumed: list[dict[str, Any]],
) -> None:
    # One row per line each run had to do.
    assert sorted(row["line"] for row in first) == sorted(expected.lines)
    failed_first = {row["line"] for row in first if not row["ok"]}
    assert sorted(row["line"] for row in resumed) == sorted(failed_first)

    newest = {row["line"]: row for row in first + resumed}
    for number, words in expected.refused.items():
        row = newest[number]
        assert row["ok"] is False, row
        assert row["error"]["type"] == "InvalidArgumentError", row
        assert row["error"]["message"].startswith(f"line {number}: "), row
        assert words in row["error"]["message"], (words, row)
        assert row["response_id"] is None
    for number, key in expected.sent_key.items():
        row = newest[number]
        assert row["idempotency_key"] == key
        if number in expected.not_found:
            assert row["error"]["type"] == "NotFoundError", row
        else:
            assert row["ok"] is True, row

    # What the server saw: only the sent lines' keys, each with one line's request only.
    completions = [r for r in server.requests if r.endpoint == "completion"]
    assert {r.idempotency_key for r in completions} <= set(expected.sent_key.values())
    bodies: dict[str | None, set[str]] = defaultdict(set)
    for r in completions:
        bodies[r.idempotency_key].add(json.dumps(r.body, sort_keys=True))
    assert all(len(seen) == 1 for seen in bodies.values()), bodies

    # No key charged twice; one charge per ok line, under its key.
    charged = [charge.idempotency_key for charge in server.ledger]
    assert len(charged) == len(set(charged))
    ok_keys = {row["idempotency_key"] for row in newest.values() if row["ok"]}
    assert set(charged) == ok_keys
    for row in newest.values():
        if row["ok"]:
            charge = next(c for c in server.ledger if c.idempotency_key == row["idempotency_key"])
            assert row["response_id"] == charge.response_id
            assert Decimal(row["credits_charged"]) == charge.credits


# --------------------------------------------------------------------------- in-process


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), faults=FAULTS, concurrency=st.sampled_from([1, 3, 16]))
async def test_drawn_requests_files_then_a_resume(
    data: st.DataObject, faults: list[str], concurrency: int
) -> None:
    async with MockSamsarServer(credits=Decimal(10) ** 9) as server:
        sessions = [server.create_session() for _ in range(SESSIONS)]
        drawn = data.draw(requests_files(sessions), label="requests file")
        with tempfile.TemporaryDirectory() as tmp:
            requests, results = Path(tmp) / "requests.jsonl", Path(tmp) / "results.jsonl"
            requests.write_bytes(drawn.data)
            expected = expect(requests, drawn)
            for name in faults:
                server.faults.add(make_fault(name), path="completion")
            async with AsyncSamsar(
                server.api_key, base_url=server.url, retry=RetryPolicy.disabled()
            ) as client:
                await run_batch(client, requests, results, progress="off", concurrency=concurrency)
            first = read_rows(results)
            server.faults.clear()
            async with AsyncSamsar(
                server.api_key,
                base_url=server.url,
                retry=RetryPolicy(initial_backoff=0, max_backoff=0),
            ) as client:
                await run_batch(client, requests, results, progress="off", concurrency=concurrency)
            resumed = read_rows(results)[len(first) :]
            check(server, expected, first, resumed)


# --------------------------------------------------------------------------- a real subprocess


async def samsar_batch(server: MockSamsarServer, requests: Path, results: Path) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMSAR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(SAMSAR_BASE_URL=server.url, SAMSAR_API_KEY=server.api_key)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "samsar_async", "batch", str(requests), "--out", str(results),
        "--progress", "off",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode


@settings(
    max_examples=min(2, EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), faults=st.lists(st.just("400"), max_size=2))
async def test_drawn_requests_file_through_the_cli_then_a_resume(
    data: st.DataObject, faults: list[str]
) -> None:
    async with MockSamsarServer(credits=Decimal(10) ** 9) as server:
        sessions = [server.create_session() for _ in range(SESSIONS)]
        drawn = data.draw(requests_files(sessions), label="requests file")
        with tempfile.TemporaryDirectory() as tmp:
            requests, results = Path(tmp) / "requests.jsonl", Path(tmp) / "results.jsonl"
            requests.write_bytes(drawn.data)
            expected = expect(requests, drawn)
            for name in faults:
                server.faults.add(make_fault(name), path="completion")
            rc = await samsar_batch(server, requests, results)
            first = read_rows(results)
            assert rc == (0 if all(row["ok"] for row in first) else 7)
            server.faults.clear()
            rc = await samsar_batch(server, requests, results)
            resumed = read_rows(results)[len(first) :]
            newest = {row["line"]: row for row in first + resumed}
            assert rc == (0 if all(row["ok"] for row in newest.values()) else 7)
            check(server, expected, first, resumed)
