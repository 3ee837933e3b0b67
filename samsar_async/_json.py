"""JSON encoding and decoding: orjson when installed (the ``speedups`` extra), else stdlib."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["HAVE_ORJSON", "dumps", "loads"]

dumps: Callable[[Any], bytes]
loads: Callable[[bytes | str], Any]

try:
    import orjson
except ImportError:  # pragma: no cover - exercised when the extra is absent
    HAVE_ORJSON = False
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

    def dumps(obj: Any) -> bytes:
        """Compact UTF-8 JSON."""
        return _encode(obj).encode("utf-8")

    _decode = json.loads

    def loads(data: bytes | str) -> Any:
        """Decoded JSON; too deep a nesting is a ``ValueError`` (as with orjson), not a
        ``RecursionError``."""
        try:
            return _decode(data)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
else:
    HAVE_ORJSON = True
    dumps = orjson.dumps
    loads = orjson.loads
