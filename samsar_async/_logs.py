"""``SAMSAR_LOG``: logging to stderr, switched on by an environment variable.

``SAMSAR_LOG=debug`` or ``SAMSAR_LOG=info`` (any case), read once when
:mod:`samsar_async` is imported, adds a stderr handler to the
``samsar_async`` logger and sets its level. Unset or empty: nothing happens
(the library then logs only to the handlers the application configures).
Another value is ignored with a :class:`RuntimeWarning`.

What each level shows:

- ``info``: the pool opening and closing, a call that failed (after its
  retries) and a call that succeeded only after retries, plus the warnings
  (each retry, an exhausted retry budget);
- ``debug``: also every attempt (status, elapsed time, credits charged).

Records about a call carry ``method``, ``path``, ``session_id``,
``idempotency_key``, ``attempt`` and ``status`` as attributes (the logging
``extra``), for structured (JSON) formatters. The API key never appears.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Final

__all__ = ["LOG_ENV", "setup_from_env"]

LOG_ENV: Final = "SAMSAR_LOG"
"""The environment variable read at import."""

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO}
_HANDLER_NAME: Final = "samsar_async.SAMSAR_LOG"
FORMAT: Final = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
"""The format of the lines ``SAMSAR_LOG`` writes to stderr."""


def setup_from_env() -> None:
    """Apply ``$SAMSAR_LOG`` (see the module docstring); a second call changes nothing."""
    value = os.environ.get(LOG_ENV, "").strip().lower()
    if not value:
        return
    level = _LEVELS.get(value)
    if level is None:
        warnings.warn(
            f"{LOG_ENV}={value!r} ignored: use debug or info", RuntimeWarning, stacklevel=2
        )
        return
    logger = logging.getLogger("samsar_async")
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
