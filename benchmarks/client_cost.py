"""Client-side cost of one assistant completion call, per HTTP client.

Every client sends the same request body to the canned server and reads
``output_text`` from the same JSON payload, driven by the same driver
(``concurrency`` worker tasks pulling from a shared counter). Worker ``k``
uses its own ``session_id`` (``f"{k:024x}"``): one conversation per worker, since
the SDK (rightly) runs the calls of one session one at a time, so one shared
session id would measure that queue, not the client. Measured in the
client process only: CPU microseconds per call (``getrusage`` user+sys delta
over the measured calls / N), calls per second (wall clock) and peak RSS.

Clients (rows):

- ``aiohttp``: the floor. One ``ClientSession``; ``session.post(url,
  data=<prebuilt JSON bytes>, headers=...)``, ``await resp.read()``,
  ``json.loads``, read ``output_text``.
- ``samsar_async``: ``AsyncSamsar(api_key="bench", base_url=url)`` and
  ``await client.assistant.complete(session_id, text, max_output_tokens=300)``,
  read ``.output_text``. Skipped with a note while the SDK lacks that API.
- ``httpx``: ``httpx.AsyncClient.post(url, content=<same bytes>)``, then the
  same ``json.loads`` and ``output_text``.
- ``openai-httpx``: ``openai.AsyncOpenAI(base_url=url, api_key=...)`` through
  the typed ``client.responses.create(...)`` (it posts to ``{base_url}/responses``,
  which the canned server answers with the same payload); ``session_id`` goes in
  ``extra_body``, ``model`` is required by the openai signature.
- ``openai-aiohttp``: the same with ``http_client=openai.DefaultAioHttpClient()``.

Connection pools: every client gets the same pool, ``--pool`` connections (default
100, the SDK's ``DEFAULT_MAX_CONNECTIONS``), all kept alive, so that at
concurrency 256 every client queues on the same number of connections.
``--pool 0`` leaves each library's own defaults instead.

Each (client, concurrency, round) runs in a fresh subprocess: ``ru_maxrss`` is a
process-wide high-water mark that never goes down, and imported modules stay
resident, so only a fresh process gives each client an honest peak RSS (and a
CPU delta that no other client's garbage can leak into). Rounds interleave the
clients (the order rotates every round) so that machine drift hits all of
them; figures are medians over rounds with (min–max), ratios are medians of the
per-round ratios to raw aiohttp.

Run from the repo root: ``python -m benchmarks.client_cost [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from benchmarks import _common as common

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PROMPT = "Write a short product launch caption for this session."
MAX_OUTPUT_TOKENS = 300
INPUT_MESSAGES = [{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}]
MAX_WORKERS = 4096


def session_id(worker: int) -> str:
    """Worker ``k``'s session id: one conversation per worker task (24 hex digits)."""
    return f"{worker:024x}"


# The contract's sample request body (one per worker, as each worker has its own session),
# serialized once: raw aiohttp and httpx send these prebuilt bytes.
BODY_BYTES = [
    json.dumps(
        {
            "session_id": session_id(k),
            "input": INPUT_MESSAGES,
            "max_output_tokens": MAX_OUTPUT_TOKENS,
        },
        separators=(",", ":"),
    ).encode()
    for k in range(MAX_WORKERS)
]
EXPECTED_TEXT = "Meet the new drop: sharp design, fast story, and a launch-ready look in one line."
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
SDK_DEFAULT_POOL = 100

CLIENTS = ("aiohttp", "samsar_async", "httpx", "openai-httpx", "openai-aiohttp")
BASELINE = "aiohttp"
NOISY_SWITCHES = 1_000


class Skip(Exception):
    """The client cannot be measured (for example the SDK lacks the API yet)."""


async def _aclose(obj: Any) -> None:
    for name in ("aclose", "close"):
        method = getattr(obj, name, None)
        if method is not None:
            result = method()
            if inspect.isawaitable(result):
                await result
            return


