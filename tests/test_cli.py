"""The ``samsar`` command line, run through its real entry point (``python -m samsar_async``)
in a subprocess, against a :class:`MockSamsarServer` served by the test's own event loop.

Synchronisation is by events only: the server's ``wait_until`` and the lines the
CLI prints; the ``wait_for`` timeouts are guards against hangs, not clocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import struct
import sys
import uuid
import zlib
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from samsar_async.cli import BATCH_KEY_NAMESPACE, batch_idempotency_key, read_done_lines
from samsar_async.testing import PNG_SIGNATURE, MockSamsarServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 60.0
"""Seconds after which a stuck subprocess fails the test (never reached when all is well)."""


# --------------------------------------------------------------------------- helpers


class Run(NamedTuple):
    rc: int
    out: str
    err: str


def cli_env(server: MockSamsarServer | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout first on PYTHONPATH, no
    inherited SAMSAR_* variables, and the mock server's URL and key when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMSAR_")}
    paths = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if server is not None:
        env["SAMSAR_BASE_URL"] = server.url
        env["SAMSAR_API_KEY"] = server.api_key
    env.update(extra)
    return env


async def start(
    *args: str, env: dict[str, str], cwd: Path | None = None, stdin: bool = False
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "samsar_async",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )


async def samsar(
    *args: str,
    server: MockSamsarServer | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
) -> Run:
    """Run ``samsar ARGS`` to completion while this loop keeps serving the mock."""
    proc = await start(
        *args, env=env if env is not None else cli_env(server), cwd=cwd, stdin=input is not None
    )
    out, err = await asyncio.wait_for(proc.communicate(input), HANG_GUARD)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def tiny_png(width: int = 3, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = (b"\x00" + bytes(rgb) * width) * height
    idat = zlib.compress(raw)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decode_png(data: bytes) -> tuple[int, int]:
    """Check a file is a well-formed 8-bit RGB PNG (chunk CRCs, pixel data); its size."""
    assert data.startswith(PNG_SIGNATURE)
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1][0] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, colour) == (8, 2)
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + 3 * width)
    return width, height


def write_jsonl(path: Path, lines: Iterable[Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The readable rows of a results file, and the count of unreadable ones."""
    rows, bad = [], 0
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw))
        except ValueError:
            bad += 1
    return rows, bad


def ledger_sum(server: MockSamsarServer) -> Decimal:
    return sum((charge.credits for charge in server.ledger), Decimal(0))


@pytest.fixture
async def server() -> AsyncIterator[MockSamsarServer]:
    async with MockSamsarServer() as srv:
        yield srv


# --------------------------------------------------------------------------- help, import


COMMANDS = [
    [],
    ["complete"],
    ["image"],
    ["system-prompt"],
    ["system-prompt", "set"],
    ["system-prompt", "clear"],
    ["batch"],
    ["mock-server"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "samsar")
async def test_help_of_every_command(command: list[str]) -> None:
    run = await samsar(*command, "--help", env=cli_env())
    assert run.rc == 0, run.err
    assert run.out.startswith("usage: samsar")
    assert run.err == ""
    if command != ["system-prompt"]:
        assert "exit codes:" in run.out
        for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "130 "):
            assert f"\n  {code}" in run.out


async def test_no_command_and_bad_options_are_usage_errors() -> None:
    run = await samsar(env=cli_env())
    assert run.rc == 2
    assert "usage: samsar" in run.err
    run = await samsar("batch", "x.jsonl", "--out", "y.jsonl", "--concurrency", "0", env=cli_env())
    assert run.rc == 2
    assert "--concurrency" in run.err
    # Request flags are checked by CompletionRequest's own validators.
    for flag, value, reason in (
        ("--temperature", "5", "between 0 and 2"),
        ("--top-p", "1.5", "between 0 and 1"),
        ("--max-output-tokens", "0", ">= 1"),
    ):
        run = await samsar("complete", "s", "hi", flag, value, env=cli_env())
        assert run.rc == 2
        assert flag in run.err
        assert reason in run.err


