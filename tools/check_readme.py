"""Type-check every ```python block of README.md with ``mypy --strict`` and ``pyright --strict``.

Users copy these blocks, so they must type-check as they are. Run it with
``nox -s readme`` (which installs the package with its extras, mypy and pyright)
or ``python tools/check_readme.py [--out DIR]`` in an environment that has them.

The convention for blocks:

- A block that defines a function or a class at its top level is a *module*: it
  must be complete, imports included, and is checked exactly as written.
- Any other block is a *fragment*: the body of an ``async def`` (so ``await``,
  ``async for`` and ``async with`` may appear at its top level), continuing the
  quick start. It is checked inside this preamble, which provides those of
  these names that it uses without defining them itself:

  =============  ============================================================
  ``client``     an open :class:`samsar_async.AsyncSamsar`
  ``session_id`` a ``str`` session id
  ``resp``       a :class:`samsar_async.Response` from an earlier call
  ``rows``       an ``Iterable[tuple[str, str]]`` of (session id, text) pairs
  =============  ============================================================

  and every public name of ``samsar_async`` (``samsar_async.__all__``) the
  fragment uses without importing it (``Message``, ``InputImage``, ...), as
  the quick start imports them. Anything else a fragment uses it imports itself.
  Its local variables may be left unused (they are there for the reader), so
  pyright's ``reportUnusedVariable`` is off for fragments; every other strict
  check applies.

Two exceptions, each listed below and kept short:

- :data:`UNTYPED_LIBRARIES`: a block that imports one of these third-party
  packages, whose own signatures are partially unknown, is checked by pyright
  without its ``reportUnknown*`` rules (which would flag the library, not the
  block); mypy --strict still applies in full.
- :data:`KNOWN_FAILURES`: blocks expected to fail until the package catches up
  (an issue names each). Their errors are printed but do not fail the run; a
  listed block that passes fails the run, so that the entry is removed.

Diagnostics are reported against README.md's own line numbers.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PYTHON_VERSION = "3.10"  # the oldest Python the package supports

UNTYPED_LIBRARIES: frozenset[str] = frozenset({"ray"})
"""Top-level packages whose public signatures pyright --strict reports as partially unknown."""

KNOWN_FAILURES: dict[str, str] = {}
"""A text that identifies a block (a substring of it) -> why it is expected to fail."""

UNKNOWN_RULES_OFF = (
    "# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false, "
    "reportUnknownArgumentType=false, reportUnknownParameterType=false\n"
)

FRAGMENT_CONTEXT: dict[str, str] = {
    "client": "_samsar.AsyncSamsar",
    "session_id": "str",
    "resp": "_samsar.Response",
    "rows": "_Iterable[tuple[str, str]]",
}
"""The names a fragment may use without defining them, and their types."""


@dataclass(frozen=True)
class Block:
    """One ```python block: its first code line in README.md and its source."""

    line: int
    source: str

    def tree(self) -> ast.Module:
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree: ast.Module = compile(self.source, f"README.md:{self.line}", "exec", flags=flags)
        return tree

    def is_module(self) -> bool:
        defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        return any(isinstance(node, defs) for node in self.tree().body)

    def imports_untyped_library(self) -> bool:
        roots: set[str] = set()
        for node in ast.walk(self.tree()):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                roots.add(node.module.split(".")[0])
        return bool(roots & UNTYPED_LIBRARIES)

    def known_failure(self) -> str | None:
        for text, reason in KNOWN_FAILURES.items():
            if text in self.source:
                return reason
        return None


@dataclass(frozen=True)
class Generated:
    """A checked file, and how its lines map back to README.md."""

    block: Block
    path: Path
    header_lines: int
    kind: str

    def readme_line(self, file_line: int) -> int:
        return self.block.line + max(file_line - self.header_lines - 1, 0)


def extract(text: str) -> list[Block]:
    """Every ```python fenced block of ``text``, with the line its code starts on."""
    blocks: list[Block] = []
    lines = text.splitlines()
    start: int | None = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if start is None and re.fullmatch(r"```\s*python\s*", stripped):
            start = number + 1
        elif start is not None and stripped == "```":
            blocks.append(Block(start, "\n".join(lines[start - 1 : number - 1]) + "\n"))
            start = None
    if start is not None:
        raise SystemExit(f"README.md:{start - 1}: unterminated ```python block")
    return blocks


def public_names() -> frozenset[str]:
    import samsar_async

    return frozenset(samsar_async.__all__)


def fragment_source(block: Block, public: frozenset[str]) -> tuple[str, int]:
    """The fragment wrapped in its preamble, and the number of preamble lines."""
    tree = block.tree()
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    used = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    bound = imported | {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del))
    }
    needed = sorted((used & public) - bound)
    context = [name for name in FRAGMENT_CONTEXT if name in used - bound]
    parameters = "".join(f"    {name}: {FRAGMENT_CONTEXT[name]},\n" for name in context)
    header = (
        f"# README.md line {block.line}: a fragment, completed by tools/check_readme.py.\n"
        "# pyright: reportUnusedVariable=false\n"
    )
    if "_Iterable[" in parameters:
        header += "from collections.abc import Iterable as _Iterable\n"
    if "_samsar." in parameters:
        header += "import samsar_async as _samsar\n"
    if needed:
        header += f"from samsar_async import {', '.join(needed)}\n"
    header += f"\n\nasync def fragment(\n{parameters}) -> None:\n"
    body = "".join(
        f"    {line}" if line.strip() else "\n" for line in block.source.splitlines(True)
    )
    return header + body, header.count("\n")


def generate(blocks: list[Block], out: Path) -> list[Generated]:
    public = public_names()
    generated: list[Generated] = []
    for block in blocks:
        if block.is_module():
            source, header_lines, kind = block.source, 0, "module"
        else:
            source, header_lines = fragment_source(block, public)
            kind = "fragment"
        if block.imports_untyped_library():
            source, header_lines = UNKNOWN_RULES_OFF + source, header_lines + 1
        path = out / f"readme_l{block.line:04d}.py"
        path.write_text(source, encoding="utf-8")
        generated.append(Generated(block, path, header_lines, kind))
    return generated


def relocate(output: str, generated: list[Generated]) -> str:
    """Rewrite ``file:line`` references to the generated files as README.md lines."""
    by_name = {g.path.name: g for g in generated}
    pattern = re.compile(r"(?:\S*[/\\])?(readme_l\d{4}\.py)(?::(\d+))?")

    def replace(match: re.Match[str]) -> str:
        file = by_name.get(match.group(1))
        if file is None:
            return match.group(0)
        if match.group(2) is None:
            return f"README.md ({file.kind} at line {file.block.line})"
        return f"README.md:{file.readme_line(int(match.group(2)))}"

    return pattern.sub(replace, output)


def run(command: list[str], generated: list[Generated]) -> tuple[bool, set[str]]:
    """Run a checker; whether it passed, and the generated files it reported errors in."""
    print("$", " ".join(command[:3]), "...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)  # noqa: S603
    raw = result.stdout + result.stderr
    failed = set(re.findall(r"(readme_l\d{4}\.py):\d+(?::\d+)?:? -? ?error", raw))
    known = {g.path.name for g in generated if g.block.known_failure() is not None}
    text = relocate(hide_known_failures(raw, known), generated).rstrip()
    if text:
        print(text, flush=True)
    return result.returncode == 0, failed


def hide_known_failures(output: str, known: set[str]) -> str:
    """Drop the diagnostics of known-failure files (verdict() lists those files).

    mypy names the file on each line; pyright names it on a line of its own
    followed by indented diagnostics.
    """
    kept: list[str] = []
    hidden = 0
    in_known_section = False
    for line in output.splitlines():
        name = re.search(r"(readme_l\d{4}\.py)", line)
        if not line.startswith(" "):
            in_known_section = name is not None and name.group(1) in known and ":" not in line
        if in_known_section or (name is not None and name.group(1) in known):
            hidden += 1
            continue
        kept.append(line)
    if hidden:
        kept.append(f"({hidden} lines about known failures hidden)")
    return "\n".join(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the checked files here (kept)")
    parser.add_argument("--readme", type=Path, default=README, help="default: README.md")
    args = parser.parse_args(argv)

    blocks = extract(args.readme.read_text(encoding="utf-8"))
    if not blocks:
        print("README.md has no python blocks", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="readme-blocks-") as tmp:
        out: Path = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        generated = generate(blocks, out)
        for g in generated:
            print(f"README.md:{g.block.line}: {g.kind} -> {g.path.name}")
        (out / "pyrightconfig.json").write_text(
            json.dumps({"typeCheckingMode": "strict", "pythonVersion": PYTHON_VERSION}),
            encoding="utf-8",
        )
        files = [str(g.path) for g in generated]
        mypy_ok, mypy_failed = run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--python-version",
                PYTHON_VERSION,
                "--config-file",
                "",
                "--cache-dir",
                str(ROOT / ".mypy_cache" / "readme"),
                *files,
            ],
            generated,
        )
        pyright_ok, pyright_failed = run(
            [
                sys.executable,
                "-m",
                "pyright",
                "--pythonpath",
                sys.executable,
                "-p",
                str(out),
                *files,
            ],
            generated,
        )
    return verdict(generated, mypy_ok and pyright_ok, mypy_failed | pyright_failed)


def verdict(generated: list[Generated], checkers_ok: bool, failed: set[str]) -> int:
    """0 when every block passed, or failed only where it is a known failure."""
    status = 0
    for g in generated:
        reason = g.block.known_failure()
        where = f"README.md:{g.block.line}"
        if g.path.name in failed and reason is None:
            status = 1
        elif g.path.name in failed:
            print(f"{where}: known failure ({reason})")
        elif reason is not None:
            print(f"{where}: passes now: remove its KNOWN_FAILURES entry ({reason})")
            status = 1
    if not checkers_ok and not failed:
        print("a checker failed without naming a README block (see its output above)")
        status = 1
    if status == 0:
        passed = sum(1 for g in generated if g.path.name not in failed)
        print(f"README blocks: {passed} type-check under mypy --strict and pyright --strict")
    else:
        print("README blocks fail to type-check (lines above are README.md's)", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
