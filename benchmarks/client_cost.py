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

- ``aiohttp-orjson``: the floor (the baseline of every ratio). One
  ``ClientSession``; ``session.post(url, data=<prebuilt JSON bytes>,
  headers=...)``, ``await resp.read()``, ``orjson.loads``, read ``output_text``.
- ``aiohttp``: the same with the standard library's ``json.loads``.
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
per-round ratios to raw aiohttp+orjson.

Event loops: ``--loop asyncio,uvloop`` (default: both when uvloop is
installed) runs every client on each loop; ratios compare clients on the same loop.

Instruction counts (``--instructions``, on by default when valgrind is
installed): the same worker runs once more under ``valgrind --tool=callgrind
--collect-atstart=no --toggle-collect=closure_fcn`` for the clients of
``--instr-clients`` at ``--instr-concurrency``; the measured phase runs inside a
ctypes callback (:func:`benchmarks._common.run_measured`), so callgrind counts
the measured calls only: not the imports, the set-up, the warm-up or the
teardown. Instructions per call = the count / N. On a shared machine this is
the figure that does not move from run to run (repeat runs agree within about
0.1%); it counts user-space instructions only (no kernel time, no cache misses).

Run from the repo root: ``python -m benchmarks.client_cost [--quick] [--json PATH]``.
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

CLIENTS = ("aiohttp-orjson", "aiohttp", "samsar_async", "httpx", "openai-httpx", "openai-aiohttp")
BASELINE = "aiohttp-orjson"
INSTR_CLIENTS = ("aiohttp-orjson", "aiohttp", "samsar_async")
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
    if name in ("aiohttp", "aiohttp-orjson"):
        import aiohttp

        if name == "aiohttp-orjson":
            try:
                import orjson
            except ImportError as exc:
                raise Skip("orjson is not installed") from exc
            loads: Callable[[bytes], Any] = orjson.loads
        else:
            loads = json.loads
        connector = aiohttp.TCPConnector(limit=pool) if pool else aiohttp.TCPConnector()
        session = aiohttp.ClientSession(connector=connector)
        endpoint = url + "/assistant/completion"

        async def call_aiohttp(k: int) -> str:
            async with session.post(endpoint, data=BODY_BYTES[k], headers=HEADERS) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                data = await resp.read()
            text: str = loads(data)["output_text"]
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


def _worker_main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "client": args.client,
        "concurrency": args.concurrency,
        "loop": args.loop,
    }
    loop = common.new_event_loop(args.loop)
    try:
        try:
            call, closable = loop.run_until_complete(make_client(args.client, args.url, args.pool))
        except Skip as exc:
            return result | {"skipped": str(exc)}
        try:
            loop.run_until_complete(drive(call, args.warmup, args.concurrency))
            rss_before = common.current_rss_bytes()
            switches0 = common.involuntary_switches()
            cpu0 = common.cpu_seconds()
            t0 = time.perf_counter()
            # Under callgrind only what runs inside run_measured is counted.
            common.run_measured(
                lambda: loop.run_until_complete(drive(call, args.n, args.concurrency))
            )
            wall = time.perf_counter() - t0
            cpu = common.cpu_seconds() - cpu0
            switches = common.involuntary_switches() - switches0
        finally:
            loop.run_until_complete(_aclose(closable))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
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
    parser.add_argument("--loop", default="asyncio", choices=common.LOOPS)
    args = parser.parse_args(argv)
    common.pin_client()
    result = _worker_main(args)
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------- orchestration


def _worker_args(
    name: str, url: str, n: int, warmup: int, conc: int, pool: int, loop: str
) -> list[str]:
    return [
        f"--client={name}",
        f"--url={url}",
        f"--n={n}",
        f"--warmup={warmup}",
        f"--concurrency={conc}",
        f"--pool={pool}",
        f"--loop={loop}",
    ]


def _warmup(args: argparse.Namespace, conc: int) -> int:
    return int(args.warmup) if args.warmup is not None else 2 * conc


