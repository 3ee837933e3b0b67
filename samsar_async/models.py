"""Response models: what the API answers, as frozen attrs classes.

The classes hold data only; :mod:`samsar_async.converter` builds them from
JSON. Samsar answers OpenAI-Responses-compatible payloads, which will grow:
unknown fields are ignored, unknown output items become
:class:`UnknownOutputItem` and unknown content parts :class:`UnknownContent`,
each keeping its data. The whole payload is on :attr:`Response.raw`.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from .images import DEFAULT_NAME_PATTERN, GeneratedImage, save_images

__all__ = [
    "Credits",
    "ImageGenerationCall",
    "OutputContent",
    "OutputItem",
    "OutputMessage",
    "OutputText",
    "Refusal",
    "Response",
    "SystemPrompt",
    "UnknownContent",
    "UnknownOutputItem",
    "Usage",
]


@attrs.frozen
class Credits:
    """The credits headers of an answer, as exact decimals.

    ``charged`` is ``x-credits-charged`` and ``remaining`` is
    ``x-credits-remaining``; each is ``None`` when absent or unparsable.
    """

    charged: Decimal | None = None
    remaining: Decimal | None = None


NO_CREDITS = Credits()


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


@attrs.frozen
class Response:
    """An assistant response (an OpenAI-compatible Responses payload).

    ``output_text`` is the server's ``output_text`` when it sent one, else the
    concatenated ``output_text`` parts of the output messages (``""`` when
    none). ``credits`` comes from the answer's headers, ``idempotency_key`` is
    the key the call was sent with, ``session_id`` the session it ran on, and
    ``raw`` the full JSON object as received, unknown fields included.
    """

    id: str
    status: str | None = None
    model: str | None = None
    created_at: int | None = None
    output: tuple[OutputItem, ...] = ()
    usage: Usage | None = None
    output_text: str = ""
    object: str = "response"
    credits: Credits = NO_CREDITS
    idempotency_key: str | None = None
    session_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def image_calls(self) -> tuple[ImageGenerationCall, ...]:
        """Every ``image_generation_call`` item, failed ones included."""
        return tuple(item for item in self.output if isinstance(item, ImageGenerationCall))

    @functools.cached_property
    def images(self) -> tuple[GeneratedImage, ...]:
        """The generated images: the ``image_generation_call`` items with a result."""
        images: list[GeneratedImage] = []
        for call in self.image_calls:
            if call.failure_reason is None and call.result is not None:
                images.append(
                    GeneratedImage(
                        id=call.id or f"image-{len(images)}",
                        b64=call.result,
                        revised_prompt=call.revised_prompt,
                        response_id=self.id,
                        session_id=self.session_id,
                        index=len(images),
                    )
                )
        return tuple(images)

    async def save_images(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        name: str = DEFAULT_NAME_PATTERN,
    ) -> list[pathlib.Path]:
        """Save every generated image under ``path``; see :meth:`GeneratedImage.save`."""
        return await save_images(self.images, path, overwrite=overwrite, name=name)
