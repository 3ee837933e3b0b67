"""Tests of samsar_async.images: decoding, format sniffing, naming and atomic saves.

Everything writes real files under ``tmp_path``. Both decoders are exercised:
the standard library one always, pybase64 when installed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import os
import re
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.from_thread
import pytest

from samsar_async import _base64
from samsar_async.errors import ImageDecodeError, ImageSaveError, InvalidArgumentError
from samsar_async.images import (
    DEFAULT_NAME_PATTERN,
    GeneratedImage,
    UnknownImageFormatWarning,
    extension_for,
    save_image,
    save_images,
    sniff_mime,
)

pytestmark = pytest.mark.anyio

# ----------------------------------------------------------------------------- fixtures


def make_png(width: int = 2, height: int = 2) -> bytes:
    """A small, valid PNG (red pixels), built by hand."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = make_png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
WEBP = b"RIFF" + struct.pack("<I", 26) + b"WEBPVP8L" + struct.pack("<I", 14) + bytes(14)
GIF87 = b"GIF87a\x01\x00\x01\x00\x00\x00\x00;"
GIF89 = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00;"
UNKNOWN = b"%PDF-1.7 definitely not an image"

FORMATS = [
    (PNG, "image/png", ".png"),
    (JPEG, "image/jpeg", ".jpg"),
    (WEBP, "image/webp", ".webp"),
    (GIF87, "image/gif", ".gif"),
    (GIF89, "image/gif", ".gif"),
]

SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image(data: bytes = PNG, **kwargs: object) -> GeneratedImage:
    fields: dict[str, object] = {"id": "ig_1", "response_id": "resp_1", "session_id": "s1"}
    fields.update(kwargs)
    return GeneratedImage(b64=b64(data), **fields)  # type: ignore[arg-type]


def entries(directory: Path) -> list[str]:
    """Every name in ``directory`` (temp files included)."""
    return sorted(p.name for p in directory.iterdir())


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def probe(monkeypatch: pytest.MonkeyPatch, chunk_chars: int, hook: Callable[[int], None]) -> None:
    """Use the stdlib decoder with ``chunk_chars``, calling ``hook(n)`` before chunk n (1-based)."""
    calls = 0

    def decode(text: str) -> bytes:
        nonlocal calls
        calls += 1
        hook(calls)
        return _base64.STDLIB.decode(text)

    monkeypatch.setattr(_base64, "DECODER", _base64.Decoder("probe", decode, chunk_chars))


def pybase64_decoder() -> _base64.Decoder:
    pytest.importorskip("pybase64")
    decoder = _base64._load_pybase64()
    assert decoder is not None
    return decoder


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(("data", "mime", "ext"), FORMATS)
def test_sniff_mime_and_extension(data: bytes, mime: str, ext: str) -> None:
    assert sniff_mime(data) == mime
    assert sniff_mime(bytearray(data)) == mime
    assert sniff_mime(memoryview(data)) == mime
    assert extension_for(mime) == ext


def test_sniff_mime_unknown_and_short() -> None:
    assert sniff_mime(UNKNOWN) is None
    assert sniff_mime(b"") is None
    assert sniff_mime(b"\x89PN") is None
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WAVE") is None


def test_extension_for_normalizes_and_falls_back() -> None:
    assert extension_for("IMAGE/PNG; charset=binary") == ".png"
    assert extension_for("image/jpg") == ".jpg"
    assert extension_for("application/octet-stream") == ".bin"
    assert extension_for("image/avif") == ".bin"


@pytest.mark.parametrize(("data", "mime", "ext"), FORMATS)
def test_image_mime_type_and_extension(data: bytes, mime: str, ext: str) -> None:
    img = image(data)
    assert img.mime_type == mime
    assert img.extension == ext


def test_unknown_format_is_octet_stream() -> None:
    img = image(UNKNOWN)
    assert img.mime_type == "application/octet-stream"
    assert img.extension == ".bin"


