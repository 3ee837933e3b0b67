"""Shared plumbing of the benchmarks: the canned server, pinning, measurements, tables.

Layout of a run: the canned server runs in its own process pinned to
``SERVER_CPU``; each measured client runs in a fresh worker subprocess pinned
to ``CLIENT_CPU`` (so its ``getrusage`` CPU time and its ``ru_maxrss`` peak
belong to that client alone). The orchestrating parent process only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "CALLGRIND_MARKER",
    "CLIENT_CPU",
    "LOOPS",
    "REPO_ROOT",
    "SERVER_CPU",
    "Stat",
    "available_loops",
    "callgrind_instructions",
    "callgrind_prefix",
    "callgrind_unavailable",
    "cpu_seconds",
    "current_rss_bytes",
    "fmt_ratio",
    "involuntary_switches",
    "machine_info",
    "machine_info_markdown",
    "markdown_table",
    "median_ratio",
    "new_event_loop",
    "peak_rss_bytes",
    "pin_client",
    "pin_to_cpu",
    "process_cpu_seconds",
    "run_measured",
    "run_worker",
    "samsar_version",
    "start_server",
    "stat",
    "write_json",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 1
CLIENT_CPU = 0
MIB = 1024 * 1024


# --------------------------------------------------------------------------- pinning


def pin_to_cpu(cpu: int) -> bool:
    """Pin this process to one core if the platform allows it and the core exists."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        if cpu not in os.sched_getaffinity(0) or len(os.sched_getaffinity(0)) < 2:
            return False
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


def pin_client() -> bool:
    """Pin the calling (client) process to ``CLIENT_CPU``, away from the server's core."""
    return pin_to_cpu(CLIENT_CPU)


# --------------------------------------------------------------------------- server


@contextlib.contextmanager
def start_server(
    cpu: int = SERVER_CPU, image_mib: Sequence[float] = (8,), timeout: float = 30.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``benchmarks.canned_server`` in a subprocess; yield ``(process, base_url)``.

    ``base_url`` is ``http://127.0.0.1:PORT/v1`` (the contract's base URL
    shape). Insert ``/mib/<N>`` before ``/v1`` to choose the image size.
    """
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.canned_server",
        "--port",
        "0",
        "--cpu",
        str(cpu),
        "--image-mib",
        ",".join(f"{m:g}" for m in image_mib),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO_ROOT, env=_child_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # the server prints its port first
        if not line.isdigit():
            proc.kill()
            raise RuntimeError(f"canned server did not start (first line: {line!r})")
        yield proc, f"http://127.0.0.1:{int(line)}/v1"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def run_worker(
    module: str, args: Sequence[str], timeout: float = 3600.0, prefix: Sequence[str] = ()
) -> dict[str, Any]:
    """Run ``python -m MODULE --worker ARGS`` and return the JSON of its last stdout line.

    ``prefix`` goes before the interpreter (for example a ``valgrind`` command line).
    """
    cmd = [*prefix, sys.executable, "-m", module, "--worker", *args]
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, env=_child_env(), capture_output=True, text=True, timeout=timeout
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --------------------------------------------------------------------------- event loops

LOOPS = ("asyncio", "uvloop")


def available_loops() -> list[str]:
    """The event loops this machine can run: asyncio, and uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return list(LOOPS)


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the named kind (``asyncio`` or ``uvloop``), set as current."""
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    elif name == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        raise ValueError(f"unknown event loop {name!r} (known: {', '.join(LOOPS)})")
    asyncio.set_event_loop(loop)
    return loop


# --------------------------------------------------------------------------- instruction counts

CALLGRIND_MARKER = "closure_fcn"
"""The C function that encloses the measured phase (see :func:`run_measured`).

