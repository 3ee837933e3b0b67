"""``main``: parse the command line, run the command, turn its outcome into an exit code."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TYPE_CHECKING

from .exits import EXIT_INTERRUPTED, EXIT_USAGE, _describe, _err, _Interrupted, exit_code_for
from .parser import build_parser

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

__all__ = ["main"]


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
