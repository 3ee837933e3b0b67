"""``close()`` under load, and one client across event loops.

Run from the repo root: ``python -m benchmarks.shutdown [--quick] [--rounds 5] [--json PATH]``.

Close: 500 calls at once on 500 sessions, ``max_connections=100``, against a
MockSamsarServer that holds every request (``pause()``), so 100 calls are at
the server and 400 wait for a pooled connection; once the server holds 100,
``close()``. Counted: how each call ended (exception type, ``sent``), tasks
reporting ``cancelled()``, warnings raised meanwhile, and the time from
``close()`` until every call has settled.

Loops: one client used in ``asyncio.run()`` three times in a row (a script, a
test suite, a notebook), the server on a thread of its own: calls that worked.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import time
import warnings
from typing import Any

from anyio.from_thread import start_blocking_portal

from samsar_async import AsyncSamsar, ClientClosedError, RetryPolicy
from samsar_async.testing import MockSamsarServer


async def close_round(n: int, pool: int) -> dict[str, Any]:
    async with MockSamsarServer() as server:
        sessions = [server.create_session() for _ in range(n)]
        client = AsyncSamsar(server.api_key, base_url=server.url, max_connections=pool)
        server.pause()
        tasks = [asyncio.create_task(client.assistant.complete(s, "hi")) for s in sessions]
        await server.wait_until(lambda s: s.held == min(n, pool), timeout=60)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.perf_counter()
            await client.close()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            settled = time.perf_counter() - started
        server.resume()
    kinds = collections.Counter(
        f"ClientClosedError(sent={r.sent})"
        if isinstance(r, ClientClosedError)
        else type(r).__name__
        for r in results
    )
    return {
        "results": dict(kinds),
        "cancelled_tasks": sum(t.cancelled() for t in tasks),
        "warnings": len(caught),
        "settled_s": settled,
    }


def loops_round(runs: int) -> dict[str, Any]:
    with start_blocking_portal("asyncio") as portal:
        server = MockSamsarServer()
        portal.call(server.start)
        try:
            session_id = server.create_session()
            client = AsyncSamsar(server.api_key, base_url=server.url, retry=RetryPolicy.disabled())
            outcomes = []
            for n in range(runs):

                async def turn(n: int = n) -> str:
                    return (await client.assistant.complete(session_id, f"turn {n}")).output_text

                try:
                    asyncio.run(turn())
                    outcomes.append("ok")
                except Exception as exc:  # what a user would see
                    outcomes.append(f"{type(exc).__name__}: {exc}")
            asyncio.run(client.close())
        finally:
            portal.call(server.close)
    return {"runs": outcomes}


def render(data: dict[str, Any]) -> str:
    out = [f"## Shutdown and event loops ({'quick' if data['quick'] else 'full'} run)", ""]
    rounds = data["close"]
    first = rounds[0]
    out.append(
        f"### close() under {data['n']} calls in flight, max_connections={data['pool']} "
        f"({len(rounds)} rounds)"
    )
    out.append("")
    out.append("| how the calls ended | cancelled tasks | warnings | settled in (median, range) |")
    out.append("| --- | --- | --- | --- |")
    ends = ", ".join(f"{v} {k}" for k, v in sorted(first["results"].items()))
    same = all(r["results"] == first["results"] for r in rounds)
    times = [r["settled_s"] * 1000 for r in rounds]
    out.append(
        f"| {ends}{'' if same else ' (varied between rounds)'} "
        f"| {max(r['cancelled_tasks'] for r in rounds)} | {max(r['warnings'] for r in rounds)} "
        f"| {statistics.median(times):.0f} ms ({min(times):.0f}-{max(times):.0f}) |"
    )
    out.append("")
    out.append("### One client in three asyncio.run() calls")
    out.append("")
    out.append("| run | outcome |")
    out.append("| --- | --- |")
    for n, outcome in enumerate(data["loops"]["runs"], 1):
        out.append(f"| {n} | {outcome} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round (for CI)")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    data: dict[str, Any] = {"quick": args.quick, "n": args.n, "pool": args.pool, "close": []}
    for r in range(rounds):
        print(f"# close round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        data["close"].append(asyncio.run(close_round(args.n, args.pool)))
    data["loops"] = loops_round(3)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=2)
    print(render(data))


if __name__ == "__main__":
    main()
