"""Memory per in-flight call: samsar_async against raw aiohttp+orjson.

The canned server holds every completion request whose path starts with
``/hold/`` (``base_url=http://127.0.0.1:PORT/hold/v1``) until it is told to
answer them all (``GET /hold/release``, which also lets later requests through until ``GET
/hold/arm``), so a client can be caught with a known
number of calls in flight. Per (client, setting, round), in a fresh process
pinned to the client core:

1. create the client (``--pool`` keep-alive connections), make a small warm-up
   batch of calls (held, then released) so that imports and first-use code are
   paid for, ``gc.collect()``, read the current RSS (``/proc/self/statm``);
2. start ``--concurrency`` calls at once (one task each, worker ``k`` on its own
   session id), wait until every task has started and the server holds
   ``min(pool, concurrency)`` requests (the rest wait for a pooled connection),
   then let the loop settle and read the current RSS again;
3. release the answers and check every call's ``output_text``.

Figure: (RSS with the calls in flight − RSS before) / concurrency, in KiB per
call. Settings: 10,000 calls on 10,000 connections (every call on its own
socket, held by the server) and 10,000 calls on 100 connections (100 held on
the wire, 9,900 queued in the client's pool). Both include what the
connections cost; the floor pays the same. Ratios are medians of per-round
ratios to raw aiohttp+orjson.

Clients: ``aiohttp-orjson`` (one ``ClientSession``, ``session.post`` with
prebuilt JSON bytes, ``orjson.loads``) and ``samsar_async``
(``client.assistant.complete(session_id, text, max_output_tokens=300)``).

Run from the repo root: ``python -m benchmarks.memory [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

from benchmarks import _common as common
from benchmarks.client_cost import EXPECTED_TEXT, MAX_WORKERS, Skip, _aclose, make_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

CLIENTS = ("aiohttp-orjson", "samsar_async")
BASELINE = "aiohttp-orjson"
WARMUP_CALLS = 64
SETTLE_S = 0.2  # after everything is in flight: let queued tasks reach their wait


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise Skip(f"the open-file limit ({soft}) is below the {needed} descriptors needed")


async def _server_get(port: int, path: str) -> str:
    """``GET path`` on the canned server over its own short connection; the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data.split(b"\r\n\r\n", 1)[1].decode()


async def _held_count(port: int) -> int:
    return int(await _server_get(port, "/hold/count"))


async def _in_flight(
    call: Callable[[int], Awaitable[str]], port: int, count: int, on_wire: int
) -> tuple[list[asyncio.Task[str]], float]:
    """Start ``count`` calls; return them once all are in flight, and how long that took."""
    started = 0

    async def one(k: int) -> str:
        nonlocal started
        started += 1
        return await call(k)

    await _server_get(port, "/hold/arm")
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(one(k)) for k in range(count)]
    while started < count or await _held_count(port) < on_wire:
        for task in tasks:
            if task.done():
                task.result()  # a call failed: raise its error
                raise RuntimeError("a held call finished before the release")
        await asyncio.sleep(0.02)
    await asyncio.sleep(SETTLE_S)
    return tasks, time.perf_counter() - t0


async def _release(port: int, tasks: list[asyncio.Task[str]]) -> None:
    """Answer the held calls (and pass the queued ones through); check every answer."""
    await _server_get(port, "/hold/release")
    for text in await asyncio.gather(*tasks):
        if text != EXPECTED_TEXT:
            raise RuntimeError(f"unexpected output_text {text!r}")


async def _worker_main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "client": args.client,
        "concurrency": args.concurrency,
        "pool": args.pool,
        "loop": args.loop,
    }
    try:
        _raise_fd_limit(min(args.pool, args.concurrency) + 256)
        call, closable = await make_client(args.client, args.url, args.pool)
    except Skip as exc:
        return result | {"skipped": str(exc)}
    if args.client != "samsar_async":
        # Raw aiohttp sends prebuilt bodies (MAX_WORKERS of them); the server ignores the
        # session id. The SDK needs a distinct session per call, or its per-session
        # queue (not the wire) would hold the calls.
        raw_call = call

        def call(k: int) -> Awaitable[str]:
            return raw_call(k % MAX_WORKERS)

    port = int(args.url.split(":")[2].split("/", 1)[0])
    try:
        warm, _ = await _in_flight(call, port, WARMUP_CALLS, min(args.pool, WARMUP_CALLS))
        await _release(port, warm)
        del warm
        gc.collect()
        rss_before = common.current_rss_bytes()
        tasks, ramp = await _in_flight(
            call, port, args.concurrency, min(args.pool, args.concurrency)
        )
        rss_in_flight = common.current_rss_bytes()
        await _release(port, tasks)
    finally:
        await _aclose(closable)
    if args.client == "samsar_async":
        result["samsar_async"] = common.samsar_version()
    return result | {
        "ramp_s": ramp,
        "rss_before_bytes": rss_before,
        "rss_in_flight_bytes": rss_in_flight,
        "bytes_per_call": (rss_in_flight - rss_before) / args.concurrency,
        "peak_rss_bytes": common.peak_rss_bytes(),
    }


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True, choices=CLIENTS)
    parser.add_argument("--url", required=True, help="base URL with the /hold prefix")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    parser.add_argument("--loop", default="asyncio", choices=common.LOOPS)
    args = parser.parse_args(argv)
    common.pin_client()
    loop = common.new_event_loop(args.loop)
    try:
        result = loop.run_until_complete(_worker_main(args))
    finally:
        loop.close()
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------- orchestration


