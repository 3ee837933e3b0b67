"""Decoding and saving a large generated image: SDK vs the naive inline path.

The canned server answers an image request with the contract's image response
shape whose ``result`` is a base64 PNG of 8 or 32 MiB (decoded size; random,
incompressible pixels). The image size is chosen through the base URL:
``http://127.0.0.1:PORT/mib/<N>/v1``.

Paths (rows), each run in a fresh subprocess so that its peak RSS is its own:

- ``naive inline``: raw aiohttp ``await resp.read()``, then ``json.loads`` +
  ``base64.b64decode`` + ``open().write()`` right on the event loop.
- ``naive in a thread``: the same three steps in ``asyncio.to_thread`` (a
  reference for what non-blocking costs without any SDK).
- ``aiohttp+orjson inline``: the same with ``orjson.loads`` and
  ``pybase64.b64decode`` (the fastest whole-body path; skipped without them).
- ``samsar_async``: ``await client.assistant.complete(..., tools=[ImageGenerationTool()],
  tool_choice=ImageGenerationTool())`` then ``await save_image(resp.images[0], dir)``
  (``await resp.images[0].save(dir)`` in older versions)
  (skipped with a note while the SDK lacks it).
- ``samsar_async ×N`` and ``aiohttp+orjson inline ×N`` (``--concurrent N``, 50 by
  default, at ``--concurrent-mib``, 8 by default): N calls at once, each image
  saved to its own file when its answer is in (the SDK: ``complete()`` then
  ``save_image``; raw: ``orjson.loads`` + ``pybase64.b64decode`` + write
  inline). Their figures add the 99th percentile of the ticker's stalls over
  the whole path, and RSS growth is against the N images' total size.
- ``incremental → file`` and ``incremental → memory``: raw aiohttp feeding each
  chunk as it arrives (``resp.content.iter_any()``) to
  ``samsar_async._imagebody.ImageBodyReader`` on the event loop, which decodes
  the base64 into a temporary file (then renamed into place) or a
  ``bytearray`` (then written), and parsing the small remainder with orjson:
  the streaming path, before it is wired into the SDK.

Figures per path and size, median (min–max) over interleaved rounds:

- ``request → response``: naive: until the raw bytes are read; SDK: until
  ``complete()`` returns its parsed ``Response``.
- ``save``: naive: ``json.loads`` + ``b64decode`` + write; SDK: ``images[0].save(dir)``.
- ``request → on disk``: the whole call, comparable across paths.
- event-loop lag: a ticker task loops on ``asyncio.sleep(0.001)`` and records
  every wake-up; a stall is the span from when a tick was due to when it woke
  (the gap minus 1 ms). Reported: the worst stall within a window, clipped to
  it. Windows: ``request → response``, the save step, and the whole path
  (request sent → image on disk), which contains the "response bytes arrive →
  image on disk" span (the SDK does not expose the moment its bytes arrive;
  the naive rows' ``request → response`` column shows what the transfer alone
  costs, including aiohttp joining the body into one ``bytes``).
- peak RSS growth: ``ru_maxrss`` after the call minus before it (after imports,
  client set-up and a small warm-up call).
- CPU: user + system time of the process over the whole path (the server is
  another process).

Every saved file is checked (PNG signature, size) and its SHA-256 must be the
same for every path of one size.

Run from the repo root: ``python -m benchmarks.images [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as common

SESSION_ID = "67df0d8ebc4f9d0b7f4fd123"
PROMPT = "Create a clean launch-poster image for this session."
IMAGE_BODY = json.dumps(
    {
        "session_id": SESSION_ID,
        "input": PROMPT,
        "tools": [{"type": "image_generation"}],
        "tool_choice": {"type": "image_generation"},
    }
).encode()
TEXT_BODY = json.dumps({"session_id": SESSION_ID, "input": "warm-up"}).encode()
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TICK = 0.001

MODES = ("naive", "naive-thread", "orjson", "samsar", "stream-file", "stream-memory")
MANY_MODES = ("orjson-many", "samsar-many")
LABELS = {
    "naive": "naive inline",
    "naive-thread": "naive in a thread",
    "orjson": "aiohttp+orjson inline",
    "samsar": "samsar_async",
    "stream-file": "incremental → file",
    "stream-memory": "incremental → memory",
    "orjson-many": "aiohttp+orjson inline ×{n}",
    "samsar-many": "samsar_async ×{n}",
}


class Skip(Exception):
    """The SDK lacks what this row needs."""


class Ticker:
    """A task waking every 1 ms; remembers each (sleep start, wake-up) pair."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []
        self.cpu: list[float] = []
        """CPU time of the loop's thread between each tick's sleep and wake-up."""
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clock, cpu_clock = time.perf_counter, time.thread_time
        while True:
            start, cpu_start = clock(), cpu_clock()
            await asyncio.sleep(TICK)
            self.cpu.append(cpu_clock() - cpu_start)
            self.ticks.append((start, clock()))

    def cpu_lags(self, start: float, end: float) -> list[float]:
        """Per tick within the window: the loop thread's CPU time between the tick's
        sleep and its wake-up, less the 1 ms it was meant to wait. Unlike the wall
        clock, it does not grow when other processes take the core (an upper bound
        of the longest step: small steps within that 1 ms count too)."""
        return [
            max(0.0, cpu - TICK)
            for (slept, woke), cpu in zip(self.ticks, self.cpu, strict=True)
            if woke > start and slept + TICK < end
        ]

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await asyncio.sleep(5 * TICK)  # let the tick spanning the end of a window land
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def lags(self, start: float, end: float) -> list[float]:
        """Every tick's stall within ``[start, end)`` (clipped to it; 0 when on time)."""
        out = []
        for slept, woke in self.ticks:
            if woke <= start or slept + TICK >= end:
                continue
            out.append(max(0.0, min(woke, end) - max(slept + TICK, start)))
        return out

    def percentile_lag(self, start: float, end: float, q: float) -> float:
        """The ``q`` quantile (0..1) of the ticks' stalls within the window."""
        return _quantile(self.lags(start, end), q)

    def worst_lag(self, start: float, end: float) -> float:
        """Worst stall of the loop within ``[start, end)``, in seconds.

        A tick's lag is the span from when it was due (sleep start + 1 ms) to
        when it woke: the loop could not run it then. Each span is clipped to
        the window, so a stall that straddles two steps (say the end of the
        body read and the start of the decoding) counts in each for its own part.
        """
        worst = 0.0
        for slept, woke in self.ticks:
            stalled = min(woke, end) - max(slept + TICK, start)
            worst = max(worst, stalled)
        return worst


