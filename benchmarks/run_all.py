"""Run every benchmark in turn and print their markdown reports.

``python -m benchmarks [--quick] [--json-dir DIR] [--only NAME,...]`` (names:
client_cost, import_time, memory, sync_client, batch, images, ray_actors,
outage, shutdown; also ``python -m benchmarks.run_all``). Each benchmark runs
in its own process with its own server; ``--quick`` is passed through (CI
mode: small counts, one round). Arguments after ``--`` go to every benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _common as common

BENCHMARKS = (
    "client_cost",
    "import_time",
    "memory",
    "sync_client",
    "batch",
    "images",
    "ray_actors",
    "outage",
    "shutdown",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description="Run all samsar-async benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small counts, 1 round (for CI)")
    parser.add_argument("--json-dir", help="write <benchmark>.json files here")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.json_dir:
        Path(args.json_dir).mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *extra]
        if args.quick:
            cmd.append("--quick")
        if args.json_dir:
            cmd += ["--json", str(Path(args.json_dir) / f"{name}.json")]
        print(f"# running {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=common.REPO_ROOT, check=False)
        print(
            f"# {name}: exit {done.returncode} in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if done.returncode != 0:
            failed.append(name)
        sys.stdout.write("\n")
        sys.stdout.flush()
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
