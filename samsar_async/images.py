"""Generated images (placeholder until the images module lands).

``save_images`` here is a minimal stand-in so the CLI can be exercised: it
decodes each image's base64 and writes one file per image. The real module
(atomic writes, safe names, ``GeneratedImage.save``) replaces this file.
"""

from __future__ import annotations

import base64
import binascii
import os
import pathlib
from collections.abc import Iterable

import anyio
import attrs

from .errors import ImageDecodeError

__all__ = ["DEFAULT_NAME_PATTERN", "GeneratedImage", "save_images", "sniff_mime"]

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}


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


def _write_all(
    images: list[GeneratedImage], directory: pathlib.Path, overwrite: bool, name: str
) -> list[pathlib.Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[pathlib.Path] = []
    for image in images:
        try:
            data = base64.b64decode(image.b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageDecodeError(f"image {image.id} is not valid base64: {exc}") from None
        if not data:
            raise ImageDecodeError(f"image {image.id} is empty")
        ext = _EXTENSIONS.get(sniff_mime(data[:16]) or "", ".bin")
        filename = name.format(
            response_id=image.response_id or "image",
            index=image.index,
            id=image.id,
            ext=ext,
        )
        path = directory / pathlib.Path(filename).name
        with open(path, "wb" if overwrite else "xb") as f:
            f.write(data)
        paths.append(path)
    return paths


async def save_images(
    images: Iterable[GeneratedImage],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    name: str = DEFAULT_NAME_PATTERN,
) -> list[pathlib.Path]:
    """Write each image into directory ``path``; returns the paths written."""
    items = list(images)
    directory = pathlib.Path(path)
    return await anyio.to_thread.run_sync(_write_all, items, directory, overwrite, name)
