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
It is UTF-8, with LF or CRLF line ends; a UTF-8 byte order mark at the very
start of the file is accepted and ignored (as Python's ``utf-8-sig`` codec
does: it is not part of line 1, nor of line 1's key). A BOM anywhere else, or
bytes that are not UTF-8, make that line invalid (an error row).

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

A line's own ``idempotency_key`` must be unique (compared without surrounding
whitespace): it belongs to the first line of the file that carries it, or to
the line a row of ``RESULTS.jsonl`` already carries it for. Any other line
repeating it is not sent (the server would answer it with the first line's
recorded response) and gets an ``InvalidArgumentError`` row such as ``line 7:
idempotency_key 'k-1' is already used by line 2; not sent ...``; that row's
``idempotency_key`` is the line's derived key. Only the keys are held in
memory while the file is checked, never the lines.
"""

from __future__ import annotations

from .._version import __version__ as __version__
from ..requests_file import BATCH_KEY_NAMESPACE, batch_idempotency_key, read_done_lines
from .app import main
from .batch import BatchSummary, run_batch
from .exits import (
    EXIT_API,
    EXIT_AUTH,
    EXIT_BATCH_FAILED,
    EXIT_CONNECTION,
    EXIT_CREDITS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    CLIError,
    exit_code_for,
)
from .parser import build_parser

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
