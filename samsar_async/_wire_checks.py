"""One validation boundary for what the SDK sends: JSON values and header fields.

Pure checks, no I/O. Everything they refuse raises
:class:`~samsar_async.errors.InvalidArgumentError` naming the field (with the
path to the value inside it), before anything is sent.

- :func:`check_json` walks a value given by the caller that becomes part of a
  request body (``extra_body``, ``metadata``, ``reasoning``, dict inputs, tool
  dicts, ``ImageGenerationTool.extra``...). It refuses what orjson and the
  standard library's ``json`` would treat differently (so a request is the same
  with and without the ``speedups`` extra): NaN and infinities, keys that are
  not strings, lone surrogates, integers beyond 64 bits, other types; and values
  nested deeper than :data:`~samsar_async.config.MAX_JSON_DEPTH` or holding more
  than :data:`~samsar_async.config.MAX_JSON_NODES` values.
- :func:`check_header` / :func:`check_headers`: header names are RFC 9110
  tokens, values are strings without control characters (CR, LF, NUL...).

A plain string costs nothing: callers only walk values that hold the caller's
dicts or lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from .config import MAX_JSON_DEPTH, MAX_JSON_NODES
from .errors import InvalidArgumentError

__all__ = ["check_header", "check_headers", "check_json", "json_error"]

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE_CONTROL: Final = re.compile("[\\x00-\\x08\\x0a-\\x1f\\x7f]")
_FRAMING: Final = frozenset({"content-length", "transfer-encoding"})
_TYPES: Final = "only str, int, float, bool, None, dicts and lists/tuples can be sent as JSON"
_surrogate: re.Pattern[str] | None = None


def _find_surrogate(text: str) -> re.Match[str] | None:
    """The first lone surrogate (U+D800..U+DFFF) in ``text``, if any. The pattern is
    compiled on first use: a character class beyond U+00FF costs the regex compiler
    about 3 M instructions, which `import samsar_async` should not pay."""
    global _surrogate
    pattern = _surrogate
    if pattern is None:
        pattern = _surrogate = re.compile("[\\ud800-\\udfff]")
    return pattern.search(text)


class _Refused(Exception):
    """Raised inside the walk; ``path`` collects segments from the value up."""

    def __init__(self, reason: str, *, whole: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.whole = whole
        self.path: list[str] = []


def _segment(key: str | int) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    return f".{key}" if key.isidentifier() else f"[{_short_repr(key)}]"


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_str(value: str) -> None:
    if not value.isascii() and _find_surrogate(value) is not None:
        raise _Refused(
            "contains a lone surrogate (U+D800..U+DFFF), which is not valid UTF-8 "
            "(decode the text with errors='replace'?)"
        )


class _Walk:
    """One walk over a value; counts the values seen against MAX_JSON_NODES."""

    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes = 0

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            _check_str(value)
            return value
        if kind is int:
            if _INT_MIN <= value <= _INT_MAX:
                return value
            raise _Refused("is an integer outside the 64-bit range [-2**63, 2**64 - 1]")
        if kind is float:
            if math.isfinite(value):
                return value
            raise _Refused(f"is {value!r}: JSON has no NaN or infinity")
        if value is None or kind is bool:
            return value
        if kind is dict:
            return self.mapping(value, depth, copy=False)
        if kind is list or kind is tuple:
            return self.sequence(value, depth, copy=False)
        return self.other(value, depth)

    def other(self, value: Any, depth: int) -> Any:
        # Subclasses (str/int enums, OrderedDict, ...) and other mappings are
        # sent as their plain JSON type, so both encoders see the same thing.
        if isinstance(value, str):
            return self.value(str.__str__(value), depth)
        if isinstance(value, int):
            return self.value(int.__int__(value), depth)
        if isinstance(value, float):
            return self.value(float.__float__(value), depth)
        if isinstance(value, Mapping):
            return self.mapping(value, depth, copy=True)
        if isinstance(value, (list, tuple)):
            return self.sequence(value, depth, copy=True)
        raise _Refused(f"is a {type(value).__name__}; {_TYPES}")

    def _enter(self, size: int, depth: int) -> None:
        if depth >= MAX_JSON_DEPTH:
            raise _Refused(f"nests deeper than MAX_JSON_DEPTH ({MAX_JSON_DEPTH}) levels")
        self.nodes += size
        if self.nodes > MAX_JSON_NODES:
            raise _Refused(f"holds more than MAX_JSON_NODES ({MAX_JSON_NODES}) values", whole=True)

    def mapping(self, value: Mapping[Any, Any], depth: int, *, copy: bool) -> Any:
        self._enter(len(value), depth)
        out: dict[str, Any] | None = {} if copy else None
        for index, (key, item) in enumerate(value.items()):
            name = key
            if type(key) is not str:
                if not isinstance(key, str):
                    raise _Refused(
                        f"has the key {_short_repr(key)} ({type(key).__name__}): "
                        "JSON object keys are strings"
                    )
                name = str.__str__(key)
            try:
                _check_str(name)
                new = self.value(item, depth + 1)
            except _Refused as exc:
                exc.path.append(_segment(name))
                raise
            if out is None and (new is not item or name is not key):
                out = dict(_first(value, index))
            if out is not None:
                out[name] = new
        return value if out is None else out

    def sequence(self, value: list[Any] | tuple[Any, ...], depth: int, *, copy: bool) -> Any:
        self._enter(len(value), depth)
        out: list[Any] | None = [] if copy else None
        for index, item in enumerate(value):
            try:
                new = self.value(item, depth + 1)
            except _Refused as exc:
                exc.path.append(f"[{index}]")
                raise
            if out is None and new is not item:
                out = list(value[:index])
            if out is not None:
                out.append(new)
        return value if out is None else out


def _first(value: Mapping[Any, Any], count: int) -> list[tuple[Any, Any]]:
    items: list[tuple[Any, Any]] = []
    if count:
        for pair in value.items():
            items.append(pair)
            if len(items) == count:
                break
    return items


class _Unusual(Exception):
    """The fast pass met something it does not decide: the detailed walk will."""


_UNUSUAL: Final = _Unusual()
_isfinite: Final = math.isfinite


def _plain(value: Any, depth: int, count: list[int]) -> None:
    """Raise :class:`_Unusual` unless ``value`` (a dict, list or tuple) is plain,
    valid JSON data. The fast pass of :func:`check_json`: no paths, no copies."""
    if depth >= MAX_JSON_DEPTH:
        raise _UNUSUAL
    count[0] += len(value)
    if count[0] > MAX_JSON_NODES:
        raise _UNUSUAL
    if type(value) is dict:
        for key in value:
            if type(key) is not str or (not key.isascii() and _find_surrogate(key)):
                raise _UNUSUAL
        items = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is str:
            if not item.isascii() and _find_surrogate(item):
                raise _UNUSUAL
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise _UNUSUAL
        elif kind is float:
            if not _isfinite(item):
                raise _UNUSUAL
        elif kind is dict or kind is list or kind is tuple:
            _plain(item, depth + 1, count)
        elif item is not None and kind is not bool:
            raise _UNUSUAL


def check_json(value: Any, field: str) -> Any:
    """``value``, checked to be sent as JSON; raises ``InvalidArgumentError(field...)``.

    Returns ``value`` itself when it is plain JSON data (the usual case), else a
    copy where subclasses and other mappings are replaced by plain ``str``,
    ``int``, ``float``, ``dict`` and ``list``. The error names the path to the
    refused value: ``extra_body.temperature``, ``tools[0].extra.x``,
    ``input[1].content[0].text``.
    """
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        try:
            _plain(value, 0, [0])
        except _Unusual:
            pass
        else:
            return value
    try:
        return _Walk().value(value, 0)
    except _Refused as exc:
        where = field if exc.whole else field + "".join(reversed(exc.path))
        raise InvalidArgumentError(where, exc.reason) from None


def json_error(body: Mapping[str, Any], exc: BaseException) -> InvalidArgumentError:
    """The error for a request ``body`` the JSON encoder refused with ``exc``.

    Names the body field (and the path in it) holding the refused value when
    :func:`check_json` finds one, else ``body``.
    """
    for key, value in body.items():
        try:
            check_json(value, key)
        except InvalidArgumentError as err:
            return err
    return InvalidArgumentError(
        "body", f"cannot be sent as JSON ({type(exc).__name__}: {str(exc)[:200]})"
    )


def check_header(name: object, value: object, field: str) -> None:
    """Refuse a header that is not an RFC 9110 field: ``InvalidArgumentError(field, ...)``.

    ``name`` must be a token (letters, digits and ``!#$%&'*+-.^_`|~``) and not
    ``Content-Length`` or ``Transfer-Encoding`` (the SDK frames the body);
    ``value`` must be a ``str`` with no control character but tab (no CR, LF or
    NUL) and no leading or trailing whitespace (HTTP strips it in transit).
    The value itself is never shown in the error: it may be a secret.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(
            field, f"a header name must be a string, not {type(name).__name__}"
        )
    if _TOKEN.fullmatch(name) is None:
        raise InvalidArgumentError(
            field,
            f"{name!r} is not a valid header name "
            "(RFC 9110: letters, digits and !#$%&'*+-.^_`|~ only)",
        )
    if name.lower() in _FRAMING:
        raise InvalidArgumentError(field, f"{name} is set by the SDK, which frames the body")
    if not isinstance(value, str):
        raise InvalidArgumentError(
            field, f"a header value must be a string, not {type(value).__name__}"
        )
    if _VALUE_CONTROL.search(value) is not None or (
        not value.isascii() and _find_surrogate(value) is not None
    ):
        raise InvalidArgumentError(
            field, "the value contains CR, LF, NUL or another control character"
        )
    if value and (value[0] in " \t" or value[-1] in " \t"):
        raise InvalidArgumentError(
            field, "the value starts or ends with whitespace, which HTTP strips in transit"
        )


def check_headers(headers: object, field: str) -> Mapping[str, str]:
    """``headers`` after :func:`check_header` on each item (``field['Name']`` in errors)."""
    if not isinstance(headers, Mapping):
        raise InvalidArgumentError(
            field, f"must be a dict of header names to strings, not {type(headers).__name__}"
        )
    for name, value in headers.items():
        check_header(name, value, f"{field}[{name!r}]")
    return headers