def run(args: argparse.Namespace) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    loops = [x.strip() for x in args.loop.split(",")]
    if BASELINE not in clients:
        clients.insert(0, BASELINE)
    instr_clients = [c.strip() for c in args.instr_clients.split(",") if c.strip()]
    if instr_clients and BASELINE not in instr_clients and not args.quick:
        instr_clients.insert(0, BASELINE)
    instr_concurrencies = [int(c) for c in args.instr_concurrency.split(",") if c.strip()]
    # results[loop][conc][client] -> list of per-round dicts (round order preserved).
    results: dict[str, dict[int, dict[str, list[dict[str, Any]]]]] = {
        lp: {c: {name: [] for name in clients} for c in concurrencies} for lp in loops
    }
    instructions: dict[str, dict[int, dict[str, list[dict[str, Any]]]]] = {
        lp: {c: {name: [] for name in instr_clients} for c in instr_concurrencies} for lp in loops
    }
    skipped: dict[str, str] = {}
    instr_note = None
    if args.instructions and instr_clients:
        instr_note = common.callgrind_unavailable()
    with common.start_server() as (server, url):
        for rnd in range(args.rounds):
            for lp in loops:
                for conc in concurrencies:
                    active = [c for c in clients if c not in skipped]
                    shift = rnd % len(active)
                    for name in active[shift:] + active[:shift]:
                        warmup = _warmup(args, conc)
                        server_cpu0 = common.process_cpu_seconds(server.pid)
                        res = common.run_worker(
                            "benchmarks.client_cost",
                            _worker_args(name, url, args.n, warmup, conc, args.pool, lp),
                        )
                        if "skipped" in res:
                            skipped[name] = res["skipped"]
                            print(f"  {name}: skipped ({res['skipped']})", file=sys.stderr)
                            continue
                        server_cpu1 = common.process_cpu_seconds(server.pid)
                        if server_cpu0 is not None and server_cpu1 is not None:
                            # Includes the warm-up calls; the server answers nothing else.
                            res["server_cpu_us_per_request"] = (
                                (server_cpu1 - server_cpu0) / (args.n + warmup) * 1e6
                            )
                        results[lp][conc][name].append(res)
                        print(
                            f"  round {rnd + 1}/{args.rounds} {lp:<7} c={conc:<4} {name:<15}"
                            f" {res['cpu_us_per_call']:8.1f} us/call"
                            f" {res['calls_per_s']:9.0f} calls/s"
                            f" peak {res['peak_rss_bytes'] / common.MIB:6.1f} MiB",
                            file=sys.stderr,
                        )
        if args.instructions and instr_clients and instr_note is None:
            instr_loops = loops[:1] if args.quick else loops
            _count_instructions(args, url, instr_loops, instr_clients, skipped, instructions)
    return {
        "concurrencies": concurrencies,
        "clients": clients,
        "loops": loops,
        "results": results,
        "instructions": instructions,
        "instr_concurrencies": instr_concurrencies if args.instructions else [],
        "instr_note": instr_note,
        "skipped": skipped,
    }


def _count_instructions(
    args: argparse.Namespace,
    url: str,
    loops: list[str],
    clients: list[str],
    skipped: dict[str, str],
    out: dict[str, dict[int, dict[str, list[dict[str, Any]]]]],
) -> None:
    """Run each (loop, concurrency, client) under callgrind; instructions per measured call."""
    with tempfile.TemporaryDirectory(prefix="samsar-bench-cg-") as tmp:
        for rnd in range(args.instr_rounds):
            for lp in loops:
                for conc in out[lp]:
                    for name in clients:
                        if name in skipped:
                            continue
                        cg_file = os.path.join(tmp, f"{name}-{lp}-{conc}-{rnd}.out")
                        started = time.perf_counter()
                        # Quick mode: a shorter warm-up (everything runs ~50x slower here).
                        warmup = conc if args.quick else _warmup(args, conc)
                        res = common.run_worker(
                            "benchmarks.client_cost",
                            _worker_args(name, url, args.instr_n, warmup, conc, args.pool, lp),
                            prefix=common.callgrind_prefix(cg_file),
                        )
                        if "skipped" in res:
                            skipped[name] = res["skipped"]
                            continue
                        total = common.callgrind_instructions(cg_file)
                        res["instructions"] = total
                        res["instructions_per_call"] = total / args.instr_n
                        out[lp][conc][name].append(res)
                        print(
                            f"  callgrind {rnd + 1}/{args.instr_rounds} {lp:<7} c={conc:<4}"
                            f" {name:<15} {res['instructions_per_call']:12,.0f} instructions/call"
                            f" ({time.perf_counter() - started:.0f} s)",
                            file=sys.stderr,
                        )


