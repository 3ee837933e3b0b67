"""Reusable attrs validators: each raises :class:`~samsar_async.errors.InvalidArgumentError`.

Every check on user input is written once, here, and attached to the field it
guards (``attrs.field(validator=...)``). Code that validates without building
the class (the per-call path of ``complete()``) calls the same validator
through :func:`check`, so a field is checked the same way everywhere.

The error names the field as ``prefix + attribute.name`` (``prefix`` is given
when the validator is made, e.g. ``"timeout."``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from .errors import InvalidArgumentError

__all__ = [
    "Validator",
    "check",
    "mapping",
    "non_empty_str",
    "non_negative",
    "number_between",
    "one_of",
    "optional",
    "positive_int",
    "positive_number",
    "string",
    "unwrap_optional",
]

T = TypeVar("T")

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
"""An attrs validator: ``(instance, attribute, value) -> None``."""


def check(cls: type, name: str, value: T) -> T:
    """Run the validator of ``cls``'s field ``name`` on ``value``; return the value."""
    field = attrs.fields_dict(cls)[name]
    if field.validator is not None:
        field.validator(None, field, value)
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: object) -> str:
    return type(value).__name__


class _Optional:
    """``validator``, or ``None`` accepted (the wrapped one is :attr:`validator`)."""

    __slots__ = ("validator",)

    def __init__(self, validator: Validator) -> None:
        self.validator = validator

    def __call__(self, inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            self.validator(inst, attr, value)


def optional(validator: Validator) -> Validator:
    """``validator``, or ``None`` accepted."""
    return _Optional(validator)


def unwrap_optional(validator: Validator) -> Validator:
    """The validator an :func:`optional` wraps (for callers that skip ``None`` already),
    or ``validator`` itself."""
    return validator.validator if isinstance(validator, _Optional) else validator


def require_int(name: str, value: Any, *, minimum: int = 1) -> None:
    """Raise :class:`InvalidArgumentError` naming ``name`` unless ``value`` is an
    ``int`` (never a ``bool``) of at least ``minimum`` (for plain arguments; attrs
    fields use :func:`positive_int`)."""
    if (type(value) is not int and not _is_int(value)) or value < minimum:
        raise InvalidArgumentError(name, f"must be an integer >= {minimum}")


def require_positive(name: str, value: Any) -> None:
    """Raise :class:`InvalidArgumentError` naming ``name`` unless ``value`` is an
    ``int`` or ``float`` (never a ``bool``) greater than 0."""
    if not _is_number(value) or not value > 0:
        raise InvalidArgumentError(name, "must be a number > 0")


def positive_int(prefix: str = "", *, minimum: int = 1) -> Validator:
    """An ``int`` (never a ``bool``) of at least ``minimum``."""

    def _positive_int(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or value < minimum:  # (a plain int passes in one test)
            require_int(prefix + attr.name, value, minimum=minimum)

    return _positive_int


def positive_number(prefix: str = "", *, what: str = "number") -> Validator:
    """A finite ``int`` or ``float`` (never a ``bool``) greater than 0."""

    def _positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not _is_number(value) or not 0 < value < math.inf:
            raise InvalidArgumentError(prefix + attr.name, f"must be a positive {what}")

    return _positive


def non_negative(prefix: str = "") -> Validator:
    """A finite ``int`` or ``float`` (never a ``bool``) of at least 0."""

    def _non_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not _is_number(value) or not 0 <= value < math.inf:
            raise InvalidArgumentError(prefix + attr.name, "must be a number >= 0")

    return _non_negative


def number_between(low: float, high: float, prefix: str = "") -> Validator:
    """An ``int`` or ``float`` (never a ``bool``) in ``[low, high]``."""

    def _between(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not _is_number(value) or not low <= value <= high:
            raise InvalidArgumentError(
                prefix + attr.name, f"must be a number between {low} and {high}"
            )

    return _between


def non_empty_str(prefix: str = "") -> Validator:
    """A ``str`` with something other than whitespace in it."""

    def _non_empty(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not str:
            raise InvalidArgumentError(
                prefix + attr.name, f"must be a string, not {_type_name(value)}"
            )
        if not value.strip():
            raise InvalidArgumentError(prefix + attr.name, "must not be empty")

    return _non_empty


def string(prefix: str = "") -> Validator:
    """A ``str`` (empty allowed)."""

    def _string(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str):
            raise InvalidArgumentError(
                prefix + attr.name, f"must be a string, not {_type_name(value)}"
            )

    return _string


def one_of(choices: tuple[Any, ...], prefix: str = "") -> Validator:
    """One of ``choices`` (compared with ``==``; a ``bool`` never passes for an ``int``)."""

    def _one_of(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise InvalidArgumentError(prefix + attr.name, f"{value!r} is not one of {shown}")

    return _one_of


def mapping(prefix: str = "") -> Validator:
    """A :class:`~collections.abc.Mapping` (a ``dict``)."""

    def _mapping(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, Mapping):
            raise InvalidArgumentError(
                prefix + attr.name, f"must be a dict, not {_type_name(value)}"
            )

    return _mapping