async def make_client(
    name: str, url: str, pool: int
) -> tuple[Callable[[int], Awaitable[str]], Any]:
    """``(call, closable)`` for one client; ``await call(k)`` (k: worker) is ``output_text``."""
    if name == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=pool) if pool else aiohttp.TCPConnector()
        session = aiohttp.ClientSession(connector=connector)
        endpoint = url + "/assistant/completion"

        async def call_aiohttp(k: int) -> str:
            async with session.post(endpoint, data=BODY_BYTES[k], headers=HEADERS) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                data = await resp.read()
            text: str = json.loads(data)["output_text"]
            return text

        return call_aiohttp, session

    if name == "httpx":
        import httpx

        limits = (
            httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
            if pool
            else httpx.Limits()
        )
        client = httpx.AsyncClient(limits=limits, timeout=60.0)
        endpoint = url + "/assistant/completion"

        async def call_httpx(k: int) -> str:
            resp = await client.post(endpoint, content=BODY_BYTES[k], headers=HEADERS)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}")
            text: str = json.loads(resp.content)["output_text"]
            return text

        return call_httpx, client

    if name in ("openai-httpx", "openai-aiohttp"):
        import openai

        kwargs: dict[str, Any] = {}
        if pool:
            import httpx2

            kwargs["limits"] = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
        http_client = (
            openai.DefaultAioHttpClient(**kwargs)
            if name == "openai-aiohttp"
            else openai.DefaultAsyncHttpxClient(**kwargs)
        )
        oai = openai.AsyncOpenAI(base_url=url, api_key="bench", http_client=http_client)

        async def call_openai(k: int) -> str:
            response = await oai.responses.create(
                model="gpt-5.4",
                input=INPUT_MESSAGES,  # type: ignore[arg-type]
                max_output_tokens=MAX_OUTPUT_TOKENS,
                extra_body={"session_id": session_id(k)},
            )
            return response.output_text

        return call_openai, oai

    if name == "samsar_async":
        try:
            from samsar_async import AsyncSamsar  # type: ignore[attr-defined]
        except ImportError as exc:
            raise Skip(f"samsar_async has no AsyncSamsar yet ({exc})") from exc
        sdk_kwargs: dict[str, Any] = {"api_key": "bench", "base_url": url}
        if pool and pool != SDK_DEFAULT_POOL:
            if "max_connections" not in inspect.signature(AsyncSamsar).parameters:
                raise Skip(
                    f"AsyncSamsar takes no max_connections; rerun with --pool {SDK_DEFAULT_POOL}"
                )
            sdk_kwargs["max_connections"] = pool
        sdk = AsyncSamsar(**sdk_kwargs)
        assistant = getattr(sdk, "assistant", None)
        if assistant is None or not hasattr(assistant, "complete"):
            await _aclose(sdk)
            raise Skip("AsyncSamsar has no assistant.complete yet")

        async def call_samsar(k: int) -> str:
            response = await assistant.complete(
                session_id(k), PROMPT, max_output_tokens=MAX_OUTPUT_TOKENS
            )
            text: str = response.output_text
            return text

        return call_samsar, sdk

    raise ValueError(f"unknown client {name!r}")