def test_mime_type_decodes_only_the_head() -> None:
    # Valid first 16 characters, garbage afterwards: only a full decode notices.
    img = GeneratedImage(id="x", b64=b64(PNG)[:16] + "!!!!" * 10)
    assert img.mime_type == "image/png"
    assert img.extension == ".png"
    with pytest.raises(ImageDecodeError):
        _ = img.data


# ----------------------------------------------------------------------------- size


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 100, 101, 102, 4096])
def test_size_from_length_and_padding(n: int) -> None:
    raw = (PNG * 200)[:n]
    assert image(raw).size == n


def test_size_does_not_decode() -> None:
    # 48 characters with invalid ones: the size is still known without decoding.
    img = GeneratedImage(id="x", b64="$" * 44 + "AA==")
    assert img.size == 34
    with pytest.raises(ImageDecodeError):
        _ = img.data


@pytest.mark.parametrize("text", ["", "A", "AAAAA", "AA=", "A===", "===="])
def test_size_rejects_bad_length_or_padding(text: str) -> None:
    with pytest.raises(ImageDecodeError):
        _ = GeneratedImage(id="x", b64=text).size


# ----------------------------------------------------------------------------- strict decoding

MARKER = "SECRETPAYLOADSECRETPAYLOADXY"  # 28 base64-alphabet characters


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (MARKER + "AA$A", r"non-base64 character '\$' at offset 30"),
        (MARKER + "AA-_", "non-base64 character '-' at offset 30"),
        (MARKER + "AA\nA", r"whitespace '\\n' at offset 30"),
        (MARKER + "A AA", "whitespace ' ' at offset 29"),
        (MARKER + "AAé=", "non-base64 character 'é' at offset 30"),
        (MARKER + "AA=A", "padding '=' at offset 30 is not at the end"),
        (MARKER + "AA==AAAA", "padding '=' at offset 30 is not at the end"),
        ("=AAA" + MARKER, "padding '=' at offset 0 is not at the end"),
        (MARKER + "A", "length 29 is not a multiple of 4"),
        (MARKER + "A===", "more than two '='"),
        ("", "empty"),
    ],
)
@pytest.mark.parametrize("decoder", ["stdlib", "pybase64"])
def test_strict_decode_errors(
    monkeypatch: pytest.MonkeyPatch, decoder: str, text: str, why: str
) -> None:
    chosen = _base64.STDLIB if decoder == "stdlib" else pybase64_decoder()
    monkeypatch.setattr(_base64, "DECODER", chosen)
    img = GeneratedImage(id="ig_bad", b64=text)
    with pytest.raises(ImageDecodeError, match=why) as info:
        _ = img.data
    message = str(info.value)
    assert "'ig_bad'" in message
    assert MARKER not in message
    assert info.value.__cause__ is None


def test_error_message_truncates_hostile_id() -> None:
    img = GeneratedImage(id="\x1b[31m" + "x" * 500, b64="A")
    with pytest.raises(ImageDecodeError) as info:
        _ = img.data
    message = str(info.value)
    assert "\x1b" not in message
    assert len(message) < 200


def test_data_is_decoded_once_and_cached() -> None:
    img = image(PNG)
    first = img.data
    assert first == PNG
    assert img.data is first
    assert img.size == len(PNG)


def test_from_b64_strips_whitespace_and_accepts_bytes() -> None:
    text = b64(PNG * 20)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\n"
    assert GeneratedImage.from_b64(wrapped, id="w").data == PNG * 20
    assert GeneratedImage.from_b64(wrapped.encode(), id="w").data == PNG * 20
    img = GeneratedImage.from_b64(memoryview(text.encode()), response_id="r", index=3)
    assert (img.id, img.response_id, img.index, img.b64) == ("image", "r", 3, text)
    with pytest.raises(ImageDecodeError, match="non-ASCII"):
        GeneratedImage.from_b64(b"AA\xffA")


def test_constructor_validates_types() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        GeneratedImage(id="x", b64=b"AAAA")  # type: ignore[arg-type]
    assert info.value.field == "b64"
    with pytest.raises(InvalidArgumentError):
        GeneratedImage(id="x", b64="AAAA", index=-1)
    with pytest.raises(InvalidArgumentError):
        GeneratedImage(id=None, b64="AAAA")  # type: ignore[arg-type]