ctypes runs a Python callback through libffi into its static ``closure_fcn``;
callgrind counts only inside it (``--collect-atstart=no --toggle-collect``).
Nothing else in a benchmark worker calls a ctypes callback.
"""


def run_measured(fn: Callable[[], None]) -> None:
    """Call ``fn()`` from inside one C function, :data:`CALLGRIND_MARKER`.

    Under ``valgrind --tool=callgrind --collect-atstart=no
    --toggle-collect=closure_fcn`` only the instructions of ``fn`` (and a few
    hundred of ctypes' own) are counted: imports, set-up, warm-up and
    teardown are not. Outside valgrind this costs one ctypes call.
    Exceptions raised by ``fn`` are re-raised here (ctypes would swallow them).
    """
    try:
        import ctypes
    except ImportError:  # pragma: no cover - ctypes is missing on a few platforms
        fn()
        return
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    ctypes.PYFUNCTYPE(None)(body)()
    if failure:
        raise failure[0]


def callgrind_unavailable() -> str | None:
    """Why instruction counts cannot be measured here, or None if they can."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed"
    return None


def callgrind_prefix(out_file: str | os.PathLike[str]) -> list[str]:
    """The command line that runs a worker under callgrind, counting the measured phase only."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        "--collect-atstart=no",
        f"--toggle-collect={CALLGRIND_MARKER}",
        f"--callgrind-out-file={os.fspath(out_file)}",
    ]


def callgrind_instructions(out_file: str | os.PathLike[str]) -> int:
    """Total instructions (``Ir``) counted in a callgrind output file.

    Raises ``RuntimeError`` when nothing was counted: the marker function was
    not found (an interpreter whose ``_ctypes`` has no symbol table).
    """
    total = None
    with open(out_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    if not total:
        raise RuntimeError(
            f"callgrind counted nothing in {os.fspath(out_file)}: no {CALLGRIND_MARKER} symbol "
            "in this Python's _ctypes (stripped build?)"
        )
    return total


# --------------------------------------------------------------------------- measurement


def cpu_seconds() -> float:
    """User + system CPU seconds used by this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def involuntary_switches() -> int:
    """Involuntary context switches of this process so far (preempted: a noisy-machine sign)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def current_rss_bytes() -> int:
    """Current resident set size (``/proc/self/statm``; falls back to the peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()
    return resident * os.sysconf("SC_PAGE_SIZE")


class Stat:
    """Median, min and max of one figure over rounds."""

    __slots__ = ("max", "median", "min", "values")

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.median = statistics.median(self.values)
        self.min = min(self.values)
        self.max = max(self.values)

    def fmt(self, spec: str = ",.0f", *, spread: bool = True) -> str:
        text = format(self.median, spec)
        if spread and len(self.values) > 1:
            text += f" ({format(self.min, spec)}–{format(self.max, spec)})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max, "values": self.values}


def stat(values: Sequence[float]) -> Stat:
    return Stat(values)


def median_ratio(values: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Median of the per-round ratios ``values[i] / baseline[i]`` (pairs from one round)."""
    pairs = [v / b for v, b in zip(values, baseline, strict=False) if b]
    return statistics.median(pairs) if pairs else None


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; numeric-looking columns are right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max([len(h)] + [len(r[i]) for r in cells if i < len(r)]) for i, h in enumerate(headers)
    ]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    aligns = [":" + "-" * (w - 1) if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    out.append("| " + " | ".join(aligns) + " |")
    for row in cells:
        padded = [*row, *[""] * (len(headers) - len(row))]
        out.append(
            "| " + " | ".join(c.ljust(w) for c, w in zip(padded, widths, strict=True)) + " |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- reporting


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def samsar_version() -> str:
    """The measured SDK: version, where it was imported from and its git commit."""
    try:
        import samsar_async
    except ImportError:
        return "not importable"
    version = str(getattr(samsar_async, "__version__", "unknown version"))
    where = getattr(samsar_async, "__file__", None)
    if where is None:
        return f"{version} (namespace package, no client)"
    folder = Path(where).resolve().parent
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    commit = git.stdout.strip() or "no git"
    return f"{version} from {folder.parent} @ {commit}"


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "git_commit": git.stdout.strip() or "unknown",
        "loadavg": _loadavg(),
        "pinning": f"server on core {SERVER_CPU}, client on core {CLIENT_CPU}"
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
        else "not pinned",
        "versions": {
            name: _version(name)
            for name in (
                "aiohttp",
                "httpx",
                "httpx2",
                "openai",
                "orjson",
                "pybase64",
                "anyio",
                "uvloop",
            )
        }
        | {"samsar_async": samsar_version()},
    }


def machine_info_markdown(info: dict[str, Any] | None = None) -> str:
    info = info or machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (
        f"- Date: {info['date']}; commit {info['git_commit']}; "
        f"load average at the end {info['loadavg']}\n"
        f"- Machine: {info['nproc']} cores ({info['cpu_model']}), {info['platform']}; "
        f"{info['pinning']}\n"
        f"- {info['python']}; {versions}"
    )


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