def _decode_and_write(data: bytes, path: Path) -> None:
    payload = json.loads(data)
    png = base64.b64decode(payload["output"][0]["result"])
    with open(path, "wb") as f:
        f.write(png)


def _orjson_decode_and_write(data: bytes, path: Path) -> None:
    import orjson
    import pybase64

    payload = orjson.loads(data)
    png = pybase64.b64decode(payload["output"][0]["result"], validate=True)
    with open(path, "wb") as f:
        f.write(png)


async def _stream(url: str, out_dir: Path, to_file: bool) -> dict[str, float]:
    import aiohttp

    try:
        from samsar_async._imagebody import ImageBodyReader, placeholder_index
    except ImportError as exc:
        raise Skip(f"samsar_async has no _imagebody yet ({exc})") from exc
    from samsar_async import _json

    session = aiohttp.ClientSession()
    endpoint = url + "/assistant/completion"
    async with session.post(endpoint, data=TEXT_BODY, headers=HEADERS) as resp:
        await resp.read()  # warm-up: open the connection

    clock, cpu_clock = time.perf_counter, time.thread_time
    feeds: list[float] = []
    feed_cpu: list[float] = []
    sizes: list[int] = []

    async def run() -> dict[str, float]:
        t_req = time.perf_counter()
        reader = ImageBodyReader(directory=str(out_dir) if to_file else None)
        async with session.post(endpoint, data=IMAGE_BODY, headers=HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            async for chunk in resp.content.iter_any():
                started, cpu_started = clock(), cpu_clock()
                reader.feed(chunk)
                feeds.append(clock() - started)
                feed_cpu.append(cpu_clock() - cpu_started)
                sizes.append(len(chunk))
        body = reader.finish()
        payload = body.loads(_json.loads)
        t_resp = time.perf_counter()
        index = placeholder_index(payload["output"][0]["result"])
        if index is None:
            raise RuntimeError("no image in the answer")
        image = body.images[index]
        path = out_dir / "image.png"
        if image.path is not None:
            os.replace(image.path, path)
        else:
            assert image.pieces is not None
            with open(path, "wb") as f:
                for piece in image.pieces:
                    f.write(piece)
        return {"t_req": t_req, "t_resp": t_resp, "t_saved": time.perf_counter()}

    figures = await _measured(run, session.close)
    return figures | {
        "max_feed_s": max(feeds),
        "max_feed_cpu_s": max(feed_cpu),
        "feeds": len(feeds),
        "max_chunk_bytes": max(sizes),
    }


async def _naive(url: str, out_dir: Path, threaded: bool, fast: bool = False) -> dict[str, float]:
    import aiohttp

    if fast:
        try:
            import orjson  # noqa: F401
            import pybase64  # noqa: F401
        except ImportError as exc:
            raise Skip(f"needs orjson and pybase64 ({exc})") from exc
    decode_and_write = _orjson_decode_and_write if fast else _decode_and_write

    session = aiohttp.ClientSession()
    endpoint = url + "/assistant/completion"
    async with session.post(endpoint, data=TEXT_BODY, headers=HEADERS) as resp:
        await resp.read()  # warm-up: open the connection

    async def run() -> dict[str, float]:
        t_req = time.perf_counter()
        async with session.post(endpoint, data=IMAGE_BODY, headers=HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            data = await resp.read()
        t_resp = time.perf_counter()
        path = out_dir / "image.png"
        if threaded:
            await asyncio.to_thread(decode_and_write, data, path)
        else:
            decode_and_write(data, path)
        return {"t_req": t_req, "t_resp": t_resp, "t_saved": time.perf_counter()}

    return await _measured(run, session.close)


def _preload_image_path() -> None:
    """Import what the SDK loads on its first image answer, as the warm-up call did for
    the rest: the workers run without bytecode caches (``PYTHONDONTWRITEBYTECODE`` may
    be set), and compiling ``_imagebody`` (~10 ms; its import from a cache takes 0.6 ms)
    would otherwise land in the first measured step. The warm-up call's ``output`` is
    read too, as a service that has served one answer has: that builds the SDK's
    converter, a one-time cost per process (about 12 ms; see the import figures in
    benchmarks/README.md) that ``resp.images`` would otherwise pay in the measured
    step."""
    for name in ("samsar_async._imagebody", "pybase64"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


async def _samsar(url: str, out_dir: Path) -> dict[str, float]:
    try:
        from samsar_async import AsyncSamsar, ImageGenerationTool  # type: ignore[attr-defined]
    except ImportError as exc:
        raise Skip(f"samsar_async lacks AsyncSamsar/ImageGenerationTool yet ({exc})") from exc
    client = AsyncSamsar(api_key="bench", base_url=url)
    try:
        assistant = client.assistant
        warm = await assistant.complete(SESSION_ID, "warm-up")
        warm.output  # noqa: B018 - see _preload_image_path
        _preload_image_path()
        # GeneratedImage.save(dir) (older layout) or images.save_image(image, dir).
        images_module = importlib.import_module("samsar_async.images")
        save_image = getattr(images_module, "save_image", None)
        image_cls = getattr(images_module, "GeneratedImage", None)
        if save_image is None and (image_cls is None or not hasattr(image_cls, "save")):
            raise Skip("samsar_async has neither images.save_image() nor GeneratedImage.save()")
    except BaseException:
        await client.close()
        raise

    async def run() -> dict[str, float]:
        tool = ImageGenerationTool()
        t_req = time.perf_counter()
        resp = await assistant.complete(SESSION_ID, PROMPT, tools=[tool], tool_choice=tool)
        t_resp = time.perf_counter()
        if not resp.images:
            raise RuntimeError("the response has no image")
        try:
            image = resp.images[0]
            saved = save_image(image, out_dir) if save_image else image.save(out_dir)
            if inspect.isawaitable(saved):
                await saved
        except NotImplementedError as exc:
            raise Skip("GeneratedImage.save() is not implemented yet") from exc
        return {"t_req": t_req, "t_resp": t_resp, "t_saved": time.perf_counter()}

    return await _measured(run, client.close)


async def _samsar_many(url: str, out_dir: Path, n: int) -> dict[str, float]:
    from samsar_async import AsyncSamsar, ImageGenerationTool
    from samsar_async.images import save_image

    client = AsyncSamsar(api_key="bench", base_url=url, max_connections=max(n, 1))
    assistant = client.assistant
    try:
        warm = await asyncio.gather(*(assistant.complete(SESSION_ID, "warm-up") for _ in range(n)))
        warm[0].output  # noqa: B018 - see _preload_image_path
        _preload_image_path()
    except BaseException:
        await client.close()
        raise
    tool = ImageGenerationTool()

    async def one(i: int) -> None:
        resp = await assistant.complete(SESSION_ID, PROMPT, tools=[tool], tool_choice=tool)
        await save_image(resp.images[0], out_dir / f"image-{i}.png")

    async def run() -> dict[str, float]:
        t_req = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        t_end = time.perf_counter()
        return {"t_req": t_req, "t_resp": t_end, "t_saved": t_end}

    return await _measured(run, client.close)


async def _orjson_many(url: str, out_dir: Path, n: int) -> dict[str, float]:
    import aiohttp

    try:
        import orjson  # noqa: F401
        import pybase64  # noqa: F401
    except ImportError as exc:
        raise Skip(f"needs orjson and pybase64 ({exc})") from exc
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(n, 1)))
    endpoint = url + "/assistant/completion"

    async def warm() -> None:
        async with session.post(endpoint, data=TEXT_BODY, headers=HEADERS) as resp:
            await resp.read()

    await asyncio.gather(*(warm() for _ in range(n)))

    async def one(i: int) -> None:
        async with session.post(endpoint, data=IMAGE_BODY, headers=HEADERS) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            data = await resp.read()
        _orjson_decode_and_write(data, out_dir / f"image-{i}.png")

    async def run() -> dict[str, float]:
        t_req = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        t_end = time.perf_counter()
        return {"t_req": t_req, "t_resp": t_end, "t_saved": t_end}

    return await _measured(run, session.close)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _measured(run: Any, close: Any) -> dict[str, float]:
    """Run ``run()`` (returning its timestamps) under the ticker; the figures of one call."""
    ticker = Ticker()
    try:
        gc.collect()
        peak_before = common.peak_rss_bytes()
        rss_before = common.current_rss_bytes()
        ticker.start()
        await asyncio.sleep(20 * TICK)  # a few idle ticks first
        cpu0 = common.cpu_seconds()
        switches0 = common.involuntary_switches()
        times = await run()
        cpu = common.cpu_seconds() - cpu0
        switches = common.involuntary_switches() - switches0
    finally:
        await ticker.stop()
        await close()
    peak_after = common.peak_rss_bytes()
    t_req, t_resp, t_saved = times["t_req"], times["t_resp"], times["t_saved"]
    return {
        "request_to_response_s": t_resp - t_req,
        "save_s": t_saved - t_resp,
        "request_to_disk_s": t_saved - t_req,
        "cpu_s": cpu,
        "involuntary_switches": switches,
        "lag_idle_s": ticker.worst_lag(t_req - 15 * TICK, t_req),
        "lag_request_to_response_s": ticker.worst_lag(t_req, t_resp),
        "lag_save_s": ticker.worst_lag(t_resp, t_saved),
        "lag_whole_path_s": ticker.worst_lag(t_req, t_saved),
        "lag_p99_whole_path_s": ticker.percentile_lag(t_req, t_saved, 0.99),
        "ticks_whole_path": len(ticker.lags(t_req, t_saved)),
        "cpu_lag_whole_path_s": max(ticker.cpu_lags(t_req, t_saved), default=0.0),
        "cpu_lag_p99_whole_path_s": _quantile(ticker.cpu_lags(t_req, t_saved), 0.99),
        "rss_before_bytes": rss_before,
        "peak_rss_before_bytes": peak_before,
        "peak_rss_growth_bytes": peak_after - peak_before,
    }


async def _worker_main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": args.mode, "mib": args.mib}
    out_dir = Path(tempfile.mkdtemp(prefix="samsar-bench-img-", dir=args.tmpdir))
    try:
        count = args.concurrent if args.mode in MANY_MODES else 1
        if args.mode == "samsar":
            figures = await _samsar(args.url, out_dir)
        elif args.mode == "samsar-many":
            figures = await _samsar_many(args.url, out_dir, count)
        elif args.mode == "orjson-many":
            figures = await _orjson_many(args.url, out_dir, count)
        elif args.mode.startswith("stream-"):
            figures = await _stream(args.url, out_dir, to_file=args.mode == "stream-file")
        else:
            figures = await _naive(
                args.url,
                out_dir,
                threaded=args.mode == "naive-thread",
                fast=args.mode == "orjson",
            )
        files = sorted(p for p in out_dir.rglob("*") if p.is_file())
        if len(files) != count:
            raise RuntimeError(f"expected {count} saved file(s), found {files}")
        digests = set()
        for file in files:
            data = file.read_bytes()
            if not data.startswith(PNG_SIGNATURE) or abs(len(data) - args.mib * common.MIB) > 65536:
                raise RuntimeError(f"saved file is not the expected PNG ({len(data)} bytes)")
            digests.add(hashlib.sha256(data).hexdigest())
        if len(digests) != 1:
            raise RuntimeError("the concurrent calls saved different bytes")
        if args.mode.startswith("samsar"):
            result["samsar_async"] = common.samsar_version()
        return (
            result | figures | {"bytes": len(data) * count, "count": count, "sha256": digests.pop()}
        )
    except Skip as exc:
        return result | {"skipped": str(exc)}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, choices=MODES + MANY_MODES)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--url", required=True, help="base URL with the /mib/<N> prefix")
    parser.add_argument("--mib", type=float, required=True)
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args(argv)
    common.pin_client()
    sys.stdout.write(json.dumps(asyncio.run(_worker_main(args))) + "\n")


