"""A batch through a server outage and through a 429 storm, next to hand-written loops.

Every run gets a fresh :class:`~samsar_async.testing.MockSamsarServer` in its
own process (pinned to the server core; it takes the outage itself, after a
number of charges, and reports its ledger and request log when asked) and a
fresh event loop in this process (pinned to the client core). The client's
loop counts every TCP connect to the server's port (``sock_connect``, which
aiohttp uses for each new connection), so "connection attempts per second
during the outage" counts the same thing for every contestant: new
connections tried against the dead port, probes included.

Scenarios:

- ``outage 0.5 s`` / ``outage 5 s``: ``--n`` (1,000) requests at concurrency 64,
  one session each, 10 ms of server latency. After 300 charges the server goes
  down (``go_down(charge_in_flight=True)``: the requests in flight are charged
  and their answers lost; new connections are refused) and comes back on the
  same port after 0.5 s or 5 s.
- ``429``: ``--n429`` (2,000) requests at concurrency 256 against an account
  limit of 32 calls at once (``set_concurrency_limit(32, retry_after=0.1)``:
  the excess is answered at once with 429 and ``retry-after-ms: 100``), 100 ms
  of server latency. "429 share after 1 s" is the share of the requests the
  server received after the first second that it answered 429.

Contestants:

- ``samsar complete_many``: ``client.assistant.complete_many(requests,
  concurrency=C)`` with the client's defaults (3 attempts, back-off from
  0.5 s, retry budget, outage back-off on); for the 429 scenario with
  ``adaptive_concurrency=True``.
- ``samsar, outage_backoff=False`` / ``samsar, adaptive off``: the same
  without the new flow control (the SDK as it was; ``adaptive off`` passes
  ``complete_many(..., adaptive=False)``, since the limiter is on by default).
- ``aiohttp gather+Semaphore``: ``asyncio.gather`` over every request, an
  ``asyncio.Semaphore(C)`` around each raw aiohttp POST; no retries.
- ``aiohttp gather+Semaphore, 3 retries``: the same, retrying connection
  errors, 409/429/5xx up to 3 times with full-jitter back-off (``uniform(0,
  0.1 * 2**n)`` s) or the server's ``retry-after-ms``, and an
  ``Idempotency-Key`` per request (so retries never charge twice).
- ``aiohttp loop holding exactly 32`` (429 only): ``Semaphore(32)``, no 429
  ever: the throughput to reach.

Every contestant uses a 100-connection pool (the SDK's and aiohttp's
default), so in the 429 scenario at most 100 of the 256 are on the wire at once.

Columns: successes; double charges (keys charged more than once);
"charged, said not sent" (calls the server charged whose final error said
nothing was sent: ``may_have_been_charged`` false for the SDK, a connect
error for raw aiohttp); failures by kind; connection attempts per second
while the server was down; probes (SDK); wall time.

Run from the repo root: ``python -m benchmarks.outage [--quick] [--json PATH]``.
``--quick`` (CI) runs 200 requests, outages of 0.2 s and 1 s, and 400 requests
against a limit of 8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp

from benchmarks import _common as common
from samsar_async import AsyncSamsar, CompletionRequest, SamsarError
from samsar_async.testing import MockSamsarServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

OUTAGE_CONCURRENCY = 64
OUTAGE_LATENCY = 0.01
CHARGES_BEFORE_OUTAGE = 300
LIMIT_CONCURRENCY = 256
ACCOUNT_LIMIT = 32
LIMIT_LATENCY = 0.1
LIMIT_RETRY_AFTER = 0.1
RAW_RETRIES = 3
SDK_DEFAULT_POOL = 100


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that records the time of every ``sock_connect`` (new TCP connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.connects: list[tuple[float, int]] = []

    async def sock_connect(self, sock: Any, address: Any) -> None:
        port = address[1] if isinstance(address, tuple) and len(address) >= 2 else -1
        self.connects.append((time.monotonic(), int(port)))
        await super().sock_connect(sock, address)


# --------------------------------------------------------------------------- the server


async def serve(config: dict[str, Any]) -> None:
    """The server process: serve, take the outage if asked, report on ``report`` (stdin)."""
    common.pin_to_cpu(common.SERVER_CPU)
    async with MockSamsarServer(credits="1000000000") as server:
        server.latency = config["latency"]
        if config.get("limit"):
            server.set_concurrency_limit(config["limit"], retry_after=config["retry_after"])
        sessions = [server.create_session() for _ in range(config["sessions"])]
        hello = {"url": server.url, "port": server.port, "key": server.api_key}
        print(json.dumps({**hello, "sessions": sessions}), flush=True)

        async def take_outage() -> None:
            after, down_for = config["outage_after"], config["outage_for"]
            await server.wait_until(lambda s: len(s.ledger) >= after, timeout=None)
            await server.outage(down_for, charge_in_flight=True)

        task = asyncio.ensure_future(take_outage()) if config.get("outage_for") else None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "report"
        if task is not None:
            await task
        report = {
            "ledger_keys": [c.idempotency_key for c in server.ledger],
            "requests": [[r.received, bool(r.throttled)] for r in server.requests],
            "outages": [[o.started, o.ended, o.dropped] for o in server.outages],
        }
        print(json.dumps(report), flush=True)


class Server:
    """A handle on the server process: its address, sessions, and final report."""

    def __init__(self, config: dict[str, Any]) -> None:
        cmd = [sys.executable, "-m", "benchmarks.outage", "--serve", json.dumps(config)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(common.REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=common.REPO_ROOT, env=env
        )
        assert self.proc.stdout is not None
        hello = json.loads(self.proc.stdout.readline())
        self.url: str = hello["url"]
        self.port: int = hello["port"]
        self.api_key: str = hello["key"]
        self.sessions: list[str] = hello["sessions"]

    def report(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"report\n")
        self.proc.stdin.flush()
        report: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=60)
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- contestants


class Outcome:
    """What one contestant's run produced, in the same terms for everyone."""

    def __init__(self) -> None:
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.said_not_sent: set[str] = set()
        """Idempotency keys whose call ended saying nothing was sent."""
        self.probes: int | None = None
        self.limit: int | None = None
        self.started = 0.0
        self.ended = 0.0


