"""Batches on a local Ray cluster against MockSamsarServer: order and exactly-once charging.

Run with ``nox -s ray`` (needs the ``ray`` extra); skipped when Ray is missing.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from samsar_async.testing import MockSamsarServer

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from samsar_async.integrations.ray import (  # noqa: E402
    SamsarMapper,
    complete_dataset,
    row_idempotency_key,
    run_batch_file,
)
from samsar_async.requests_file import KeyOwners  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.anyio]

WORKER_KEY = "sk-ray-workers-read-me-from-the-environment"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One private local cluster for the module; workers inherit SAMSAR_API_KEY."""
    os.environ["SAMSAR_API_KEY"] = WORKER_KEY
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=128 * 1024 * 1024,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.wait_for_min_actors_s = 60
    # The failing mapper below lives in this test module: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        ray.shutdown()


async def run_job(
    rows: list[dict[str, Any]], server: MockSamsarServer, **kwargs: Any
) -> list[dict[str, Any]]:
    def job() -> list[dict[str, Any]]:
        ds = ray.data.from_items(rows)
        out = complete_dataset(ds, base_url=server.url, actors=2, concurrency=16, **kwargs)
        return out.take_all()

    return await anyio.to_thread.run_sync(job)


@pytest.fixture
async def server(ray_cluster: None) -> Any:
    async with MockSamsarServer(latency=0.002) as srv:
        srv.add_account(credits=100_000, api_key=WORKER_KEY)
        yield srv


def rows_for(
    server: MockSamsarServer, n_rows: int = 2000, n_sessions: int = 300
) -> list[dict[str, Any]]:
    rng = random.Random(7)
    sessions = [server.create_session(WORKER_KEY) for _ in range(n_sessions)]
    order = sessions + [rng.choice(sessions) for _ in range(n_rows - n_sessions)]
    rng.shuffle(order)
    return [
        {"row_key": i, "session_id": s, "input": f"row {i}", "max_output_tokens": 20}
        for i, s in enumerate(order)
    ]


def check_exactly_once(server: MockSamsarServer, rows: list[dict[str, Any]], job: str) -> None:
    expected = {row_idempotency_key(job, r["row_key"]): r for r in rows}
    keys = [c.idempotency_key for c in server.ledger]
    assert len(keys) == len(rows)
    assert set(keys) == set(expected)  # every row charged exactly once
    # Per session, the charges happened in input (row key) order.
    charged: dict[str, list[int]] = defaultdict(list)
    for charge in server.ledger:
        charged[charge.session_id].append(expected[charge.idempotency_key]["row_key"])
    for indexes in charged.values():
        assert indexes == sorted(indexes)


async def test_two_thousand_rows_over_two_actors(server: MockSamsarServer) -> None:
    rows = rows_for(server)
    results = await run_job(rows, server, job_name="job-a")
    assert len(results) == 2000
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:3]
    assert sorted(int(r["row_key"]) for r in results) == list(range(2000))
    assert server.session_overlaps == 0
    check_exactly_once(server, rows, "job-a")
    for r in results[:20]:
        assert r["output_text"].endswith(f"row {r['row_key']}")

    # Re-running the finished job charges nothing: every row is a replay.
    again = await run_job(rows, server, job_name="job-a")
    assert len(again) == 2000
    assert all(r["ok"] for r in again)
    assert len(server.ledger) == 2000
    by_key = {r["row_key"]: r["response_id"] for r in results}
    assert all(by_key[r["row_key"]] == r["response_id"] for r in again)


