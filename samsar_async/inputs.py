"""Request builders: the input forms and tools a completion accepts.

Every builder is a small frozen attrs class whose constructor validates its
fields and raises :class:`~samsar_async.errors.InvalidArgumentError` (a
``ValueError``) naming the field. The JSON wire shape of each builder is owned
by :mod:`samsar_async.converter`; these classes only hold data::

    Message.user("Describe the hero image", InputImage.from_path("hero.png"))
    ImageGenerationTool(size="1024x1024", quality="high")
    CompletionRequest(session_id="67df...", input="Write a caption", max_output_tokens=300)

``input`` of a completion may be a string, a :class:`Message`, a sequence of
:class:`Message`, a multimodal content array (a sequence of :class:`InputText` /
:class:`InputImage`), or plain dicts in the API's own shape, passed through.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import attrs

from ._base64 import sniff_mime
from ._validators import (
    mapping,
    non_empty_str,
    number_between,
    optional,
    positive_int,
    string,
)
from ._wire_checks import check_header, check_headers
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .config import RetryPolicy, Timeout, Unset

__all__ = [
    "REQUEST_FIELDS",
    "ROLES",
    "TOOL_CHOICE_MODES",
    "CompletionInput",
    "CompletionOptions",
    "CompletionRequest",
    "ContentPart",
    "ImageGenerationTool",
    "InputImage",
    "InputText",
    "Message",
    "ToolChoice",
]

ROLES = ("user", "assistant", "system", "developer")
"""The message roles the Responses API accepts."""

_MAX_IMAGE_FILE_BYTES = 50 * 1024 * 1024
_DETAILS = ("auto", "low", "high")


def _check_str(field: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError(field, f"must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidArgumentError(field, "must not be empty")


@attrs.frozen
class InputText:
    """A text part of a multimodal message: ``{"type": "input_text", "text": ...}``."""

    text: str

    def __attrs_post_init__(self) -> None:
        _check_str("InputText.text", self.text, allow_empty=True)


@attrs.frozen
class InputImage:
    """An image part: ``{"type": "input_image", "image_url": ...}``.

    ``image_url`` is an ``https://`` URL or a ``data:`` URL; build the latter with
    :meth:`from_path` or :meth:`from_bytes`. ``detail`` is ``"auto"``, ``"low"``
    or ``"high"`` (not sent when ``None``).
    """

    image_url: str = attrs.field(repr=lambda url: url if len(url) <= 80 else url[:77] + "...")
    detail: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_str("InputImage.image_url", self.image_url)
        if self.detail is not None and self.detail not in _DETAILS:
            raise InvalidArgumentError("InputImage.detail", f"must be one of {_DETAILS}")

    @classmethod
    def from_bytes(
        cls, data: bytes, mime_type: str | None = None, *, detail: str | None = None
    ) -> InputImage:
        """A ``data:`` URL image; the MIME type is read from the magic bytes when not given."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError("data", f"must be bytes, not {type(data).__name__}")
        if not data:
            raise InvalidArgumentError("data", "is empty")
        if mime_type is not None and not isinstance(mime_type, str):
            raise InvalidArgumentError(
                "mime_type", f"must be a string, not {type(mime_type).__name__}"
            )
        if mime_type is None:
            mime_type = sniff_mime(bytes(data[:16]))
            if mime_type is None:
                raise InvalidArgumentError(
                    "data", "is not a PNG, JPEG, WebP or GIF image (pass mime_type= to override)"
                )
        encoded = base64.b64encode(data).decode("ascii")
        return cls(f"data:{mime_type};base64,{encoded}", detail=detail)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, detail: str | None = None) -> InputImage:
        """A ``data:`` URL image read from a PNG, JPEG, WebP or GIF file."""
        p = pathlib.Path(path)
        if not p.is_file():
            raise InvalidArgumentError("path", f"{str(p)!r} is not an existing file")
        size = p.stat().st_size
        if size > _MAX_IMAGE_FILE_BYTES:
            raise InvalidArgumentError(
                "path", f"{str(p)!r} is {size} bytes; the limit is {_MAX_IMAGE_FILE_BYTES}"
            )
        data = p.read_bytes()
        mime_type = sniff_mime(data[:16])
        if mime_type is None:
            raise InvalidArgumentError("path", f"{str(p)!r} is not a PNG, JPEG, WebP or GIF image")
        return cls.from_bytes(data, mime_type, detail=detail)


