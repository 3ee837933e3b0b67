"""Calls per second of ``complete_dataset`` on a local Ray cluster, 1 and 2 actors.

Against the canned server (its own process), ``--rows`` requests (default
20,000) over ``--sessions`` sessions (default 2,000) go through
``samsar_async.integrations.ray.complete_dataset`` with ``--concurrency`` calls
per actor. Reported per actor count: the wall time of the whole job (actor
start-up and the session repartition included, as a user sees it), calls per
second, and the machine's core count beside them. Needs the ``ray`` extra.

Run from the repo root: ``python -m benchmarks.ray_actors [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from benchmarks import _common as common


def run(rows: int, sessions: int, actors: int, concurrency: int, url: str) -> dict[str, Any]:
    import ray

    from samsar_async.integrations.ray import complete_dataset

    items = [
        {"row_key": i, "session_id": f"{i % sessions:024x}", "input": "Write a caption."}
        for i in range(rows)
    ]
    started = time.perf_counter()
    out = complete_dataset(
        ray.data.from_items(items),
        job_name=f"bench-{actors}-{time.time()}",
        actors=actors,
        concurrency=concurrency,
        base_url=url,
    ).take_all()
    wall = time.perf_counter() - started
    ok = sum(1 for r in out if r["ok"])
    if ok != rows:
        first = next(r for r in out if not r["ok"])
        raise SystemExit(f"{rows - ok} rows failed, e.g. {first['error_message']}")
    return {"actors": actors, "rows": rows, "wall_s": wall, "calls_per_s": rows / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 rows (for CI)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight per actor")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    rows = 2_000 if args.quick else args.rows
    sessions = min(args.sessions, rows)
    try:
        import ray
    except ImportError:
        print("ray_actors: skipped (the ray extra is not installed)")
        return 0
    os.environ["SAMSAR_API_KEY"] = "bench"  # local workers inherit it
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    results = []
    with common.start_server() as (_proc, url):
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.print_on_execution_start = False
            ctx.wait_for_min_actors_s = 60
            for actors in (1, 2):
                results.append(run(rows, sessions, actors, args.concurrency, url))
        finally:
            ray.shutdown()
    cores = os.cpu_count()
    print(f"### Ray Data: complete_dataset, {rows:,} rows over {sessions:,} sessions\n")
    print(f"Machine: {cores} cores (Ray, the canned server and the client share them).\n")
    table = [
        [r["actors"], f"{r['wall_s']:.1f}", f"{r['calls_per_s']:,.0f}", cores] for r in results
    ]
    print(common.markdown_table(["actors", "job wall (s)", "calls/s", "cores"], table))
    if args.json:
        common.write_json(args.json, {"cores": cores, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
