"""Per-call overhead of the sync client, ``samsar_async.Samsar``, next to openai-python's.

The sync client runs the async core on an event loop in a background thread
(anyio's blocking portal), so each call also pays a hop to that thread and back.
This measures what that costs, against synchronous clients that do their I/O in
the calling thread, all talking to the canned server:

- ``httpx`` (the sync floor): one ``httpx.Client``; ``client.post(url,
  content=<prebuilt JSON bytes>)``, ``json.loads``, ``["output_text"]``.
- ``samsar_async`` (sync): ``Samsar(api_key="bench", base_url=url)`` and
  ``client.assistant.complete(session_id, text, max_output_tokens=300)``,
  ``.output_text``.
- ``samsar_async-async`` (for reference, same core without the thread hop):
  ``AsyncSamsar`` driven by the same number of asyncio tasks as there are threads.
- ``openai``: ``openai.OpenAI(base_url=url, api_key=...)`` through the typed
  ``client.responses.create(...)`` (httpx underneath); ``session_id`` in ``extra_body``.

``--threads T``: T threads share one client, each making calls back to back
on its own session id (one conversation per thread), pulling from a shared
counter: 1 thread measures the latency of one call, 8 a thread-pool web server.
Each (client, threads, round) runs in a fresh subprocess pinned to one core,
as ``client_cost`` does; CPU per call counts every thread of the process (the
portal's included).

Run from the repo root: ``python -m benchmarks.sync_client [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from benchmarks import _common as common
from benchmarks.client_cost import (
    BODY_BYTES,
    EXPECTED_TEXT,
    HEADERS,
    INPUT_MESSAGES,
    MAX_OUTPUT_TOKENS,
    PROMPT,
    session_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable

CLIENTS = ("httpx", "samsar_async", "samsar_async-async", "openai")
BASELINE = "httpx"


def make_client(name: str, url: str) -> tuple[Callable[[int], str], Callable[[], Any]]:
    """``(call, close)``; ``call(k)`` (k: the thread) returns ``output_text``."""
    if name == "httpx":
        import httpx

        client = httpx.Client(timeout=60.0)
        endpoint = url + "/assistant/completion"

        def call_httpx(k: int) -> str:
            resp = client.post(endpoint, content=BODY_BYTES[k], headers=HEADERS)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}")
            text: str = json.loads(resp.content)["output_text"]
            return text

        return call_httpx, client.close

    if name == "openai":
        import openai

        oai = openai.OpenAI(base_url=url, api_key="bench")

        def call_openai(k: int) -> str:
            response = oai.responses.create(
                model="gpt-5.4",
                input=INPUT_MESSAGES,  # type: ignore[arg-type]
                max_output_tokens=MAX_OUTPUT_TOKENS,
                extra_body={"session_id": session_id(k)},
            )
            return response.output_text

        return call_openai, oai.close

    if name == "samsar_async":
        from samsar_async import Samsar

        sdk = Samsar(api_key="bench", base_url=url)

        def call_samsar(k: int) -> str:
            response = sdk.assistant.complete(
                session_id(k), PROMPT, max_output_tokens=MAX_OUTPUT_TOKENS
            )
            return response.output_text

        return call_samsar, sdk.close

    raise ValueError(f"unknown client {name!r}")


def drive_threads(call: Callable[[int], str], n: int, threads: int) -> None:
    """``n`` calls from ``threads`` threads pulling from a shared counter."""
    lock = threading.Lock()
    remaining = n
    errors: list[BaseException] = []

    def work(k: int) -> None:
        nonlocal remaining
        try:
            while True:
                with lock:
                    if remaining <= 0:
                        return
                    remaining -= 1
                text = call(k)
                if text != EXPECTED_TEXT:
                    raise RuntimeError(f"unexpected output_text {text!r}")
        except BaseException as exc:
            errors.append(exc)

    if threads == 1:
        work(0)
    else:
        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    if errors:
        raise errors[0]


def _measure(run: Callable[[int], None], args: argparse.Namespace) -> dict[str, Any]:
    run(args.warmup)
    switches0 = common.involuntary_switches()
    cpu0 = common.cpu_seconds()
    t0 = time.perf_counter()
    run(args.n)
    wall = time.perf_counter() - t0
    cpu = common.cpu_seconds() - cpu0
    return {
        "n": args.n,
        "warmup": args.warmup,
        "involuntary_switches": common.involuntary_switches() - switches0,
        "cpu_us_per_call": cpu / args.n * 1e6,
        "wall_us_per_call": wall / args.n * 1e6,
        "calls_per_s": args.n / wall,
        "peak_rss_bytes": common.peak_rss_bytes(),
    }


def _async_reference(args: argparse.Namespace) -> dict[str, Any]:
    """AsyncSamsar driven by ``threads`` tasks on one loop: the core without the hop."""
    from samsar_async import AsyncSamsar

    async def main() -> dict[str, Any]:
        async with AsyncSamsar(api_key="bench", base_url=args.url) as sdk:

            async def drive(n: int) -> None:
                remaining = n

                async def task(k: int) -> None:
                    nonlocal remaining
                    while remaining > 0:
                        remaining -= 1
                        response = await sdk.assistant.complete(
                            session_id(k), PROMPT, max_output_tokens=MAX_OUTPUT_TOKENS
                        )
                        if response.output_text != EXPECTED_TEXT:
                            raise RuntimeError("unexpected output_text")

                await asyncio.gather(*(task(k) for k in range(args.threads)))

            await drive(args.warmup)
            switches0 = common.involuntary_switches()
            cpu0 = common.cpu_seconds()
            t0 = time.perf_counter()
            await drive(args.n)
            wall = time.perf_counter() - t0
            cpu = common.cpu_seconds() - cpu0
            return {
                "n": args.n,
                "warmup": args.warmup,
                "involuntary_switches": common.involuntary_switches() - switches0,
                "cpu_us_per_call": cpu / args.n * 1e6,
                "wall_us_per_call": wall / args.n * 1e6,
                "calls_per_s": args.n / wall,
                "peak_rss_bytes": common.peak_rss_bytes(),
            }

    return asyncio.run(main())


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True, choices=CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    common.pin_client()
    result: dict[str, Any] = {"client": args.client, "threads": args.threads}
    if args.client == "samsar_async-async":
        result |= _async_reference(args)
    else:
        call, close = make_client(args.client, args.url)
        try:
            result |= _measure(lambda n: drive_threads(call, n, args.threads), args)
        finally:
            close()
    if args.client.startswith("samsar_async"):
        result["samsar_async"] = common.samsar_version()
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------- orchestration


def run(args: argparse.Namespace) -> dict[str, Any]:
    thread_counts = [int(t) for t in args.threads.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    if BASELINE not in clients:
        clients.insert(0, BASELINE)
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        t: {name: [] for name in clients} for t in thread_counts
    }
    with common.start_server() as (_server, url):
        for rnd in range(args.rounds):
            for threads in thread_counts:
                shift = rnd % len(clients)
                for name in clients[shift:] + clients[:shift]:
                    res = common.run_worker(
                        "benchmarks.sync_client",
                        [
                            f"--client={name}",
                            f"--url={url}",
                            f"--n={args.n}",
                            f"--warmup={args.warmup}",
                            f"--threads={threads}",
                        ],
                    )
                    results[threads][name].append(res)
                    print(
                        f"  round {rnd + 1}/{args.rounds} threads={threads:<3} {name:<19}"
                        f" {res['cpu_us_per_call']:8.1f} us CPU/call"
                        f" {res['wall_us_per_call']:8.1f} us/call",
                        file=sys.stderr,
                    )
    return {"threads": thread_counts, "clients": clients, "results": results}


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for threads in data["threads"]:
        base = data["results"][threads][BASELINE]
        rows: dict[str, Any] = {}
        for name in data["clients"]:
            runs = data["results"][threads][name]
            row: dict[str, Any] = {}
            for key in ("cpu_us_per_call", "wall_us_per_call", "calls_per_s", "peak_rss_bytes"):
                values = [r[key] for r in runs]
                row[key] = common.stat(values)
                row[key + "_ratio"] = common.median_ratio(values, [b[key] for b in base])
            rows[name] = row
        summary[str(threads)] = rows
    return summary


def render(data: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> str:
    out = [
        "## Sync client cost per call",
        "",
        f"{args.n:,} calls per client after {args.warmup:,} warm-up calls, {args.rounds} "
        "interleaved round(s), median (min–max); ratios are medians of per-round ratios "
        "to httpx's sync client.",
        "",
        common.machine_info_markdown(),
    ]
    headers = [
        "client",
        "CPU µs/call",
        "× httpx",
        "wall µs/call",
        "× httpx",
        "calls/s",
        "peak RSS MiB",
    ]
    for threads in data["threads"]:
        rows = []
        for name, row in summary[str(threads)].items():
            rows.append(
                [
                    name,
                    row["cpu_us_per_call"].fmt(",.1f"),
                    common.fmt_ratio(row["cpu_us_per_call_ratio"]),
                    row["wall_us_per_call"].fmt(",.1f"),
                    common.fmt_ratio(row["wall_us_per_call_ratio"]),
                    row["calls_per_s"].fmt(",.0f"),
                    common.stat([v / common.MIB for v in row["peak_rss_bytes"].values]).fmt(",.1f"),
                ]
            )
        label = "1 thread" if threads == 1 else f"{threads} threads"
        out += ["", f"### {label}", "", common.markdown_table(headers, rows)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description="Sync client cost per completion call.")
    parser.add_argument("--quick", action="store_true", help="200 calls, 1 round (for CI)")
    parser.add_argument("--n", type=int, default=None, help="measured calls (default 5000)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 500)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", default="1,8", help="comma-separated thread counts")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated list")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 200 if args.quick else 5_000
    if args.warmup is None:
        args.warmup = 50 if args.quick else 500
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    data = run(args)
    summary = summarize(data)
    sys.stdout.write(render(data, summary, args))
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "sync_client",
                "machine": common.machine_info(),
                "params": vars(args),
                "summary": {
                    threads: {
                        name: {
                            k: (v.as_dict() if isinstance(v, common.Stat) else v)
                            for k, v in row.items()
                        }
                        for name, row in rows.items()
                    }
                    for threads, rows in summary.items()
                },
                "runs": {str(t): r for t, r in data["results"].items()},
            },
        )


if __name__ == "__main__":
    main()