async def drive(call: Callable[[int], Awaitable[str]], n: int, concurrency: int) -> None:
    """Make ``n`` calls with ``concurrency`` worker tasks pulling from a shared counter."""
    if concurrency > MAX_WORKERS:
        raise ValueError(f"concurrency is capped at {MAX_WORKERS}")
    remaining = n

    async def worker(k: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            text = await call(k)
            if text != EXPECTED_TEXT:
                raise RuntimeError(f"unexpected output_text {text!r}")

    await asyncio.gather(*(worker(k) for k in range(min(concurrency, n))))


async def _worker_main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"client": args.client, "concurrency": args.concurrency}
    try:
        call, closable = await make_client(args.client, args.url, args.pool)
    except Skip as exc:
        return result | {"skipped": str(exc)}
    try:
        await drive(call, args.warmup, args.concurrency)
        rss_before = common.current_rss_bytes()
        switches0 = common.involuntary_switches()
        cpu0 = common.cpu_seconds()
        t0 = time.perf_counter()
        await drive(call, args.n, args.concurrency)
        wall = time.perf_counter() - t0
        cpu = common.cpu_seconds() - cpu0
        switches = common.involuntary_switches() - switches0
    finally:
        await _aclose(closable)
    if args.client == "samsar_async":
        result["samsar_async"] = common.samsar_version()
    return result | {
        "n": args.n,
        "warmup": args.warmup,
        "involuntary_switches": switches,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_us_per_call": cpu / args.n * 1e6,
        "calls_per_s": args.n / wall,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": common.peak_rss_bytes(),
    }


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True, choices=CLIENTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--pool", type=int, required=True)
    args = parser.parse_args(argv)
    common.pin_client()
    result = asyncio.run(_worker_main(args))
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------- orchestration