ContentPart = InputText | InputImage | Mapping[str, Any]
"""One part of a multimodal content array."""


def _content_from(parts: tuple[str | ContentPart, ...]) -> str | tuple[ContentPart, ...]:
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    out: list[ContentPart] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            out.append(InputText(part))
        elif isinstance(part, (InputText, InputImage, Mapping)):
            out.append(part)
        else:
            raise InvalidArgumentError(
                f"content[{i}]",
                f"must be a str, InputText, InputImage or dict, not {type(part).__name__}",
            )
    return tuple(out)


def _convert_content(value: object) -> str | tuple[ContentPart, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, (InputText, InputImage, Mapping)):
        return (value,)
    if isinstance(value, Sequence):
        return _content_from(tuple(value))
    raise InvalidArgumentError(
        "Message.content", f"must be a str or a sequence of parts, not {type(value).__name__}"
    )


@attrs.frozen
class Message:
    """A message: ``{"role": ..., "content": ...}``.

    ``content`` is a string or a tuple of parts (:class:`InputText`,
    :class:`InputImage` or dicts). Prefer the named constructors::

        Message.user("Hello")
        Message.user("Describe this", InputImage.from_path("hero.png"))
    """

    role: str
    content: str | tuple[ContentPart, ...] = attrs.field(converter=_convert_content)

    def __attrs_post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidArgumentError(
                "Message.role", f"{self.role!r} is not one of {', '.join(ROLES)}"
            )

    @classmethod
    def user(cls, *content: str | ContentPart) -> Message:
        """A user message from a string or parts (strings among parts become :class:`InputText`)."""
        return cls("user", _content_from(_nonempty(content)))

    @classmethod
    def system(cls, *content: str | ContentPart) -> Message:
        """A system message."""
        return cls("system", _content_from(_nonempty(content)))

    @classmethod
    def developer(cls, *content: str | ContentPart) -> Message:
        """A developer message."""
        return cls("developer", _content_from(_nonempty(content)))

    @classmethod
    def assistant(cls, *content: str | ContentPart) -> Message:
        """An assistant message (for replaying history)."""
        return cls("assistant", _content_from(_nonempty(content)))


def _nonempty(content: tuple[str | ContentPart, ...]) -> tuple[str | ContentPart, ...]:
    if not content:
        raise InvalidArgumentError("Message.content", "needs at least one part")
    return content


_opt_str = optional(string())


@attrs.frozen
class ImageGenerationTool:
    """The ``image_generation`` tool: ``{"type": "image_generation", ...}``.

    Options left as ``None`` are not sent. ``format`` is sent as the
    Responses API's ``output_format`` (``"png"``, ``"jpeg"`` or ``"webp"``).
    ``extra`` holds any further option, sent as given. Passed as
    ``tool_choice``, it means "force an image for this turn". Instances are
    hashable (``extra`` takes no part in the hash, only in equality).
    """

    size: str | None = attrs.field(default=None, validator=_opt_str)
    quality: str | None = attrs.field(default=None, validator=_opt_str)
    format: str | None = attrs.field(default=None, validator=_opt_str)
    background: str | None = attrs.field(default=None, validator=_opt_str)
    output_compression: int | None = attrs.field(
        default=None, validator=optional(positive_int(minimum=0))
    )
    moderation: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    extra: Mapping[str, Any] = attrs.field(factory=dict, validator=mapping(), hash=False)


ToolChoice = Literal["auto", "none", "required"] | ImageGenerationTool | Mapping[str, Any]
"""``"auto"``, ``"none"``, ``"required"``, an :class:`ImageGenerationTool` (force it), or a dict."""

CompletionInput = (
    str
    | Message
    | Mapping[str, Any]
    | Sequence[Message | InputText | InputImage | Mapping[str, Any]]
)
"""Everything ``complete(input=...)`` accepts."""


def _check_input(_inst: object, _attr: object, value: Any) -> None:
    # A single InputText/InputImage is accepted, as complete() accepts it (sent as [part]).
    if value is not None and not isinstance(
        value, (str, Message, Mapping, Sequence, InputText, InputImage)
    ):
        raise InvalidArgumentError(
            "input",
            "must be a str, Message, sequence of Message, sequence of InputText/InputImage, "
            f"or dict, not {type(value).__name__}",
        )


