"""How a ``samsar`` command ends: the documented exit codes, and one-line errors on stderr."""

from __future__ import annotations

import signal
import sys
from typing import Final

from ..errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    CreditBudgetExceededError,
    ImageDecodeError,
    InsufficientCreditsError,
    InvalidArgumentError,
    PermissionDeniedError,
)

__all__ = [
    "EXIT_API",
    "EXIT_AUTH",
    "EXIT_BATCH_FAILED",
    "EXIT_CONNECTION",
    "EXIT_CREDITS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "CLIError",
    "exit_code_for",
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

_PROG: Final = "samsar"


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
    if isinstance(exc, (InsufficientCreditsError, CreditBudgetExceededError)):
        return EXIT_CREDITS
    if isinstance(exc, APIConnectionError):
        return EXIT_CONNECTION
    if isinstance(exc, (APIError, ImageDecodeError)):
        return EXIT_API
    return EXIT_UNEXPECTED


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
