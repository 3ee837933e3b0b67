"""``samsar``: the command line of samsar-async.

::

    samsar complete SESSION_ID TEXT [--image PATH]... [--max-output-tokens N] [--json]
    samsar image SESSION_ID PROMPT --out DIR [--size WxH] [--quality Q] [--format F]
    samsar system-prompt set TEXT
    samsar system-prompt clear
    samsar batch REQUESTS.jsonl --out RESULTS.jsonl [--concurrency N]
                 [--images-dir DIR] [--min-credits X]
    samsar mock-server [--host 127.0.0.1] [--port 8080]
    samsar demo [--out ./samsar-demo]

Global options (before or after the command): ``--api-key`` (default
``$SAMSAR_API_KEY``; prefer the variable: a command-line argument is visible
to other local users), ``--base-url`` (default ``$SAMSAR_BASE_URL``, else
``https://api.samsar.one/v1``), ``--timeout SECONDS`` (the whole call, retries
included) and ``--debug`` (library debug log and tracebacks on stderr). The
API key is never printed. ``TEXT`` / ``PROMPT`` may be ``-`` to read stdin.

Exit codes
----------
====  ==============================================================
0     success (``batch``: every line has succeeded)
1     unexpected error (a bug, or a local I/O error)
2     usage error: bad arguments or options, a missing or unreadable file
3     authentication: no API key, or it was refused (401), or the session
      belongs to another account (403)
4     credits: insufficient credits (402), or ``--min-credits`` reached
5     any other API error (400, 404, 409, 422, 429, 5xx, invalid answer)
6     connection error or timeout
7     ``batch``: some lines failed (their rows say why; re-run to retry them)
130   interrupted by Ctrl-C (SIGINT); 143 for SIGTERM
====  ==============================================================

``batch`` exits 3 when the API key is refused (it stops at the first 401),
else 4 when any line failed for credits, else 7 when any line failed.
Errors are printed as one line on stderr: the error class and its message.

Batch files, resuming and idempotency keys
------------------------------------------
``REQUESTS.jsonl`` holds one JSON object per line: ``session_id`` and
optionally ``input``, ``max_output_tokens``, ``temperature``, ``top_p``,
``reasoning``, ``metadata``, ``tools``, ``tool_choice``, ``extra_body`` and
``idempotency_key``. Blank lines are skipped. The file is read lazily.

Each finished line appends one JSON row to ``RESULTS.jsonl`` (flushed at once;
fsynced at the end): ``line`` (1-based), ``session_id``, ``ok``,
``response_id``, ``output_text``, ``credits_charged`` and
``credits_remaining`` (decimal strings), ``images`` (saved paths), ``error``
(``{type, message, status}`` or null) and ``idempotency_key``.

Running the same command again resumes: the rows already in ``RESULTS.jsonl``
are read first (the newest row of a line wins; a torn last row from a crash is
ignored) and the lines whose newest row has ``ok: true`` are skipped; failed
and missing lines are sent again. Lines are identified by line number, so do
not edit a requests file between runs that share one results file.

Every line is sent with the ``Idempotency-Key`` :func:`batch_idempotency_key`
derives from the file and the line, the same in every run: the RFC 4122
version-5 UUID (``uuid.uuid5``) in namespace :data:`BATCH_KEY_NAMESPACE` of
the name ``<absolute, symlink-resolved path of REQUESTS.jsonl>\\n<line
number>\\n<SHA-256 hex of the line's bytes without surrounding
whitespace>``. A line's own ``idempotency_key`` field takes precedence. A
call that was in flight when a run crashed is therefore repeated with the same
key, and a server that honours idempotency keys (the mock does) answers it
from its record without charging again. Moving or renaming the requests file
changes the keys (lines already done are still skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import attrs

from ._version import __version__
from .batchfile import (
    BATCH_KEY_NAMESPACE,
    ResultsWriter,
    batch_idempotency_key,
    count_todo,
    iter_requests,
    read_done_lines,
    result_row,
)
from .client import AsyncSamsar
from .config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, DEFAULT_TIMEOUT
from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    CreditBudgetExceeded,
    ImageDecodeError,
    InsufficientCreditsError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from .inputs import CompletionRequest, InputImage, Message

if TYPE_CHECKING:
    from .models import Credits

__all__ = [
    "BATCH_KEY_NAMESPACE",
    "EXIT_API",
    "EXIT_AUTH",
    "EXIT_BATCH_FAILED",
    "EXIT_CONNECTION",
    "EXIT_CREDITS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "BatchSummary",
    "CLIError",
    "batch_idempotency_key",
    "build_parser",
    "exit_code_for",
    "main",
    "read_done_lines",
    "run_batch",
]

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_AUTH: Final = 3
EXIT_CREDITS: Final = 4
EXIT_API: Final = 5
EXIT_CONNECTION: Final = 6
EXIT_BATCH_FAILED: Final = 7
EXIT_INTERRUPTED: Final = 130
"""128 + SIGINT; SIGTERM gives 128 + 15."""

DEFAULT_BATCH_CONCURRENCY: Final = 16
DEFAULT_DEMO_DIR: Final = "samsar-demo"
DEMO_LATENCY: Final = 0.02
"""Seconds each completion of the demo's mock server takes."""
MAX_LOGGED_FAILURES: Final = 10
"""Failed batch lines reported on stderr one by one; the rest are only in the results."""

