"""The ``samsar`` argument parser: commands, options, argument types and help texts."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

from .._validators import check
from .._version import __version__
from ..config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, DEFAULT_TIMEOUT
from ..errors import InvalidArgumentError
from ..inputs import CompletionRequest
from ..requests_file import BATCH_KEY_NAMESPACE
from .batch import DEFAULT_BATCH_CONCURRENCY, _cmd_batch
from .commands import (
    _cmd_complete,
    _cmd_image,
    _cmd_mock_server,
    _cmd_system_prompt_clear,
    _cmd_system_prompt_set,
)
from .demo import DEFAULT_DEMO_DIR, _cmd_demo
from .exits import _PROG

__all__ = ["build_parser"]

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


def _wrap(text: str) -> str:
    """Fill each paragraph (``\\n``-separated) of a help text to 78 columns."""
    return "\n".join(textwrap.fill(paragraph, 78) for paragraph in text.split("\n"))


# --------------------------------------------------------------------------- argument types

_Number = TypeVar("_Number", int, float, Decimal)


def _number(
    name: str,
    convert: Callable[[str], _Number],
    noun: str,
    accept: Callable[[_Number], bool],
    requirement: str,
    invalid: type[Exception] = ValueError,
) -> Callable[[str], _Number]:
    """An argparse ``type``: ``convert`` the text (``invalid``: "not <noun>"), then
    ``accept`` the value or fail with ``requirement``."""

    def parse(text: str) -> _Number:
        try:
            value = convert(text)
        except invalid:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(requirement)
        return value

    parse.__name__ = parse.__qualname__ = name
    return parse


_INF: Final = float("inf")

_positive_int = _number("_positive_int", int, "an integer", lambda v: v >= 1, "must be >= 1")
_non_negative_int = _number(
    "_non_negative_int", int, "an integer", lambda v: v >= 0, "must be >= 0"
)
_positive_float = _number(
    "_positive_float", float, "a number", lambda v: 0 < v < _INF, "must be a positive number"
)
_non_negative_float = _number(
    "_non_negative_float", float, "a number", lambda v: 0 <= v < _INF, "must be a number >= 0"
)
_decimal = _number(
    "_decimal",
    Decimal,
    "a decimal number",
    lambda v: v.is_finite() and v >= 0,
    "must be a finite number >= 0",
    InvalidOperation,
)


def _request_field(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` for a :class:`CompletionRequest` field: ``convert`` the
    text, then check it with that field's own validator (the one definition)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {name}: {text!r}") from None
        try:
            return check(CompletionRequest, name, value)
        except InvalidArgumentError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    parse.__name__ = parse.__qualname__ = name
    return parse


# --------------------------------------------------------------------------- options and commands


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
        name: str,
        help: str,
        description: str,
        epilog: str = "",
        *,
        under: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        return under.add_parser(
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
    p.add_argument(
        "--max-output-tokens",
        metavar="N",
        type=_request_field("max_output_tokens", int),
        default=None,
    )
    p.add_argument(
        "--temperature",
        metavar="T",
        type=_request_field("temperature", float),
        default=None,
        help="0 to 2",
    )
    p.add_argument(
        "--top-p", metavar="P", type=_request_field("top_p", float), default=None, help="0 to 1"
    )
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
    sp = command(
        "set",
        "store TEXT as the system prompt",
        "Store TEXT as the account-level system prompt (- reads stdin).",
        under=actions,
    )
    sp.add_argument("text", metavar="TEXT", help="the prompt; - reads it from stdin")
    sp.set_defaults(handler=_cmd_system_prompt_set)
    sp = command(
        "clear",
        "clear it (Samsar's default prompt applies again)",
        "Clear the account-level system prompt.",
        under=actions,
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
