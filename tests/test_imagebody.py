"""Tests of samsar_async._imagebody: the incremental image-answer reader.

The reference is the whole body parsed at once with ``json.loads``: for every
body and every way of cutting it into chunks, the reader's remainder (parsed
with the same ``json.loads``) with each placeholder replaced by its image's
text must equal the reference, each image's bytes must be the strict base64
decoding of the reference's ``result``, and a body the reference refuses must
be refused with ``APIResponseValidationError``. Both decoders run (pybase64
when installed, and the standard library), with slices small enough that
every image spans several.
"""

from __future__ import annotations

import base64
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from samsar_async import _base64, _imagebody
from samsar_async._imagebody import (
    IMAGE_ITEM_TYPE,
    ImageBody,
    ImageBodyReader,
    placeholder,
    placeholder_index,
)
from samsar_async.errors import APIResponseValidationError, ImageDecodeError

# ----------------------------------------------------------------------------- helpers

_STDLIB = _imagebody._stdlib_decoder()[0]
DECODERS: dict[str, Callable[[memoryview], bytes]] = {"stdlib": _STDLIB}
try:
    import pybase64

    def _pybase64(data: memoryview) -> bytes:
        return pybase64.b64decode(data, validate=True)

    DECODERS["pybase64"] = _pybase64
except ImportError:  # pragma: no cover - the speedups extra is absent
    pass

INVALID = object()
SCALE = float(os.environ.get("SAMSAR_HYPOTHESIS_SCALE", "1"))
"""Multiplies every property's example count (a long fuzzing run: 20 or more)."""


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def strict_b64(text: str) -> bytes | None:
    """What images.py accepts: the whole text decoded strictly, or None."""
    if not text or len(text) % 4:
        return None
    try:
        return _base64.stdlib_decode(text)  # strict on every Python (3.10: regex + lenient)
    except ValueError:  # binascii.Error, and non-ASCII text (3.11+: a plain ValueError)
        return None