def _check_tools(_inst: object, _attr: object, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        raise InvalidArgumentError("tools", "must be a sequence of tools")
    for i, tool in enumerate(value):
        if not isinstance(tool, (ImageGenerationTool, Mapping)):
            raise InvalidArgumentError(
                f"tools[{i}]", f"must be an ImageGenerationTool or dict, not {type(tool).__name__}"
            )


TOOL_CHOICE_MODES = ("auto", "none", "required")
"""The string values of ``tool_choice``."""


def _check_tool_choice(_inst: object, _attr: object, value: Any) -> None:
    if value is None or isinstance(value, (ImageGenerationTool, Mapping)):
        return
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            raise InvalidArgumentError(
                "tool_choice", f"{value!r} is not one of {', '.join(TOOL_CHOICE_MODES)}"
            )
        return
    raise InvalidArgumentError(
        "tool_choice",
        "must be 'auto', 'none', 'required', an ImageGenerationTool or a dict, "
        f"not {type(value).__name__}",
    )


_opt_mapping = optional(mapping())


def _check_extra_headers(_inst: object, _attr: object, value: Any) -> None:
    if value is not None:
        check_headers(value, "extra_headers")


def _check_idempotency_key(inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _non_empty_key(inst, attr, value)
        check_header("Idempotency-Key", value, "idempotency_key")


_non_empty_key = non_empty_str()


@attrs.frozen(kw_only=True)
class CompletionRequest:
    """One completion, as data: the one definition of what a completion takes.

    Its fields are the keyword arguments of
    :meth:`~samsar_async.assistant.Assistant.complete` (besides the per-call
    ``timeout`` and ``retry``), with their defaults and validators; batch
    lines, Ray columns, CLI flags and :class:`CompletionOptions` are derived
    from or checked against it. Fields are validated on construction
    (:class:`~samsar_async.errors.InvalidArgumentError` naming the field);
    ``input`` is checked in depth when the request is turned into JSON.
    Instances are hashable (mapping-valued fields take no part in the hash).
    """

    session_id: str = attrs.field(validator=non_empty_str())
    input: CompletionInput | None = attrs.field(default=None, validator=_check_input, hash=False)
    max_output_tokens: int | None = attrs.field(default=None, validator=optional(positive_int()))
    temperature: float | None = attrs.field(default=None, validator=optional(number_between(0, 2)))
    top_p: float | None = attrs.field(default=None, validator=optional(number_between(0, 1)))
    reasoning: Mapping[str, Any] | None = attrs.field(
        default=None, validator=_opt_mapping, hash=False
    )
    metadata: Mapping[str, str] | None = attrs.field(
        default=None, validator=_opt_mapping, hash=False
    )
    tools: Sequence[ImageGenerationTool | Mapping[str, Any]] | None = attrs.field(
        default=None, validator=_check_tools, hash=False
    )
    tool_choice: ToolChoice | None = attrs.field(
        default=None, validator=_check_tool_choice, hash=False
    )
    extra_body: Mapping[str, Any] | None = attrs.field(
        default=None, validator=_opt_mapping, hash=False
    )
    extra_headers: Mapping[str, str] | None = attrs.field(
        default=None, validator=_check_extra_headers, hash=False
    )
    idempotency_key: str | None = attrs.field(default=None, validator=_check_idempotency_key)


class CompletionOptions(TypedDict, total=False):
    """The keyword options of a completion, for ``**options: Unpack[CompletionOptions]``.

    The fields of :class:`CompletionRequest` but ``session_id`` and
    ``input``, plus the per-call ``timeout`` and ``retry``. Used by
    :meth:`~samsar_async.assistant.Assistant.stream` and
    :meth:`~samsar_async.conversation.Conversation.send`, so a misspelt
    option is a type error. (A test checks it against :class:`CompletionRequest`.)
    """

    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    reasoning: Mapping[str, Any] | None
    metadata: Mapping[str, str] | None
    tools: Sequence[ImageGenerationTool | Mapping[str, Any]] | None
    tool_choice: ToolChoice | None
    extra_body: Mapping[str, Any] | None
    extra_headers: Mapping[str, str] | None
    idempotency_key: str | None
    timeout: Timeout | float | Unset | None
    retry: RetryPolicy | Unset | None


REQUEST_FIELDS: tuple[str, ...] = tuple(a.name for a in attrs.fields(CompletionRequest))
"""The field names of :class:`CompletionRequest`, in order."""
