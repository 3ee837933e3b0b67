"""Tiny PNG encoder (zlib + struct only) for the mock server's generated images.

Two kinds of image are made:

- :func:`solid_png`: one colour, any size. Compresses to a few KiB even at 1024x1024.
- :func:`noise_png`: random pixels (``os.urandom``) in zlib *stored* blocks, padded
  with a private ancillary chunk so the file is exactly the requested size. It
  does not compress, which is what a test of large responses needs.

Both are 8-bit RGB (colour type 2), non-interlaced, and decode with any PNG reader.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import zlib
from typing import Final

__all__ = ["MIN_NOISE_PNG_SIZE", "PNG_SIGNATURE", "noise_png", "solid_png"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

_PAD_CHUNK: Final = b"mkPd"
"""Private, ancillary, safe-to-copy chunk type used as padding; readers skip it."""

_CHUNK_OVERHEAD: Final = 12  # length + type + CRC
_FIXED_OVERHEAD: Final = len(PNG_SIGNATURE) + (_CHUNK_OVERHEAD + 13) + 2 * _CHUNK_OVERHEAD
"""Signature, IHDR chunk, and the IDAT and IEND chunk envelopes (57 bytes)."""

_ZLIB_STORED_BLOCK: Final = 65535

MIN_NOISE_PNG_SIZE: Final = _FIXED_OVERHEAD + 15 + _CHUNK_OVERHEAD
"""Smallest size from which :func:`noise_png` can hit every size exactly (84)."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _ihdr(width: int, height: int) -> bytes:
    # width, height, bit depth 8, colour type 2 (RGB), compression 0, filter 0, no interlace
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError("PNG width and height must be at least 1")


@functools.lru_cache(maxsize=64)
def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A ``width`` x ``height`` PNG of one colour ``rgb`` (each 0-255)."""
    _check_size(width, height)
    row = b"\x00" + bytes(rgb) * width  # filter type 0 (None) + pixels
    raw = row * height
    return b"".join(
        (
            PNG_SIGNATURE,
            _ihdr(width, height),
            _chunk(b"IDAT", zlib.compress(raw, 9)),
            _chunk(b"IEND", b""),
        )
    )


def _stored_zlib_size(raw_len: int) -> int:
    blocks = max(1, math.ceil(raw_len / _ZLIB_STORED_BLOCK))
    return 2 + raw_len + 5 * blocks + 4  # header + data + block headers + adler32


def _stored_zlib(raw: bytes) -> bytes:
    """A zlib stream of uncompressed ("stored") deflate blocks: its size is exact."""
    parts = [b"\x78\x01"]  # CMF/FLG: deflate, 32 KiB window, no dictionary, check bits ok
    offsets = range(0, max(1, len(raw)), _ZLIB_STORED_BLOCK)
    for index, start in enumerate(offsets):
        block = raw[start : start + _ZLIB_STORED_BLOCK]
        final = 1 if index == len(offsets) - 1 else 0
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    parts.append(struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF))
    return b"".join(parts)


def _fit(budget: int, row_len: int) -> int:
    """Rows of ``row_len`` bytes whose stored stream leaves 0 or >= 12 spare bytes (0: none)."""
    height = budget // row_len
    while height >= 1:
        spare = budget - _stored_zlib_size(height * row_len)
        if spare == 0 or spare >= _CHUNK_OVERHEAD:
            return height
        height -= 1
    return 0


def noise_png(size: int) -> bytes:
    """A PNG of random pixels that is exactly ``size`` bytes long.

    Every ``size`` from :data:`MIN_NOISE_PNG_SIZE` (84) up works; a few smaller
    ones do, the others raise :class:`ValueError`.

    The image is roughly square; what whole pixel rows do not fill is taken by
    a private ancillary chunk of random bytes, which decoders skip.
    """
    budget = size - _FIXED_OVERHEAD  # room for the zlib stream and an optional pad chunk
    width = max(1, math.isqrt(max(1, size // 3)))
    height = _fit(budget, 1 + 3 * width)
    if height == 0:
        width = 1
        height = _fit(budget, 4)
    if height == 0:
        raise ValueError(
            f"no PNG of exactly {size} bytes can be made; ask for at least {MIN_NOISE_PNG_SIZE}"
        )
    row_len = 1 + 3 * width
    raw = bytearray(os.urandom(height * row_len))
    raw[::row_len] = bytes(height)  # filter type 0 at the start of every row
    idat = _stored_zlib(bytes(raw))
    spare = budget - len(idat)
    parts = [PNG_SIGNATURE, _ihdr(width, height), _chunk(b"IDAT", idat)]
    if spare:
        parts.append(_chunk(_PAD_CHUNK, os.urandom(spare - _CHUNK_OVERHEAD)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