_PROG: Final = "samsar"
_INSTALL_HINT: Final = 'the progress bar needs rich: pip install "samsar-async[cli]"'

BATCH_EPILOG: Final = """\
batch outcome:
  exit 0 when every line has succeeded; else 3 if the API key was refused (the
  batch stops at the first 401), else 4 if a line failed for credits (402 or
  --min-credits), else 7. Result rows: line, session_id, ok, response_id,
  output_text, credits_charged, credits_remaining, images, error
  {type, message, status}, idempotency_key.

"""

EPILOG: Final = f"""\
environment:
  {API_KEY_ENV}    the API key (used when --api-key is not given; preferred)
  {BASE_URL_ENV}   the base URL (default {DEFAULT_BASE_URL})

exit codes:
  0    success (batch: every line has succeeded)
  1    unexpected error (a bug, or a local I/O error)
  2    usage error: bad arguments or options, a missing or unreadable file
  3    authentication: no API key, or it was refused (401), or the session
       belongs to another account (403)
  4    credits: insufficient credits (402), or --min-credits reached
  5    any other API error (400, 404, 409, 422, 429, 5xx, invalid answer)
  6    connection error or timeout
  7    batch: some lines failed (see RESULTS.jsonl; re-run the command to retry them)
  130  interrupted by Ctrl-C (143: SIGTERM)
"""


class CLIError(Exception):
    """A failure the CLI reports as one line, with its own exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception that ended a command."""
    if isinstance(exc, CLIError):
        return exc.code
    if isinstance(exc, InvalidArgumentError):
        return EXIT_USAGE
    if isinstance(exc, (AuthenticationError, PermissionDeniedError)):
        return EXIT_AUTH
    if isinstance(exc, (InsufficientCreditsError, CreditBudgetExceeded)):
        return EXIT_CREDITS
    if isinstance(exc, APIConnectionError):
        return EXIT_CONNECTION
    if isinstance(exc, (APIError, ImageDecodeError)):
        return EXIT_API
    return EXIT_UNEXPECTED


