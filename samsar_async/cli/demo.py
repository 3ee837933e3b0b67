"""``samsar demo``: a tour of the SDK against an in-process mock server (no key, no network)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..client import AsyncSamsar
from ..config import API_KEY_ENV
from ..images import save_images
from .batch import DEFAULT_BATCH_CONCURRENCY, run_batch
from .exits import EXIT_BATCH_FAILED, EXIT_OK
from .support import _fmt_credits, _run

if TYPE_CHECKING:
    import argparse

DEFAULT_DEMO_DIR: Final = "samsar-demo"
DEMO_LATENCY: Final = 0.02
"""Seconds each completion of the demo's mock server takes."""


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return _run(lambda: _demo(args, out, out.resolve()))


def _write_demo_requests(out: Path, sessions: list[str], count: int) -> tuple[Path, Path]:
    """Write the demo's requests file (``count`` lines); drop results of an earlier demo."""
    requests_path = out / "requests.jsonl"
    results_path = out / "results.jsonl"
    with open(requests_path, "w", encoding="utf-8") as f:
        for index in range(count):
            line = {
                "session_id": sessions[index % len(sessions)],
                "input": f"Write tagline #{index + 1} for the launch.",
                "max_output_tokens": 40,
            }
            f.write(json.dumps(line) + "\n")
    results_path.unlink(missing_ok=True)  # each demo has a fresh server: start over
    return requests_path, results_path


async def _demo(args: argparse.Namespace, out: Path, where: Path) -> int:
    from ..testing import MockSamsarServer

    def say(text: str = "") -> None:
        print(text, flush=True)

    # A little simulated latency, so the batch's progress is visible.
    async with MockSamsarServer(latency=DEMO_LATENCY) as server:
        session_id = server.create_session()
        starting = server.balance()
        say(f"Samsar demo: a mock Samsar API server runs in this process at {server.url}")
        say("(no API key and no network needed; the same code talks to api.samsar.one)")
        say()
        async with AsyncSamsar(server.api_key, base_url=server.url) as client:
            prompt = "You are the launch assistant for Acme. Keep answers concise."
            await client.assistant.set_system_prompt(prompt)
            say(f"1. System prompt set: {prompt!r}")
            say()

            say(f"2. A three-turn conversation on session {session_id}:")
            chat = client.assistant.conversation(session_id)
            for text in (
                "Write a short product launch caption.",
                "Make it punchier.",
                "Now translate it to French.",
            ):
                response = await chat.send(text, max_output_tokens=60)
                say(f"   you:       {text}")
                say(f"   assistant: {response.output_text}")
            say(f"   ({len(chat.turns)} turns, {_fmt_credits(chat.credits_charged)} credits)")
            say()

            image = await chat.generate_image(
                "Create a clean launch poster for this product.", size="1024x1024", quality="high"
            )
            paths = await save_images(image.images, out)
            say("3. An image turn on the same session, saved to:")
            for path in paths:
                say(f"   {path}")
            say(f"   ({_fmt_credits(image.credits.charged)} credits)")
            say()

            sessions = [server.create_session() for _ in range(20)]
            requests_path, results_path = _write_demo_requests(out, sessions, 200)
            say(f"4. A 200-request batch over {len(sessions)} sessions (samsar batch):")
            summary = await run_batch(
                client,
                requests_path,
                results_path,
                concurrency=DEFAULT_BATCH_CONCURRENCY,
                progress=args.progress,
                progress_every=args.progress_every,
                label="demo batch",
            )
            say(
                f"   {summary.ok} ok, {summary.failed} failed, "
                f"{_fmt_credits(summary.credits_charged)} credits"
            )
            say(f"   requests: {requests_path}")
            say(f"   results:  {results_path}")
            say()

        total = sum((charge.credits for charge in server.ledger), Decimal(0))
        say(
            f"Total: {len(server.ledger)} charged completions, {_fmt_credits(total)} credits; "
            f"{_fmt_credits(server.balance())} of {_fmt_credits(starting)} credits remain."
        )
        say(f"Files are in {where}")
        say()
        say("Next: `samsar mock-server` serves this mock for your own tests;")
        say(f"with {API_KEY_ENV} set, `samsar complete SESSION_ID 'Hello'` talks to Samsar.")
    return EXIT_OK if summary.failed == 0 else EXIT_BATCH_FAILED