def test_repr_hides_payload() -> None:
    img = image(PNG)
    assert img.b64 not in repr(img)
    assert "ig_1" in repr(img)


# ----------------------------------------------------------------------------- save: paths


async def test_save_into_existing_directory(tmp_path: Path) -> None:
    dest = await save_image(image(PNG), tmp_path)
    assert dest == tmp_path.resolve() / "resp_1-0.png"
    assert dest.is_absolute()
    assert dest.read_bytes() == PNG
    assert entries(tmp_path) == ["resp_1-0.png"]


async def test_save_with_trailing_separator_creates_directories(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    dest = await save_image(image(JPEG, index=2), str(out) + os.sep)
    assert dest == out.resolve() / "resp_1-2.jpg"
    assert dest.read_bytes() == JPEG


async def test_save_exact_file_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "picture.data"
    dest = await save_image(image(GIF89), target)
    assert dest == target.resolve()
    assert dest.read_bytes() == GIF89
    assert entries(target.parent) == ["picture.data"]


async def test_save_relative_path_returns_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dest = await save_image(image(WEBP), "out/")
    assert dest == tmp_path.resolve() / "out" / "resp_1-0.webp"
    assert dest.read_bytes() == WEBP


async def test_save_name_pattern_placeholders(tmp_path: Path) -> None:
    img = image(PNG, id="ig_9", session_id="sess", response_id="resp", index=7)
    dest = await save_image(
        img, tmp_path, name="{session_id}_{response_id}_{image_id}_{index:03d}{ext}"
    )
    assert dest.name == "sess_resp_ig_9_007.png"


async def test_missing_ids_fall_back(tmp_path: Path) -> None:
    img = GeneratedImage(id="", b64=b64(PNG))
    dest = await save_image(img, tmp_path, name="{response_id}-{session_id}-{image_id}{ext}")
    assert dest.name == "image-image-image.png"


HOSTILE = [
    "../../etc/passwd",
    "..",
    ".",
    "...",
    "/abs/path",
    "/",
    "a\\b",
    "..\\..\\windows\\system32",
    "C:\\evil",
    "a/../../b",
    "",
    "\x00",
    "name\x00.png",
    "~root",
    ".hidden",
    "x" * 5000,
    "CON",
    "ü/../..",
    " \n\t",
    "%2e%2e%2f",
    "-rf",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("pattern", [DEFAULT_NAME_PATTERN, "{session_id}{response_id}{image_id}"])
async def test_untrusted_ids_never_escape(tmp_path: Path, value: str, pattern: str) -> None:
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    img = image(PNG, id=value, session_id=value, response_id=value)
    dest = await save_image(img, out, name=pattern)
    assert dest.parent == out.resolve()
    assert dest.resolve() == dest
    assert SAFE_NAME.fullmatch(dest.name)
    assert not dest.name.startswith(".")
    assert dest.name.split(".")[0].upper() != "CON"
    assert len(dest.name) <= 200
    assert all_files(tmp_path) == [dest]
    assert dest.read_bytes() == PNG


async def test_untrusted_ids_in_save_images(tmp_path: Path) -> None:
    out = tmp_path / "x" / "out"
    imgs = [image(PNG, id=v, response_id=v, session_id=v, index=i) for i, v in enumerate(HOSTILE)]
    paths = await save_images(imgs, out, name="{response_id}{session_id}{image_id}-{index}{ext}")
    assert len(paths) == len(HOSTILE)
    assert all(p.parent == out.resolve() for p in paths)
    assert all_files(tmp_path) == sorted(paths)


async def test_long_name_keeps_extension(tmp_path: Path) -> None:
    dest = await save_image(image(PNG), tmp_path, name="{index:>300}x{ext}")
    assert len(dest.name) <= 200
    assert dest.name.endswith(".png")


@pytest.mark.parametrize(
    "pattern",
    [
        "{nope}{ext}",
        "{0}",
        "{}",
        "{image_id.__class__}",
        "{index[0]}",
        "{index:{ext}}",
        "{index",
        "out/{index}{ext}",
        "..\\{index}",
        "",
    ],
)
async def test_bad_pattern_is_refused_before_writing(tmp_path: Path, pattern: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidArgumentError) as info:
        await save_image(image(PNG), str(out) + "/", name=pattern)
    assert info.value.field == "name"
    with pytest.raises(InvalidArgumentError):
        await save_images([image(PNG)], out, name=pattern)
    with pytest.raises(InvalidArgumentError):
        await save_image(image(PNG), tmp_path / "explicit.png", name=pattern)
    assert entries(tmp_path) == []


async def test_pattern_format_error_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="name"):
        await save_image(image(PNG), tmp_path, name="{image_id:d}")
    assert entries(tmp_path) == []


# ----------------------------------------------------------------------------- save: overwrite


async def test_overwrite_false_refuses_and_keeps_original(tmp_path: Path) -> None:
    target = tmp_path / "pic.png"
    target.write_bytes(b"original")
    with pytest.raises(FileExistsError) as info:
        await save_image(image(PNG), target)
    assert info.value.errno == errno.EEXIST
    assert info.value.filename == str(target.resolve())
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"original"
    assert entries(tmp_path) == ["pic.png"]


async def test_overwrite_false_in_directory_mode(tmp_path: Path) -> None:
    (tmp_path / "resp_1-0.png").write_bytes(b"original")
    with pytest.raises(FileExistsError):
        await save_image(image(PNG), tmp_path)
    assert (tmp_path / "resp_1-0.png").read_bytes() == b"original"
    assert entries(tmp_path) == ["resp_1-0.png"]


async def test_overwrite_true_replaces(tmp_path: Path) -> None:
    target = tmp_path / "pic.png"
    target.write_bytes(b"original")
    dest = await save_image(image(PNG), target, overwrite=True)
    assert dest.read_bytes() == PNG
    assert entries(tmp_path) == ["pic.png"]


async def test_concurrent_saves_to_one_path_never_clobber(tmp_path: Path) -> None:
    target = tmp_path / "race.img"
    contents = [PNG * 5000, JPEG * 5000, GIF89 * 5000, WEBP * 5000]
    outcomes: list[object] = []

    async def one(data: bytes) -> None:
        try:
            outcomes.append(await save_image(image(data), target))
        except FileExistsError as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        for data in contents:
            tg.start_soon(one, data)
    assert sum(isinstance(o, Path) for o in outcomes) == 1
    assert sum(isinstance(o, FileExistsError) for o in outcomes) == 3
    assert target.read_bytes() in contents
    assert entries(tmp_path) == ["race.img"]


async def test_link_unsupported_falls_back_to_exclusive_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dest = await save_image(image(PNG), tmp_path)
    assert dest.read_bytes() == PNG
    with pytest.raises(FileExistsError):
        await save_image(image(JPEG), dest)
    assert dest.read_bytes() == PNG
    assert entries(tmp_path) == [dest.name]


# ----------------------------------------------------------------------------- save: failures


async def test_decode_error_midway_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    probe(monkeypatch, 64, lambda n: seen.append(entries(tmp_path)) if n == 2 else None)
    text = b64(PNG * 100)
    bad = text[:200] + "$" + text[201:]  # valid head and length, bad 4th chunk
    img = GeneratedImage(id="ig_mid", b64=bad, response_id="r")
    with pytest.raises(ImageDecodeError, match=r"'ig_mid'.*offset 200"):
        await save_image(img, tmp_path)
    assert len(seen) == 1
    assert seen[0][0].startswith(".r-0.png.")  # the temp file existed mid-way
    assert seen[0][0].endswith(".tmp")
    assert entries(tmp_path) == []


async def test_decode_error_with_overwrite_keeps_original(tmp_path: Path) -> None:
    target = tmp_path / "keep.png"
    target.write_bytes(b"original")
    text = b64(PNG * 100)
    img = GeneratedImage(id="x", b64=text[:100] + "*" + text[101:])
    with pytest.raises(ImageDecodeError):
        await save_image(img, target, overwrite=True)
    assert target.read_bytes() == b"original"
    assert entries(tmp_path) == ["keep.png"]


@pytest.mark.parametrize("text", ["", "AAAAA", "QUFB===="])
async def test_structural_error_fails_before_touching_disk(tmp_path: Path, text: str) -> None:
    img = GeneratedImage(id="x", b64=text)
    with pytest.raises(ImageDecodeError):
        await save_image(img, tmp_path / "new" / "dir/")
    with pytest.raises(ImageDecodeError):
        await save_images([image(PNG), img], tmp_path / "new2")
    assert entries(tmp_path) == []


async def test_disk_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        await save_image(image(PNG), tmp_path)
    assert entries(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
async def test_destination_is_a_directory_leaves_nothing(tmp_path: Path, overwrite: bool) -> None:
    (tmp_path / "resp_1-0.png").mkdir()
    # A generated name that is an existing directory cannot be replaced, with or
    # without overwrite: not "file exists, pass overwrite=True".
    with pytest.raises(ImageSaveError) as info:
        await save_image(image(PNG), tmp_path, overwrite=overwrite)
    assert not isinstance(info.value, FileExistsError)
    assert info.value.errno == errno.EISDIR
    assert info.value.filename == str(tmp_path.resolve() / "resp_1-0.png")
    assert entries(tmp_path) == ["resp_1-0.png"]
    assert entries(tmp_path / "resp_1-0.png") == []


# ----------------------------------------------------------------------------- save: unusable paths


def _not_a_directory(info: pytest.ExceptionInfo[ImageSaveError], blocker: Path) -> None:
    """The error is ours, says ENOTDIR, names the file in the way, and is no FileExistsError."""
    exc = info.value
    assert type(exc) is ImageSaveError
    assert isinstance(exc, OSError)
    assert not isinstance(exc, FileExistsError)
    assert exc.errno == errno.ENOTDIR
    assert exc.filename == str(blocker)
    assert "overwrite" not in str(exc)


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize(
    "relative", ["afile/out.png", "afile/sub/deeper/out.png", "afile/", "afile/sub/"]
)
async def test_save_under_a_regular_file_is_an_image_save_error(
    tmp_path: Path, overwrite: bool, relative: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"not a directory")
    target = str(tmp_path / relative) + (os.sep if relative.endswith("/") else "")
    with pytest.raises(ImageSaveError) as info:
        await save_image(image(PNG), target, overwrite=overwrite)
    _not_a_directory(info, afile)
    # Nothing was written or created anywhere, and the file in the way is intact.
    assert entries(tmp_path) == ["afile"]
    assert afile.read_bytes() == b"not a directory"


@pytest.mark.parametrize("overwrite", [False, True])
async def test_save_images_under_a_regular_file_is_an_image_save_error(
    tmp_path: Path, overwrite: bool
) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    for target in (afile, afile / "out"):
        with pytest.raises(ImageSaveError) as info:
            await save_images(
                [image(PNG, index=0), image(JPEG, index=1)], target, overwrite=overwrite
            )
        _not_a_directory(info, afile)
    assert entries(tmp_path) == ["afile"]
    assert afile.read_bytes() == b"x"


async def test_save_through_a_dangling_symlink_is_an_image_save_error(tmp_path: Path) -> None:
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "missing-target")
    with pytest.raises(ImageSaveError) as info:
        await save_image(image(PNG), link / "out.png", overwrite=True)
    _not_a_directory(info, link)
    assert entries(tmp_path) == ["gone"]


async def test_file_exists_error_still_means_the_file_exists(tmp_path: Path) -> None:
    # The regression's other half: a *file* in the way of the destination itself
    # (not of its parent) is FileExistsError, and overwrite=True replaces it.
    afile = tmp_path / "afile"
    afile.write_bytes(b"old")
    with pytest.raises(FileExistsError) as info:
        await save_image(image(PNG), afile)
    assert not isinstance(info.value, ImageSaveError)
    assert "overwrite=True" in str(info.value)
    assert await save_image(image(PNG), afile, overwrite=True) == afile.resolve()
    assert afile.read_bytes() == PNG
    assert entries(tmp_path) == ["afile"]


async def test_empty_path_is_refused_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(InvalidArgumentError) as info:
            await save_image(image(PNG), "", overwrite=overwrite)
        assert info.value.field == "path"
        assert "empty" in info.value.reason
        with pytest.raises(InvalidArgumentError) as info:
            await save_images([image(PNG)], "", overwrite=overwrite)
        assert info.value.field == "path"
    assert entries(tmp_path) == []
    # The current directory is still reachable, when asked for explicitly.
    assert (await save_image(image(PNG), ".")).parent == tmp_path.resolve()


async def test_directory_appearing_at_commit_time_is_an_image_save_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def link_after_a_mkdir(src: str, dst: str) -> None:
        os.mkdir(dst)  # another process made a directory of that name mid-save
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_a_mkdir)
    with pytest.raises(ImageSaveError) as info:
        await save_image(image(PNG), tmp_path)
    assert info.value.errno == errno.EISDIR
    assert entries(tmp_path) == ["resp_1-0.png"]  # the directory, and no temp file
    assert (tmp_path / "resp_1-0.png").is_dir()


