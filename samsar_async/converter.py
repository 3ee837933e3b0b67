"""The one place that turns builders into JSON and JSON into models.

Pure: bytes, mappings and builders in; JSON, models and exceptions out. It
knows nothing of HTTP clients (the transport hands it a status, the headers
and the body). A single :class:`cattrs.Converter` is built on first use (the
first read of a response's ``output`` or ``usage``, the first system prompt or
stream event: :func:`get_converter`), with every hook generated once; neither
``import samsar_async`` nor a call that only reads ``output_text`` imports
cattrs. Models never import cattrs.

- Unstructuring: builders (:mod:`samsar_async.inputs`) to the API's JSON
  shapes, validated with the validators of
  :class:`~samsar_async.inputs.CompletionRequest` (:func:`completion_body`).
  Plain dicts are passed through untouched.
- Structuring: response JSON to :mod:`samsar_async.models`. Unknown keys are
  ignored; output items and content parts are tagged unions on ``type`` with
  an ``Unknown...`` default, so new item types never break a caller. A shape
  error becomes :class:`~samsar_async.errors.APIResponseValidationError` with
  readable paths, never a cattrs ``ExceptionGroup``.
- Streaming events (:mod:`samsar_async.events`) both ways:
  :func:`event_to_dict` and :func:`event_from_dict`; and output models back to
  OpenAI's JSON (:func:`model_to_dict`), for events synthesized from them.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Optional, Protocol, get_args

import attrs

from . import _json
from ._validators import unwrap_optional
from ._wire_checks import check_json
from .config import MAX_CREDITS_DECIMALS, MAX_CREDITS_DIGITS
from .errors import (
    APIResponseValidationError,
    APIStatusError,
    InvalidArgumentError,
    StreamDecodeError,
    status_error_class,
)
from .inputs import (
    CompletionRequest,
    ImageGenerationTool,
    InputImage,
    InputText,
    Message,
)
from .models import (
    NO_CREDITS,
    NO_HEADERS,
    Credits,
    GeneratedImage,
    ImageGenerationCall,
    OutputContent,
    OutputItem,
    OutputMessage,
    OutputText,
    Refusal,
    Response,
    SystemPrompt,
    UnknownContent,
    UnknownOutputItem,
    Usage,
    headers_view,
)

if TYPE_CHECKING:
    # cattrs is imported, and the converter built, on first use (get_converter); the
    # event hooks too (_load_event_hooks), with the events import: a plain complete()
    # needs neither, so `import samsar_async` does not pay for them.
    import cattrs

    from .events import ImageGenerationCompleted, StreamEvent

    converter: cattrs.Converter
    """The SDK's converter (:func:`get_converter`; built on first access)."""

__all__ = [
    "Answer",
    "asks_for_images",
    "completion_body",
    "converter",
    "event_from_dict",
    "event_to_dict",
    "get_converter",
    "load_event_hooks",
    "model_to_dict",
    "parse_completion",
    "parse_credits",
    "parse_image_completion",
    "parse_system_prompt",
    "request_body",
    "status_error",
    "structure_response",
    "structure_system_prompt",
    "unstructure_input",
    "unstructure_tool",
    "unstructure_tool_choice",
]


class Answer(Protocol):
    """A complete HTTP answer as the transport hands it over (matched by shape: the
    converter never imports the transport)."""

    @property
    def status(self) -> int:
        """The HTTP status code."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers (case-insensitive lookups)."""
        ...

    @property
    def body(self) -> bytes:
        """The whole body."""
        ...


# --- builders -> JSON -------------------------------------------------------


def _unstructure_text(part: InputText) -> dict[str, Any]:
    return {"type": "input_text", "text": part.text}


def _unstructure_image(part: InputImage) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "input_image", "image_url": part.image_url}
    if part.detail is not None:
        out["detail"] = part.detail
    return out


def _unstructure_part(part: Any) -> Any:
    if isinstance(part, InputText):
        return _unstructure_text(part)
    if isinstance(part, InputImage):
        return _unstructure_image(part)
    return part


def _unstructure_message(message: Message) -> dict[str, Any]:
    content = message.content
    if isinstance(content, str):
        return {"role": message.role, "content": content}
    return {"role": message.role, "content": [_unstructure_part(p) for p in content]}


_TOOL_FIELDS = (
    ("size", "size"),
    ("quality", "quality"),
    ("format", "output_format"),
    ("background", "background"),
    ("output_compression", "output_compression"),
    ("moderation", "moderation"),
    ("model", "model"),
)


def _unstructure_image_tool(tool: ImageGenerationTool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "image_generation"}
    for attr, key in _TOOL_FIELDS:
        value = getattr(tool, attr)
        if value is not None:
            out[key] = value
    out.update(tool.extra)
    return out


_UNSTRUCTURE_HOOKS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (InputText, _unstructure_text),
    (InputImage, _unstructure_image),
    (Message, _unstructure_message),
    (ImageGenerationTool, _unstructure_image_tool),
)

_PART_TYPES = (InputText, InputImage)