def reference(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return INVALID


def chunks(body: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    start = 0
    for point in points:
        yield body[start:point]
        start = point
    yield body[start:]


def read(
    body: bytes,
    cuts: list[int],
    *,
    decoder: str = "stdlib",
    slice_chars: int = 8,
    directory: Path | None = None,
    max_bytes: int = 1 << 30,
) -> tuple[Any, ImageBody]:
    """Feed ``body`` cut at ``cuts``; the parsed remainder and the result."""
    reader = ImageBodyReader(
        max_bytes=max_bytes,
        directory=None if directory is None else str(directory),
        decoder=(DECODERS[decoder], slice_chars),
    )
    for piece in chunks(body, cuts):
        reader.feed(piece)
    result = reader.finish()
    return result.loads(lambda b: json.loads(b.decode("utf-8"))), result


def image_bytes(result: ImageBody, index: int) -> bytes:
    image = result.images[index]
    if image.path is not None:
        return Path(image.path).read_bytes()
    assert image.data is not None
    return bytes(image.data)


def check_against_reference(body: bytes, cuts: list[int], **kwargs: Any) -> ImageBody | None:
    """The property: the reader agrees with ``json.loads`` of the whole body."""
    expected = reference(body)
    if expected is INVALID:
        with pytest.raises(APIResponseValidationError):
            read(body, cuts, **kwargs)
        return None
    parsed, result = read(body, cuts, **kwargs)
    referenced: set[int] = set()
    output = parsed.get("output") if isinstance(parsed, dict) else None
    if isinstance(output, list):
        for position, item in enumerate(output):
            if not isinstance(item, dict) or item.get("type") != IMAGE_ITEM_TYPE:
                continue
            original = expected["output"][position].get("result", INVALID)
            if not isinstance(original, str) or original == "":
                assert item.get("result", INVALID) == original
                continue
            index = placeholder_index(item["result"])
            assert index is not None, item
            referenced.add(index)
            image = result.images[index]
            assert image.output_index == position
            decoded = strict_b64(original)
            if decoded is None:
                assert isinstance(image.error, ImageDecodeError)
                assert image.data is None
                assert image.path is None
            else:
                assert image.error is None
                assert image.size == len(decoded)
                assert image_bytes(result, index) == decoded
            item["result"] = original
    assert parsed == expected
    for image in result.images:
        if image.index not in referenced:  # an overwritten duplicate: still well-formed
            assert image.error is not None or image.size >= 0
    return result


# A JSON serializer with the freedoms a server has: whitespace, key order,
# escaped slashes, \u escapes of any character, duplicate keys.


class Raw:
    """An object serialized from a list of pairs (keys may repeat)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def dump(value: Any, rnd: random.Random, escape_rate: float) -> str:
    ws = rnd.choice(["", "", " ", "\n  ", "\t"])
    if isinstance(value, Raw):
        inner = ("," + ws).join(
            f"{dump_str(k, rnd, escape_rate)}{ws}:{ws}{dump(v, rnd, escape_rate)}"
            for k, v in value.pairs
        )
        return "{" + ws + inner + ws + "}"
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return dump(Raw(items), rnd, escape_rate)
    if isinstance(value, list):
        return "[" + ws + ("," + ws).join(dump(v, rnd, escape_rate) for v in value) + ws + "]"
    if isinstance(value, str):
        return dump_str(value, rnd, escape_rate)
    return json.dumps(value)


def dump_str(text: str, rnd: random.Random, escape_rate: float) -> str:
    out = ['"']
    slashes = rnd.random() < 0.3
    for char in text:
        if char == "/" and slashes:
            out.append("\\/")
        elif char in '"\\' or ord(char) < 0x20:
            out.append(json.dumps(char)[1:-1])
        elif rnd.random() < escape_rate:
            code = ord(char)
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=12)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["result", "type", "output", "id", "x", "é"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)
b64_texts = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
bad_b64 = st.one_of(
    b64_texts.map(lambda t: t + "A"),  # length not a multiple of 4
    b64_texts.map(lambda t: t[:-1] if t else "A"),
    b64_texts.map(lambda t: "QQ==" + t),  # padding before the end
    st.tuples(b64_texts, st.sampled_from([" ", "\n", "-", "_", "é", '"', "\\", "\x00", "=="])).map(
        lambda p: p[0][: len(p[0]) // 2] + p[1] + p[0][len(p[0]) // 2 :]
    ),
)


@st.composite
def image_item(draw: st.DrawFn) -> Raw:
    pairs: list[tuple[str, Any]] = [("type", IMAGE_ITEM_TYPE)]
    if draw(st.booleans()):
        pairs.append(("id", draw(st.text(max_size=6))))
    pairs.append(("status", draw(st.sampled_from(["completed", "failed", None]))))
    result = draw(st.one_of(b64_texts, b64_texts, bad_b64, st.just(""), st.none(), json_values))
    pairs.append(("result", result))
    if draw(st.booleans()):
        pairs.append(("extra", draw(json_values)))
    pairs = draw(st.permutations(pairs))
    if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one counts
        pairs.append(
            (draw(st.sampled_from(["type", "result", "id"])), draw(json_values | b64_texts))
        )
    return Raw(list(pairs))


@st.composite
def other_item(draw: st.DrawFn) -> Any:
    return draw(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["message", "web_search_call", "x"])},
                optional={"result": st.one_of(b64_texts, st.text(max_size=10), json_values)},
            ),
            json_values,
        )
    )


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    output = draw(st.lists(st.one_of(image_item(), image_item(), other_item()), max_size=4))
    pairs: list[tuple[str, Any]] = [
        ("id", "resp_1"),
        ("object", "response"),
        ("output", output),
        ("usage", {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}),
    ]
    if draw(st.booleans()):
        pairs.append(("nested", draw(json_values)))
    if draw(st.booleans()):
        # "result" strings and image items anywhere else are not images
        pairs.append(("other", {"output": [Raw([("type", IMAGE_ITEM_TYPE), ("result", "QUFB")])]}))
    pairs = list(draw(st.permutations(pairs)))
    rnd = draw(st.randoms(use_true_random=False))
    escape_rate = draw(st.sampled_from([0.0, 0.0, 0.05, 0.5]))
    body = dump(Raw(pairs), rnd, escape_rate)
    return body.encode("utf-8")


cut_lists = st.lists(st.integers(0, 10_000), max_size=12)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=answers(), cuts=cut_lists, decoder=st.sampled_from(sorted(DECODERS)))
@example(  # a non-ASCII "result" (found by Hypothesis: the oracle raised on 3.11+)
    body=b'{"output":[{"type":"image_generation_call","result":"000\xc2\x80"}]}',
    cuts=[],
    decoder="stdlib",
)
def test_matches_whole_body_json_loads(body: bytes, cuts: list[int], decoder: str) -> None:
    check_against_reference(body, cuts, decoder=decoder)


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=answers(),
    cuts=cut_lists,
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from([*b'"\\{}[],:=/ uA0\x00\xc3', -1])),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_bodies_agree_with_json_loads(
    body: bytes, cuts: list[int], edits: list[tuple[int, int]]
) -> None:
    """Any byte inserted or deleted: valid and invalid JSON are told apart as json.loads does."""
    data = bytearray(body)
    for position, byte in edits:
        at = position % (len(data) + 1)
        if byte < 0:
            del data[at : at + 1]
        else:
            data[at:at] = bytes([byte])
    check_against_reference(bytes(data), cuts, decoder="stdlib", slice_chars=4)


@settings(max_examples=examples(60), deadline=None)
@given(body=answers(), length=st.integers(0, 10_000), cuts=cut_lists)
def test_truncated_bodies_are_refused(body: bytes, length: int, cuts: list[int]) -> None:
    truncated = body[: length % len(body)]
    assert reference(truncated) is INVALID or truncated.strip() == b""
    check_against_reference(truncated, cuts)


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=answers(), cuts=cut_lists)
def test_file_mode_matches_and_cleans_up(tmp_path: Path, body: bytes, cuts: list[int]) -> None:
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    result = check_against_reference(body, cuts, directory=directory)
    if result is None:
        assert list(directory.iterdir()) == []  # refused: nothing left behind
        return
    kept = {Path(i.path) for i in result.images if i.path is not None}
    assert set(directory.iterdir()) == kept  # only the images' own files
    result.discard()
    assert list(directory.iterdir()) == []


# ----------------------------------------------------------------------------- examples


def image_answer(*results: str, before: str = "", type_last: bool = False) -> bytes:
    items = []
    for i, text in enumerate(results):
        result = json.dumps(text)
        head = f'"id":"ig_{i}","status":"completed"'
        if type_last:
            items.append(f'{{{head},"result":{result},"type":"image_generation_call"}}')
        else:
            items.append(f'{{"type":"image_generation_call",{head},"result":{result}}}')
    return (
        f'{{"id":"resp_1",{before}"output":[{",".join(items)}],'
        '"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}'
    ).encode()


PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("type_last", [False, True])
def test_two_images_in_small_chunks(decoder: str, type_last: bool) -> None:
    second = os.urandom(1001)
    body = image_answer(
        base64.b64encode(PNG).decode(), base64.b64encode(second).decode(), type_last=type_last
    )
    parsed, result = read(body, list(range(0, len(body), 7)), decoder=decoder, slice_chars=64)
    assert [image_bytes(result, i) for i in range(2)] == [PNG, second]
    assert [item["result"] for item in parsed["output"]] == [placeholder(0), placeholder(1)]
    assert [i.item_id for i in result.images] == ["ig_0", "ig_1"]
    assert len(result.remainder) < 400  # the base64 text is not in it


def test_escaped_slashes_and_unicode_escapes_are_unescaped() -> None:
    text = base64.b64encode(b"\xff\xfe\xfd" * 50).decode()  # '/' everywhere
    assert "/" in text
    escaped = text.replace("/", "\\/")
    body = image_answer("X").replace(b'"X"', b'"' + escaped.encode() + b'"')
    _, result = read(body, [5, 100, 101, 102])
    assert image_bytes(result, 0) == b"\xff\xfe\xfd" * 50
    body = image_answer("X").replace(b'"X"', b'"\\u0051\\u0051==" ')
    _, result = read(body, [len(body) - 30])
    assert image_bytes(result, 0) == b"A"


def test_memory_mode_keeps_few_large_pieces() -> None:
    """Decoded bytes are kept as pieces (never one growing buffer), and the 3-byte
    quads that escapes produce are gathered into pieces of at least 64 KiB."""
    data = os.urandom(300_000)
    text = base64.b64encode(data).decode()
    escaped = "".join(f"\\u{ord(c):04x}" for c in text)  # every character escaped
    for result_text in (text, escaped):
        body = image_answer("X").replace(b'"X"', b'"' + result_text.encode() + b'"')
        _, result = read(body, list(range(1000, len(body), 7919)))
        [image] = result.images
        assert image.pieces is not None
        assert b"".join(image.pieces) == data
        assert image.size == len(data)
        assert all(len(piece) >= 64 * 1024 for piece in image.pieces[:-1])
        assert len(image.pieces) <= len(data) // (64 * 1024) + 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("QUFB QUFB", "whitespace ' ' at offset 4"),
        ("QUFB\nQUFB", "whitespace '\\n' at offset 4"),
        ("QUFBQ-FB", "non-base64 character '-' at offset 5"),
        ("QUFBQUF", "length 7 is not a multiple of 4"),
        ("QQ==QUFB", "padding '=' at offset 2 is not at the end"),
        ("QUFBé===", "a non-ASCII character at offset 4"),
    ],
)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_invalid_base64_is_an_image_error_naming_the_offset(
    text: str, reason: str, ascii_only: bool
) -> None:
    body = image_answer(text)
    if not ascii_only:  # the same character unescaped, as UTF-8
        body = json.dumps(json.loads(body), ensure_ascii=False).encode()
    parsed, result = read(body, [len(body) // 2])
    image = result.images[0]
    assert image.error is not None
    assert reason in str(image.error)
    assert "'ig_0'" in str(image.error)
    assert text not in str(image.error)
    assert parsed["output"][0]["result"] == placeholder(0)


def test_over_the_cap_is_refused_and_files_are_removed(tmp_path: Path) -> None:
    body = image_answer(base64.b64encode(PNG).decode())
    reader = ImageBodyReader(max_bytes=len(body) - 1, directory=str(tmp_path))
    reader.feed(body[:-10])
    assert len(list(tmp_path.iterdir())) == 1  # decoding into a temporary file
    with pytest.raises(APIResponseValidationError, match=r"over the \d+-byte limit") as info:
        reader.feed(body[-10:])
    assert info.value.status_code == 200
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        reader.feed(b"")


@pytest.mark.parametrize(
    "bad",
    [b'"QUFB\\x"', b'"QUFB\\u12G4"', b'"QU\x01FB"', b'"QUFB\\u00"', b'"QUFB'],
)
def test_invalid_json_inside_a_result_is_refused(bad: bytes) -> None:
    body = image_answer("X").replace(b'"X"', bad)
    assert reference(body) is INVALID
    for cut in range(len(body)):
        with pytest.raises(APIResponseValidationError, match="not valid JSON"):
            read(body, [cut])


def test_non_image_items_keep_their_result_exactly() -> None:
    odd = "QR=="  # decodes, but re-encoding gives QQ==: must come back as sent
    body = (
        b'{"output":[{"result":"' + odd.encode() + b'","type":"web_search_call"},'
        b'{"result":"not base64 at all","type":"message"},'
        b'{"type":"code_call","result":"QUFB\\/x"}]}'
    )
    for cut in range(len(body)):
        parsed, result = read(body, [cut, cut + 3])
        assert parsed == json.loads(body)
        assert result.images == ()


def test_text_after_padding_in_a_non_image_item_comes_back_exactly() -> None:
    """Found by fuzzing: '=' ends a quad, then one character, then escapes."""
    body = (
        b'{"output":[{"type":"image_generation_call",'
        b'"result":"\\u0051\\u0051\\u003d=I\\u0037\\u0059g\\u003d\\u003d","type":null}]}'
    )
    for cut in range(len(body)):
        parsed, result = read(body, [cut])
        assert parsed == json.loads(body)  # the last "type" counts: not an image
        assert result.images == ()


def test_placeholder_round_trip() -> None:
    assert placeholder_index(placeholder(12)) == 12
    assert placeholder_index("12") is None
    assert placeholder_index(placeholder(1) + "x") is None
    assert placeholder_index(None) is None


@example(body=b'{"output":[{"type":"image_generation_call","result":"QUFB"}]}', cuts=[52])
@given(body=answers(), cuts=cut_lists)
@settings(max_examples=examples(15), deadline=None)
def test_invalid_json_error_has_an_excerpt(body: bytes, cuts: list[int]) -> None:
    broken = body + b"}"
    with pytest.raises(APIResponseValidationError) as info:
        read(broken, cuts)
    assert info.value.status_code == 200
