"""Import time: ``import samsar_async`` against ``import aiohttp``.

Each measurement is a fresh ``python -X importtime -c "import MODULE"``
pinned to the client core; the figure is the ``cumulative`` time CPython
reports for the module itself (its own code and everything it imports that
was not loaded already at start-up). Runs interleave the modules; one
unmeasured run first compiles the bytecode caches. The minimum over runs is
the figure (import time only ever gets slower from outside noise), with the
median next to it.

With ``--instructions`` (the default outside quick mode, when valgrind is
installed) each import also runs once under callgrind: instructions of
``python -c "import MODULE"`` minus those of ``python -c "pass"``, a figure
that other load on the machine does not move.

For the fastest ``samsar_async`` run, the report also splits the time by
top-level package (the sum of the ``self`` times of its modules: what
importing each package's own code cost) and lists the slowest single
modules, which is where a lazier import would pay.

Run from the repo root: ``python -m benchmarks.import_time [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks import _common as common

MODULES = ("aiohttp", "samsar_async")
BASELINE = "aiohttp"
SUBJECT = "samsar_async"
TOP_MODULES = 15
_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def _import_env() -> dict[str, str]:
    """The child environment, with bytecode caches allowed: an installed package has
    them, and with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI and dev machines)
    every run would compile this checkout's modules from source, which aiohttp (with
    the caches its install wrote) never pays."""
    env = common._child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """``(module, self µs, cumulative µs, depth)`` per line of ``-X importtime`` output."""
    rows = []
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match is not None:
            self_us, cumulative_us, indent, name = match.groups()
            rows.append((name, int(self_us), int(cumulative_us), (len(indent) - 1) // 2))
    return rows


def measure(module: str) -> dict[str, Any]:
    """One fresh interpreter importing ``module``; its cumulative time and the module lines."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=common.REPO_ROOT,
        env=_import_env(),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=common.pin_client if hasattr(os, "sched_setaffinity") else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import {module} failed:\n{done.stderr[-4000:]}")
    rows = parse_importtime(done.stderr)
    top = [r for r in rows if r[0] == module and r[3] == 0]
    if not top:
        raise RuntimeError(f"no importtime line for {module}")
    # Lines come in completion order: the module's own subtree is every line
    # since the previous depth-0 line.
    end = rows.index(top[-1])
    start = end
    while start > 0 and rows[start - 1][3] > 0:
        start -= 1
    subtree = rows[start : end + 1]
    return {
        "module": module,
        "cumulative_us": top[-1][2],
        "modules_loaded": len(subtree),
        "lines": subtree,
    }