async def run_sdk(
    server: Server, concurrency: int, *, client_options: dict[str, Any], adaptive: bool = True
) -> Outcome:
    out = Outcome()
    requests = [
        CompletionRequest(session_id=s, input=f"request {i}") for i, s in enumerate(server.sessions)
    ]
    client = AsyncSamsar(server.api_key, base_url=server.url, **client_options)
    out.started = time.monotonic()
    batch = client.assistant.complete_many(requests, concurrency=concurrency, adaptive=adaptive)
    async with client, batch as results:
        async for result in results:
            if result.error is None:
                out.ok += 1
                continue
            err = result.error
            out.failures[type(err).__name__] += 1
            key = getattr(err, "idempotency_key", None)
            if isinstance(err, SamsarError) and not err.may_have_been_charged and key:
                out.said_not_sent.add(key)
        out.ended = time.monotonic()
        gate = client.outage_gate
        out.probes = None if gate is None else gate.probes
        if adaptive or client.adaptive_concurrency:
            out.limit = client.concurrency_limit
    return out


async def run_raw(server: Server, concurrency: int, *, retries: int, pool: int) -> Outcome:
    out = Outcome()
    url = f"{server.url}/assistant/completion"
    auth = f"Bearer {server.api_key}"
    semaphore = asyncio.Semaphore(concurrency)
    rng = random.Random(1)

    async def one(i: int, session_id: str) -> None:
        body = json.dumps({"session_id": session_id, "input": f"request {i}"}).encode()
        key = str(uuid.uuid4())
        # The key lets retries replay instead of charging twice (and lets us match charges).
        headers = {
            "Authorization": auth,
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }
        async with semaphore:
            for attempt in range(retries + 1):
                last = attempt == retries
                try:
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                        wait_ms = resp.headers.get("retry-after-ms")
                except aiohttp.ClientError as exc:
                    if not last:
                        await asyncio.sleep(rng.uniform(0, 0.1 * 2**attempt))
                        continue
                    out.failures[type(exc).__name__] += 1
                    if isinstance(exc, aiohttp.ClientConnectorError):
                        out.said_not_sent.add(key)
                    return
                if status == 200:
                    out.ok += 1
                    return
                if (status in (409, 429) or status >= 500) and not last:
                    wait = int(wait_ms) / 1000 if wait_ms else rng.uniform(0, 0.1 * 2**attempt)
                    await asyncio.sleep(wait)
                    continue
                out.failures[f"HTTP {status}"] += 1
                return

    connector = aiohttp.TCPConnector(limit=pool)
    async with aiohttp.ClientSession(connector=connector) as http:
        out.started = time.monotonic()
        await asyncio.gather(*(one(i, s) for i, s in enumerate(server.sessions)))
        out.ended = time.monotonic()
    return out


# --------------------------------------------------------------------------- scenarios


def _measure(
    config: dict[str, Any], contestant: Callable[[Server], Awaitable[Outcome]]
) -> tuple[Outcome, Server, dict[str, Any], CountingLoop]:
    server = Server(config)
    loop = CountingLoop()
    try:
        out = loop.run_until_complete(contestant(server))
        loop.run_until_complete(loop.shutdown_asyncgens())
        report = server.report()
    finally:
        loop.close()
        server.kill()
    return out, server, report, loop


