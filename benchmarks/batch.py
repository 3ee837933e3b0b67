"""Batch throughput and memory of ``client.assistant.complete_many``.

Part 1, throughput (``--n`` requests, default 20,000, distinct session ids
``f"{i:024x}"``, ``input`` a string, ``max_output_tokens=200``), each row in a
fresh subprocess, rounds interleaved:

- ``samsar complete_many``: ``async with client.assistant.complete_many(requests,
  concurrency=256) as results: async for result in results`` over a list of
  ``CompletionRequest``; every result must have ``.error is None`` and the
  expected ``.response.output_text``.
- ``aiohttp gather+Semaphore``: the hand-written loop people write:
  ``asyncio.gather(*(one(r) for r in requests))`` with an
  ``asyncio.Semaphore(256)`` around each raw aiohttp call (JSON body
  serialized per request, ``json.loads`` of each answer).

Both use a 100-connection pool (the SDK's default; ``--pool``), so 256 requests
in flight queue on 100 keep-alive connections in either case.

Part 2, flat memory: a generator of ``--stream-n`` requests (default 1,000,000)
consumed through ``complete_many(..., concurrency=256)``; current RSS (from
``/proc/self/statm``) and the peak so far are recorded when 1%, 10% and 100%
of the requests are done (10k / 100k / 1M). For reference the same generator
is consumed by 256 raw-aiohttp worker tasks (a bounded loop that never holds
more than 256 requests), the flat-memory floor.

Run from the repo root: ``python -m benchmarks.batch [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from benchmarks import _common as common

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator

PROMPT = "Write a short product launch caption for this session."
MAX_OUTPUT_TOKENS = 200
EXPECTED_TEXT = "Meet the new drop: sharp design, fast story, and a launch-ready look in one line."
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
CONCURRENCY = 256
SDK_DEFAULT_POOL = 100

THROUGHPUT_MODES = ("samsar-many", "samsar-many-fixed", "aiohttp-gather")
STREAM_MODES = ("samsar-stream", "aiohttp-stream")
LABELS = {
    "samsar-many": "samsar complete_many",
    "samsar-many-fixed": "samsar complete_many, adaptive=False",
    "aiohttp-gather": "aiohttp gather+Semaphore",
    "samsar-stream": "samsar complete_many (generator)",
    "aiohttp-stream": "aiohttp 256 workers (generator, floor)",
}


class Skip(Exception):
    """The SDK lacks what this row needs."""


def session_id(i: int) -> str:
    return f"{i:024x}"


# --------------------------------------------------------------------------- SDK rows


async def _aclose(obj: Any) -> None:
    for name in ("aclose", "close"):
        method = getattr(obj, name, None)
        if method is not None:
            result = method()
            if inspect.isawaitable(result):
                await result
            return


def _sdk(url: str, pool: int) -> tuple[Any, Callable[..., Any], type]:
    """``(client, complete_many, CompletionRequest)`` or :class:`Skip`."""
    try:
        from samsar_async import AsyncSamsar, CompletionRequest  # type: ignore[attr-defined]
    except ImportError as exc:
        raise Skip(f"samsar_async lacks AsyncSamsar/CompletionRequest yet ({exc})") from exc
    kwargs: dict[str, Any] = {"api_key": "bench", "base_url": url}
    if pool != SDK_DEFAULT_POOL:
        kwargs["max_connections"] = pool
    client = AsyncSamsar(**kwargs)
    complete_many = getattr(getattr(client, "assistant", None), "complete_many", None)
    if complete_many is None:
        raise Skip("AsyncSamsar has no assistant.complete_many yet")
    return client, complete_many, CompletionRequest


async def _iterate(
    complete_many: Callable[..., Any], requests: Iterable[Any], *, adaptive: bool = True
) -> AsyncIterator[Any]:
    kwargs = {} if adaptive else {"adaptive": False}  # the default, as users call it
    async with complete_many(requests, concurrency=CONCURRENCY, **kwargs) as results:
        async for result in results:
            yield result


def _check_sdk(result: Any) -> None:
    if result.error is not None:
        raise RuntimeError(f"complete_many error: {result.error!r}")
    if result.response.output_text != EXPECTED_TEXT:
        raise RuntimeError(f"unexpected output_text {result.response.output_text!r}")


# --------------------------------------------------------------------------- raw rows


async def _raw_session(pool: int) -> Any:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))


def _raw_body(i: int) -> bytes:
    body = {"session_id": session_id(i), "input": PROMPT, "max_output_tokens": MAX_OUTPUT_TOKENS}
    return json.dumps(body).encode()


async def _raw_call(session: Any, endpoint: str, i: int) -> str:
    async with session.post(endpoint, data=_raw_body(i), headers=HEADERS) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        data = await resp.read()
    text: str = json.loads(data)["output_text"]
    if text != EXPECTED_TEXT:
        raise RuntimeError(f"unexpected output_text {text!r}")
    return text


async def _raw_gather(session: Any, endpoint: str, ids: Iterable[int]) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> str:
        async with sem:
            return await _raw_call(session, endpoint, i)

    results = await asyncio.gather(*(one(i) for i in ids))
    return len(results)


# --------------------------------------------------------------------------- workers


class Checkpoints:
    """Records RSS when the number of finished requests reaches each mark."""

    def __init__(self, marks: list[int]) -> None:
        self.marks = sorted(marks)
        self.records: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.cpu0 = common.cpu_seconds()

    def done(self, count: int) -> None:
        if self.marks and count >= self.marks[0]:
            self.marks.pop(0)
            self.records.append(
                {
                    "done": count,
                    "rss_bytes": common.current_rss_bytes(),
                    "peak_rss_bytes": common.peak_rss_bytes(),
                    "wall_s": time.perf_counter() - self.t0,
                    "cpu_s": common.cpu_seconds() - self.cpu0,
                }
            )


async def _drain(complete_many: Callable[..., Any], requests: Any, adaptive: bool) -> int:
    """Run a batch to its end, checking every result; how many results came."""
    count = 0
    async for r in _iterate(complete_many, requests, adaptive=adaptive):
        _check_sdk(r)
        count += 1
    return count


def _worker_main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": args.mode, "n": args.n}
    endpoint = args.url + "/assistant/completion"
    warmup = 2 * CONCURRENCY
    done = 0
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    try:
        if args.mode.startswith("samsar"):
            try:
                client, complete_many, completion_request = _sdk(args.url, args.pool)
            except Skip as exc:
                return result | {"skipped": str(exc)}

            def requests(start: int, count: int) -> Iterator[Any]:
                for i in range(start, start + count):
                    yield completion_request(
                        session_id=session_id(i), input=PROMPT, max_output_tokens=MAX_OUTPUT_TOKENS
                    )

            adaptive = args.mode != "samsar-many-fixed"
            try:
                run(_drain(complete_many, list(requests(10**9, warmup)), adaptive))
                rss_before = common.current_rss_bytes()
                source: Iterable[Any] = requests(0, args.n)
                if args.mode != "samsar-stream":
                    source = list(source)

                async def measured() -> None:
                    nonlocal done
                    async for r in _iterate(complete_many, source, adaptive=adaptive):
                        _check_sdk(r)
                        done += 1
                        marks.done(done)

                marks = Checkpoints([args.n // 100, args.n // 10, args.n])
                cpu0, t0 = common.cpu_seconds(), time.perf_counter()
                switches0 = common.involuntary_switches()
                # Under callgrind (--instr-n) only what runs inside run_measured is counted.
                common.run_measured(lambda: run(measured()))
            finally:
                run(_aclose(client))
        else:
            session = run(_raw_session(args.pool))
            try:
                run(_raw_gather(session, endpoint, range(10**9, 10**9 + warmup)))
                rss_before = common.current_rss_bytes()

                async def measured() -> None:
                    nonlocal done
                    if args.mode == "aiohttp-gather":
                        done = await _raw_gather(session, endpoint, range(args.n))
                        marks.done(done)
                        return
                    ids = iter(range(args.n))

                    async def worker() -> None:
                        nonlocal done
                        for i in ids:
                            await _raw_call(session, endpoint, i)
                            done += 1
                            marks.done(done)

                    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

                marks = Checkpoints([args.n // 100, args.n // 10, args.n])
                cpu0, t0 = common.cpu_seconds(), time.perf_counter()
                switches0 = common.involuntary_switches()
                common.run_measured(lambda: run(measured()))
            finally:
                run(session.close())
    finally:
        run(loop.shutdown_asyncgens())
        loop.close()
    wall = time.perf_counter() - t0
    cpu = common.cpu_seconds() - cpu0
    if done != args.n:
        raise RuntimeError(f"{done} results for {args.n} requests")
    if args.mode.startswith("samsar"):
        result["samsar_async"] = common.samsar_version()
    return result | {
        "involuntary_switches": common.involuntary_switches() - switches0,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_us_per_call": cpu / args.n * 1e6,
        "calls_per_s": args.n / wall,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": common.peak_rss_bytes(),
        "checkpoints": marks.records,
    }


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, choices=THROUGHPUT_MODES + STREAM_MODES)
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    args = parser.parse_args(argv)
    common.pin_client()
    sys.stdout.write(json.dumps(_worker_main(args)) + "\n")


# --------------------------------------------------------------------------- orchestration


def _run(mode: str, url: str, n: int, pool: int, prefix: list[str] | None = None) -> dict[str, Any]:
    res = common.run_worker(
        "benchmarks.batch",
        [f"--mode={mode}", f"--url={url}", f"--n={n}", f"--pool={pool}"],
        prefix=prefix or (),
    )
    if "skipped" in res:
        print(f"  {mode}: skipped ({res['skipped']})", file=sys.stderr)
    else:
        peak = res["peak_rss_bytes"] / common.MIB
        print(
            f"  {mode:<15} n={n:<8} {res['cpu_us_per_call']:8.1f} us/call"
            f" {res['calls_per_s']:9.0f} calls/s peak {peak:7.1f} MiB",
            file=sys.stderr,
        )
    return res


def run(args: argparse.Namespace) -> dict[str, Any]:
    throughput: dict[str, list[dict[str, Any]]] = {m: [] for m in THROUGHPUT_MODES}
    stream: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    instructions: dict[str, float] = {}
    with common.start_server() as (_proc, url):
        for rnd in range(args.rounds):
            modes = [m for m in THROUGHPUT_MODES if m not in skipped]
            shift = rnd % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                res = _run(mode, url, args.n, args.pool)
                if "skipped" in res:
                    skipped[mode] = res["skipped"]
                else:
                    throughput[mode].append(res)
        if args.instr_n and common.callgrind_unavailable() is None:
            with tempfile.TemporaryDirectory(prefix="samsar-bench-cg-") as tmp:
                for mode in THROUGHPUT_MODES:
                    if mode in skipped:
                        continue
                    cg_file = os.path.join(tmp, f"{mode}.out")
                    res = _run(mode, url, args.instr_n, args.pool, common.callgrind_prefix(cg_file))
                    if "skipped" in res:
                        continue
                    per_call = common.callgrind_instructions(cg_file) / args.instr_n
                    instructions[mode] = per_call
                    print(
                        f"  callgrind {mode:<17} {per_call:12,.0f} instructions/call",
                        file=sys.stderr,
                    )
        if args.stream_n:
            for mode in args.stream_modes.split(","):
                res = _run(mode, url, args.stream_n, args.pool)
                if "skipped" in res:
                    skipped[mode] = res["skipped"]
                else:
                    stream[mode] = res
    return {
        "throughput": throughput,
        "instructions": instructions,
        "stream": stream,
        "skipped": skipped,
    }


def render(data: dict[str, Any], args: argparse.Namespace) -> str:
    mib = common.MIB
    out = [
        "## Batch: complete_many",
        "",
        f"{args.n:,} requests per row, concurrency {CONCURRENCY}, pool {args.pool}, "
        f"{args.rounds} interleaved round(s), median (min–max); ratios are medians of "
        "per-round ratios to the aiohttp gather loop.",
        "",
        common.machine_info_markdown(),
        "",
    ]
    base = data["throughput"]["aiohttp-gather"]
    rows = []
    for mode in THROUGHPUT_MODES if args.rounds else ():
        runs = data["throughput"][mode]
        if not runs:
            rows.append([LABELS[mode], "skipped (see note)", "—", "—", "—", "—", "—"])
            continue
        cells = [LABELS[mode]]
        for key, scale, spec in (
            ("calls_per_s", 1, ",.0f"),
            ("cpu_us_per_call", 1, ",.1f"),
            ("peak_rss_bytes", mib, ",.1f"),
        ):
            values = [r[key] / scale for r in runs]
            cells.append(common.stat(values).fmt(spec))
            cells.append(
                common.fmt_ratio(common.median_ratio(values, [b[key] / scale for b in base]))
            )
        rows.append(cells)
    headers = ["loop", "calls/s", "× gather", "CPU µs/call", "× gather", "peak RSS MiB", "× gather"]
    if rows:
        out.append(common.markdown_table(headers, rows))
    base_instr = data["instructions"].get("aiohttp-gather")
    if data["instructions"] and base_instr:
        out += [
            "",
            f"Instructions (callgrind over the {args.instr_n:,} measured requests only, "
            "after the warm-up; one run each), per request:",
            "",
            common.markdown_table(
                ["loop", "instructions/request", "× gather"],
                [
                    [LABELS[m], f"{v:,.0f}", common.fmt_ratio(v / base_instr)]
                    for m, v in data["instructions"].items()
                ],
            ),
        ]
    if args.stream_n:
        out += [
            "",
            f"### Flat memory: {args.stream_n:,} requests from a generator",
            "",
            "RSS (current / peak so far, MiB) when that many requests are done; "
            "`start` is after the warm-up. One run each; `preempted` counts involuntary "
            "context switches (other load on the client's core: calls/s is then unreliable).",
            "",
        ]
        marks = [args.stream_n // 100, args.stream_n // 10, args.stream_n]
        rows = []
        for mode in args.stream_modes.split(","):
            res = data["stream"].get(mode)
            if res is None:
                rows.append([LABELS[mode], "skipped (see note)", *["—"] * (len(marks) + 2)])
                continue
            cells = [LABELS[mode], f"{res['rss_before_bytes'] / mib:,.1f}"]
            for rec in res["checkpoints"]:
                cells.append(f"{rec['rss_bytes'] / mib:,.1f} / {rec['peak_rss_bytes'] / mib:,.1f}")
            cells += [
                f"{res['calls_per_s']:,.0f}",
                f"{res['cpu_us_per_call']:,.1f}",
                f"{res['involuntary_switches']:,}",
            ]
            rows.append(cells)
        headers = [
            "loop",
            "start",
            *(f"{m:,} done" for m in marks),
            "calls/s",
            "CPU µs/call",
            "preempted",
        ]
        out.append(common.markdown_table(headers, rows))
    if data["skipped"]:
        out.append("")
        out += [f"- Skipped `{LABELS[m]}`: {why}" for m, why in data["skipped"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description="complete_many throughput and flat memory.")
    parser.add_argument("--quick", action="store_true", help="small counts, 1 round (for CI)")
    parser.add_argument("--n", type=int, default=None, help="requests per row (default 20000)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 3; 0 skips part 1)"
    )
    parser.add_argument(
        "--stream-n", type=int, default=None, help="generator length (default 1000000; 0 skips)"
    )
    parser.add_argument("--pool", type=int, default=SDK_DEFAULT_POOL, help="connections")
    parser.add_argument(
        "--instr-n",
        type=int,
        default=None,
        help="requests per row under callgrind (default 0: off; quick 200)",
    )
    parser.add_argument(
        "--stream-modes", default=",".join(STREAM_MODES), help="rows of the generator part"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    bad = set(args.stream_modes.split(",")) - set(STREAM_MODES)
    if bad:
        parser.error(f"unknown --stream-modes: {', '.join(sorted(bad))}")
    if args.n is None:
        args.n = 2_000 if args.quick else 20_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.instr_n is None:
        args.instr_n = 200 if args.quick else 0
    if args.stream_n is None:
        args.stream_n = 5_000 if args.quick else 1_000_000
    data = run(args)
    sys.stdout.write(render(data, args))
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "batch",
                "machine": common.machine_info(),
                "params": vars(args),
                **data,
            },
        )


if __name__ == "__main__":
    main()