# --------------------------------------------------------------------------- orchestration


def _sized_url(base_url: str, mib: float) -> str:
    root, _, version = base_url.rpartition("/")  # http://127.0.0.1:PORT, v1
    return f"{root}/mib/{mib:g}/{version}"


def _chosen(args: argparse.Namespace, modes: tuple[str, ...]) -> list[str]:
    wanted = set(args.modes.split(",")) if args.modes else None
    return [m for m in modes if wanted is None or m in wanted]


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [float(s) for s in args.sizes.split(",")] if args.sizes else []
    single = _chosen(args, MODES) if sizes else []
    many = _chosen(args, MANY_MODES) if args.concurrent > 0 else []
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        f"{s:g}": {m: [] for m in MODES} for s in sizes
    }
    many_key = f"{args.concurrent_mib:g}x{args.concurrent}"
    many_results: dict[str, list[dict[str, Any]]] = {m: [] for m in MANY_MODES}
    skipped: dict[str, str] = {}
    server_sizes = sorted(set(sizes) | ({args.concurrent_mib} if many else set()))
    with common.start_server(image_mib=server_sizes) as (_proc, url):
        for rnd in range(args.rounds):
            plan = [(mib, mode, 1) for mib in sizes for mode in single]
            plan += [(args.concurrent_mib, mode, args.concurrent) for mode in many]
            shift = rnd % max(len(plan), 1)
            for mib, mode, count in plan[shift:] + plan[:shift]:
                if mode in skipped:
                    continue
                worker_args = [
                    f"--mode={mode}",
                    f"--url={_sized_url(url, mib)}",
                    f"--mib={mib}",
                    f"--concurrent={count}",
                ]
                if args.tmpdir:
                    worker_args.append(f"--tmpdir={args.tmpdir}")
                res = common.run_worker("benchmarks.images", worker_args)
                if "skipped" in res:
                    skipped[mode] = res["skipped"]
                    print(f"  {mode}: skipped ({res['skipped']})", file=sys.stderr)
                    continue
                if mode in MANY_MODES:
                    many_results[mode].append(res)
                else:
                    results[f"{mib:g}"][mode].append(res)
                print(
                    f"  round {rnd + 1} {mib:g} MiB x{count} {mode:<13}"
                    f" path {res['request_to_disk_s'] * 1e3:7.1f} ms"
                    f" lag(path) {res['lag_whole_path_s'] * 1e3:7.1f} ms"
                    f" p99 {res['lag_p99_whole_path_s'] * 1e3:6.1f} ms"
                    f" cpu-stall {res['cpu_lag_whole_path_s'] * 1e3:6.1f}"
                    f"/p99 {res['cpu_lag_p99_whole_path_s'] * 1e3:5.1f} ms"
                    f" +{res['peak_rss_growth_bytes'] / common.MIB:6.1f} MiB",
                    file=sys.stderr,
                )
    for size, by_mode in results.items():
        digests = {r["sha256"] for runs in by_mode.values() for r in runs}
        if len(digests) > 1:
            raise RuntimeError(f"{size} MiB: the paths saved different bytes")
    return {
        "sizes": sizes,
        "results": results,
        "concurrent": {"key": many_key, "results": many_results},
        "skipped": skipped,
    }