def _double_charges(report: dict[str, Any]) -> int:
    charges = Counter(key for key in report["ledger_keys"] if key)
    return sum(1 for count in charges.values() if count > 1)


def _charged_said_not_sent(report: dict[str, Any], out: Outcome) -> int:
    return len(out.said_not_sent & set(report["ledger_keys"]))


def outage_scenario(n: int, down_for: float, charges_before: int) -> list[dict[str, Any]]:
    config = {
        "sessions": n,
        "latency": OUTAGE_LATENCY,
        "outage_after": charges_before,
        "outage_for": down_for,
    }
    contestants: dict[str, Callable[[Server], Awaitable[Outcome]]] = {
        "samsar complete_many": lambda s: run_sdk(s, OUTAGE_CONCURRENCY, client_options={}),
        "samsar, outage_backoff=False": lambda s: run_sdk(
            s, OUTAGE_CONCURRENCY, client_options={"outage_backoff": False}
        ),
        "aiohttp gather+Semaphore": lambda s: run_raw(
            s, OUTAGE_CONCURRENCY, retries=0, pool=SDK_DEFAULT_POOL
        ),
        "aiohttp gather+Semaphore, 3 retries": lambda s: run_raw(
            s, OUTAGE_CONCURRENCY, retries=RAW_RETRIES, pool=SDK_DEFAULT_POOL
        ),
    }
    rows = []
    for label, contestant in contestants.items():
        out, server, report, loop = _measure(config, contestant)
        [(started, ended, dropped)] = report["outages"]
        window = ended - started
        dead = [t for t, port in loop.connects if port == server.port and started <= t <= ended]
        rows.append(
            {
                "contestant": label,
                "n": n,
                "ok": out.ok,
                "double_charges": _double_charges(report),
                "charged_said_not_sent": _charged_said_not_sent(report, out),
                "failures": dict(out.failures),
                "connects_per_s_down": len(dead) / window if window > 0 else 0.0,
                "down_for": window,
                "dropped": dropped,
                "probes": out.probes,
                "wall": out.ended - out.started,
            }
        )
        print(f"# outage {down_for}s {label}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def limit_scenario(
    n: int, concurrency: int, account_limit: int, rounds: int
) -> list[dict[str, Any]]:
    config = {
        "sessions": n,
        "latency": LIMIT_LATENCY,
        "limit": account_limit,
        "retry_after": LIMIT_RETRY_AFTER,
    }
    pool = SDK_DEFAULT_POOL  # the SDK's and aiohttp's default pool, for everyone
    contestants: dict[str, Callable[[Server], Awaitable[Outcome]]] = {
        "samsar complete_many, adaptive": lambda s: run_sdk(
            s, concurrency, client_options={"adaptive_concurrency": True}
        ),
        "samsar complete_many, adaptive off": lambda s: run_sdk(
            s, concurrency, client_options={}, adaptive=False
        ),
        "aiohttp gather+Semaphore, 3 retries": lambda s: run_raw(
            s, concurrency, retries=RAW_RETRIES, pool=pool
        ),
        f"aiohttp loop holding exactly {account_limit}": lambda s: run_raw(
            s, account_limit, retries=0, pool=pool
        ),
    }
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in contestants}
    for round_no in range(rounds):  # interleaved, so that load changes hit every row alike
        this_round = []
        for label, contestant in contestants.items():
            out, _server, report, _loop = _measure(config, contestant)
            requests = report["requests"]
            later = [flag for received, flag in requests if received >= out.started + 1.0]
            wall = out.ended - out.started
            run = {
                "ok": out.ok,
                "throttled": sum(1 for _, flag in requests if flag),
                "share_429_after_1s": sum(later) / len(later) if later else 0.0,
                "calls_per_s": out.ok / wall if wall > 0 else 0.0,
                "failures": dict(out.failures),
                "double_charges": _double_charges(report),
                "final_limit": out.limit,
                "wall": wall,
            }
            runs[label].append(run)
            this_round.append(run)
            print(f"# 429 round {round_no + 1} {label}: {run}", file=sys.stderr, flush=True)
        reference = this_round[-1]["calls_per_s"]
        for run in this_round:
            run["vs_exact_loop"] = run["calls_per_s"] / reference if reference else 0.0
    rows = []
    reference_label = list(contestants)[-1]
    for label, label_runs in runs.items():
        key = "calls_per_s" if label == reference_label else "vs_exact_loop"
        middle = sorted(label_runs, key=lambda r: r[key])[len(label_runs) // 2]
        rows.append(
            {
                "contestant": label,
                "n": n,
                "rounds": label_runs,
                "median": middle,
                "ok_min": min(r["ok"] for r in label_runs),
                "vs_exact_min": min(r["vs_exact_loop"] for r in label_runs),
                "vs_exact_max": max(r["vs_exact_loop"] for r in label_runs),
                "share_max": max(r["share_429_after_1s"] for r in label_runs),
                "double_charges": sum(r["double_charges"] for r in label_runs),
            }
        )
    return rows


# --------------------------------------------------------------------------- report


def _failures(failures: dict[str, int]) -> str:
    if not failures:
        return "-"
    return ", ".join(f"{count} {name}" for name, count in sorted(failures.items()))


def render(data: dict[str, Any]) -> str:
    out = [f"## Outages and 429s ({'quick' if data['quick'] else 'full'} run)", ""]
    for scenario in data["outage"]:
        out.append(
            f"### {scenario['n']} requests, concurrency {OUTAGE_CONCURRENCY}, "
            f"server down {scenario['down_for']:g} s after {scenario['charges_before']} charges"
        )
        out.append("")
        headers = [
            "contestant",
            "ok",
            "double charges",
            "charged, said not sent",
            "failures",
            "connects/s while down",
            "probes",
            "wall s",
        ]
        rows = [
            [
                r["contestant"],
                f"{r['ok']}/{r['n']}",
                r["double_charges"],
                r["charged_said_not_sent"],
                _failures(r["failures"]),
                f"{r['connects_per_s_down']:.1f}",
                "-" if r["probes"] is None else r["probes"],
                f"{r['wall']:.2f}",
            ]
            for r in scenario["rows"]
        ]
        out += [common.markdown_table(headers, rows), ""]
    limit = data["limit"]
    if limit["rows"]:
        out.append(
            f"### {limit['n']} requests, concurrency {limit['concurrency']}, account limit "
            f"{limit['account_limit']} (429 + retry-after-ms {LIMIT_RETRY_AFTER * 1000:.0f}), "
            f"latency {LIMIT_LATENCY * 1000:.0f} ms"
        )
        out.append("")
        out.append(
            f"{limit['rounds']} interleaved round(s); each row shows its round with the median "
            "ratio to that round's exact loop (the exact loop: its median round), and the "
            "range of the ratio over the rounds."
        )
        out.append("")
        headers = [
            "contestant",
            "ok (worst round)",
            "429s",
            "429 share after 1 s (worst)",
            "ok calls/s",
            "vs exact loop (range)",
            "failures",
            "final limit",
        ]
        rows = []
        for r in limit["rows"]:
            m = r["median"]
            rows.append(
                [
                    r["contestant"],
                    f"{r['ok_min']}/{r['n']}",
                    m["throttled"],
                    f"{m['share_429_after_1s'] * 100:.1f}% ({r['share_max'] * 100:.1f}%)",
                    f"{m['calls_per_s']:.0f}",
                    f"{m['vs_exact_loop'] * 100:.0f}% "
                    f"({r['vs_exact_min'] * 100:.0f}-{r['vs_exact_max'] * 100:.0f}%)",
                    _failures(m["failures"]),
                    "-" if m["final_limit"] is None else m["final_limit"],
                ]
            )
        out += [common.markdown_table(headers, rows), ""]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    out.append(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A batch through an outage and a 429 storm.")
    parser.add_argument("--quick", action="store_true", help="small counts (for CI)")
    parser.add_argument("--n", type=int, default=1000, help="requests per outage run")
    parser.add_argument("--n429", type=int, default=2000, help="requests in the 429 run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the 429 run")
    parser.add_argument("--only", choices=("outage", "429"), help="run one scenario")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(json.loads(args.serve)))
        return
    common.pin_client()
    if args.quick:
        n, outages, charges, n429, concurrency, account_limit = 200, (0.2, 1.0), 60, 400, 64, 8
    else:
        n, outages, charges = args.n, (0.5, 5.0), CHARGES_BEFORE_OUTAGE
        n429, concurrency, account_limit = args.n429, LIMIT_CONCURRENCY, ACCOUNT_LIMIT
    rounds = 1 if args.quick else args.rounds
    data: dict[str, Any] = {"quick": args.quick, "outage": [], "limit": None}
    if args.only in (None, "outage"):
        for down_for in outages:
            data["outage"].append(
                {
                    "n": n,
                    "down_for": down_for,
                    "charges_before": charges,
                    "rows": outage_scenario(n, down_for, charges),
                }
            )
    if args.only in (None, "429"):
        data["limit"] = {
            "n": n429,
            "concurrency": concurrency,
            "account_limit": account_limit,
            "rounds": rounds,
            "rows": limit_scenario(n429, concurrency, account_limit, rounds),
        }
    if data["limit"] is None:
        data["limit"] = {"n": 0, "concurrency": 0, "account_limit": 0, "rounds": 0, "rows": []}
    print(render(data))
    if args.json:
        common.write_json(args.json, data)


if __name__ == "__main__":
    main()