_FIGURES = ("cpu_us_per_call", "calls_per_s", "peak_rss_bytes")


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Per (loop, concurrency, client): Stat of each figure and median per-round ratio."""
    summary: dict[str, Any] = {}
    for lp in data["loops"]:
        summary[lp] = {}
        for conc in data["concurrencies"]:
            base = data["results"][lp][conc][BASELINE]
            rows: dict[str, Any] = {}
            for name in data["clients"]:
                runs = data["results"][lp][conc][name]
                if not runs:
                    rows[name] = {"skipped": data["skipped"].get(name, "no result")}
                    continue
                row: dict[str, Any] = {}
                for key in _FIGURES:
                    values = [r[key] for r in runs]
                    row[key] = common.stat(values)
                    row[key + "_ratio"] = common.median_ratio(values, [b[key] for b in base])
                rows[name] = row
            summary[lp][str(conc)] = rows
        for conc, by_client in data["instructions"][lp].items():
            base = by_client.get(BASELINE, [])
            rows = summary[lp].setdefault(str(conc), {})
            for name, runs in by_client.items():
                if not runs:
                    continue
                values = [r["instructions_per_call"] for r in runs]
                row = rows.setdefault(name, {})
                row.pop("skipped", None)
                row["instructions_per_call"] = common.stat(values)
                row["instructions_per_call_ratio"] = common.median_ratio(
                    values, [b["instructions_per_call"] for b in base]
                )
    return summary


def _goal_table(data: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """samsar_async against the floor, CPU time and instructions side by side."""
    rows = []
    for conc in data["instr_concurrencies"] or data["concurrencies"][-1:]:
        for lp in data["loops"]:
            by_client = summary[lp].get(str(conc), {})
            base, sdk = by_client.get(BASELINE, {}), by_client.get("samsar_async", {})
            if "cpu_us_per_call" not in sdk or "cpu_us_per_call" not in base:
                continue
            cells = [
                f"{lp}, c={conc}",
                base["cpu_us_per_call"].fmt(",.1f", spread=False),
                sdk["cpu_us_per_call"].fmt(",.1f", spread=False),
                common.fmt_ratio(sdk["cpu_us_per_call_ratio"]),
            ]
            if "instructions_per_call" in sdk and "instructions_per_call" in base:
                b_ins = base["instructions_per_call"].median
                s_ins = sdk["instructions_per_call"].median
                cells += [
                    f"{b_ins:,.0f}",
                    f"{s_ins:,.0f}",
                    common.fmt_ratio(sdk["instructions_per_call_ratio"]),
                    f"{s_ins - b_ins:+,.0f}",
                ]
            else:
                cells += ["—"] * 4
            rows.append(cells)
    if not rows:
        return []
    headers = [
        "loop",
        "floor CPU µs/call",
        "samsar CPU µs/call",
        "× floor",
        "floor instr/call",
        "samsar instr/call",
        "× floor",
        "extra instr/call",
    ]
    return [
        "",
        "### samsar_async against the floor (raw aiohttp+orjson); goal ≤ 1.10×",
        "",
        common.markdown_table(headers, rows),
    ]


def render(data: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> str:
    out = [
        "## Client cost per call",
        "",
        f"{args.n:,} calls per client after a warm-up, {args.rounds} interleaved round(s), "
        f"median (min–max); ratios are medians of per-round ratios to raw aiohttp+orjson "
        f"on the same event loop. Pool: {args.pool or 'library defaults'} connections.",
    ]
    if data["instr_concurrencies"]:
        out.append(
            f"Instructions: callgrind over the {args.instr_n:,} measured calls only "
            f"({args.instr_rounds} run(s) each), divided by their number."
        )
    out += ["", common.machine_info_markdown()]
    out += _goal_table(data, summary)
    for conc in data["concurrencies"]:
        for lp in data["loops"]:
            rows_by_client = summary[lp].get(str(conc), {})
            with_instr = any("instructions_per_call" in r for r in rows_by_client.values())
            headers = ["client", "CPU µs/call", "× floor"]
            if with_instr:
                headers += ["instructions/call", "× floor"]
            headers += ["calls/s", "× floor", "peak RSS MiB", "× floor"]
            rows = []
            for name in data["clients"]:
                row = rows_by_client.get(name, {"skipped": "no result"})
                if "skipped" in row:
                    rows.append([name, "skipped (see note)", *["—"] * (len(headers) - 2)])
                    continue
                if "cpu_us_per_call" not in row:  # counted under callgrind only (--rounds 0)
                    cells = [name, "—", "—"]
                    if with_instr:
                        cells += [
                            row["instructions_per_call"].fmt(",.0f"),
                            common.fmt_ratio(row["instructions_per_call_ratio"]),
                        ]
                    rows.append(cells + ["—"] * (len(headers) - len(cells)))
                    continue
                cells = [
                    name,
                    row["cpu_us_per_call"].fmt(",.1f"),
                    common.fmt_ratio(row["cpu_us_per_call_ratio"]),
                ]
                if with_instr:
                    if "instructions_per_call" in row:
                        cells += [
                            row["instructions_per_call"].fmt(",.0f"),
                            common.fmt_ratio(row["instructions_per_call_ratio"]),
                        ]
                    else:
                        cells += ["—", "—"]
                rss = row["peak_rss_bytes"]
                cells += [
                    row["calls_per_s"].fmt(",.0f"),
                    common.fmt_ratio(row["calls_per_s_ratio"]),
                    common.stat([v / common.MIB for v in rss.values]).fmt(",.1f"),
                    common.fmt_ratio(row["peak_rss_bytes_ratio"]),
                ]
                rows.append(cells)
            out += [
                "",
                f"### Concurrency {conc}, {lp} event loop",
                "",
                common.markdown_table(headers, rows),
            ]
    all_runs = [
        r
        for by_conc in data["results"].values()
        for by_client in by_conc.values()
        for runs in by_client.values()
        for r in runs
    ]
    server = [r["server_cpu_us_per_request"] for r in all_runs if "server_cpu_us_per_request" in r]
    out.append("")
    if server:
        out.append(
            f"- Canned server: {common.stat(server).fmt(',.1f')} µs CPU per request "
            "(its own core; a small fraction of any client's cost)."
        )
    noisy = [
        f"{r['loop']} c={r['concurrency']} {r['client']} ({r['involuntary_switches']:,})"
        for r in all_runs
        if r.get("involuntary_switches", 0) > NOISY_SWITCHES
    ]
    if noisy:
        out.append(
            f"- Runs preempted more than {NOISY_SWITCHES:,} times (involuntary context "
            "switches: other load on the client's core): " + "; ".join(noisy)
        )
    sdk_versions = sorted({r["samsar_async"] for r in all_runs if "samsar_async" in r})
    if len(sdk_versions) > 1:
        out.append("- **Warning**: samsar_async changed during the run: " + "; ".join(sdk_versions))
    if data["instr_note"]:
        out.append(f"- Instruction counts skipped: {data['instr_note']}.")
    if data["skipped"]:
        out += [f"- Skipped `{name}`: {why}" for name, why in data["skipped"].items()]
    return "\n".join(out) + "\n"


def _as_json(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        lp: {
            conc: {
                name: {
                    k: (v.as_dict() if isinstance(v, common.Stat) else v) for k, v in row.items()
                }
                for name, row in rows.items()
            }
            for conc, rows in by_conc.items()
        }
        for lp, by_conc in summary.items()
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description="Client CPU cost per completion call.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for CI: 300 calls, 1 round, concurrency 256; callgrind: samsar_async only, "
        "100 calls, first loop only",
    )
    parser.add_argument("--n", type=int, default=None, help="measured calls (default 20000)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="warm-up calls (default 2000; quick: 2 x concurrency)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--concurrency", default=None, help="comma-separated list (default 64,256; quick: 256)"
    )
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated list")
    parser.add_argument("--pool", type=int, default=SDK_DEFAULT_POOL, help="0: library defaults")
    parser.add_argument(
        "--loop",
        default=",".join(common.available_loops()),
        help="comma-separated event loops: asyncio, uvloop (default: those installed)",
    )
    parser.add_argument(
        "--instructions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also count instructions per call under callgrind (skipped without valgrind)",
    )
    parser.add_argument(
        "--instr-clients",
        default=None,
        help=f"clients counted under callgrind (default {','.join(INSTR_CLIENTS)}; "
        "quick: samsar_async)",
    )
    parser.add_argument(
        "--instr-concurrency", default="256", help="concurrencies counted under callgrind"
    )
    parser.add_argument(
        "--instr-n", type=int, default=None, help="calls counted (default 4000; quick: 100)"
    )
    parser.add_argument(
        "--instr-rounds", type=int, default=1, help="callgrind runs per row (default 1)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 300 if args.quick else 20_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.warmup is None and not args.quick:
        args.warmup = 2_000
    if args.concurrency is None:
        args.concurrency = "256" if args.quick else "64,256"
    if args.instr_clients is None:
        args.instr_clients = "samsar_async" if args.quick else ",".join(INSTR_CLIENTS)
    if args.instr_n is None:
        args.instr_n = 100 if args.quick else 4_000  # (fewer: the GC phase moves it)
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
                "summary": _as_json(summary),
                "runs": {
                    lp: {str(c): r for c, r in by_conc.items()}
                    for lp, by_conc in data["results"].items()
                },
                "instruction_runs": {
                    lp: {str(c): r for c, r in by_conc.items()}
                    for lp, by_conc in data["instructions"].items()
                },
            },
        )


if __name__ == "__main__":
    main()