def _wrap(text: str) -> str:
    """Fill each paragraph (``\\n``-separated) of a help text to 78 columns."""
    return "\n".join(textwrap.fill(paragraph, 78) for paragraph in text.split("\n"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    """``ClassName: message`` on one line (our own errors: the message only)."""
    message = _one_line(str(exc))
    if isinstance(exc, CLIError):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _err(message: str) -> None:
    print(f"{_PROG}: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number >= 0")
    return value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("must be a finite number >= 0")
    return value


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On the subcommands the defaults are suppressed so they never overwrite
    # a value given before the command.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=default(None),
        help=f"API key (default: ${API_KEY_ENV}; prefer the variable, arguments are visible)",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        default=default(None),
        help=f"API base URL (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=default(None),
        help=f"deadline of each call, retries included (default: {DEFAULT_TIMEOUT.total:g})",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log the library's debug lines and print tracebacks on stderr",
    )


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "off"),
        default="auto",
        help="progress display on stderr: a rich bar (needs the cli extra), plain lines, "
        "or none; auto: rich on a terminal, else plain (default: auto)",
    )
    parser.add_argument(
        "--progress-every",
        metavar="N",
        type=_positive_int,
        default=None,
        help="plain progress: one line every N results (default: every 10%%, at most 1000)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``samsar`` argument parser."""
    formatter = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=_wrap(
            "Command line client of the Samsar Assistant API (samsar-async). "
            "Run `samsar demo` to try everything offline."
        ),
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _add_global_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"samsar-async {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(
        name: str, help: str, description: str, epilog: str = ""
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help,
            description=_wrap(description),
            epilog=epilog + EPILOG,
            formatter_class=formatter,
        )

    p = command(
        "complete",
        "one completion on a session",
        "Send TEXT (and images) as a turn on SESSION_ID; print the answer's text on stdout "
        "and the credits on stderr.",
    )
    p.add_argument("session_id", metavar="SESSION_ID", help="the Samsar session id")
    p.add_argument("text", metavar="TEXT", help="the user message; - reads it from stdin")
    p.add_argument(
        "--image",
        metavar="PATH",
        action="append",
        default=[],
        help="attach a PNG, JPEG, WebP or GIF file (repeatable)",
    )
    p.add_argument("--max-output-tokens", metavar="N", type=_positive_int, default=None)
    p.add_argument("--temperature", metavar="T", type=float, default=None, help="0 to 2")
    p.add_argument(
        "--json", action="store_true", help="print the raw JSON response instead of the text"
    )
    p.set_defaults(handler=_cmd_complete)

    p = command(
        "image",
        "generate images on a session and save them",
        "Force the image_generation tool for PROMPT on SESSION_ID, save the images into "
        "--out and print the saved paths, one per line.",
    )
    p.add_argument("session_id", metavar="SESSION_ID", help="the Samsar session id")
    p.add_argument("prompt", metavar="PROMPT", help="what to draw; - reads it from stdin")
    p.add_argument("--out", metavar="DIR", required=True, help="directory to save into")
    p.add_argument("--size", metavar="WxH", default=None, help='e.g. "1024x1024" or "auto"')
    p.add_argument("--quality", choices=("low", "medium", "high", "auto"), default=None)
    p.add_argument("--format", choices=("png", "jpeg", "webp"), default=None)
    p.set_defaults(handler=_cmd_image)

    p = command(
        "system-prompt",
        "set or clear the account-level system prompt",
        "Store (set TEXT) or clear the account-level system prompt.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    sp = actions.add_parser(
        "set",
        parents=[common],
        help="store TEXT as the system prompt",
        description="Store TEXT as the account-level system prompt (- reads stdin).",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    sp.add_argument("text", metavar="TEXT", help="the prompt; - reads it from stdin")
    sp.set_defaults(handler=_cmd_system_prompt_set)
    sp = actions.add_parser(
        "clear",
        parents=[common],
        help="clear it (Samsar's default prompt applies again)",
        description="Clear the account-level system prompt.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    sp.set_defaults(handler=_cmd_system_prompt_clear)

    p = command(
        "batch",
        "run a JSONL file of completions, resumably",
        "Run every line of REQUESTS.jsonl (one JSON object per line: session_id, input and "
        "options) at bounded concurrency, appending one result row per line to --out as it "
        "finishes. Re-running the same command skips the lines that succeeded and retries "
        "the others, with the same idempotency keys.\n\n"
        "Each line is sent with Idempotency-Key = uuid5(" + str(BATCH_KEY_NAMESPACE) + ", "
        '"<absolute path of REQUESTS.jsonl>\\n<line number>\\n<sha256 hex of the stripped '
        'line>") unless the line has its own idempotency_key, so a call in flight at a crash '
        "is replayed, not charged again, by a server that honours idempotency keys. "
        "Details: `pydoc samsar_async.cli`.",
        BATCH_EPILOG,
    )
    p.add_argument("requests", metavar="REQUESTS.jsonl", help="the requests, one per line")
    p.add_argument("--out", metavar="RESULTS.jsonl", required=True, help="results file (appended)")
    p.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_BATCH_CONCURRENCY,
        help=f"calls in flight at once (default: {DEFAULT_BATCH_CONCURRENCY})",
    )
    p.add_argument(
        "--images-dir",
        metavar="DIR",
        default=None,
        help="where generated images are saved (default: RESULTS-images next to --out, "
        "created only when a response has images)",
    )
    p.add_argument(
        "--min-credits",
        metavar="X",
        type=_decimal,
        default=None,
        help="send no new call once the credits remaining fall below X",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        nargs="?",
        const="",
        default=None,
        help="run the batch on Ray Data (needs the ray extra): the cluster at ADDRESS, "
        "else $RAY_ADDRESS, else a local cluster; same rows, resume rules and keys",
    )
    p.add_argument(
        "--actors",
        metavar="N",
        type=_positive_int,
        default=2,
        help="with --ray: actors, each with one pooled client (default: 2)",
    )
    _add_progress_option(p)
    p.set_defaults(handler=_cmd_batch)

    p = command(
        "mock-server",
        "serve a local mock of the API (for your tests)",
        "Serve samsar_async.testing.MockSamsarServer until Ctrl-C; it prints the "
        f"{BASE_URL_ENV}, {API_KEY_ENV} and session ids to use.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=_non_negative_int, default=8080, help="port, 0 for any (default: 8080)"
    )
    p.add_argument(
        "--credits", type=_decimal, default=Decimal(1000), help="starting credits (default: 1000)"
    )
    p.add_argument(
        "--sessions",
        type=_non_negative_int,
        default=1,
        help="sessions to pre-create (default: 1)",
    )
    p.add_argument(
        "--latency",
        type=_non_negative_float,
        default=0.0,
        help="seconds each completion takes (default: 0)",
    )
    p.set_defaults(handler=_cmd_mock_server)

    p = command(
        "demo",
        "a tour against an in-process mock server (no API key, no network)",
        "Start a mock server in this process, set a system prompt, hold a three-turn "
        "conversation, generate and save an image and run a 200-request batch, then say "
        "where the files are and what it cost. Needs no API key and no network.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_DEMO_DIR,
        help=f"directory for the demo's files (default: ./{DEFAULT_DEMO_DIR})",
    )
    _add_progress_option(p)
    p.set_defaults(handler=_cmd_demo)
    return parser


# --------------------------------------------------------------------------- running


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``samsar`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit code (the console script passes it to ``sys.exit``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.debug:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        logging.getLogger("samsar_async").setLevel(logging.DEBUG)
    try:
        return handler(args)
    except _Interrupted as exc:
        _err("interrupted")
        return 128 + exc.signum
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        _err(f"error: {_describe(exc)}")
        return exit_code_for(exc)


def _run(factory: Callable[[], Awaitable[int]]) -> int:
    """Run an async command; SIGINT / SIGTERM cancel it cleanly (then ``_Interrupted``)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            task.cancel()

        installed: list[int] = []
        signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
        for signum in signums:
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - Windows
                continue
            installed.append(signum)
        try:
            return await factory()
        except asyncio.CancelledError:
            if received:
                raise _Interrupted(received[0]) from None
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    return asyncio.run(runner())


def _client(args: argparse.Namespace, **options: Any) -> AsyncSamsar:
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if not api_key or not api_key.strip():
        raise CLIError(f"no API key: set {API_KEY_ENV} or pass --api-key", EXIT_AUTH)
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    return AsyncSamsar(api_key, base_url=args.base_url, timeout=timeout, **options)


def _text_arg(value: str) -> str:
    if value != "-":
        return value
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _fmt_decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _fmt_credits(value: Decimal | None) -> str:
    """A sum of credits for people: no exponent, no trailing zeros."""
    return "unknown" if value is None else format(value.normalize(), "f")


def _credits_line(credits: Credits) -> str:
    charged = _fmt_decimal(credits.charged) or "unknown"
    remaining = _fmt_decimal(credits.remaining) or "unknown"
    return f"credits: charged {charged}, remaining {remaining}"


# --------------------------------------------------------------------------- simple commands


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
        chat = client.assistant.session(args.session_id)
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
    paths = await response.save_images(args.out)
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
    from .testing.__main__ import serve

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


# --------------------------------------------------------------------------- progress


class _Progress(Protocol):
    def advance(self, ok: bool, credits: Decimal | None) -> None: ...

    def log(self, message: str) -> None: ...

    def close(self) -> None: ...


class _Counts:
    """Counters shared by the progress displays."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.credits = Decimal(0)
        self.started = time.monotonic()

    def add(self, ok: bool, credits: Decimal | None) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        if credits is not None:
            self.credits += credits

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        rate = self.rate()
        if not rate:
            return "-:--:--"
        seconds = int((self.total - self.done) / rate)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _NoProgress:
    def advance(self, ok: bool, credits: Decimal | None) -> None:
        pass

    def log(self, message: str) -> None:
        _err(message)

    def close(self) -> None:
        pass


class _PlainProgress:
    """One line on stderr every ``every`` results (default: every 10%, at most 1000)."""

    def __init__(self, label: str, total: int, every: int | None = None) -> None:
        self._label = label
        self._counts = _Counts(total)
        self._every = every or max(1, min(1000, total // 10))

    def advance(self, ok: bool, credits: Decimal | None) -> None:
        counts = self._counts
        counts.add(ok, credits)
        if counts.done % self._every == 0 or counts.done == counts.total:
            percent = 100 * counts.done // counts.total if counts.total else 100
            _err(
                f"{self._label}: {counts.done}/{counts.total} ({percent}%), "
                f"{counts.failed} failed, {counts.rate():.1f}/s, ETA {counts.eta()}, "
                f"{_fmt_credits(counts.credits)} credits"
            )

    def log(self, message: str) -> None:
        _err(message)

    def close(self) -> None:
        pass


class _RichProgress:
    """A rich progress bar on stderr: done/total, failed, rate, ETA, credits spent."""

    def __init__(self, label: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._counts = _Counts(total)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[credits]} credits"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(label, total=total, failed=0, rate="0.0", credits="0")
        self._progress.start()

    def advance(self, ok: bool, credits: Decimal | None) -> None:
        counts = self._counts
        counts.add(ok, credits)
        self._progress.update(
            self._task,
            advance=1,
            failed=counts.failed,
            rate=f"{counts.rate():.1f}",
            credits=_fmt_credits(counts.credits),
        )

    def log(self, message: str) -> None:
        self._progress.console.print(f"{_PROG}: {message}", markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def _make_progress(mode: str, label: str, total: int, every: int | None) -> _Progress:
    if mode == "off":
        return _NoProgress()
    if mode == "plain" or (mode == "auto" and not sys.stderr.isatty()):
        return _PlainProgress(label, total, every)
    try:
        return _RichProgress(label, total)
    except ImportError:
        _err(f"note: {_INSTALL_HINT}; showing plain progress")
        return _PlainProgress(label, total, every)


# --------------------------------------------------------------------------- batch


def _prepare_batch(
    requests_path: str | os.PathLike[str], out: Path, summary: BatchSummary
) -> tuple[Path, set[int], int]:
    """Read what earlier runs did; returns (requests path, done lines, lines to do)."""
    source = Path(requests_path).resolve()
    done, summary.unreadable_rows = read_done_lines(out)
    summary.lines, todo = count_todo(source, done)
    summary.skipped = summary.lines - todo
    return source, done, todo


@attrs.define
class BatchSummary:
    """What one ``run_batch`` did."""

    lines: int = 0
    """Non-blank lines in the requests file."""
    skipped: int = 0
    """Lines skipped because an earlier run succeeded on them."""
    ok: int = 0
    failed: int = 0
    credits_charged: Decimal = Decimal(0)
    """Sum of ``x-credits-charged`` over this run's successful lines."""
    credits_remaining: Decimal | None = None
    images: int = 0
    errors: Counter[str] = attrs.field(factory=Counter)
    """Failures of this run by error type."""
    credit_failures: int = 0
    unreadable_rows: int = 0
    aborted: BaseException | None = None
    """The error that stopped the batch early (a refused API key)."""

    @property
    def exit_code(self) -> int:
        """The documented exit code of ``samsar batch`` for this outcome."""
        if self.aborted is not None:
            return exit_code_for(self.aborted)
        if self.credit_failures:
            return EXIT_CREDITS
        return EXIT_BATCH_FAILED if self.failed else EXIT_OK


async def run_batch(
    client: AsyncSamsar,
    requests_path: str | os.PathLike[str],
    results_path: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    concurrency: int = DEFAULT_BATCH_CONCURRENCY,
    min_credits: Decimal | None = None,
    progress: str = "auto",
    progress_every: int | None = None,
    label: str = "batch",
) -> BatchSummary:
    """Run (or resume) the batch of ``samsar batch``; see the module docstring.

    Failed lines are results, not exceptions. A refused API key (401) stops
    the batch (``summary.aborted``). Cancellation stops it too; every row
    written so far is flushed and fsynced.
    """
    out = Path(results_path)
    pictures = Path(images_dir) if images_dir is not None else out.parent / f"{out.stem}-images"
    summary = BatchSummary()
    source, done, todo = _prepare_batch(requests_path, out, summary)
    if summary.unreadable_rows:
        _err(f"note: ignored {summary.unreadable_rows} unreadable row(s) in {out}")
    if not todo:
        return summary
    lines: dict[int, int] = {}
    requests = iter_requests(source, done, lines)
    recorder = _Recorder(
        summary,
        ResultsWriter(out),
        _make_progress(progress, label, todo, progress_every),
        label,
        out,
    )
    try:
        # Malformed lines travel as non-CompletionRequest items: complete_many turns
        # them into error results without sending anything; their rows name the line.
        run = client.assistant.complete_many(
            cast("Iterator[CompletionRequest]", requests),
            concurrency=concurrency,
            min_credits=min_credits,
        )
        async with run:
            async for result in run:
                line = lines.pop(result.index)
                row, error = await result_row(result, line, pictures)
                if recorder.record(row, error):
                    break
    finally:
        requests.close()
        recorder.close()
    return summary


class _Recorder:
    """Writes result rows and keeps the summary and the progress display up to date."""

    def __init__(
        self,
        summary: BatchSummary,
        writer: ResultsWriter,
        display: _Progress,
        label: str,
        out: Path,
    ) -> None:
        self.summary = summary
        self.writer = writer
        self.display = display
        self.label = label
        self.out = out
        self.logged = 0

    def record(self, row: dict[str, Any], error: BaseException | None) -> bool:
        """Account for one row; True when the batch must stop (the API key was refused)."""
        summary = self.summary
        self.writer.write(row)
        charged = Decimal(row["credits_charged"]) if row["ok"] and row["credits_charged"] else None
        self.display.advance(row["ok"], charged)
        if row["credits_remaining"] is not None:
            summary.credits_remaining = Decimal(row["credits_remaining"])
        if row["ok"]:
            summary.ok += 1
            summary.images += len(row["images"])
            if charged is not None:
                summary.credits_charged += charged
            return False
        summary.failed += 1
        info = row["error"]
        summary.errors[info["type"]] += 1
        if info["type"] in _CREDIT_ERRORS:
            summary.credit_failures += 1
        if self.logged < MAX_LOGGED_FAILURES:
            self.logged += 1
            line = row["line"]
            message = info["message"]
            where = "" if message.startswith(f"line {line}:") else f"line {line}: "
            self.display.log(f"{self.label}: {where}{info['type']}: {message}")
            if self.logged == MAX_LOGGED_FAILURES:
                self.display.log(f"{self.label}: further failures are only in {self.out}")
        if info["type"] == AuthenticationError.__name__:
            summary.aborted = error or AuthenticationError(
                info["message"], status_code=info["status"] or 401
            )
            return True
        return False

    def close(self) -> None:
        try:
            self.display.close()
        finally:
            self.writer.close()


_CREDIT_ERRORS: Final = frozenset(
    {InsufficientCreditsError.__name__, CreditBudgetExceeded.__name__}
)


def _cmd_batch(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _batch_ray(args)
    return _run(lambda: _batch(args))


def _batch_ray(args: argparse.Namespace) -> int:
    """``samsar batch --ray``: the same batch through Ray Data (blocking, no event loop here)."""
    _check_batch_paths(args.requests, args.out)
    try:
        import ray

        from .integrations.ray import run_batch_file
    except ImportError:
        raise CLIError('--ray needs the ray extra: pip install "samsar-async[ray]"') from None
    key = args.api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise CLIError(f"no API key: set {API_KEY_ENV} or pass --api-key", EXIT_AUTH)
    # A local cluster's workers inherit this environment; on a cluster, set the
    # variable where `ray start` runs. The key is never pickled or logged.
    os.environ[API_KEY_ENV] = key
    started = time.monotonic()
    out = Path(args.out)
    pictures = Path(args.images_dir) if args.images_dir else out.parent / f"{out.stem}-images"
    summary = BatchSummary()
    _, done, todo = _prepare_batch(args.requests, out, summary)
    if todo:
        ray.init(
            address=args.ray or None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        display = _make_progress(args.progress, "batch", todo, args.progress_every)
        recorder = _Recorder(summary, ResultsWriter(out), display, "batch", out)
        base_url = args.base_url or os.environ.get(BASE_URL_ENV)
        try:
            for row in run_batch_file(
                args.requests,
                done,
                images_dir=pictures,
                base_url=base_url,
                actors=args.actors,
                concurrency=args.concurrency,
            ):
                if recorder.record(row, None):
                    break
        finally:
            recorder.close()
            ray.shutdown()
    _report_batch(summary, args.out, time.monotonic() - started)
    if summary.aborted is not None:
        _err(f"error: {_describe(summary.aborted)} (batch stopped; fix it and re-run)")
    return summary.exit_code


def _check_batch_paths(requests: str, out: str) -> None:
    source = Path(requests)
    if not source.is_file():
        raise CLIError(f"{requests}: no such file")
    try:
        with open(source, "rb"):
            pass
    except OSError as exc:
        raise CLIError(f"{requests}: {exc.strerror or exc}") from None
    target = Path(out)
    if target.exists() and target.resolve() == source.resolve():
        raise CLIError("--out must not be the requests file")
    if target.is_dir():
        raise CLIError(f"--out {out} is a directory")


async def _batch(args: argparse.Namespace) -> int:
    _check_batch_paths(args.requests, args.out)
    started = time.monotonic()
    options: dict[str, Any] = {}
    if args.concurrency > 100:
        options["max_connections"] = args.concurrency
    summary = BatchSummary()
    try:
        async with _client(args, **options) as client:
            summary = await run_batch(
                client,
                args.requests,
                args.out,
                images_dir=args.images_dir,
                concurrency=args.concurrency,
                min_credits=args.min_credits,
                progress=args.progress,
                progress_every=args.progress_every,
            )
    except asyncio.CancelledError:
        _err(f"batch interrupted; results so far are in {args.out}: re-run the same command")
        raise
    _report_batch(summary, args.out, time.monotonic() - started)
    if summary.aborted is not None:
        _err(f"error: {_describe(summary.aborted)} (batch stopped; fix it and re-run)")
    return summary.exit_code


def _report_batch(summary: BatchSummary, out: str, elapsed: float) -> None:
    if summary.lines and summary.skipped == summary.lines:
        _err(f"batch: nothing to do: all {summary.lines} lines already succeeded (see {out})")
        return
    parts = [f"batch: {summary.ok} ok, {summary.failed} failed"]
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (done earlier)")
    parts.append(f"of {summary.lines} lines in {elapsed:.1f}s")
    text = ", ".join(parts[:-1]) + " " + parts[-1]
    text += f"; {_fmt_credits(summary.credits_charged)} credits charged"
    if summary.credits_remaining is not None:
        text += f", {_fmt_credits(summary.credits_remaining)} remaining"
    if summary.images:
        text += f"; {summary.images} image(s) saved"
    _err(text)
    if summary.errors:
        by_type = ", ".join(f"{name} x{count}" for name, count in summary.errors.most_common())
        _err(f"batch: failures: {by_type}; re-run the same command to retry them (rows in {out})")


# --------------------------------------------------------------------------- demo


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
    from .testing import MockSamsarServer

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
            chat = client.assistant.session(session_id)
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
            paths = await image.save_images(out)
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