def _held_url(base_url: str) -> str:
    root, _, version = base_url.rpartition("/")  # http://127.0.0.1:PORT, v1
    return f"{root}/hold/{version}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = [(args.concurrency, pool) for pool in (int(p) for p in args.pools.split(","))]
    loops = [x.strip() for x in args.loop.split(",")]
    keys = [f"{lp}/{conc}/{pool}" for lp in loops for conc, pool in settings]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        key: {name: [] for name in CLIENTS} for key in keys
    }
    skipped: dict[str, str] = {}
    with common.start_server() as (_server, url):
        for rnd in range(args.rounds):
            for lp in loops:
                for conc, pool in settings:
                    key = f"{lp}/{conc}/{pool}"
                    active = [c for c in CLIENTS if c not in skipped]
                    shift = rnd % len(active)
                    for name in active[shift:] + active[:shift]:
                        res = common.run_worker(
                            "benchmarks.memory",
                            [
                                f"--client={name}",
                                f"--url={_held_url(url)}",
                                f"--concurrency={conc}",
                                f"--pool={pool}",
                                f"--loop={lp}",
                            ],
                        )
                        if "skipped" in res:
                            skipped[name] = res["skipped"]
                            print(f"  {name}: skipped ({res['skipped']})", file=sys.stderr)
                            continue
                        results[key][name].append(res)
                        print(
                            f"  round {rnd + 1}/{args.rounds} {lp:<7} {conc:,} calls on"
                            f" {pool:,} connections {name:<15}"
                            f" {res['bytes_per_call'] / 1024:6.1f} KiB/call"
                            f" (ramp {res['ramp_s']:.1f} s)",
                            file=sys.stderr,
                        )
    return {"loops": loops, "settings": settings, "results": results, "skipped": skipped}


def render(data: dict[str, Any], args: argparse.Namespace) -> str:
    out = [
        "## Memory per in-flight call",
        "",
        f"RSS growth with every call in flight / number of calls, KiB; {args.rounds} "
        "interleaved round(s), one fresh process each, median (min–max); ratios are "
        "medians of per-round ratios to raw aiohttp+orjson.",
        "",
        common.machine_info_markdown(),
        "",
    ]
    headers = ["loop", "calls in flight", "connections", "client", "KiB per call", "× floor"]
    rows = []
    for lp in data["loops"]:
        for conc, pool in data["settings"]:
            by_client = data["results"][f"{lp}/{conc}/{pool}"]
            base = [r["bytes_per_call"] for r in by_client[BASELINE]]
            for name in CLIENTS:
                runs = by_client[name]
                if not runs:
                    rows.append([lp, f"{conc:,}", f"{pool:,}", name, "skipped", "—"])
                    continue
                values = [r["bytes_per_call"] for r in runs]
                rows.append(
                    [
                        lp,
                        f"{conc:,}",
                        f"{pool:,}",
                        name,
                        common.stat([v / 1024 for v in values]).fmt(",.1f"),
                        common.fmt_ratio(common.median_ratio(values, base)),
                    ]
                )
    out.append(common.markdown_table(headers, rows))
    if data["skipped"]:
        out.append("")
        out += [f"- Skipped `{name}`: {why}" for name, why in data["skipped"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description="Memory per in-flight call.")
    parser.add_argument("--quick", action="store_true", help="1,000 calls, 1 round (for CI)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="calls in flight (default 10000)"
    )
    parser.add_argument(
        "--pools", default=None, help="comma-separated pool sizes (default: concurrency,100)"
    )
    parser.add_argument("--loop", default="asyncio", help="comma-separated: asyncio, uvloop")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = 1_000 if args.quick else 10_000
    if args.pools is None:
        args.pools = f"{args.concurrency},100"
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    data = run(args)
    sys.stdout.write(render(data, args))
    if args.json:
        common.write_json(
            args.json,
            {"benchmark": "memory", "machine": common.machine_info(), "params": vars(args), **data},
        )


if __name__ == "__main__":
    main()