def unstructure_input(value: Any) -> Any:
    """The JSON form of a completion ``input`` (see :data:`~samsar_async.inputs.CompletionInput`).

    Raises :class:`InvalidArgumentError` naming ``input`` (or ``input[i]``)
    for anything else, and for a sequence mixing messages with content parts.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Message):
        return _unstructure_message(value)
    if isinstance(value, Mapping):
        return value
    if isinstance(value, _PART_TYPES):
        return [_unstructure_part(value)]
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out: list[Any] = []
        has_message = has_part = False
        for i, item in enumerate(value):
            if isinstance(item, Message):
                has_message = True
                out.append(_unstructure_message(item))
            elif isinstance(item, _PART_TYPES):
                has_part = True
                out.append(_unstructure_part(item))
            elif isinstance(item, Mapping):
                out.append(item)
            elif isinstance(item, str):
                has_part = True
                out.append({"type": "input_text", "text": item})
            else:
                raise InvalidArgumentError(
                    f"input[{i}]",
                    "must be a Message, InputText, InputImage, str or dict, "
                    f"not {type(item).__name__}",
                )
        if not out:
            raise InvalidArgumentError("input", "is an empty sequence; pass None to send no input")
        if has_message and has_part:
            raise InvalidArgumentError(
                "input", "mixes messages and content parts; wrap the parts in a Message"
            )
        # A bare multimodal content array is one of the documented input forms: sent as is.
        return out
    raise InvalidArgumentError(
        "input",
        "must be a str, Message, sequence of Message, sequence of InputText/InputImage, "
        f"or dict, not {type(value).__name__}",
    )


def unstructure_tool(tool: Any, index: int) -> Any:
    """The JSON form of one entry of ``tools``."""
    if isinstance(tool, ImageGenerationTool):
        if not isinstance(tool.extra, Mapping):
            raise InvalidArgumentError(f"tools[{index}].extra", "must be a dict")
        check_json(tool.extra, f"tools[{index}].extra")
        return check_json(_unstructure_image_tool(tool), f"tools[{index}]")
    if isinstance(tool, Mapping):
        return check_json(tool, f"tools[{index}]")
    raise InvalidArgumentError(
        f"tools[{index}]", f"must be an ImageGenerationTool or dict, not {type(tool).__name__}"
    )


_REQUEST = attrs.fields(CompletionRequest)
_SESSION_ID = _REQUEST.session_id
_MAX_OUTPUT_TOKENS = _REQUEST.max_output_tokens
_TEMPERATURE = _REQUEST.temperature
_TOP_P = _REQUEST.top_p
_REASONING = _REQUEST.reasoning
_METADATA = _REQUEST.metadata
_TOOLS = _REQUEST.tools
_TOOL_CHOICE = _REQUEST.tool_choice
_EXTRA_BODY = _REQUEST.extra_body


def _validate(field: attrs.Attribute[Any], value: Any) -> Any:
    assert field.validator is not None
    field.validator(None, field, value)
    return value


def _checker(field: attrs.Attribute[Any]) -> Callable[[Any], None]:
    """``check(value)``: ``field``'s validator (the one that an ``optional(...)``
    wraps, since the caller already skips ``None``), as one C-level call."""
    assert field.validator is not None
    return functools.partial(unwrap_optional(field.validator), None, field)


_check_max_output_tokens = _checker(_MAX_OUTPUT_TOKENS)
_check_temperature = _checker(_TEMPERATURE)
_check_top_p = _checker(_TOP_P)
_check_reasoning = _checker(_REASONING)
_check_metadata = _checker(_METADATA)
_check_extra_body = _checker(_EXTRA_BODY)


def unstructure_tool_choice(choice: Any) -> Any:
    """The JSON form of ``tool_choice``; an :class:`ImageGenerationTool` forces that tool."""
    _validate(_TOOL_CHOICE, choice)
    if isinstance(choice, ImageGenerationTool):
        return {"type": "image_generation"}
    return choice if isinstance(choice, str) else check_json(choice, "tool_choice")


def completion_body(
    session_id: str,
    input: Any = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    reasoning: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    tools: Sequence[ImageGenerationTool | Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of a completion, each field checked by :class:`CompletionRequest`'s
    validator (the one definition); options left as ``None`` are not sent, and
    ``extra_body`` adds (or overrides) body fields."""
    if type(session_id) is not str or not session_id.strip():
        _validate(_SESSION_ID, session_id)  # raises, naming the field
    body: dict[str, Any] = {"session_id": session_id}
    if type(input) is str:
        body["input"] = input
    elif input is not None:
        value = unstructure_input(input)
        body["input"] = value if isinstance(value, str) else check_json(value, "input")
    if max_output_tokens is not None:
        _check_max_output_tokens(max_output_tokens)
        body["max_output_tokens"] = max_output_tokens
    if temperature is not None:
        _check_temperature(temperature)
        body["temperature"] = temperature
    if top_p is not None:
        _check_top_p(top_p)
        body["top_p"] = top_p
    if reasoning is not None:
        _check_reasoning(reasoning)
        body["reasoning"] = check_json(reasoning, "reasoning")
    if metadata is not None:
        _check_metadata(metadata)
        body["metadata"] = check_json(metadata, "metadata")
    if tools is not None:
        _validate(_TOOLS, tools)
        body["tools"] = [unstructure_tool(tool, i) for i, tool in enumerate(tools)]
    if tool_choice is not None:
        body["tool_choice"] = unstructure_tool_choice(tool_choice)
    if extra_body is not None:
        _check_extra_body(extra_body)
        body.update(check_json(extra_body, "extra_body"))
    return body


def request_body(request: CompletionRequest) -> dict[str, Any]:
    """The JSON body of a :class:`CompletionRequest` (see :func:`completion_body`)."""
    return completion_body(
        request.session_id,
        request.input,
        request.max_output_tokens,
        request.temperature,
        request.top_p,
        request.reasoning,
        request.metadata,
        request.tools,
        request.tool_choice,
        request.extra_body,
    )


# --- JSON -> models ---------------------------------------------------------


def _passthrough(value: Any, _type: Any) -> Any:
    return value


def _wrong_type(expected: str, value: Any) -> TypeError:
    return TypeError(f"expected {expected}, got {type(value).__name__}")


def _structure_str(value: Any, _type: Any) -> str:
    if type(value) is str:
        return value
    raise _wrong_type("a string", value)