async def test_nul_in_path_is_an_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await save_image(image(PNG), str(tmp_path / "a\0b.png"))
    assert info.value.field == "path"
    with pytest.raises(InvalidArgumentError):
        await save_images([image(PNG)], str(tmp_path) + "/x\0")
    assert entries(tmp_path) == []


async def test_unknown_format_saved_as_bin_with_warning(tmp_path: Path) -> None:
    img = image(UNKNOWN, id="ig_odd")
    with pytest.warns(UnknownImageFormatWarning, match=r"'ig_odd'.*resp_1-0\.bin") as record:
        dest = await save_image(img, tmp_path)
    assert dest.name == "resp_1-0.bin"
    assert dest.read_bytes() == UNKNOWN
    assert record[0].filename == __file__  # points at the caller's line

    with pytest.warns(UnknownImageFormatWarning) as record:
        await save_images([image(UNKNOWN, index=1)], tmp_path)
    assert record[0].filename == __file__


async def test_known_formats_do_not_warn(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, (data, _mime, _ext) in enumerate(FORMATS):
            await save_image(image(data, index=i), tmp_path)


# ----------------------------------------------------------------------------- save_images


async def test_save_images_names_by_index(tmp_path: Path) -> None:
    imgs = [image(PNG, index=0), image(JPEG, index=1), image(GIF89, index=2)]
    out = tmp_path / "out"
    paths = await save_images(imgs, out)
    assert [p.name for p in paths] == ["resp_1-0.png", "resp_1-1.jpg", "resp_1-2.gif"]
    assert [p.read_bytes() for p in paths] == [PNG, JPEG, GIF89]
    assert all(p.parent == out.resolve() for p in paths)


async def test_save_images_refuses_duplicate_names_before_writing(tmp_path: Path) -> None:
    imgs = [image(PNG, index=0), image(JPEG, index=0), image(PNG, id="other", index=0)]
    with pytest.raises(InvalidArgumentError, match=r"images 0 and 2 .* 'resp_1-0\.png'"):
        await save_images(imgs, tmp_path / "out")
    with pytest.raises(InvalidArgumentError):
        await save_images([image(PNG, index=0), image(PNG, index=1)], tmp_path, name="x{ext}")
    assert entries(tmp_path) == []


async def test_save_images_empty(tmp_path: Path) -> None:
    assert await save_images([], tmp_path / "out") == []


async def test_save_images_overwrite(tmp_path: Path) -> None:
    (tmp_path / "resp_1-1.jpg").write_bytes(b"old")
    imgs = [image(PNG, index=0), image(JPEG, index=1)]
    with pytest.raises(FileExistsError):
        await save_images(imgs, tmp_path)
    # Images before the failing one stay saved; the existing file is untouched.
    assert entries(tmp_path) == ["resp_1-0.png", "resp_1-1.jpg"]
    assert (tmp_path / "resp_1-1.jpg").read_bytes() == b"old"
    await save_images(imgs, tmp_path, overwrite=True)
    assert (tmp_path / "resp_1-1.jpg").read_bytes() == JPEG


# ----------------------------------------------------------------------------- decoders, chunks


def test_stdlib_is_used_without_pybase64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pybase64", None)  # makes `import pybase64` fail
    assert _base64._load_pybase64() is None
    assert _base64._select_decoder() is _base64.STDLIB


@pytest.mark.parametrize(
    "text",
    [
        "AAAA",
        "AA==",
        "AAA=",
        "QR==",
        "A===",
        "====",
        "=AAA",
        "AA=A",
        "AA==AAAA",
        "AAA=AAAA",
        "AA$A",
        "AA A",
        "AA\nA",
        "-_AA",
        "AAé=",
        MARKER,
        MARKER + "AA==",
    ],
)
@pytest.mark.skipif(sys.version_info < (3, 11), reason="needs strict_mode to compare with")
def test_python310_strict_decoder_agrees_with_strict_mode(text: str) -> None:
    # On 3.10 the stdlib path is regex + lenient a2b_base64; on 3.11+ strict_mode.
    # Both must accept and reject the same 4-aligned chunks.
    def outcome(decode: Callable[[str], bytes]) -> bytes | None:
        try:
            return decode(text)
        except ValueError:
            return None

    strict = outcome(lambda t: binascii.a2b_base64(t, strict_mode=True))
    assert outcome(_base64._regex_checked_decode) == strict


def test_decoder_chunk_must_be_multiple_of_4() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        _base64.Decoder("x", _base64.STDLIB.decode, 1001)


def payload(n: int) -> bytes:
    return (PNG + bytes(range(256)) * (n // 256 + 1))[:n]


SMALL_SIZES = [*range(1, 40), 45, 47, 48, 49, 50, 95, 96, 97]


def test_small_chunk_boundaries_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 characters (12 bytes) per chunk: payloads around multiples of the chunk size.
    probe(monkeypatch, 16, lambda _n: None)
    for n in SMALL_SIZES:
        raw = payload(n)
        pieces = [bytes(p) for p in image(raw)._chunks(_base64.DECODER)]
        assert b"".join(pieces) == raw, n
        assert all(len(p) == 12 for p in pieces[:-1]), n
        assert image(raw).data == raw, n


@pytest.mark.filterwarnings("ignore::samsar_async.images.UnknownImageFormatWarning")
async def test_small_chunk_boundaries_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe(monkeypatch, 16, lambda _n: None)
    for n in (1, 2, 3, 11, 12, 13, 23, 24, 25, 47, 48, 49):
        raw = payload(n)
        dest = await save_image(image(raw), tmp_path / f"{n}.bin")
        assert dest.read_bytes() == raw, n
    assert len(entries(tmp_path)) == 12


@pytest.mark.parametrize("decoder", ["stdlib", "pybase64"])
async def test_real_chunk_boundaries_and_decoders_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    chosen = _base64.STDLIB if decoder == "stdlib" else pybase64_decoder()
    monkeypatch.setattr(_base64, "DECODER", chosen)
    chunk_bytes = chosen.chunk_chars // 4 * 3
    for n in (chunk_bytes - 2, chunk_bytes - 1, chunk_bytes, chunk_bytes + 1, chunk_bytes + 2):
        raw = payload(n)
        dest = await save_image(image(raw, index=n), tmp_path)
        assert dest.read_bytes() == raw, n
    assert len(entries(tmp_path)) == 5


async def test_pybase64_and_stdlib_produce_identical_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = pybase64_decoder()
    raw = PNG + os.urandom(1_000_003)
    written = {}
    for decoder in (_base64.STDLIB, fast):
        monkeypatch.setattr(_base64, "DECODER", decoder)
        img = image(raw)
        written[decoder.name] = (
            (await save_image(img, tmp_path / f"{decoder.name}.bin")).read_bytes(),
            img.data,
        )
    assert written["stdlib"] == written["pybase64"] == (raw, raw)


def test_padding_inside_a_non_final_chunk_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    probe(monkeypatch, 4, lambda _n: None)
    img = GeneratedImage(id="x", b64="QUE=QUFB")  # each 4-char chunk is valid alone
    with pytest.raises(ImageDecodeError, match="offset 3"):
        list(img._chunks(_base64.DECODER))
    with pytest.raises(ImageDecodeError, match="offset 3"):
        _ = img.data


async def test_cached_data_is_written_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = payload(3_000_000)
    img = image(raw)
    assert img.data == raw

    def fail(_n: int) -> None:
        raise AssertionError("decoded again")

    probe(monkeypatch, 4096, fail)
    dest = await save_image(img, tmp_path)
    assert dest.read_bytes() == raw


# ------------------------------------------------------------------- event loop, cancellation


def hand_over_mid_decode(
    monkeypatch: pytest.MonkeyPatch, base: _base64.Decoder
) -> tuple[anyio.Event, threading.Event, list[bool], list[int]]:
    """Wrap ``base`` so that the worker thread meets a task on the event loop mid-decode.

    Before chunk 2 the worker sets ``mid_decode`` on the loop (through
    ``anyio.from_thread``, which fails on the loop's own thread and waits for
    the loop to run it); before chunk 3 it waits until something on the loop
    sets ``answered`` and records whether that happened. ``chunks`` counts the
    decoded chunks. No timing: each side waits for the other's signal.
    """
    mid_decode = anyio.Event()
    answered = threading.Event()
    met: list[bool] = []
    chunks = [0]

    def decode(text: str) -> bytes:
        chunks[0] += 1
        if chunks[0] == 2:
            anyio.from_thread.run_sync(mid_decode.set)
        elif chunks[0] == 3:
            met.append(answered.wait(30))  # a hang guard, not a measurement
        return base.decode(text)

    monkeypatch.setattr(_base64, "DECODER", _base64.Decoder("probe", decode, base.chunk_chars))
    return mid_decode, answered, met, chunks


@pytest.mark.parametrize("decoder", ["stdlib", "default"])
async def test_large_save_keeps_event_loop_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    """Another task runs on the event loop while the image is still being decoded."""
    raw = payload(20 * 1024 * 1024)
    img = image(raw)
    base = _base64.STDLIB if decoder == "stdlib" else _base64.DECODER
    mid_decode, answered, met, chunks = hand_over_mid_decode(monkeypatch, base)

    async def other_task() -> None:
        await mid_decode.wait()
        answered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        dest = await save_image(img, tmp_path)

    assert met == [True]  # the other task ran between chunks 2 and 3
    expected_chunks = -(-len(img.b64) // base.chunk_chars)
    assert chunks[0] == expected_chunks > 3  # decoded in bounded chunks, each once
    assert dest.stat().st_size == len(raw)
    assert dest.read_bytes() == raw


async def test_anyio_cancellation_mid_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    with anyio.CancelScope() as scope:

        def hook(n: int) -> None:
            if n == 3:
                seen.append(entries(tmp_path))
                anyio.from_thread.run_sync(scope.cancel)

        probe(monkeypatch, 4096, hook)
        await save_image(image(payload(1_000_000)), tmp_path)
        pytest.fail("not cancelled")
    assert scope.cancelled_caught
    assert len(seen) == 1
    assert seen[0][0].endswith(".tmp")
    assert entries(tmp_path) == []


async def test_asyncio_task_cancel_mid_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[list[str]] = []
    task: asyncio.Task[Path] | None = None

    def hook(n: int) -> None:
        if n == 3:
            seen.append(entries(tmp_path))
            assert task is not None
            loop.call_soon_threadsafe(task.cancel)

    probe(monkeypatch, 4096, hook)
    task = asyncio.ensure_future(save_image(image(payload(4_000_000)), tmp_path))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[0][0].endswith(".tmp")
    assert entries(tmp_path) == []


async def test_cancelled_before_start_writes_nothing(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await save_image(image(PNG), tmp_path / "out/")
    assert scope.cancelled_caught
    assert entries(tmp_path) == []