def run(args: argparse.Namespace) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    if BASELINE not in clients:
        clients.insert(0, BASELINE)
    # results[conc][client] -> list of per-round dicts (round order preserved).
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        c: {name: [] for name in clients} for c in concurrencies
    }
    skipped: dict[str, str] = {}
    with common.start_server() as (server, url):
        for rnd in range(args.rounds):
            for conc in concurrencies:
                active = [c for c in clients if c not in skipped]
                shift = rnd % len(active)
                order = active[shift:] + active[:shift]
                for name in order:
                    warmup = args.warmup if args.warmup is not None else 2 * conc
                    server_cpu0 = common.process_cpu_seconds(server.pid)
                    res = common.run_worker(
                        "benchmarks.client_cost",
                        [
                            f"--client={name}",
                            f"--url={url}",
                            f"--n={args.n}",
                            f"--warmup={warmup}",
                            f"--concurrency={conc}",
                            f"--pool={args.pool}",
                        ],
                    )
                    if "skipped" in res:
                        skipped[name] = res["skipped"]
                        print(f"  {name}: skipped ({res['skipped']})", file=sys.stderr)
                        continue
                    server_cpu1 = common.process_cpu_seconds(server.pid)
                    if server_cpu0 is not None and server_cpu1 is not None:
                        # Includes the warm-up calls; the server answers nothing else meanwhile.
                        res["server_cpu_us_per_request"] = (
                            (server_cpu1 - server_cpu0) / (args.n + warmup) * 1e6
                        )
                    results[conc][name].append(res)
                    print(
                        f"  round {rnd + 1}/{args.rounds} c={conc:<4} {name:<15}"
                        f" {res['cpu_us_per_call']:8.1f} us/call {res['calls_per_s']:9.0f} calls/s"
                        f" peak {res['peak_rss_bytes'] / common.MIB:6.1f} MiB",
                        file=sys.stderr,
                    )
    return {
        "concurrencies": concurrencies,
        "clients": clients,
        "results": results,
        "skipped": skipped,
    }


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Per (concurrency, client): Stat of each figure and median per-round ratio to aiohttp."""
    summary: dict[str, Any] = {}
    for conc in data["concurrencies"]:
        base = data["results"][conc][BASELINE]
        rows: dict[str, Any] = {}
        for name in data["clients"]:
            runs = data["results"][conc][name]
            if not runs:
                rows[name] = {"skipped": data["skipped"].get(name, "no result")}
                continue
            row: dict[str, Any] = {}
            for key in ("cpu_us_per_call", "calls_per_s", "peak_rss_bytes"):
                values = [r[key] for r in runs]
                row[key] = common.stat(values)
                row[key + "_ratio"] = common.median_ratio(values, [b[key] for b in base])
            rows[name] = row
        summary[str(conc)] = rows
    return summary


def render(data: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> str:
    out = [
        "## Client cost per call",
        "",
        f"{args.n:,} calls per client after a warm-up, {args.rounds} interleaved round(s), "
        f"median (min–max); ratios are medians of per-round ratios to raw aiohttp. "
        f"Pool: {args.pool or 'library defaults'} connections.",
        "",
        common.machine_info_markdown(),
    ]
    headers = [
        "client",
        "CPU µs/call",
        "× aiohttp",
        "calls/s",
        "× aiohttp",
        "peak RSS MiB",
        "× aiohttp",
    ]
    for conc in data["concurrencies"]:
        rows = []
        for name, row in summary[str(conc)].items():
            if "skipped" in row:
                rows.append([name, "skipped (see note)", "—", "—", "—", "—", "—"])
                continue
            rss = row["peak_rss_bytes"]
            rows.append(
                [
                    name,
                    row["cpu_us_per_call"].fmt(",.1f"),
                    common.fmt_ratio(row["cpu_us_per_call_ratio"]),
                    row["calls_per_s"].fmt(",.0f"),
                    common.fmt_ratio(row["calls_per_s_ratio"]),
                    common.stat([v / common.MIB for v in rss.values]).fmt(",.1f"),
                    common.fmt_ratio(row["peak_rss_bytes_ratio"]),
                ]
            )
        out += ["", f"### Concurrency {conc}", "", common.markdown_table(headers, rows)]
    server = [
        r["server_cpu_us_per_request"]
        for by_client in data["results"].values()
        for runs in by_client.values()
        for r in runs
        if "server_cpu_us_per_request" in r
    ]
    out.append("")
    if server:
        out.append(
            f"- Canned server: {common.stat(server).fmt(',.1f')} µs CPU per request "
            "(its own core; a small fraction of any client's cost)."
        )
    noisy = [
        f"c={conc} {name} round {i + 1} ({r['involuntary_switches']:,})"
        for conc, by_client in data["results"].items()
        for name, runs in by_client.items()
        for i, r in enumerate(runs)
        if r.get("involuntary_switches", 0) > NOISY_SWITCHES
    ]
    if noisy:
        out.append(
            f"- Runs preempted more than {NOISY_SWITCHES:,} times (involuntary context "
            "switches: other load on the client's core): " + "; ".join(noisy)
        )
    sdk_versions = sorted(
        {
            r["samsar_async"]
            for by_client in data["results"].values()
            for r in by_client.get("samsar_async", [])
        }
    )
    if len(sdk_versions) > 1:
        out.append("- **Warning**: samsar_async changed during the run: " + "; ".join(sdk_versions))
    if data["skipped"]:
        out += [f"- Skipped `{name}`: {why}" for name, why in data["skipped"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description="Client CPU cost per completion call.")
    parser.add_argument("--quick", action="store_true", help="300 calls, 1 round (for CI)")
    parser.add_argument("--n", type=int, default=None, help="measured calls (default 20000)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="warm-up calls (default 2000; quick: 2 x concurrency)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--concurrency", default="64,256", help="comma-separated list")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated list")
    parser.add_argument("--pool", type=int, default=SDK_DEFAULT_POOL, help="0: library defaults")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 300 if args.quick else 20_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.warmup is None and not args.quick:
        args.warmup = 2_000
    data = run(args)
    summary = summarize(data)
    sys.stdout.write(render(data, summary, args))
    if args.json:
        common.write_json(
            args.json,
            {
                "benchmark": "client_cost",
                "machine": common.machine_info(),
                "params": vars(args),
                "summary": {
                    conc: {
                        name: {
                            k: (v.as_dict() if isinstance(v, common.Stat) else v)
                            for k, v in row.items()
                        }
                        for name, row in rows.items()
                    }
                    for conc, rows in summary.items()
                },
                "runs": {str(c): r for c, r in data["results"].items()},
            },
        )


if __name__ == "__main__":
    main()
