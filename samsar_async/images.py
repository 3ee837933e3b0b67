"""Generated images (placeholder until the images module lands)."""

from __future__ import annotations

import attrs

__all__ = ["GeneratedImage", "sniff_mime"]


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type from magic bytes, or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


@attrs.define(eq=False)
class GeneratedImage:
    """A generated image."""

    id: str
    b64: str = attrs.field(repr=False)
    revised_prompt: str | None = None
    response_id: str | None = None
    session_id: str | None = None
    index: int = 0


DEFAULT_NAME_PATTERN = "{response_id}-{index}{ext}"


async def save_images(images, path, *, overwrite=False, name=DEFAULT_NAME_PATTERN):  # type: ignore[no-untyped-def]
    raise NotImplementedError
