"""Request builders and argument checks: refused before any network call."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from samsar_async import (
    AsyncSamsar,
    ImageGenerationTool,
    InputImage,
    InputText,
    InvalidArgumentError,
    Message,
)
from samsar_async.converter import unstructure_input, unstructure_tool, unstructure_tool_choice


def tiny_png() -> bytes:
    raw = b"\x00\xff\x00\x00"
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_message_constructors_and_wire_shape() -> None:
    assert unstructure_input(Message.user("hi")) == {"role": "user", "content": "hi"}
    img = InputImage("https://cdn.example.com/launch-hero.png")
    msg = Message.user("Describe", img)
    assert unstructure_input(msg) == {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Describe"},
            {"type": "input_image", "image_url": "https://cdn.example.com/launch-hero.png"},
        ],
    }
    for ctor, role in [
        (Message.system, "system"),
        (Message.developer, "developer"),
        (Message.assistant, "assistant"),
    ]:
        assert unstructure_input(ctor("x"))["role"] == role


def test_input_forms() -> None:
    assert unstructure_input("hello") == "hello"
    assert unstructure_input([Message.user("a"), Message.assistant("b")]) == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    assert unstructure_input([InputText("a"), InputImage("https://x/y.png", detail="low")]) == [
        {"type": "input_text", "text": "a"},
        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
    ]
    raw = {"role": "user", "content": [{"type": "input_text", "text": "x"}]}
    assert unstructure_input(raw) is raw
    assert unstructure_input([raw]) == [raw]


def test_tools_and_tool_choice() -> None:
    tool = ImageGenerationTool(size="1024x1024", quality="high", format="png")
    assert unstructure_tool(tool, 0) == {
        "type": "image_generation",
        "size": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }
    assert unstructure_tool(ImageGenerationTool(extra={"partial_images": 1}), 0) == {
        "type": "image_generation",
        "partial_images": 1,
    }
    assert unstructure_tool_choice(tool) == {"type": "image_generation"}
    assert unstructure_tool_choice("auto") == "auto"
    with pytest.raises(InvalidArgumentError) as info:
        unstructure_tool_choice("always")
    assert info.value.field == "tool_choice"
    with pytest.raises(InvalidArgumentError) as info:
        unstructure_tool(42, 3)
    assert info.value.field == "tools[3]"


@pytest.mark.parametrize(
    ("make", "field", "reason"),
    [
        (lambda: Message("robot", "x"), "Message.role", "not one of"),
        (lambda: Message.user(), "Message.content", "at least one part"),
        (lambda: Message.user("a", 3), "content[1]", "must be a str"),
        (lambda: InputImage(""), "InputImage.image_url", "empty"),
        (lambda: InputImage("https://x", detail="max"), "InputImage.detail", "one of"),
        (lambda: InputImage.from_bytes(b"not an image"), "data", "not a PNG"),
        (lambda: unstructure_input([]), "input", "empty sequence"),
        (lambda: unstructure_input([Message.user("a"), InputText("b")]), "input", "mixes"),
        (lambda: unstructure_input([object()]), "input[0]", "must be a Message"),
        (lambda: unstructure_input(3), "input", "must be a str"),
    ],
)
def test_bad_builders_name_the_field(make: object, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        make()  # type: ignore[operator]
    assert info.value.field == field
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_input_image_from_path_and_bytes(tmp_path: Path) -> None:
    png = tiny_png()
    path = tmp_path / "hero.png"
    path.write_bytes(png)
    img = InputImage.from_path(path)
    assert img.image_url.startswith("data:image/png;base64,iVBOR")
    assert InputImage.from_bytes(png).image_url == img.image_url
    assert InputImage.from_bytes(b"abc", "image/jpeg").image_url == "data:image/jpeg;base64,YWJj"
    assert "..." in repr(img)  # a data URL is not dumped whole into reprs

    with pytest.raises(InvalidArgumentError, match="not an existing file") as info:
        InputImage.from_path(tmp_path / "missing.png")
    assert info.value.field == "path"
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InvalidArgumentError, match="not a PNG"):
        InputImage.from_path(text)


def test_client_construction_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAMSAR_API_KEY", raising=False)
    monkeypatch.delenv("SAMSAR_BASE_URL", raising=False)
    with pytest.raises(InvalidArgumentError, match="SAMSAR_API_KEY"):
        AsyncSamsar()
    with pytest.raises(InvalidArgumentError, match="base_url"):
        AsyncSamsar("k", base_url="ftp://example.com")
    with pytest.raises(InvalidArgumentError, match="allow_insecure_http"):
        AsyncSamsar("k", base_url="http://api.example.com/v1")
    AsyncSamsar("k", base_url="http://api.example.com/v1", allow_insecure_http=True)
    AsyncSamsar("k", base_url="http://127.0.0.1:1/v1")
    AsyncSamsar("k", base_url="http://localhost:1/v1")
    with pytest.raises(InvalidArgumentError, match="credentials"):
        AsyncSamsar("k", base_url="https://user:pw@api.example.com/v1")
    with pytest.raises(InvalidArgumentError, match="max_connections"):
        AsyncSamsar("k", max_connections=0)
    with pytest.raises(InvalidArgumentError, match="api_key"):
        AsyncSamsar("key\nwith newline")


def test_client_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMSAR_API_KEY", "sk-env-secret")
    monkeypatch.setenv("SAMSAR_BASE_URL", "https://api.samsar.one/api/v1/")
    client = AsyncSamsar()
    assert client.base_url == "https://api.samsar.one/api/v1"
    assert "sk-env-secret" not in repr(client)
    assert client.state == "unopened"