def _structure_opt_str(value: Any, _type: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _wrong_type("a string or null", value)


def _structure_int(value: Any, _type: Any) -> int:
    if type(value) is int:
        return value
    raise _wrong_type("an integer", value)


def _structure_opt_int(value: Any, _type: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    raise _wrong_type("an integer or null", value)


def _structure_any_tuple(value: Any, _type: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if type(value) is list:
        return tuple(value)
    raise _wrong_type("an array", value)


def _structure_unknown_item(value: Any, _type: Any) -> UnknownOutputItem:
    if not isinstance(value, dict):
        raise _wrong_type("an object", value)
    kind = value.get("type")
    item_id = value.get("id")
    return UnknownOutputItem(
        type=kind if isinstance(kind, str) else None,
        id=item_id if isinstance(item_id, str) else None,
        data=value,
    )


def _structure_unknown_content(value: Any, _type: Any) -> UnknownContent:
    if not isinstance(value, dict):
        raise _wrong_type("an object", value)
    kind = value.get("type")
    return UnknownContent(type=kind if isinstance(kind, str) else None, data=value)


_ITEM_TAGS: dict[type, str] = {
    OutputMessage: "message",
    ImageGenerationCall: "image_generation_call",
}
_CONTENT_TAGS: dict[type, str] = {OutputText: "output_text", Refusal: "refusal"}


def _tuple_of(conv: cattrs.Converter, union: Any) -> Any:
    """A hook for ``tuple[union, ...]`` that looks the element hook up once, not per item."""
    element = conv.get_structure_hook(union)

    def structure(value: Any, _type: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if type(value) is not list:
            raise _wrong_type("an array", value)
        for item in value:
            if type(item) is not dict:
                raise _wrong_type("an object", item)
        return tuple([element(item, union) for item in value])

    return structure


def _make_converter(*, detailed_validation: bool) -> cattrs.Converter:
    import cattrs
    from cattrs.gen import make_dict_structure_fn, override
    from cattrs.strategies import configure_tagged_union

    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=detailed_validation)
    for cls, hook in _UNSTRUCTURE_HOOKS:
        conv.register_unstructure_hook(cls, hook)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(Optional[str], _structure_opt_str)  # noqa: UP045
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(Optional[int], _structure_opt_int)  # noqa: UP045
    conv.register_structure_hook_func(lambda t: t == tuple[Any, ...], _structure_any_tuple)
    conv.register_structure_hook(UnknownOutputItem, _structure_unknown_item)
    conv.register_structure_hook(UnknownContent, _structure_unknown_content)
    # Order matters: each hook is generated against the hooks registered before it.
    configure_tagged_union(
        OutputContent,
        conv,
        tag_generator=lambda cl: _CONTENT_TAGS.get(cl, "\x00unknown"),
        tag_name="type",
        default=UnknownContent,
    )
    if not detailed_validation:
        # cattrs' own tuple hooks report item indexes (the explainer keeps them);
        # these look the element hook up once instead of per item.
        content_tuple = tuple[OutputContent, ...]
        conv.register_structure_hook_func(
            lambda t: t == content_tuple, _tuple_of(conv, OutputContent)
        )
    configure_tagged_union(
        OutputItem,
        conv,
        tag_generator=lambda cl: _ITEM_TAGS.get(cl, "\x00unknown"),
        tag_name="type",
        default=UnknownOutputItem,
    )
    if not detailed_validation:
        item_tuple = tuple[OutputItem, ...]
        conv.register_structure_hook_func(lambda t: t == item_tuple, _tuple_of(conv, OutputItem))
    conv.register_structure_hook(
        SystemPrompt,
        make_dict_structure_fn(
            SystemPrompt, conv, raw=override(omit=True), headers=override(omit=True)
        ),
    )
    return conv


_OUTPUT = tuple[OutputItem, ...]

_lock = threading.RLock()
"""Held while a converter or its hooks are built (the sync client's loop thread and
the caller's threads may race to the first use)."""
_converter: cattrs.Converter | None = None
_explainer_converter: cattrs.Converter | None = None
_Hook = Callable[[Any, Any], Any]
_hooks: tuple[_Hook, _Hook, _Hook] | None = None
"""The structure hooks of ``output``, ``usage`` and a system prompt, once built."""


def get_converter() -> cattrs.Converter:
    """The SDK's converter (also ``samsar_async.converter.converter``).

    Built on first use, once per process: cattrs is imported and every hook
    generated then, without detailed validation (fast). When it fails,
    :func:`_explainer` (the same hooks with detailed validation) structures the
    payload again to say where and why. :func:`load_event_hooks` adds the
    stream events and the output models' unstructure hooks.
    """
    conv = _converter
    if conv is None:
        conv = _build_converter()
    return conv


def _build_converter() -> cattrs.Converter:
    global _converter, _hooks
    with _lock:
        if _converter is None:
            conv = _make_converter(detailed_validation=False)
            _hooks = (
                conv.get_structure_hook(_OUTPUT),
                conv.get_structure_hook(Usage),
                conv.get_structure_hook(SystemPrompt),
            )
            _converter = conv
            globals()["converter"] = conv  # later module lookups skip __getattr__
        return _converter


def _structure_hooks() -> tuple[_Hook, _Hook, _Hook]:
    """The hooks of ``output``, ``usage`` and a system prompt (built on first use)."""
    hooks = _hooks
    if hooks is None:
        _build_converter()
        hooks = _hooks
        assert hooks is not None
    return hooks


def __getattr__(name: str) -> Any:
    """``converter``: built on first access (see :func:`get_converter`)."""
    if name == "converter":
        return get_converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _explainer() -> cattrs.Converter:
    """The converter with detailed validation, built on the first invalid answer (only
    failures need it, so neither the import nor a valid answer pays for it)."""
    global _explainer_converter
    with _lock:
        if _explainer_converter is None:
            _explainer_converter = _make_converter(detailed_validation=True)
        return _explainer_converter


def _validation_error(
    payload: Any,
    cls: Any,
    what: str,
    status_code: int,
    idempotency_key: str | None,
) -> APIResponseValidationError:
    try:
        _explainer().structure(payload, cls)
    except Exception as exc:
        import cattrs

        details = "; ".join(cattrs.transform_error(exc, path=what))
    else:  # pragma: no cover - the fast converter and the explainer agree
        details = "unexpected shape"
    return APIResponseValidationError(
        f"the {status_code} answer is not a valid {what}: {details}",
        status_code=status_code,
        idempotency_key=idempotency_key,
    )


class _Parts:
    """:class:`~samsar_async.models.ResponseParts`: a response's typed parts, built when read."""

    __slots__ = ()

    def output(self, response: Response) -> tuple[OutputItem, ...]:
        value = response.raw.get("output")
        if value is None:
            return ()
        structure = _structure_hooks()[0]
        try:
            return structure(value, _OUTPUT)  # type: ignore[no-any-return]
        except Exception:  # TypeError, KeyError, ... from the generated hooks
            raise _validation_error(
                value, _OUTPUT, "response.output", 200, response.idempotency_key
            ) from None

    def usage(self, response: Response) -> Usage | None:
        value = response.raw.get("usage")
        if value is None:
            return None
        structure = _structure_hooks()[1]
        try:
            return structure(value, Usage)  # type: ignore[no-any-return]
        except Exception:
            raise _validation_error(
                value, Usage, "response.usage", 200, response.idempotency_key
            ) from None

    def credits(self, response: Response) -> Credits:
        return credits_of(response.headers)


_PARTS = _Parts()


class _ImageParts(_Parts):
    """The parts of an image answer, whose images were decoded as it arrived.

    In ``response.raw`` each decoded ``result`` is a placeholder
    (:func:`~samsar_async._imagebody.placeholder`); ``decoded`` holds the images
    by placeholder index until :meth:`images` hands them to their
    :class:`GeneratedImage` (the reader's buffers are then referenced by the
    images only).
    """

    __slots__ = ("_by_index", "_typed", "decoded")

    def __init__(self, decoded: tuple[Any, ...]) -> None:
        self.decoded: tuple[Any, ...] | None = decoded  # _imagebody.DecodedImage
        self._typed: tuple[OutputItem, ...] | None = None
        self._by_index: dict[int, GeneratedImage] = {}

    def _calls(self, response: Response) -> tuple[OutputItem, ...]:
        """The typed output with the placeholders as results (validated as usual)."""
        typed = self._typed
        if typed is None:
            typed = self._typed = _Parts.output(self, response)
        return typed

    def images(self, response: Response) -> tuple[GeneratedImage, ...]:
        """:attr:`Response.images`: the decoded images of the successful calls."""
        from ._imagebody import placeholder_index

        calls = self._calls(response)
        decoded = self.decoded or ()
        images: list[GeneratedImage] = []
        for item in calls:
            if not isinstance(item, ImageGenerationCall) or item.result is None:
                continue
            ok = item.failure_reason is None
            n = len(images)
            fields: dict[str, Any] = {
                "id": item.id or f"image-{n}",
                "revised_prompt": item.revised_prompt,
                "response_id": response.id,
                "session_id": response.session_id,
                "index": n,
            }
            index = placeholder_index(item.result)
            if index is None or index >= len(decoded):
                image = GeneratedImage(b64=item.result, **fields)
            else:
                found = decoded[index]
                image = GeneratedImage._decoded(found.pieces, error=found.error, **fields)
                self._by_index[index] = image
            if ok:
                images.append(image)
        self.decoded = None  # the images own the bytes now
        return tuple(images)

    def output(self, response: Response) -> tuple[OutputItem, ...]:
        """The output, each image call's ``result`` base64 again (encoded here)."""
        from ._imagebody import placeholder_index

        response.images  # noqa: B018 - builds the images from the decoded bytes
        by_index = self._by_index
        items: list[OutputItem] = []
        for item in self._calls(response):
            if isinstance(item, ImageGenerationCall):
                index = placeholder_index(item.result)
                image = None if index is None else by_index.get(index)
                if image is not None and image._error is None:
                    item = attrs.evolve(item, result=image.b64)
            items.append(item)
        return tuple(items)


def asks_for_images(body: Mapping[str, Any]) -> bool:
    """Whether a completion body offers the ``image_generation`` tool."""
    tools = body.get("tools")
    if not isinstance(tools, (list, tuple)):
        return False
    return any(isinstance(t, Mapping) and t.get("type") == "image_generation" for t in tools)


def _shape_error(
    where: str, expected: str, value: Any, status_code: int, idempotency_key: str | None
) -> APIResponseValidationError:
    return APIResponseValidationError(
        f"the {status_code} answer is not a valid response: {where} must be {expected}, "
        f"not {type(value).__name__}",
        status_code=status_code,
        idempotency_key=idempotency_key,
    )


_STR_OR_NULL: frozenset[type] = frozenset({str, type(None)})
_INT_OR_NULL: frozenset[type] = frozenset({int, type(None)})
_OBJECT_OR_NULL: frozenset[type] = frozenset({dict, type(None)})
_ARRAY_OR_NULL: frozenset[type] = frozenset({list, type(None)})
"""The types each top-level field may have (one definition: the call path's check in
:func:`_response` and the explaining :func:`_top_level_error` both use them)."""

_TOP_LEVEL: tuple[tuple[str, frozenset[type], str], ...] = (
    ("id", frozenset({str}), "a string"),
    ("status", _STR_OR_NULL, "a string or null"),
    ("model", _STR_OR_NULL, "a string or null"),
    ("object", _STR_OR_NULL, "a string or null"),
    ("created_at", _INT_OR_NULL, "an integer or null"),
    ("usage", _OBJECT_OR_NULL, "an object or null"),
    ("output", _ARRAY_OR_NULL, "an array or null"),
)


def _top_level_error(
    data: dict[str, Any], status_code: int, idempotency_key: str | None
) -> APIResponseValidationError:
    """Which top-level field is wrong (off the call path: only for a bad answer)."""
    for name, types, expected in _TOP_LEVEL:
        value = data.get(name)
        if type(value) not in types:
            return _shape_error(f"response.{name}", expected, value, status_code, idempotency_key)
    raise AssertionError("unreachable: the fast check and this one agree")  # pragma: no cover


def _output_error(
    output: list[Any], status_code: int, idempotency_key: str | None
) -> APIResponseValidationError:
    """Which output item or message content part is not an object (off the call path)."""
    for i, item in enumerate(output):
        if type(item) is not dict:
            return _shape_error(
                f"response.output[{i}]", "an object", item, status_code, idempotency_key
            )
        content = item.get("content") if item.get("type") == "message" else None
        if content is None:
            continue
        if type(content) is not list:
            return _shape_error(
                f"response.output[{i}].content", "an array", content, status_code, idempotency_key
            )
        for j, part in enumerate(content):
            if type(part) is not dict:
                return _shape_error(
                    f"response.output[{i}].content[{j}]",
                    "an object",
                    part,
                    status_code,
                    idempotency_key,
                )
    raise AssertionError("unreachable: the fast check and this one agree")  # pragma: no cover


def structure_response(
    data: Any,
    charged: str | None = None,
    remaining: str | None = None,
    idempotency_key: str | None = None,
    session_id: str | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] = NO_HEADERS,
) -> Response:
    """A :class:`Response` from a decoded JSON body (``headers``: the answer's, kept
    as they are; ``charged`` / ``remaining``: credits header values, which take
    the place of ``headers``' own).

    The top-level shape is checked here, cheaply: an object with a string
    ``id``; ``status``, ``model`` and ``object`` strings or null;
    ``created_at`` an integer or null; ``output`` an array of objects (a
    message's ``content`` an array of objects); ``usage`` an object or null.
    Anything else raises :class:`APIResponseValidationError` naming the path.
    The typed ``output``, ``usage`` and ``credits`` are built on first access.
    """
    response = _response(data, idempotency_key, session_id, status_code, headers_view(headers))
    if charged is not None or remaining is not None:
        response._credits = parse_credits(charged, remaining)
    return response


def _response(
    data: Any,
    idempotency_key: str | None,
    session_id: str | None,
    status_code: int,
    headers: Mapping[str, str],
) -> Response:
    """:func:`structure_response` (credits from ``headers``): every call's path."""
    if type(data) is not dict:
        raise APIResponseValidationError(
            f"the {status_code} answer is a JSON {type(data).__name__}, not an object",
            status_code=status_code,
            idempotency_key=idempotency_key,
        )
    get = data.get
    rid = get("id")
    output = get("output")
    text = get("output_text")
    if not (
        type(rid) is str
        and type(get("status")) in _STR_OR_NULL
        and type(get("model")) in _STR_OR_NULL
        and type(get("object")) in _STR_OR_NULL
        and type(get("created_at")) in _INT_OR_NULL
        and type(get("usage")) in _OBJECT_OR_NULL
        and type(output) in _ARRAY_OR_NULL
    ):
        raise _top_level_error(data, status_code, idempotency_key)
    if output:
        missing_text = type(text) is not str
        pieces: list[str] = []
        for item in output:
            if type(item) is not dict:
                raise _output_error(output, status_code, idempotency_key)
            if item.get("type") == "message":
                content = item.get("content")
                if content is None:
                    continue
                if type(content) is not list:
                    raise _output_error(output, status_code, idempotency_key)
                for part in content:
                    if type(part) is not dict:
                        raise _output_error(output, status_code, idempotency_key)
                    if missing_text and part.get("type") == "output_text":
                        piece = part.get("text")
                        if type(piece) is str:
                            pieces.append(piece)
        if missing_text:
            text = "".join(pieces)
    if type(text) is not str:
        text = ""
    return Response._from_json(data, rid, text, idempotency_key, session_id, _PARTS, headers)


def structure_system_prompt(
    data: Any, *, status_code: int = 200, headers: Mapping[str, str] = NO_HEADERS
) -> SystemPrompt:
    """A :class:`SystemPrompt` from a decoded JSON body."""
    if not isinstance(data, dict):
        raise APIResponseValidationError(
            f"the {status_code} answer is a JSON {type(data).__name__}, not an object",
            status_code=status_code,
        )
    structure = _structure_hooks()[2]
    try:
        prompt: SystemPrompt = structure(data, SystemPrompt)
    except Exception:
        raise _validation_error(data, SystemPrompt, "system prompt", status_code, None) from None
    return attrs.evolve(prompt, raw=data, headers=headers)


_CREDITS_QUANTUM = Decimal(1).scaleb(-MAX_CREDITS_DECIMALS)
_CREDITS_CONTEXT = Context(prec=MAX_CREDITS_DIGITS + MAX_CREDITS_DECIMALS + 2)


def _parse_decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value.strip())
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite():
        return None
    if number.is_zero():
        return Decimal(0)
    # Only pure operations here (no context): the header may hold 1e1000000.
    if number.adjusted() >= MAX_CREDITS_DIGITS:
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_CREDITS_DECIMALS:
        if number.adjusted() < -MAX_CREDITS_DECIMALS:
            return None
        # More decimals than allowed: readable only when the extra digits are zeros.
        short = number.quantize(_CREDITS_QUANTUM, context=_CREDITS_CONTEXT)
        if short != number:
            return None
        number = short
    return number


def parse_credits(charged: str | None, remaining: str | None) -> Credits:
    """:class:`Credits` from the raw ``x-credits-charged`` / ``x-credits-remaining`` values.

    A value that is not a finite decimal, or is out of range (``10**15`` or more
    in magnitude, or more than 12 significant decimals: see
    :data:`~samsar_async.config.MAX_CREDITS_DIGITS` and
    :data:`~samsar_async.config.MAX_CREDITS_DECIMALS`) is unreadable: ``None``.
    So summing readable values (``Conversation.credits_charged``) never overflows.
    """
    if charged is None and remaining is None:
        return NO_CREDITS
    return Credits(_parse_decimal(charged), _parse_decimal(remaining))


# --- HTTP answers -> models or errors ----------------------------------------

_EXCERPT = 200
_MESSAGE_LIMIT = 500
"""Most characters of a server-provided error message kept in an exception's text."""
_SPACE = re.compile(r"\s+")
_UNPRINTABLE = "[\x00-\x1f\x7f-\x9f\ud800-\udfff]"
"""Compiled on first use by ``re.sub`` (error messages only): a class beyond U+00FF
costs the regex compiler about 3 M instructions, which the import should not pay."""
_BRIEF_DEPTH = 6
_TEXT_SCAN = 65536


def _excerpt(body: bytes) -> str:
    text = body[: _EXCERPT * 4].decode("utf-8", "replace")
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8"})
"""The usual JSON content types, recognized without parsing."""


def decode_json_body(raw: Answer, idempotency_key: str | None) -> Any:
    """The JSON of a 2xx answer; a wrong content type or invalid JSON is a validation error."""
    content_type = raw.headers.get("Content-Type")
    if content_type not in _PLAIN_JSON and not _is_json(content_type):
        raise APIResponseValidationError(
            f"the {raw.status} answer has content type {content_type!r}, not JSON: "
            f"{_excerpt(raw.body)!r}",
            status_code=raw.status,
            excerpt=_excerpt(raw.body),
            idempotency_key=idempotency_key,
        )
    try:
        return _json.loads(raw.body)
    except ValueError:
        raise APIResponseValidationError(
            f"the {raw.status} answer is not valid JSON: {_excerpt(raw.body)!r}",
            status_code=raw.status,
            excerpt=_excerpt(raw.body),
            idempotency_key=idempotency_key,
        ) from None


def credits_of(headers: Mapping[str, str]) -> Credits:
    """The credits of an answer, from its ``x-credits-charged`` / ``x-credits-remaining``
    headers."""
    return parse_credits(headers.get("x-credits-charged"), headers.get("x-credits-remaining"))


def _bounded(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """``text`` on one line, without control characters or lone surrogates, at most
    ``limit`` characters: safe to print and to log."""
    text = _SPACE.sub(" ", text[: limit * 4]).strip()
    text = re.sub(_UNPRINTABLE, "\ufffd", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Full(Exception):
    """The brief rendering reached its length."""


def _brief_json(value: Any, limit: int = _EXCERPT) -> str:
    """A JSON-like rendering of ``value`` cut at ``limit`` characters and
    :data:`_BRIEF_DEPTH` levels (deeper containers show as ``[...]`` / ``{...}``).
    Never raises: the work is bounded by ``limit``, whatever the size or depth."""
    out: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)
        if size > limit:
            raise _Full

    def walk(item: Any, depth: int) -> None:
        if isinstance(item, dict):
            if depth >= _BRIEF_DEPTH:
                emit("{...}")
                return
            emit("{")
            for index, (key, child) in enumerate(item.items()):
                emit(", " if index else "")
                emit(json.dumps(str(key)[:limit], ensure_ascii=False) + ": ")
                walk(child, depth + 1)
            emit("}")
        elif isinstance(item, list):
            if depth >= _BRIEF_DEPTH:
                emit("[...]")
                return
            emit("[")
            for index, child in enumerate(item):
                emit(", " if index else "")
                walk(child, depth + 1)
            emit("]")
        elif isinstance(item, str):
            emit(json.dumps(item[:limit], ensure_ascii=False))
        elif item is None or isinstance(item, bool):
            emit({None: "null", True: "true", False: "false"}[item])
        elif isinstance(item, int) and -(10**30) < item < 10**30:
            emit(str(item))
        elif isinstance(item, float):
            emit(repr(item))
        else:
            emit("...")

    try:
        walk(value, 0)
    except _Full:
        pass
    except Exception:  # pragma: no cover - defensive: a message must never fail the call
        out.append("...")
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message_from_json(data: Any) -> str | None:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str) and message:
                return message
        elif isinstance(error, str) and error:
            return error
        for key in ("message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
            if value is not None and key == "detail":
                return _brief_json(value)
    elif isinstance(data, str) and data:
        return data
    return None


def _html_title(data: bytes, low: bytes) -> bytes | None:
    start = low.find(b"<title")
    if start < 0:
        return None
    opened = low.find(b">", start)
    closing = low.find(b"</title", opened) if opened >= 0 else -1
    if closing < 0:
        return None
    title = data[opened + 1 : closing]
    return title if title.strip() else None


def _strip_tags(data: bytes, low: bytes) -> bytes:
    """``data`` without tags (and without script and style elements), in linear time.

    ``low`` is ``data.lower()`` (ASCII only, so the offsets match); ``<`` and
    ``>`` never occur inside a multi-byte UTF-8 character.
    """
    out: list[bytes] = []
    at, end = 0, len(data)
    while at < end:
        tag = low.find(b"<", at)
        if tag < 0:
            out.append(data[at:])
            break
        out.append(data[at:tag])
        out.append(b" ")
        for element in (b"script", b"style"):
            if low.startswith(b"<" + element, tag):
                tag = low.find(b"</" + element, tag)
                break
        close = low.find(b">", tag) if tag >= 0 else -1
        if close < 0:
            break  # an unclosed tag or element: the rest is markup
        at = close + 1
    return b"".join(out)


def _message_from_text(body: bytes) -> str:
    data = body[:_TEXT_SCAN]
    low = data.lower()
    text = _html_title(data, low) or _strip_tags(data, low)
    return _bounded(text.decode("utf-8", "replace"), _EXCERPT)


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0 and math.isfinite(ms):
            return ms / 1000.0
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def status_error(raw: Answer, idempotency_key: str | None) -> APIStatusError:
    """The :class:`APIStatusError` subclass for a non-2xx answer, with its message."""
    status = raw.status
    body: Any = None
    message: str | None = None
    if raw.body:
        if _is_json(raw.headers.get("Content-Type")) or raw.body[:1] in (b"{", b"["):
            try:
                body = _json.loads(raw.body)
            except (ValueError, RecursionError):
                body = None
            else:
                message = _message_from_json(body)
                if message is not None:
                    message = _bounded(message)
        if body is None:
            body = raw.body[:65536].decode("utf-8", "replace")
            message = _message_from_text(raw.body)
    if 300 <= status < 400:
        location = raw.headers.get("Location", "")
        target = location.split("://", 1)[-1].split("/", 1)[0] if "://" in location else ""
        target = _bounded(target.rsplit("@", 1)[-1], _EXCERPT)  # never show credentials
        message = (
            f"redirect{' to ' + target if target else ''} not followed: "
            "API calls never follow redirects"
        )
    reason = _REASONS.get(status, "")
    text = f"{status} {reason}".strip()
    if message:
        text = f"{text}: {message}"
    cls = status_error_class(status)
    return cls(
        text,
        status_code=status,
        body=body,
        headers=raw.headers,
        credits=credits_of(raw.headers),
        retry_after=parse_retry_after(raw.headers),
        idempotency_key=idempotency_key,
    )


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    425: "Too Early",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def parse_completion(raw: Answer, idempotency_key: str | None, session_id: str | None) -> Response:
    """A :class:`Response` from a 2xx completion answer."""
    return _response(
        decode_json_body(raw, idempotency_key), idempotency_key, session_id, raw.status, raw.headers
    )


def parse_image_completion(
    raw: Answer, idempotency_key: str | None, session_id: str | None
) -> Response:
    """:func:`parse_completion` for an answer to a request for images.

    When the transport decoded the images as the answer arrived (its answer
    has ``images``), the response hands them out as they are: see
    :attr:`Response.images <samsar_async.models.Response.images>`.
    """
    response = parse_completion(raw, idempotency_key, session_id)
    decoded = getattr(raw, "images", None)
    if decoded:
        response._parts = _ImageParts(tuple(decoded))
    return response


def parse_system_prompt(
    raw: Answer, idempotency_key: str | None, _session_id: str | None
) -> SystemPrompt:
    """A :class:`SystemPrompt` from a 2xx ``set_system_prompt`` answer."""
    return structure_system_prompt(
        decode_json_body(raw, idempotency_key), status_code=raw.status, headers=raw.headers
    )


# --- events -------------------------------------------------------------------
#
# Streaming events (samsar_async.events) to OpenAI's JSON shapes and back, and
# the output models they carry to JSON (for the events of a Response built in
# code, which has no received JSON to pass on).
#
# Each event class gets a structure and an unstructure hook generated by cattrs
# and registered on ``converter``; StreamEvent gets a hook that dispatches on
# ``type`` (_structure_event). Each wire field is read by a hook made for that
# field of that event type, so that a bad value raises StreamDecodeError naming
# both (the generated code stays fast: no detailed validation).


# Top-level Response fields that are OpenAI's (the others are the SDK's own).
def _register_model_unstructure_hooks(conv: cattrs.Converter) -> None:
    from cattrs.gen import make_dict_unstructure_fn, override

    def each(values: tuple[Any, ...]) -> list[Any]:
        return [conv.unstructure(value) for value in values]

    conv.register_unstructure_hook(UnknownContent, lambda part: dict(part.data))
    conv.register_unstructure_hook(UnknownOutputItem, lambda item: dict(item.data))
    conv.register_unstructure_hook(
        OutputText,
        make_dict_unstructure_fn(OutputText, conv, annotations=override(unstruct_hook=list)),
    )
    conv.register_unstructure_hook(Refusal, make_dict_unstructure_fn(Refusal, conv))
    conv.register_unstructure_hook(
        OutputMessage,
        make_dict_unstructure_fn(
            OutputMessage,
            conv,
            content=override(unstruct_hook=each),
            status=override(omit_if_default=True),
        ),
    )
    conv.register_unstructure_hook(
        ImageGenerationCall,
        make_dict_unstructure_fn(
            ImageGenerationCall,
            conv,
            status=override(omit_if_default=True),
            revised_prompt=override(omit_if_default=True),
        ),
    )

    def response(value: Response) -> dict[str, Any]:
        # OpenAI's fields only, in the model's order (not credits, session_id, ...).
        usage = value.usage
        return {
            "id": value.id,
            "status": value.status,
            "model": value.model,
            "created_at": value.created_at,
            "output": each(value.output),
            "usage": None if usage is None else conv.unstructure(usage),
            "output_text": value.output_text,
            "object": value.object,
        }

    conv.register_unstructure_hook(Response, response)


def model_to_dict(model: Response | OutputItem | OutputContent) -> dict[str, Any]:
    """OpenAI's JSON shape of a response, output item or content part, built from the model.

    For a :class:`~samsar_async.models.Response`, OpenAI's fields only (not
    ``credits``, ``session_id``, ...). ``Unknown...`` items and parts give a
    copy of their ``data``. A message's or image call's ``status`` and
    ``revised_prompt`` are left out when ``None``.
    """
    if _structure_event_fn is None:
        _load_event_hooks()
    return get_converter().unstructure(model)  # type: ignore[no-any-return]


_MISSING: Any = object()


def _field_error(kind: str, key: str, expected: str, value: Any) -> StreamDecodeError:
    got = "nothing" if value is _MISSING else type(value).__name__
    return StreamDecodeError(f"{kind} event: {key!r} must be {expected}, got {got}")


# One factory per type of wire field: given the event type and the field, the
# structure hook of that field.
_FieldHook = Callable[[Any, Any], Any]


def _int_field(kind: str, key: str) -> _FieldHook:
    def structure(value: Any, _type: Any) -> int:
        if type(value) is int:
            return value
        raise _field_error(kind, key, "an integer", value)

    return structure


def _str_field(kind: str, key: str) -> _FieldHook:
    def structure(value: Any, _type: Any) -> str:
        if type(value) is str:
            return value
        raise _field_error(kind, key, "a string", value)

    return structure


def _opt_str_field(kind: str, key: str) -> _FieldHook:
    def structure(value: Any, _type: Any) -> str | None:
        if value is None or type(value) is str:
            return value
        raise _field_error(kind, key, "a string or null", value)

    return structure


def _object_field(kind: str, key: str) -> _FieldHook:
    def structure(value: Any, _type: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        raise _field_error(kind, key, "an object", value)

    return structure


def _array_field(kind: str, key: str) -> _FieldHook:
    def structure(value: Any, _type: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if isinstance(value, list):
            return tuple(value)
        raise _field_error(kind, key, "an array", value)

    return structure


# Annotation -> (what a missing value must be, the structure hook factory, the
# unstructure hook; None: sent as it is).
_EVENT_FIELD_TYPES: dict[
    Any, tuple[str, Callable[[str, str], _FieldHook], Callable[[Any], Any] | None]
] = {
    int: ("an integer", _int_field, None),
    str: ("a string", _str_field, None),
    str | None: ("a string or null", _opt_str_field, None),
    Mapping[str, Any]: ("an object", _object_field, dict),
    tuple[Any, ...]: ("an array", _array_field, list),
}

# Event fields that exist in Python only: never sent. ``parsed`` is read from
# "response" (below), ``image`` from our extra "result" (_image_event_hooks).
_PYTHON_ONLY_EVENT_FIELDS = frozenset({"parsed", "image", "error"})


def _parsed_field(kind: str) -> _FieldHook:
    def structure(value: Any, _type: Any) -> Response:
        try:
            return structure_response(value)
        except APIResponseValidationError as exc:
            raise StreamDecodeError(f"{kind} event: {exc.message}") from None

    return structure


_StructureHook = Callable[[Any, Any], Any]
_UnstructureHook = Callable[[Any], dict[str, Any]]


def _event_hooks(conv: cattrs.Converter, cls: type[Any]) -> tuple[_StructureHook, _UnstructureHook]:
    """Generated structure and unstructure hooks for one event class."""
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    kind: str = cls.type
    attrs.resolve_types(cls)
    structure_overrides: dict[str, Any] = {}
    unstructure_overrides: dict[str, Any] = {}
    required: dict[str, str] = {}  # wire key -> what it must be, for a missing one
    for a in attrs.fields(cls):
        if a.name in _PYTHON_ONLY_EVENT_FIELDS:
            unstructure_overrides[a.name] = override(omit=True)
            structure_overrides[a.name] = (
                override(rename="response", struct_hook=_parsed_field(kind))
                if a.name == "parsed"
                else override(omit=True)
            )
            continue
        try:
            expected, field_hook, unstructure_hook = _EVENT_FIELD_TYPES[a.type]
        except KeyError:  # pragma: no cover - caught at import by every test
            raise TypeError(f"{cls.__name__}.{a.name}: no JSON form for {a.type!r}") from None
        structure_overrides[a.name] = override(struct_hook=field_hook(kind, a.name))
        if unstructure_hook is not None:
            unstructure_overrides[a.name] = override(unstruct_hook=unstructure_hook)
        if a.default is attrs.NOTHING:
            required[a.name] = expected
    generated_structure = make_dict_structure_fn(cls, conv, **structure_overrides)
    generated_unstructure = make_dict_unstructure_fn(cls, conv, **unstructure_overrides)

    def structure(data: Mapping[str, Any], cl: Any) -> Any:
        try:
            return generated_structure(data, cl)
        except KeyError as exc:  # the generated code indexes ``data`` for a required field
            key = exc.args[0] if exc.args else None
            if key not in required:
                raise
            raise _field_error(kind, key, required[key], _MISSING) from None

    def unstructure(event: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind}
        out.update(generated_unstructure(event))
        return out

    return structure, unstructure


def _image_event_hooks(
    structure: _StructureHook, unstructure: _UnstructureHook
) -> tuple[_StructureHook, _UnstructureHook]:
    """ImageGenerationCompleted's hooks: ``image`` travels as ``"result"``, its base64."""
    from .events import ImageGenerationCompleted

    kind = ImageGenerationCompleted.type

    def structure_image(data: Mapping[str, Any], cl: Any) -> ImageGenerationCompleted:
        event: ImageGenerationCompleted = structure(data, cl)
        result = data.get("result")
        if result is not None and type(result) is not str:
            raise _field_error(kind, "result", "a string or null", result)
        if not result:
            return event
        return attrs.evolve(event, image=GeneratedImage(id=event.item_id, b64=result))

    def unstructure_image(event: ImageGenerationCompleted) -> dict[str, Any]:
        out = unstructure(event)
        if event.image is not None:
            out["result"] = event.image.b64
        return out

    return structure_image, unstructure_image


def _register_event_hooks(conv: cattrs.Converter) -> dict[str, _StructureHook]:
    """Register every event class's hooks on ``conv``; the structure hooks by ``type``."""
    from .events import ImageGenerationCompleted, StreamEvent, UnknownEvent

    by_type: dict[str, _StructureHook] = {}
    for cls in get_args(StreamEvent):
        if cls is UnknownEvent:
            conv.register_structure_hook(
                cls, lambda data, _: UnknownEvent(data["type"], dict(data))
            )
            conv.register_unstructure_hook(cls, lambda event: dict(event.data))
            continue
        hooks = _event_hooks(conv, cls)
        if cls is ImageGenerationCompleted:
            hooks = _image_event_hooks(*hooks)
        conv.register_structure_hook(cls, hooks[0])
        conv.register_unstructure_hook(cls, hooks[1])
        by_type[cls.type] = conv.get_structure_hook(cls)
    return by_type


_EVENT_STRUCTURE_HOOKS: dict[str, _StructureHook] = {}
"""Each event type's structure hook, by ``type``: filled by :func:`_load_event_hooks`."""
_structure_event_fn: _StructureHook | None = None
"""StreamEvent's structure hook, once :func:`_load_event_hooks` registered it."""


def _load_event_hooks() -> _StructureHook:
    """Generate and register the event and output-model hooks (once; on first use)."""
    global _structure_event_fn
    if _structure_event_fn is not None:
        return _structure_event_fn
    with _lock:
        if _structure_event_fn is None:
            _structure_event_fn = _make_event_hooks(get_converter())
        return _structure_event_fn


def _make_event_hooks(conv: cattrs.Converter) -> _StructureHook:
    from .events import StreamEvent, UnknownEvent

    def structure_event(data: Any, _type: Any) -> StreamEvent:
        # Not cattrs' tagged-union strategy (configure_tagged_union): with a default
        # class, its tag table is a defaultdict that gains an entry for every unknown
        # type it is asked about (a stream of made-up types would grow it without
        # bound); its unstructure hook would overwrite UnknownEvent's type with a
        # constant; and the checks below would be needed in front of it anyway.
        if not isinstance(data, Mapping):
            raise StreamDecodeError(f"an event must be a JSON object, not {type(data).__name__}")
        kind = data.get("type")
        if type(kind) is not str:
            raise StreamDecodeError("an event must have a string 'type'")
        hook = _EVENT_STRUCTURE_HOOKS.get(kind)
        if hook is None:
            return UnknownEvent(kind, dict(data))
        return hook(data, None)  # type: ignore[no-any-return]

    _EVENT_STRUCTURE_HOOKS.update(_register_event_hooks(conv))
    conv.register_structure_hook(StreamEvent, structure_event)
    _register_model_unstructure_hooks(conv)
    return conv.get_structure_hook(StreamEvent)


def load_event_hooks() -> None:
    """Make ``converter`` handle :data:`~samsar_async.events.StreamEvent` and the output
    models (:func:`event_from_dict` and friends do this on their first call).

    Only code that calls ``converter.structure``/``unstructure`` with events or
    output models directly needs it; it is idempotent.
    """
    _load_event_hooks()


def event_from_dict(data: Mapping[str, Any]) -> StreamEvent:
    """The event a JSON object (OpenAI's shape, as :func:`event_to_dict` gives) describes.

    A ``type`` this SDK does not know gives an
    :class:`~samsar_async.events.UnknownEvent` holding (a copy of) ``data``.
    Unknown fields are ignored. Raises
    :class:`~samsar_async.errors.StreamDecodeError` when ``data`` is not an
    object, has no string ``type``, or a field of a known type is missing or
    of the wrong type; the message names the event type and the field.
    ``response.completed`` / ``response.incomplete`` / ``response.failed``
    events get their ``parsed`` :class:`~samsar_async.models.Response`, and
    ``response.image_generation_call.completed`` its ``image`` from
    ``"result"`` when there is one.
    """
    structure = _structure_event_fn
    if structure is None:
        structure = _load_event_hooks()
    return structure(data, None)  # type: ignore[no-any-return]


def event_to_dict(event: StreamEvent) -> dict[str, Any]:
    """OpenAI's JSON shape of ``event``: a new dict, ``type`` first.

    Fields that exist in Python only are left out (``parsed``, ``error``);
    ``response.image_generation_call.completed`` adds ``"result"``, the base64
    image, when it has one. An :class:`~samsar_async.events.UnknownEvent`
    gives a copy of its ``data``.
    """
    if _structure_event_fn is None:
        _load_event_hooks()
    return get_converter().unstructure(event)  # type: ignore[no-any-return]