def _callgrind_total(code: str, out_file: str) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        "-c",
        code,
    ]
    done = subprocess.run(
        cmd, cwd=common.REPO_ROOT, env=_import_env(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"callgrind of {code!r} failed:\n{done.stderr[-4000:]!r}")
    return common.callgrind_instructions(out_file)


def count_instructions() -> dict[str, int]:
    """Instructions of each import, beyond an interpreter that imports nothing."""
    with tempfile.TemporaryDirectory(prefix="samsar-bench-imp-") as tmp:
        empty = _callgrind_total("pass", os.path.join(tmp, "pass.out"))
        counts = {}
        for module in MODULES:
            counts[module] = _callgrind_total(f"import {module}", os.path.join(tmp, module)) - empty
            print(
                f"  callgrind import {module:<13} {counts[module]:>14,} instructions",
                file=sys.stderr,
            )
    return counts


def _by_package(lines: list[list[Any]] | list[tuple[str, int, int, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for name, self_us, _cumulative, _depth in lines:
        package = name.split(".", 1)[0]
        if package.startswith("_") and package not in ("_cffi_backend",):
            package = "stdlib (C and private)"
        elif package in sys.stdlib_module_names:
            package = "stdlib"
        totals[package] = totals.get(package, 0) + self_us
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    for module in MODULES:
        measure(module)  # compile the bytecode caches; not measured
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODULES}
    for rnd in range(args.runs):
        order = MODULES if rnd % 2 == 0 else MODULES[::-1]
        for module in order:
            res = measure(module)
            runs[module].append(res)
            print(
                f"  run {rnd + 1}/{args.runs} import {module:<13}"
                f" {res['cumulative_us'] / 1000:7.1f} ms ({res['modules_loaded']} modules)",
                file=sys.stderr,
            )
    instr_note = common.callgrind_unavailable() if args.instructions else None
    instructions = count_instructions() if args.instructions and instr_note is None else {}
    return {"runs": runs, "instructions": instructions, "instr_note": instr_note}


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for module, runs in data["runs"].items():
        times = [r["cumulative_us"] / 1000 for r in runs]
        fastest = min(runs, key=lambda r: r["cumulative_us"])
        summary[module] = {
            "min_ms": min(times),
            "median_ms": statistics.median(times),
            "max_ms": max(times),
            "modules_loaded": fastest["modules_loaded"],
            "by_package_ms": {k: v / 1000 for k, v in _by_package(fastest["lines"]).items()},
            "slowest_modules": [
                (name, self_us / 1000, cumulative / 1000)
                for name, self_us, cumulative, _depth in sorted(
                    fastest["lines"], key=lambda r: -r[1]
                )[:TOP_MODULES]
            ],
        }
    return summary


def render(data: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> str:
    base = summary[BASELINE]["min_ms"]
    counts = data["instructions"]
    out = [
        "## Import time",
        "",
        f"`python -X importtime -c 'import MODULE'`, cumulative time of the module; "
        f"{args.runs} fresh interpreter(s) each, interleaved; minimum (median, max) in ms. "
        "Goal: `samsar_async` ≤ 1.15× `aiohttp`.",
        "",
        common.machine_info_markdown(),
        "",
        common.markdown_table(
            [
                "import",
                "min ms",
                "median ms",
                "max ms",
                "× aiohttp (min)",
                "instructions",
                "× aiohttp",
                "modules loaded",
            ],
            [
                [
                    module,
                    f"{row['min_ms']:.1f}",
                    f"{row['median_ms']:.1f}",
                    f"{row['max_ms']:.1f}",
                    common.fmt_ratio(row["min_ms"] / base if base else None),
                    f"{counts[module]:,}" if module in counts else "—",
                    common.fmt_ratio(counts[module] / counts[BASELINE])
                    if module in counts and counts.get(BASELINE)
                    else "—",
                    str(row["modules_loaded"]),
                ]
                for module, row in summary.items()
            ],
        ),
    ]
    if counts:
        out += [
            "",
            "Instructions: `python -c 'import MODULE'` minus `python -c pass`, under callgrind.",
        ]
    elif data["instr_note"]:
        out += ["", f"- Instruction counts skipped: {data['instr_note']}."]
    subject = summary[SUBJECT]
    out += [
        "",
        f"### Where `import {SUBJECT}` spends its time (fastest run, self time by package)",
        "",
        common.markdown_table(
            ["package", "self ms", "share"],
            [
                [package, f"{ms:.1f}", f"{ms / subject['min_ms']:.0%}"]
                for package, ms in subject["by_package_ms"].items()
                if ms >= 0.5
            ],
        ),
        "",
        "Slowest modules (self time; cumulative includes what they import first):",
        "",
        common.markdown_table(
            ["module", "self ms", "cumulative ms"],
            [[name, f"{s:.1f}", f"{c:.1f}"] for name, s, c in subject["slowest_modules"]],
        ),
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Import time of samsar_async vs aiohttp.")
    parser.add_argument("--quick", action="store_true", help="3 runs each (for CI)")
    parser.add_argument("--runs", type=int, default=None, help="runs per module (default 15)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    parser.add_argument(
        "--instructions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also count instructions under callgrind (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 15
    if args.instructions is None:
        args.instructions = not args.quick
    data = run(args)
    summary = summarize(data)
    sys.stdout.write(render(data, summary, args))
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "import_time",
                "machine": common.machine_info(),
                "params": vars(args),
                "summary": summary,
                "runs": data["runs"],
                "instructions": data["instructions"],
            },
        )


if __name__ == "__main__":
    main()
