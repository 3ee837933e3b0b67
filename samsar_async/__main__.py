"""``python -m samsar_async``: the ``samsar`` command line (see :mod:`samsar_async.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
