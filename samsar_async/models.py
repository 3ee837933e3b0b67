"""Response models: what the API answers, as frozen attrs classes.

The classes hold data only; :mod:`samsar_async.converter` builds them from
JSON. Samsar answers OpenAI-Responses-compatible payloads, which will grow:
unknown fields are ignored, unknown output items become
:class:`UnknownOutputItem` and unknown content parts :class:`UnknownContent`,
each keeping its data. The whole payload is on :attr:`Response.raw`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Protocol

import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from . import _base64
from ._base64 import HEAD_CHARS, NOT_BASE64, OCTET_STREAM, WRITE_CHUNK_BYTES, Decoder
from ._validators import positive_int
from .errors import ImageDecodeError, InvalidArgumentError

__all__ = [
    "Credits",
    "GeneratedImage",
    "ImageGenerationCall",
    "OutputContent",
    "OutputItem",
    "OutputMessage",
    "OutputText",
    "Refusal",
    "Response",
    "ResponseParts",
    "SystemPrompt",
    "UnknownContent",
    "UnknownOutputItem",
    "Usage",
]


def _check_str(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError(attribute.name, f"must be a str, not {type(value).__name__}")


def _check_optional_str(
    _inst: object, attribute: attrs.Attribute[str | None], value: object
) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(
            attribute.name, f"must be a str or None, not {type(value).__name__}"
        )


def _check_b64(_inst: object, _attribute: attrs.Attribute[str | None], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError("b64", f"must be a str, not {type(value).__name__}")


@attrs.frozen(eq=False)
class GeneratedImage:
    """One generated image, with where it came from.

    Immutable; compares by identity. An image holds either its decoded bytes
    or base64 text:

    - an image of an answer the client received (``response.images``) was
      decoded while the answer arrived: it holds the bytes, and never the
      base64 text; :attr:`b64` encodes them again on each access;
    - an image built with ``GeneratedImage(id=..., b64=...)`` or
      :meth:`from_b64` (and the images of streaming events decoded from
      server-sent events) holds the text and decodes it on first use of
      :attr:`data`, which caches the bytes; :meth:`from_bytes` holds bytes.

    ``id``, ``response_id`` and ``session_id`` come from the server and are
    not trusted: they only reach the file system through the name sanitizing
    of :func:`samsar_async.images.save_image`.
    """

    id: str = attrs.field(validator=_check_str)
    """The ``image_generation_call`` item's id."""
    _text: str | None = attrs.field(alias="b64", repr=False, validator=_check_b64)
    revised_prompt: str | None = attrs.field(default=None, validator=_check_optional_str)
    response_id: str | None = attrs.field(default=None, validator=_check_optional_str)
    session_id: str | None = attrs.field(default=None, validator=_check_optional_str)
    index: int = attrs.field(default=0, validator=positive_int(minimum=0))
    """Position among the response's images."""

    # The decoded bytes: the pieces the answer's reader decoded, in order (joined
    # once, by the first use of .data), or bytes once decoded or given.
    _data: bytes | tuple[bytes, ...] | None = attrs.field(default=None, init=False, repr=False)
    _mime: str | None = attrs.field(default=None, init=False, repr=False)
    # Why the image's base64, decoded as the answer arrived, was invalid.
    _error: ImageDecodeError | None = attrs.field(default=None, init=False, repr=False)

    @classmethod
    def from_b64(
        cls,
        b64: str | bytes | bytearray | memoryview,
        *,
        id: str = "image",
        revised_prompt: str | None = None,
        response_id: str | None = None,
        session_id: str | None = None,
        index: int = 0,
    ) -> GeneratedImage:
        """Build an image from base64 text obtained elsewhere.

        Unlike the constructor, this accepts bytes and removes whitespace
        (line-wrapped base64 such as ``base64``'s output). Nothing is decoded
        yet.
        """
        if isinstance(b64, (bytes, bytearray, memoryview)):
            try:
                text = bytes(b64).decode("ascii")
            except UnicodeDecodeError as exc:
                raise ImageDecodeError(
                    f"image {_label(id)}: invalid base64: non-ASCII byte at offset {exc.start}"
                ) from None
        elif isinstance(b64, str):
            text = b64
        else:
            raise InvalidArgumentError("b64", f"must be str or bytes, not {type(b64).__name__}")
        text = "".join(text.split())
        return cls(
            id=id,
            b64=text,
            revised_prompt=revised_prompt,
            response_id=response_id,
            session_id=session_id,
            index=index,
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        id: str = "image",
        revised_prompt: str | None = None,
        response_id: str | None = None,
        session_id: str | None = None,
        index: int = 0,
    ) -> GeneratedImage:
        """Build an image from its decoded bytes (copied unless ``bytes``).

        An empty ``data`` is refused (:class:`~samsar_async.errors.InvalidArgumentError`).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError("data", f"must be bytes, not {type(data).__name__}")
        payload = data if isinstance(data, bytes) else bytes(data)
        if not payload:
            raise InvalidArgumentError("data", "must not be empty")
        return cls._decoded(
            payload,
            id=id,
            revised_prompt=revised_prompt,
            response_id=response_id,
            session_id=session_id,
            index=index,
        )

    @classmethod
    def _decoded(
        cls,
        data: bytes | tuple[bytes, ...] | None,
        *,
        id: str,
        revised_prompt: str | None,
        response_id: str | None,
        session_id: str | None,
        index: int,
        error: ImageDecodeError | None = None,
    ) -> GeneratedImage:
        """An image holding ``data`` (bytes, or pieces to be read in order), or
        ``error``, raised whenever it is used."""
        image = cls(
            id=id,
            b64="",  # replaced below: no text, the bytes
            revised_prompt=revised_prompt,
            response_id=response_id,
            session_id=session_id,
            index=index,
        )
        object.__setattr__(image, "_text", None)
        object.__setattr__(image, "_data", data)
        object.__setattr__(image, "_error", error)
        return image

    # ------------------------------------------------------------------ cheap facts

    @property
    def b64(self) -> str:
        """The base64 text.

        For an image built from base64 text, that text exactly as given. For an
        image that arrived decoded (every image of a response the client
        received), the bytes are encoded again on each access: that costs
        time and memory (a string 1.33 times the image's size), so prefer
        :attr:`data` or :func:`samsar_async.images.save_image`. Kept for
        compatibility; raises :class:`ImageDecodeError` for an image whose
        base64 was invalid when it arrived.
        """
        text = self._text
        if text is not None:
            return text
        if self._error is not None:
            raise self._error
        data = self._data
        assert data is not None
        return _base64.encode(data if isinstance(data, bytes) else b"".join(data))

    @property
    def size(self) -> int:
        """Decoded size in bytes; for base64 text, from its length and padding (no decoding).

        Raises :class:`ImageDecodeError` if the length or padding is invalid.
        Characters are not checked here: :attr:`data` and saving do that.
        """
        data = self._data
        if isinstance(data, bytes):
            return len(data)
        if data is not None:
            return sum(map(len, data))
        return self._structure()

    @property
    def mime_type(self) -> str:
        """``"image/png"``, ``"image/jpeg"``, ``"image/webp"``, ``"image/gif"``,
        or ``"application/octet-stream"`` when the format is not recognized.

        For base64 text, only the first 16 characters are decoded.
        """
        if self._mime is None:
            object.__setattr__(self, "_mime", _base64.sniff_mime(self._head()) or OCTET_STREAM)
        assert self._mime is not None
        return self._mime

    @property
    def extension(self) -> str:
        """``".png"``, ``".jpg"``, ``".webp"``, ``".gif"`` or ``".bin"``."""
        return _base64.extension_for(self.mime_type)

    @property
    def data(self) -> bytes:
        """The decoded bytes, cached.

        An image built from base64 text is strictly decoded in one go on first
        use. An image that arrived decoded joins the pieces it was decoded in
        (one copy, on first access).

        To write a file, prefer :func:`samsar_async.images.save_image`, which
        never copies nor decodes the whole image on the event loop.
        """
        data = self._data
        if isinstance(data, bytes):
            return data
        if data is not None:
            data = b"".join(data)
        else:
            self._structure()
            assert self._text is not None
            try:
                data = _base64.DECODER.decode(self._text)
            except ValueError:
                raise self._invalid(self._text, 0) from None
            if not data:  # unreachable after _structure(); kept as the contract
                raise ImageDecodeError(f"image {_label(self.id)}: decodes to no bytes")
        object.__setattr__(self, "_data", data)
        return data

    # ------------------------------------------------------------------ decoding

    def _structure(self) -> int:
        """Check length and padding of the text; return the decoded size."""
        text = self._text
        if text is None:
            assert self._error is not None
            raise self._error
        n = len(text)
        if n == 0:
            raise ImageDecodeError(f"image {_label(self.id)}: empty base64 payload")
        if n % 4:
            raise ImageDecodeError(
                f"image {_label(self.id)}: invalid base64: length {n} is not a multiple "
                "of 4 (truncated or unpadded)"
            )
        pad = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
        if n >= 3 and text[-3] == "=":
            raise ImageDecodeError(
                f"image {_label(self.id)}: invalid base64: more than two '=' at the end"
            )
        return n // 4 * 3 - pad

    def _head(self) -> bytes:
        data = self._data
        if isinstance(data, bytes):
            return data[:12]
        if data is not None:
            first = b""
            for piece in data:
                first += piece[: 12 - len(first)]
                if len(first) == 12:
                    break
            return first
        self._structure()
        assert self._text is not None
        head = self._text[:HEAD_CHARS]
        try:
            if len(self._text) > HEAD_CHARS and head.endswith("="):
                raise ValueError
            return _base64.stdlib_decode(head)
        except ValueError:
            raise self._invalid(head, 0) from None

    def _chunks(self, decoder: Decoder) -> Iterator[bytes | memoryview]:
        """Yield the decoded bytes piece by piece (strict); the saver in
        :mod:`samsar_async.images` writes them one at a time."""
        data = self._data
        if isinstance(data, bytes):
            view = memoryview(data)
            for start in range(0, len(view), WRITE_CHUNK_BYTES):
                yield view[start : start + WRITE_CHUNK_BYTES]
            return
        if data is not None:
            yield from data
            return
        self._structure()
        text = self._text
        assert text is not None
        total = len(text)
        step = decoder.chunk_chars
        for start in range(0, total, step):
            chunk = text[start : start + step]
            try:
                if start + step < total and chunk.endswith("="):
                    raise ValueError  # padding before the end of the payload
                decoded = decoder.decode(chunk)
            except ValueError:
                raise self._invalid(chunk, start) from None
            del chunk
            yield decoded

    def _invalid(self, chunk: str, offset: int) -> ImageDecodeError:
        """Say where ``chunk`` (at ``offset`` in the payload) is invalid, without its text."""
        match = NOT_BASE64.search(chunk)
        if match is not None:
            char = match.group()
            kind = "whitespace" if char.isspace() else "non-base64 character"
            reason = f"{kind} {char!r} at offset {offset + match.start()}"
        else:
            pos = chunk.find("=")
            if pos >= 0:
                reason = f"padding '=' at offset {offset + pos} is not at the end"
            else:
                reason = f"rejected by the decoder near offset {offset}"
        return ImageDecodeError(f"image {_label(self.id)}: invalid base64: {reason}")


def _label(image_id: str) -> str:
    """A short, printable rendering of an untrusted id for messages."""
    return repr(image_id[:80] + "…") if len(image_id) > 80 else repr(image_id)


@attrs.frozen
class Credits:
    """The credits headers of an answer, as exact decimals.

    ``charged`` is ``x-credits-charged`` and ``remaining`` is
    ``x-credits-remaining``; each is ``None`` when absent or unparsable.
    """

    charged: Decimal | None = None
    remaining: Decimal | None = None


NO_CREDITS = Credits()

NO_HEADERS: Mapping[str, str] = CIMultiDictProxy(CIMultiDict())
"""The headers of a model built in code: none."""


@attrs.frozen
class Usage:
    """Token usage of a response."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )


@attrs.frozen
class OutputText:
    """A text part of an output message."""

    text: str
    annotations: tuple[Any, ...] = ()
    type: str = "output_text"


@attrs.frozen
class Refusal:
    """The model refused; ``refusal`` says why."""

    refusal: str
    type: str = "refusal"


@attrs.frozen
class UnknownContent:
    """A content part of a type this SDK version does not know; ``data`` keeps it."""

    type: str | None
    data: Mapping[str, Any] = attrs.field(repr=False)


OutputContent = OutputText | Refusal | UnknownContent


@attrs.frozen
class OutputMessage:
    """An assistant message in ``output``."""

    id: str | None = None
    role: str = "assistant"
    content: tuple[OutputContent, ...] = ()
    status: str | None = None
    type: str = "message"

    @property
    def text(self) -> str:
        """The message's ``output_text`` parts, concatenated."""
        return "".join(p.text for p in self.content if isinstance(p, OutputText))


@attrs.frozen
class ImageGenerationCall:
    """An ``image_generation_call`` item; ``result`` is the base64 image."""

    id: str | None = None
    status: str | None = None
    revised_prompt: str | None = None
    result: str | None = attrs.field(default=None, repr=False)
    type: str = "image_generation_call"

    @property
    def failure_reason(self) -> str | None:
        """Why this call yields no image, or ``None`` when it has one."""
        if self.status not in (None, "completed"):
            return f"image generation call status is {self.status!r}"
        if not self.result:
            return "image generation call has no result"
        return None


@attrs.frozen
class UnknownOutputItem:
    """An output item of a type this SDK version does not know; ``data`` keeps it."""

    type: str | None
    id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


OutputItem = OutputMessage | ImageGenerationCall | UnknownOutputItem


@attrs.frozen
class SystemPrompt:
    """The answer of ``set_system_prompt``."""

    system_prompt: str | None = None
    model: str | None = None
    selected_assistant_model: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    headers: Mapping[str, str] = attrs.field(
        default=attrs.Factory(lambda: NO_HEADERS), repr=False, eq=False
    )
    """The answer's HTTP headers (read-only, case-insensitive; empty when built in code)."""


class ResponseParts(Protocol):
    """How a :class:`Response` built from JSON makes its typed parts on first access.

    The converter provides it (models never import cattrs): ``output`` and
    ``usage`` are structured from ``raw`` only when read, and ``credits`` parsed
    from the answer's headers only when read. Each raises
    :class:`~samsar_async.errors.APIResponseValidationError` for a part of the
    wrong shape.
    """

    def output(self, response: Response) -> tuple[OutputItem, ...]:
        """The typed ``output`` items of ``response.raw``."""
        ...

    def usage(self, response: Response) -> Usage | None:
        """The typed ``usage`` of ``response.raw``."""
        ...

    def credits(self, response: Response) -> Credits:
        """:class:`Credits` from ``response.headers``."""
        ...


def headers_view(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    """``headers`` as a read-only, case-insensitive mapping (as a response keeps them)."""
    if headers is None:
        return NO_HEADERS
    if isinstance(headers, CIMultiDictProxy):
        return headers
    return CIMultiDictProxy(CIMultiDict(headers))


class Response:
    """An assistant response (an OpenAI-compatible Responses payload).

    ``output_text`` is the server's ``output_text`` when it sent one, else the
    concatenated ``output_text`` parts of the output messages (``""`` when
    none). ``credits`` comes from the answer's headers, ``idempotency_key`` is
    the key the call was sent with, ``session_id`` the session it ran on, and
    ``raw`` the full JSON object as received, unknown fields included, and
    ``headers`` the answer's HTTP headers.

    Immutable (every field is a read-only property) and hashable; equal when
    every field but ``raw`` and ``headers`` is equal. A response returned by the client keeps
    the parsed JSON and builds the typed ``output``, ``usage`` and ``credits``
    on first access (their top-level shape was checked when the answer
    arrived; a deeper problem raises
    :class:`~samsar_async.errors.APIResponseValidationError` on that access).
    Build one in code with the keyword arguments below.
    """

    # A response built from JSON sets only what every call reads (id, output_text, ...):
    # the other slots stay unset until first read, then keep what was read (status,
    # model, created_at and object come from ``raw``, checked when the answer arrived;
    # output, usage and credits are built by ``_parts``).
    __slots__ = (
        "_created_at",
        "_credits",
        "_headers",
        "_id",
        "_idempotency_key",
        "_images",
        "_model",
        "_object",
        "_output",
        "_output_text",
        "_parts",
        "_raw",
        "_session_id",
        "_status",
        "_usage",
    )

    _id: str
    _status: str | None
    _model: str | None
    _created_at: int | None
    _output_text: str
    _object: str
    _idempotency_key: str | None
    _session_id: str | None
    _raw: Mapping[str, Any]
    _output: tuple[OutputItem, ...]
    _usage: Usage | None
    _credits: Credits
    _parts: ResponseParts | None
    _images: tuple[GeneratedImage, ...]
    _headers: Mapping[str, str]

    def __init__(
        self,
        id: str,
        status: str | None = None,
        model: str | None = None,
        created_at: int | None = None,
        output: tuple[OutputItem, ...] = (),
        usage: Usage | None = None,
        output_text: str = "",
        object: str = "response",
        credits: Credits = NO_CREDITS,
        idempotency_key: str | None = None,
        session_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._id = id
        self._status = status
        self._model = model
        self._created_at = created_at
        self._output_text = output_text
        self._object = object
        self._idempotency_key = idempotency_key
        self._session_id = session_id
        self._raw = {} if raw is None else raw
        self._output = tuple(output)
        self._usage = usage
        self._credits = credits
        self._parts = None
        self._headers = headers_view(headers)

    @classmethod
    def _from_json(
        cls,
        raw: Mapping[str, Any],
        id: str,
        output_text: str,
        idempotency_key: str | None,
        session_id: str | None,
        parts: ResponseParts,
        headers: Mapping[str, str],
    ) -> Response:
        """A response whose other fields are read from ``raw`` or built by ``parts``
        when first read (for the converter: the top-level shape was checked already)."""
        self = cls.__new__(cls)
        self._id = id
        self._output_text = output_text
        self._idempotency_key = idempotency_key
        self._session_id = session_id
        self._raw = raw
        self._parts = parts
        self._headers = headers
        return self

    @property
    def id(self) -> str:
        """The response id."""
        return self._id

    @property
    def status(self) -> str | None:
        """``"completed"``, ``"incomplete"``, ``"failed"``, ... as sent."""
        try:
            return self._status
        except AttributeError:  # from JSON: kept once read
            status = self._status = self._raw.get("status")
            return status

    @property
    def model(self) -> str | None:
        """The model that answered."""
        try:
            return self._model
        except AttributeError:  # from JSON: kept once read
            model = self._model = self._raw.get("model")
            return model

    @property
    def created_at(self) -> int | None:
        """Unix time of creation."""
        try:
            return self._created_at
        except AttributeError:  # from JSON: kept once read
            created_at = self._created_at = self._raw.get("created_at")
            return created_at

    @property
    def output_text(self) -> str:
        """The answer's text (see the class docstring)."""
        return self._output_text

    @property
    def object(self) -> str:
        """``"response"``."""
        try:
            return self._object
        except AttributeError:  # from JSON: kept once read
            kind = self._raw.get("object")
            kind = self._object = "response" if kind is None else kind
            return kind

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` the call was sent with."""
        return self._idempotency_key

    @property
    def session_id(self) -> str | None:
        """The session the call ran on."""
        return self._session_id

    @property
    def raw(self) -> Mapping[str, Any]:
        """The JSON object as received (empty for a response built in code).

        In the answer to a request offering the ``image_generation`` tool, each
        image's ``result`` is a placeholder: the image was decoded as the answer
        arrived (see :attr:`images`).
        """
        return self._raw

    @property
    def headers(self) -> Mapping[str, str]:
        """The answer's HTTP headers: a read-only, case-insensitive mapping.

        For request ids and anything the server adds (``x-request-id``,
        ``x-credits-charged``, ...). Empty for a response built in code.
        """
        return self._headers

    @property
    def output(self) -> tuple[OutputItem, ...]:
        """The output items: messages, image generation calls, and unknown items."""
        try:
            return self._output
        except AttributeError:  # from JSON, not read yet
            assert self._parts is not None
            output = self._output = self._parts.output(self)
            return output

    @property
    def usage(self) -> Usage | None:
        """Token usage, when the answer has it."""
        try:
            return self._usage
        except AttributeError:  # from JSON, not read yet
            assert self._parts is not None
            usage = self._usage = self._parts.usage(self)
            return usage

    @property
    def credits(self) -> Credits:
        """The answer's credits headers (``charged``, ``remaining``)."""
        try:
            return self._credits
        except AttributeError:  # from JSON, not read yet
            assert self._parts is not None
            credits = self._credits = self._parts.credits(self)
            return credits

    def _fields(self) -> tuple[Any, ...]:
        return (
            self._id,
            self.status,
            self.model,
            self.created_at,
            self.output,
            self.usage,
            self._output_text,
            self.object,
            self.credits,
            self._idempotency_key,
            self._session_id,
        )

    def __eq__(self, other: builtins.object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        names = (
            "id",
            "status",
            "model",
            "created_at",
            "output",
            "usage",
            "output_text",
            "object",
            "credits",
            "idempotency_key",
            "session_id",
        )
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
        return f"Response({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (for Ray, say) with its parts built: the converter stays behind.
        return (_rebuild, (*self._fields(), dict(self._raw), CIMultiDict(self._headers)))

    @property
    def image_calls(self) -> tuple[ImageGenerationCall, ...]:
        """Every ``image_generation_call`` item, failed ones included."""
        return tuple(item for item in self.output if isinstance(item, ImageGenerationCall))

    @property
    def images(self) -> tuple[GeneratedImage, ...]:
        """The generated images: the ``image_generation_call`` items with a result.

        In an answer to a request with the ``image_generation`` tool, the images
        were decoded while the answer arrived: they hold the bytes, and
        ``raw``'s ``result`` strings are placeholders (``output``'s are base64
        again, encoded when ``output`` is first read).
        """
        try:
            return self._images
        except AttributeError:
            pass
        decoded = getattr(self._parts, "images", None)
        if decoded is not None:  # an answer whose images were decoded as it arrived
            self._images = decoded(self)
            return self._images
        images: list[GeneratedImage] = []
        for call in self.image_calls:
            if call.failure_reason is None and call.result is not None:
                images.append(
                    GeneratedImage(
                        id=call.id or f"image-{len(images)}",
                        b64=call.result,
                        revised_prompt=call.revised_prompt,
                        response_id=self._id,
                        session_id=self._session_id,
                        index=len(images),
                    )
                )
        self._images = tuple(images)
        return self._images


def _rebuild(*args: Any) -> Response:
    return Response(*args)