async def test_library_and_cli_module_do_not_import_rich() -> None:
    code = "import sys, samsar_async, samsar_async.cli; print('rich' in sys.modules)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, env=cli_env()
    )
    out, _ = await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    assert out.decode().strip() == "False"


# --------------------------------------------------------------------------- complete


async def test_complete_prints_text_and_credits(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    run = await samsar("complete", session_id, "Hello there", server=server)
    assert run.rc == 0, run.err
    assert run.out == "Reply 1 to: Hello there\n"
    charge = server.ledger[0]
    assert len(server.ledger) == 1
    remaining = server.balance()
    assert run.err == f"samsar: credits: charged {charge.credits}, remaining {remaining}\n"
    assert server.api_key not in run.out + run.err


async def test_complete_json_and_max_output_tokens(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    run = await samsar(
        "complete", session_id, "one two three four", "--max-output-tokens", "3", "--json",
        server=server,
    )  # fmt: skip
    assert run.rc == 0, run.err
    body = json.loads(run.out)
    assert body["id"] == server.ledger[0].response_id
    assert body["object"] == "response"
    assert body["status"] == "incomplete"
    assert body["output_text"] == "Reply 1 to:"
    assert "status is incomplete (max_output_tokens)" in run.err
    assert "credits: charged" in run.err


async def test_complete_with_image_file(server: MockSamsarServer, tmp_path: Path) -> None:
    session_id = server.create_session()
    png = tiny_png()
    image = tmp_path / "tiny.png"
    image.write_bytes(png)
    run = await samsar(
        "complete", session_id, "Describe this", "--image", str(image), server=server
    )
    assert run.rc == 0, run.err
    assert run.out == "Reply 1 to: Describe this [1 image]\n"
    sent = server.requests[-1].body["input"]
    assert sent["role"] == "user"
    parts = sent["content"]
    assert parts[0] == {"type": "input_text", "text": "Describe this"}
    urls = [p["image_url"] for p in parts if p.get("type") == "input_image"]
    assert len(urls) == 1
    assert urls[0].startswith("data:image/png;base64,")


async def test_complete_reads_stdin_and_accepts_api_key_option(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    env = cli_env(server)
    key = env.pop("SAMSAR_API_KEY")
    run = await samsar(
        "complete", session_id, "-", "--api-key", key, env=env, input=b"from stdin\n"
    )
    assert run.rc == 0, run.err
    assert run.out == "Reply 1 to: from stdin\n"
    assert key not in run.out + run.err


# --------------------------------------------------------------------------- image, system prompt


async def test_image_saves_png_files_and_prints_paths(
    server: MockSamsarServer, tmp_path: Path
) -> None:
    session_id = server.create_session()
    out_dir = tmp_path / "images"
    run = await samsar(
        "image", session_id, "a launch poster", "--out", str(out_dir), "--size", "64x48",
        "--quality", "high", "--format", "png", server=server,
    )  # fmt: skip
    assert run.rc == 0, run.err
    paths = [Path(line) for line in run.out.splitlines()]
    assert len(paths) == 1
    assert paths[0].parent == out_dir
    assert decode_png(paths[0].read_bytes()) == (64, 48)
    assert server.ledger[0].response_id in paths[0].name
    body = server.requests[-1].body
    assert body["tool_choice"]["type"] == "image_generation"
    assert body["tools"][0]["size"] == "64x48"
    assert "credits: charged" in run.err


async def test_system_prompt_set_and_clear(server: MockSamsarServer) -> None:
    prompt = "You are a pirate captain. Answer in one line."
    run = await samsar("system-prompt", "set", prompt, server=server)
    assert run.rc == 0, run.err
    assert server.system_prompt() == prompt
    assert "System prompt set" in run.out

    session_id = server.create_session()
    run = await samsar("complete", session_id, "hi", server=server)
    assert run.out == "[You are a pirate] Reply 1 to: hi\n"

    run = await samsar("system-prompt", "clear", server=server)
    assert run.rc == 0, run.err
    assert server.system_prompt() is None
    assert "cleared" in run.out


# --------------------------------------------------------------------------- exit codes


async def test_wrong_api_key_exits_3_with_one_clean_line(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    wrong = "sk-wrong-0123456789"
    run = await samsar("complete", session_id, "hi", env=cli_env(server, SAMSAR_API_KEY=wrong))
    assert run.rc == 3
    assert run.out == ""
    assert run.err == "samsar: error: AuthenticationError: 401 Unauthorized: invalid API key\n"
    assert wrong not in run.err


async def test_missing_api_key_exits_3(server: MockSamsarServer) -> None:
    env = cli_env(server)
    del env["SAMSAR_API_KEY"]
    run = await samsar("system-prompt", "clear", env=env)
    assert run.rc == 3
    assert run.err == "samsar: error: no API key: set SAMSAR_API_KEY or pass --api-key\n"


async def test_insufficient_credits_exits_4(server: MockSamsarServer) -> None:
    session_id = server.create_session()
    server.set_balance(None, 0)
    run = await samsar("complete", session_id, "hi", server=server)
    assert run.rc == 4
    assert run.err.startswith("samsar: error: InsufficientCreditsError: 402 ")
    assert run.err.count("\n") == 1
    assert server.ledger == []


async def test_unknown_session_exits_5(server: MockSamsarServer) -> None:
    run = await samsar("complete", "0" * 24, "hi", server=server)
    assert run.rc == 5
    assert run.err == "samsar: error: NotFoundError: 404 Not Found: session not found\n"


async def test_session_of_another_account_exits_3(server: MockSamsarServer) -> None:
    other = server.create_session(server.add_account())
    run = await samsar("complete", other, "hi", server=server)
    assert run.rc == 3
    assert run.err.startswith("samsar: error: PermissionDeniedError: 403 ")


async def test_bad_image_path_exits_2(server: MockSamsarServer, tmp_path: Path) -> None:
    session_id = server.create_session()
    missing = tmp_path / "missing.png"
    run = await samsar("complete", session_id, "hi", "--image", str(missing), server=server)
    assert run.rc == 2
    assert run.err.startswith("samsar: error: InvalidArgumentError: path: ")
    assert server.requests == []


async def test_connection_refused_exits_6() -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = cli_env(SAMSAR_API_KEY="sk-test", SAMSAR_BASE_URL=f"http://127.0.0.1:{port}/v1")
    run = await samsar("--timeout", "5", "complete", "a" * 24, "hi", env=env)
    assert run.rc == 6
    assert run.err.startswith("samsar: error: API")
    assert "Traceback" not in run.err
    assert run.err.count("\n") == 1


# --------------------------------------------------------------------------- batch


def derived_key(requests: Path, line: int, content: str) -> str:
    """The documented key derivation, computed independently of the CLI."""
    digest = hashlib.sha256(content.strip().encode()).hexdigest()
    return str(uuid.uuid5(BATCH_KEY_NAMESPACE, f"{requests.resolve()}\n{line}\n{digest}"))


def test_batch_key_derivation_is_documented_uuid5(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    content = '{"session_id": "abc", "input": "hi"}'
    key = batch_idempotency_key(requests, 7, (content + "\r\n").encode())
    assert key == derived_key(requests, 7, content)
    assert uuid.UUID(key).version == 5
    assert key != batch_idempotency_key(requests, 8, content.encode())
    assert key != batch_idempotency_key(tmp_path / "other.jsonl", 7, content.encode())
    assert key != batch_idempotency_key(requests, 7, content.replace("hi", "ho").encode())


def test_read_done_lines_newest_row_wins_and_torn_rows_are_skipped(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    assert read_done_lines(results) == (set(), 0)
    results.write_bytes(
        b'{"line": 1, "ok": true}\n'
        b'{"line": 2, "ok": false}\n'
        b'{"line": 1, "ok": false}\n'
        b'{"line": 2, "ok": true}\n'
        b"[1, 2]\n"
        b"\n"
        b'{"line": 3, "ok": true}\n'
        b'{"line": 4, "ok": tr'
    )
    assert read_done_lines(results) == ({2, 3}, 2)


async def test_batch_happy_path(server: MockSamsarServer, tmp_path: Path) -> None:
    sessions = [server.create_session() for _ in range(3)]
    lines: list[dict[str, Any]] = [
        {"session_id": sessions[i % 3], "input": f"request {i + 1}"} for i in range(10)
    ]
    lines[2]["max_output_tokens"] = 2
    lines[3]["temperature"] = 0.5
    lines[4] = {
        "session_id": sessions[1],
        "input": "draw a poster",
        "tools": [{"type": "image_generation", "size": "32x32"}],
        "tool_choice": {"type": "image_generation"},
    }
    requests, results = tmp_path / "requests.jsonl", tmp_path / "out" / "results.jsonl"
    write_jsonl(requests, lines)
    images_dir = tmp_path / "pics"
    run = await samsar(
        "batch", str(requests), "--out", str(results), "--concurrency", "4",
        "--images-dir", str(images_dir), server=server,
    )  # fmt: skip
    assert run.rc == 0, run.err
    assert run.out == ""
    rows, bad = read_rows(results)
    assert bad == 0
    assert sorted(row["line"] for row in rows) == list(range(1, 11))
    assert all(row["ok"] and row["error"] is None for row in rows)
    assert len(server.ledger) == 10
    texts = requests.read_text().splitlines()
    for row in rows:
        assert row["idempotency_key"] == derived_key(requests, row["line"], texts[row["line"] - 1])
        assert row["session_id"] == lines[row["line"] - 1]["session_id"]
    by_key = {charge.idempotency_key: charge for charge in server.ledger}
    assert set(by_key) == {row["idempotency_key"] for row in rows}
    for row in rows:
        charge = by_key[row["idempotency_key"]]
        assert row["response_id"] == charge.response_id
        assert Decimal(row["credits_charged"]) == charge.credits
    by_line = {row["line"]: row for row in rows}
    assert by_line[1]["output_text"] == "Reply 1 to: request 1"
    assert by_line[3]["output_text"] == "Reply 1"
    assert len(by_line[5]["images"]) == 1
    image = Path(by_line[5]["images"][0])
    assert image.parent == images_dir
    assert decode_png(image.read_bytes()) == (32, 32)
    assert all(row["images"] == [] for line, row in by_line.items() if line != 5)
    total = sum(Decimal(row["credits_charged"]) for row in rows)
    assert total == ledger_sum(server)
    assert "batch: 10 ok, 0 failed of 10 lines" in run.err

    again = await samsar("batch", str(requests), "--out", str(results), server=server)
    assert again.rc == 0, again.err
    assert "nothing to do: all 10 lines already succeeded" in again.err
    assert len(server.ledger) == 10
    assert read_rows(results)[0] == rows


async def test_batch_malformed_lines_become_error_rows(
    server: MockSamsarServer, tmp_path: Path
) -> None:
    sid = server.create_session()
    lines = [
        {"session_id": sid, "input": "first"},  # 1
        "this is not json",  # 2
        {"session_id": sid, "input": "third"},  # 3
        "[1, 2]",  # 4
        {"session_id": sid, "input": "x", "bogus": 1},  # 5
        {"input": "no session"},  # 6
        "",  # 7: blank, skipped
        {"session_id": sid, "max_output_tokens": -5},  # 8: refused before sending
        {"session_id": sid, "input": "last"},  # 9
    ]
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(requests, lines)
    run = await samsar(
        "batch", str(requests), "--out", str(results), "--concurrency", "2", server=server
    )
    assert run.rc == 7, run.err
    rows, _ = read_rows(results)
    by_line = {row["line"]: row for row in rows}
    assert sorted(by_line) == [1, 2, 3, 4, 5, 6, 8, 9]
    assert len(rows) == 8
    for line in (1, 3, 9):
        assert by_line[line]["ok"] is True
    for line, words in {
        2: "not valid JSON",
        4: "must be a JSON object",
        5: "unknown field(s) bogus",
        6: "session_id must be a non-empty string",
        8: "max_output_tokens",
    }.items():
        row = by_line[line]
        assert row["ok"] is False
        assert row["error"]["type"] == "InvalidArgumentError"
        assert row["error"]["message"].startswith(f"line {line}: ")
        assert words in row["error"]["message"]
        assert row["error"]["status"] is None
        assert row["response_id"] is None
        assert row["idempotency_key"] == derived_key(
            requests, line, requests.read_text().splitlines()[line - 1]
        )
    assert by_line[5]["session_id"] == sid
    assert len(server.ledger) == 3
    assert "samsar: batch: line 2: not valid JSON" not in run.err
    assert "samsar: batch: InvalidArgumentError: line 2: not valid JSON" in run.err
    assert "batch: 3 ok, 5 failed of 8 lines" in run.err

    # A re-run retries only the failed lines (and they fail again); nothing is charged twice.
    again = await samsar("batch", str(requests), "--out", str(results), server=server)
    assert again.rc == 7
    new_rows = read_rows(results)[0][len(rows) :]
    assert sorted(row["line"] for row in new_rows) == [2, 4, 5, 6, 8]
    assert "3 skipped (done earlier)" in again.err
    assert len(server.ledger) == 3


async def test_batch_api_errors_per_line(server: MockSamsarServer, tmp_path: Path) -> None:
    sid = server.create_session()
    lines = [
        {"session_id": sid, "input": "a"},
        {"session_id": "f" * 24, "input": "b"},
        {"session_id": sid, "input": "c"},
    ]
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(requests, lines)
    run = await samsar("batch", str(requests), "--out", str(results), server=server)
    assert run.rc == 7
    by_line = {row["line"]: row for row in read_rows(results)[0]}
    assert by_line[2]["error"] == {
        "type": "NotFoundError",
        "message": "404 Not Found: session not found",
        "status": 404,
    }
    assert by_line[1]["ok"]
    assert by_line[3]["ok"]
    assert "NotFoundError x1" in run.err


async def test_batch_out_of_credits_exits_4(server: MockSamsarServer, tmp_path: Path) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(requests, [{"session_id": sid, "input": f"r{i}"} for i in range(4)])
    server.set_balance(None, 0)
    run = await samsar("batch", str(requests), "--out", str(results), server=server)
    assert run.rc == 4
    rows, _ = read_rows(results)
    assert len(rows) == 4
    assert {row["error"]["status"] for row in rows} == {402}
    assert {row["credits_charged"] for row in rows} == {"0"}
    assert server.ledger == []


async def test_batch_min_credits_stops_sending_then_resumes(
    server: MockSamsarServer, tmp_path: Path
) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(requests, [{"session_id": sid, "input": f"r{i}"} for i in range(5)])
    run = await samsar(
        "batch", str(requests), "--out", str(results), "--concurrency", "1",
        "--min-credits", "999.99", server=server,
    )  # fmt: skip
    assert run.rc == 4
    rows, _ = read_rows(results)
    assert [row["ok"] for row in sorted(rows, key=lambda r: r["line"])] == [True] + [False] * 4
    assert {row["error"]["type"] for row in rows if not row["ok"]} == {"CreditBudgetExceededError"}
    assert len(server.ledger) == 1

    again = await samsar("batch", str(requests), "--out", str(results), server=server)
    assert again.rc == 0, again.err
    assert len(server.ledger) == 5
    assert len({charge.idempotency_key for charge in server.ledger}) == 5


async def test_batch_wrong_key_stops_and_exits_3(server: MockSamsarServer, tmp_path: Path) -> None:
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(requests, [{"session_id": sid, "input": f"r{i}"} for i in range(20)])
    env = cli_env(server, SAMSAR_API_KEY="sk-wrong")
    run = await samsar("batch", str(requests), "--out", str(results), "--concurrency", "1", env=env)
    assert run.rc == 3
    rows, _ = read_rows(results)
    assert len(rows) == 1
    assert rows[0]["error"]["type"] == "AuthenticationError"
    assert rows[0]["error"]["status"] == 401
    assert "samsar: error: AuthenticationError: 401 Unauthorized: invalid API key" in run.err
    assert "sk-wrong" not in run.err


async def test_batch_missing_requests_file_exits_2(tmp_path: Path) -> None:
    run = await samsar(
        "batch", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r.jsonl"),
        env=cli_env(SAMSAR_API_KEY="sk-test"),
    )  # fmt: skip
    assert run.rc == 2
    assert run.err == f"samsar: error: {tmp_path / 'nope.jsonl'}: no such file\n"


async def test_batch_without_rich_falls_back_to_plain_progress(
    server: MockSamsarServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "no-rich"
    (blocker / "rich").mkdir(parents=True)
    (blocker / "rich" / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    env = cli_env(server)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    sid = server.create_session()
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(requests, [{"session_id": sid, "input": f"r{i}"} for i in range(3)])
    run = await samsar("batch", str(requests), "--out", str(results), "--progress", "rich", env=env)
    assert run.rc == 0, run.err
    assert 'pip install "samsar-async[cli]"' in run.err
    assert "samsar: batch: 3/3 (100%), 0 failed" in run.err


# --------------------------------------------------------------------------- the crash test


def pause_after(charges: int) -> Callable[[MockSamsarServer], bool]:
    """A ``wait_until`` predicate that pauses the server the moment it has charged
    ``charges`` completions. The mock processes a request from its start to its
    charge without yielding (no latency, no faults), and checks predicates when a
    request ends, so exactly ``charges`` calls get through and every later one is held.
    """

    def predicate(server: MockSamsarServer) -> bool:
        if len(server.ledger) >= charges:
            server.pause()
            return True
        return False

    return predicate


async def wait_for_progress(stream: asyncio.StreamReader, done: int, total: int) -> list[str]:
    """Read the CLI's plain progress lines until one reports ``done`` results."""
    seen = []
    pattern = re.compile(rf"batch: (\d+)/{total} ")
    while True:
        raw = await stream.readline()
        assert raw, f"the CLI ended before reporting {done} results: {seen}"
        seen.append(raw.decode())
        match = pattern.search(seen[-1])
        if match and int(match.group(1)) >= done:
            return seen


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "SIGINT", "SIGTERM"]
)
async def test_batch_killed_midway_resumes_without_double_charges(
    server: MockSamsarServer, tmp_path: Path, sig: signal.Signals
) -> None:
    lines, concurrency, first = 24, 4, 5
    sessions = [server.create_session() for _ in range(lines)]  # one per line: no queueing
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_jsonl(
        requests, [{"session_id": s, "input": f"request {i + 1}"} for i, s in enumerate(sessions)]
    )
    command = [
        "batch", str(requests), "--out", str(results), "--concurrency", str(concurrency),
        "--progress", "plain", "--progress-every", "1",
    ]  # fmt: skip

    # Run 1: let `first` calls through, then hold the next ones in flight, and kill it.
    paused = asyncio.ensure_future(server.wait_until(pause_after(first)))
    proc = await start(*command, env=cli_env(server))
    await paused
    await server.wait_until(lambda s: s.held == concurrency)
    await asyncio.wait_for(wait_for_progress(proc.stderr, first, lines), HANG_GUARD)
    rows, _ = read_rows(results)
    assert sorted(row["line"] for row in rows) == list(range(1, first + 1))
    assert len(server.ledger) == first
    in_flight_keys = {
        r.idempotency_key for r in server.requests if r.endpoint == "completion" and r.ended is None
    }
    assert len(in_flight_keys) == concurrency

    proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # a clean stop: exit 128 + signal number, rows flushed, a hint on stderr
        assert proc.returncode == 128 + sig
        assert "re-run the same command" in err.decode()
        assert err.decode().endswith("samsar: interrupted\n")
    # A crash may leave a torn last row behind.
    with open(results, "ab") as f:
        f.write(b'{"line": 9, "ok": true, "sess')

    # The server finishes (and charges) the calls that were in flight at the crash.
    server.resume()
    await server.wait_until(lambda s: s.in_flight == 0)
    assert len(server.ledger) == first + concurrency

    # Run 2: the same command, to completion.
    run = await samsar(*command, server=server)
    assert run.rc == 0, run.err
    assert f"{first} skipped (done earlier)" in run.err
    assert "ignored 1 unreadable row(s)" in run.err

    rows, bad = read_rows(results)
    assert bad == 1  # the torn fragment, on its own line
    assert all(row["ok"] for row in rows)
    assert sorted(row["line"] for row in rows) == list(range(1, lines + 1))  # one row per line

    # Nothing was charged twice: one charge per line, each under that line's key.
    assert len(server.ledger) == lines
    keys = [charge.idempotency_key for charge in server.ledger]
    assert len(set(keys)) == lines
    texts = requests.read_text().splitlines()
    assert set(keys) == {derived_key(requests, n, texts[n - 1]) for n in range(1, lines + 1)}
    # The calls in flight at the crash were sent again with the same keys and replayed.
    replayed = {r.idempotency_key for r in server.requests if r.replayed}
    assert replayed == in_flight_keys
    charges = {charge.idempotency_key: charge for charge in server.ledger}
    for row in rows:
        charge = charges[row["idempotency_key"]]
        assert row["response_id"] == charge.response_id
        assert Decimal(row["credits_charged"]) == charge.credits

    # Run 3: nothing left to do.
    run = await samsar(*command, server=server)
    assert run.rc == 0
    assert "nothing to do" in run.err
    assert len(server.ledger) == lines


# --------------------------------------------------------------------------- demo, mock-server


async def test_demo_runs_end_to_end_offline(tmp_path: Path) -> None:
    env = cli_env(SAMSAR_BASE_URL="https://unreachable.invalid/v1")  # never used
    run = await samsar("demo", "--out", "demo-files", env=env, cwd=tmp_path)
    assert run.rc == 0, run.err
    out_dir = tmp_path / "demo-files"
    pngs = list(out_dir.glob("*.png"))
    assert len(pngs) == 1
    assert decode_png(pngs[0].read_bytes()) == (1024, 1024)
    assert len((out_dir / "requests.jsonl").read_text().splitlines()) == 200
    rows, bad = read_rows(out_dir / "results.jsonl")
    assert bad == 0
    assert len(rows) == 200
    assert all(row["ok"] for row in rows)
    for words in ("System prompt set", "three-turn", "Reply 3 to:", str(pngs[0].name),
                  "200 ok, 0 failed", "Total: 204 charged completions", str(out_dir)):  # fmt: skip
        assert words in run.out
    assert "demo batch: 200/200 (100%)" in run.err


async def test_mock_server_command_serves_until_ctrl_c() -> None:
    proc = await start("mock-server", "--port", "0", "--sessions", "2", env=cli_env())
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), HANG_GUARD)
        assert raw, "mock-server ended early"
        line = raw.decode().strip()
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            exports[name] = value
        if line.startswith("Press Ctrl-C"):
            break
    assert exports["SAMSAR_BASE_URL"].startswith("http://127.0.0.1:")
    try:
        env = cli_env(**exports)
        run = await samsar("complete", exports["SAMSAR_SESSION_ID"], "hello mock", env=env)
        assert run.rc == 0, run.err
        assert run.out == "Reply 1 to: hello mock\n"
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    assert proc.returncode == 0
