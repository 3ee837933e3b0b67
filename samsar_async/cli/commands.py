"""The small commands: ``complete``, ``image``, ``system-prompt set|clear`` and ``mock-server``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

from ..images import save_images
from ..inputs import InputImage, Message
from .exits import EXIT_API, EXIT_OK, CLIError, _err
from .support import _client, _run, _text_arg

if TYPE_CHECKING:
    import argparse
    from decimal import Decimal

    from ..models import Credits


def _fmt_decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _credits_line(credits: Credits) -> str:
    charged = _fmt_decimal(credits.charged) or "unknown"
    remaining = _fmt_decimal(credits.remaining) or "unknown"
    return f"credits: charged {charged}, remaining {remaining}"


def _cmd_complete(args: argparse.Namespace) -> int:
    return _run(lambda: _complete(args))


async def _complete(args: argparse.Namespace) -> int:
    text = _text_arg(args.text)
    input_: str | Message = text
    if args.image:
        images = [InputImage.from_path(path) for path in args.image]
        input_ = Message.user(text, *images)
    async with _client(args) as client:
        response = await client.assistant.complete(
            args.session_id,
            input_,
            max_output_tokens=args.max_output_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
        )
    if args.json:
        print(json.dumps(dict(response.raw), ensure_ascii=False, indent=2), flush=True)
    else:
        print(response.output_text, flush=True)
    if response.status not in (None, "completed"):
        details = response.raw.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        _err(f"note: response status is {response.status}" + (f" ({reason})" if reason else ""))
    _err(_credits_line(response.credits))
    return EXIT_OK


def _cmd_image(args: argparse.Namespace) -> int:
    return _run(lambda: _image(args))


async def _image(args: argparse.Namespace) -> int:
    prompt = _text_arg(args.prompt)
    async with _client(args) as client:
        chat = client.assistant.conversation(args.session_id)
        response = await chat.generate_image(
            prompt, size=args.size, quality=args.quality, format=args.format
        )
    if not response.images:
        reasons = "; ".join(
            call.failure_reason for call in response.image_calls if call.failure_reason
        )
        _err(_credits_line(response.credits))
        raise CLIError(
            f"the response {response.id} has no image" + (f" ({reasons})" if reasons else ""),
            EXIT_API,
        )
    paths = await save_images(response.images, args.out)
    for path in paths:
        print(path, flush=True)
    _err(_credits_line(response.credits))
    return EXIT_OK


def _cmd_system_prompt_set(args: argparse.Namespace) -> int:
    return _run(lambda: _system_prompt(args, _text_arg(args.text)))


def _cmd_system_prompt_clear(args: argparse.Namespace) -> int:
    return _run(lambda: _system_prompt(args, None))


async def _system_prompt(args: argparse.Namespace, text: str | None) -> int:
    async with _client(args) as client:
        result = await client.assistant.set_system_prompt(text)
    model = f" (model {result.model})" if result.model else ""
    if result.system_prompt:
        print(f"System prompt set{model}.", flush=True)
    else:
        print(f"System prompt cleared: Samsar's default prompt applies{model}.", flush=True)
    return EXIT_OK


def _cmd_mock_server(args: argparse.Namespace) -> int:
    from ..testing.__main__ import serve

    argv = [
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--credits",
        str(args.credits),
        "--sessions",
        str(args.sessions),
        "--latency",
        repr(args.latency),
    ]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(argv))
    return EXIT_OK
