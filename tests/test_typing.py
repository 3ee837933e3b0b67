"""Stream events narrow under ``mypy --strict`` and ``pyright --strict``.

tests/typing/events_narrowing.py uses both narrowing patterns (``event.type ==
...`` and ``match``); each checker must report nothing there, and must report
exactly the marked lines of a file that gets them wrong (so a checker that
silently checks nothing, or an ``Any`` that hides the union, fails the test).
The typed file is also run, on real events.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from samsar_async.converter import event_from_dict, structure_response
from samsar_async.events import ErrorEvent, ImageGenerationCompleted, StreamEvent
from samsar_async.streaming import events_from_response

ROOT = Path(__file__).resolve().parents[1]
TYPED = ROOT / "tests" / "typing" / "events_narrowing.py"

WRONG = ROOT / "tests" / "typing" / "events_narrowing_errors.py"
EXPECTED_LINES = [
    n for n, line in enumerate(WRONG.read_text().splitlines(), 1) if "# error:" in line
]


def error_lines(output: str, path: Path) -> list[int]:
    """Line numbers of the errors a checker reported in ``path``."""
    names = "|".join(re.escape(str(p)) for p in (path, path.relative_to(ROOT)))
    pattern = re.compile(rf"(?:^|\s)(?:{names}):(\d+):(?:\d+:?)?\s*(?:-\s*)?error", re.MULTILINE)
    return sorted({int(m.group(1)) for m in pattern.finditer(output)})


def run(command: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    return done.stdout + done.stderr


def test_mypy_strict() -> None:
    pytest.importorskip("mypy")
    output = run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(TYPED), str(WRONG)]
    )
    assert error_lines(output, TYPED) == [], output
    assert error_lines(output, WRONG) == EXPECTED_LINES, output


def test_pyright_strict() -> None:
    pyright = shutil.which("pyright")
    if pyright is None:
        pytest.skip("pyright is not installed")
    output = run([pyright, "--pythonpath", sys.executable, str(TYPED), str(WRONG)])
    assert error_lines(output, TYPED) == [], output
    assert error_lines(output, WRONG) == EXPECTED_LINES, output


def load_typed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("events_narrowing", TYPED)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_patterns_agree_on_real_events() -> None:
    typed = load_typed()
    response = structure_response(
        {
            "id": "resp_1",
            "status": "completed",
            "output": [
                {
                    "id": "msg_1",
                    "type": "message",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
                },
                {"id": "ig_1", "type": "image_generation_call", "result": "aGk="},
            ],
        }
    )
    events: list[StreamEvent] = [
        *events_from_response(response),
        ImageGenerationCompleted(sequence_number=9, item_id="ig_2", output_index=1),
        ErrorEvent(sequence_number=0, code="NotFoundError", message="404 Not Found"),
        event_from_dict({"type": "response.future", "sequence_number": 3}),
    ]
    lines = [typed.by_type(e) for e in events]
    assert lines == [typed.by_match(e) for e in events]
    assert lines == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "Hi",
        "response.output_text.done",
        "response.content_part.done",
        "item msg_1",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "image ig_1",
        "item ig_1",
        "done: Hi",
        "no image",
        "failed: NotFoundError: 404 Not Found",
        "unknown: response.future",
    ]
    assert typed.sequence_numbers(events)[-1] == 3