class CrashOnceMapper(SamsarMapper):
    """Kills its actor process once, mid-block, after some rows were charged."""

    def __init__(self, *, crash_flag: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crash_flag = crash_flag
        self.done = 0

    async def _result_row(self, row: dict[str, Any], result: Any) -> dict[str, Any]:
        self.done += 1
        if self.done == 40:
            try:
                fd = os.open(self.crash_flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(1)  # the actor dies; Ray restarts it and retries the block
        return await super()._result_row(row, result)


async def test_worker_crash_still_charges_each_row_once(
    server: MockSamsarServer, tmp_path: Path
) -> None:
    rows = rows_for(server)
    flag = tmp_path / "crashed"
    results = await run_job(
        rows,
        server,
        job_name="job-b",
        mapper=CrashOnceMapper,
        mapper_options={"crash_flag": str(flag)},
    )
    assert flag.exists()  # the crash did happen
    assert len(results) == 2000
    assert all(r["ok"] for r in results)
    replays = [r for r in server.requests if r.replayed]
    assert replays  # rows charged before the crash were sent again...
    check_exactly_once(server, rows, "job-b")  # ...and not charged again


async def test_errors_are_rows(server: MockSamsarServer) -> None:
    good = server.create_session(WORKER_KEY)
    rows = [
        {"row_key": 0, "session_id": good, "request": '{"input": "fine"}'},
        {"row_key": 1, "session_id": "0" * 24, "request": '{"input": "no such session"}'},
        {"row_key": 2, "session_id": good, "request": "{not json"},
        {"row_key": 3, "session_id": good, "request": '{"input": "x", "bogus": 1}'},
    ]
    results = {int(r["row_key"]): r for r in await run_job(rows, server, job_name="job-c")}
    assert results[0]["ok"]
    assert results[1]["error_type"] == "NotFoundError"
    assert results[1]["error_status"] == 404
    assert results[2]["error_type"] == "InvalidArgumentError"
    assert "bogus" in results[3]["error_message"]
    assert len(server.ledger) == 1


async def test_batch_file_rules_hold_on_ray(server: MockSamsarServer, tmp_path: Path) -> None:
    """A BOM starting the file is ignored; a repeated explicit key is refused, unsent."""
    s1, s2 = server.create_session(WORKER_KEY), server.create_session(WORKER_KEY)
    requests = tmp_path / "requests.jsonl"
    lines = [
        {"session_id": s1, "input": "first", "idempotency_key": "dup"},
        {"session_id": s2, "input": "second", "idempotency_key": "dup"},
        {"session_id": s2, "input": "third"},
    ]
    requests.write_bytes(
        b"\xef\xbb\xbf" + b"".join(json.dumps(x).encode() + b"\r\n" for x in lines)
    )

    def job(owners: KeyOwners | None, done: set[int]) -> dict[int, dict[str, Any]]:
        rows = run_batch_file(
            requests, done, owners=owners, images_dir=tmp_path / "img",
            base_url=server.url, actors=1, concurrency=4,
        )  # fmt: skip
        return {row["line"]: row for row in rows}

    rows = await anyio.to_thread.run_sync(job, None, set())
    assert sorted(rows) == [1, 2, 3]
    assert rows[1]["ok"], rows[1]
    assert rows[3]["ok"], rows[3]
    assert rows[2]["error"]["type"] == "InvalidArgumentError"
    assert rows[2]["error"]["message"].startswith(
        "line 2: idempotency_key 'dup' is already used by line 1;"
    )
    dup = [(r.session_id, r.body["input"]) for r in server.requests if r.idempotency_key == "dup"]
    assert dup == [(s1, "first")]
    assert len(server.ledger) == 2

    # What `samsar batch --ray` passes: owners read from the results file win.
    rows = await anyio.to_thread.run_sync(job, KeyOwners({"dup": 1}, {"dup": 7}), {3})
    assert sorted(rows) == [1, 2]
    assert all(
        "already used by line 7 (per its row" in r["error"]["message"] for r in rows.values()
    )
    assert len(server.ledger) == 2


async def test_cli_batch_on_ray(server: MockSamsarServer, tmp_path: Path) -> None:
    """`samsar batch --ray`: same rows and keys as the single-machine command."""
    sessions = [server.create_session(WORKER_KEY) for _ in range(60)]
    requests = tmp_path / "requests.jsonl"
    lines = [json.dumps({"session_id": sessions[i % 60], "input": f"line {i}"}) for i in range(300)]
    lines.insert(10, "{not json")
    requests.write_text("\n".join(lines) + "\n")
    results = tmp_path / "results.jsonl"
    env = {
        **os.environ,
        "SAMSAR_API_KEY": WORKER_KEY,
        "SAMSAR_BASE_URL": server.url,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    cmd = [sys.executable, "-m", "samsar_async", "batch", str(requests), "--out", str(results)]
    done = await anyio.run_process([*cmd, "--ray", "--progress", "off"], env=env, check=False)
    assert done.returncode == 7, done.stderr.decode()  # one malformed line failed
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 301
    bad = [r for r in rows if not r["ok"]]
    assert [r["line"] for r in bad] == [11]
    assert bad[0]["error"]["message"].startswith("line 11:")
    assert len(server.ledger) == 300
    assert len({c.idempotency_key for c in server.ledger}) == 300

    # The same file run on one machine, from scratch: the keys match, nothing is charged again.
    results.unlink()
    local = await anyio.run_process([*cmd, "--progress", "off"], env=env, check=False)
    assert local.returncode == 7, local.stderr.decode()
    assert len(server.ledger) == 300
    assert {r["idempotency_key"] for r in map(json.loads, results.read_text().splitlines())} == {
        r["idempotency_key"] for r in rows
    }