def render(data: dict[str, Any], args: argparse.Namespace) -> str:
    out = [
        "## Large images: decode and save",
        "",
        f"{args.rounds} interleaved round(s), one fresh process per measurement, "
        "median (min–max); times and lags in ms, lag = worst extra delay of a 1 ms ticker.",
        "",
        common.machine_info_markdown(),
        "",
    ]
    headers = [
        "path",
        "image",
        "request → response",
        "save",
        "request → on disk",
        "lag: request → response",
        "lag: during save",
        "lag: whole path",
        "CPU stall: whole path",
        "CPU ms",
        "peak RSS growth MiB",
        "× image",
    ]
    rows = []
    for mib in data["sizes"]:
        for mode in MODES:
            runs = data["results"][f"{mib:g}"][mode]
            if not runs and mode not in data["skipped"]:
                continue  # not run (--modes)
            if not runs:
                rows.append(
                    [LABELS[mode], f"{mib:g} MiB", "skipped (see note)"]
                    + ["—"] * (len(headers) - 3)
                )
                continue

            def cell(key: str, scale: float, runs: list[dict[str, Any]] = runs) -> str:
                return common.stat([r[key] * scale for r in runs]).fmt(",.1f")

            rows.append(
                [
                    LABELS[mode],
                    f"{mib:g} MiB",
                    cell("request_to_response_s", 1e3),
                    cell("save_s", 1e3),
                    cell("request_to_disk_s", 1e3),
                    cell("lag_request_to_response_s", 1e3),
                    cell("lag_save_s", 1e3),
                    cell("lag_whole_path_s", 1e3),
                    cell("cpu_lag_whole_path_s", 1e3),
                    cell("cpu_s", 1e3) if all("cpu_s" in r for r in runs) else "—",
                    cell("peak_rss_growth_bytes", 1 / common.MIB),
                    common.fmt_ratio(
                        common.stat([r["peak_rss_growth_bytes"] for r in runs]).median / r_bytes
                    )
                    if (r_bytes := runs[0]["bytes"])
                    else "—",
                ]
            )
    out.append(common.markdown_table(headers, rows))
    many = data.get("concurrent", {}).get("results", {})
    if any(many.values()):
        key = data["concurrent"]["key"]
        mib, count = key.split("x")
        out += [
            "",
            f"### {count} concurrent {mib} MiB image answers, each saved to its own file",
            "",
        ]
        many_headers = [
            "path",
            "request → all on disk",
            "worst stall",
            "p99 stall",
            "worst CPU stall",
            "p99 CPU stall",
            "ticks",
            "CPU ms",
            "peak RSS growth MiB",
            "× images",
        ]
        many_rows = []
        for mode in MANY_MODES:
            runs = many.get(mode) or []
            label = LABELS[mode].format(n=count)
            if not runs:
                many_rows.append([label, "skipped (see note)"] + ["—"] * 8)
                continue

            def mcell(key: str, scale: float, runs: list[dict[str, Any]] = runs) -> str:
                return common.stat([r[key] * scale for r in runs]).fmt(",.1f")

            growth = common.stat([r["peak_rss_growth_bytes"] for r in runs]).median
            many_rows.append(
                [
                    label,
                    mcell("request_to_disk_s", 1e3),
                    mcell("lag_whole_path_s", 1e3),
                    mcell("lag_p99_whole_path_s", 1e3),
                    mcell("cpu_lag_whole_path_s", 1e3),
                    mcell("cpu_lag_p99_whole_path_s", 1e3),
                    f"{common.stat([r['ticks_whole_path'] for r in runs]).median:,.0f}",
                    mcell("cpu_s", 1e3),
                    mcell("peak_rss_growth_bytes", 1 / common.MIB),
                    common.fmt_ratio(growth / runs[0]["bytes"]),
                ]
            )
        out.append(common.markdown_table(many_headers, many_rows))
    notes = []
    for mib in data["sizes"]:
        for mode in MODES:
            runs = data["results"][f"{mib:g}"][mode]
            if runs and "max_feed_s" in runs[0]:
                feed = common.stat([r["max_feed_s"] * 1e3 for r in runs]).fmt(",.2f")
                feed_cpu = common.stat([r["max_feed_cpu_s"] * 1e3 for r in runs]).fmt(",.2f")
                chunk = max(r["max_chunk_bytes"] for r in runs) / 1024
                count = runs[0]["feeds"]
                notes.append(
                    f"- {LABELS[mode]}, {mib:g} MiB: longest single `feed()` {feed_cpu} ms "
                    f"of CPU ({feed} ms of wall clock, preemption included); {count} chunks "
                    f"of at most {chunk:,.0f} KiB."
                )
    preempted = [
        f"{LABELS[m]} {mib} MiB ({r['involuntary_switches']:,})"
        for mib, by_mode in data["results"].items()
        for m, runs in by_mode.items()
        for r in runs
        if r.get("involuntary_switches", 0) > 20
    ]
    preempted += [
        f"{m} ({r['involuntary_switches']:,})"
        for m, runs in data.get("concurrent", {}).get("results", {}).items()
        for r in runs
        if r.get("involuntary_switches", 0) > 20
    ]
    if preempted:
        notes.append(
            "- Preempted more than 20 times during the call (other load on the client's "
            "core; its lags are then not the client's own): " + "; ".join(preempted)
        )
    if notes:
        out += ["", *notes]
    if data["skipped"]:
        out.append("")
        out += [f"- Skipped `{LABELS[m]}`: {why}" for m, why in data["skipped"].items()]
    # (×N labels keep their {n}: the count is in the table's title)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description="Decode-and-save cost of large images.")
    parser.add_argument("--quick", action="store_true", help="1 round (for CI)")
    parser.add_argument("--sizes", default="8,32", help="image sizes in MiB (decoded); '' for none")
    parser.add_argument("--modes", default="", help="comma-separated modes to run (default: all)")
    parser.add_argument(
        "--concurrent", type=int, default=50, help="concurrent calls of the ×N rows (0: none)"
    )
    parser.add_argument("--concurrent-mib", type=float, default=8.0, help="their image size")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--tmpdir", default=None, help="where images are saved (default: system)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    data = run(args)
    sys.stdout.write(render(data, args))
    if args.json:
        common.write_json(
            args.json,
            {"benchmark": "images", "machine": common.machine_info(), "params": vars(args), **data},
        )


if __name__ == "__main__":
    main()
