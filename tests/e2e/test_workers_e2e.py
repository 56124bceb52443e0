"""``gateway serve --workers 2``: two worker processes behind one socket, with the embedded
Redis started once by the parent and ``/metrics`` merged over both workers."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.e2e.conftest import CLIENT_KEY, Gateway, Sandbox, gateway_config, wait_final
from tests.scrape import Scrape

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"
LOOKUP = {"route": "/v1/videos/{task_id}", "method": "GET", "status": "200"}
CREATE = {"route": "/v1/videos", "method": "POST", "status": "202"}
# A new connection per request: the kernel hands each to whichever worker accepts first.
FRESH = {"Authorization": f"Bearer {CLIENT_KEY}", "Connection": "close"}


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited while we looked
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of ``pid`` → its parent pid."""
    parents = _parents()
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        for child, parent in parents.items():
            if parent == current:
                found[child] = parent
                todo.append(child)
    return found


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def worker_pids(metrics_dir: Path) -> set[int]:
    """Workers that built their metrics: each writes ``counter_<pid>.db``."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("counter_*.db")}


def lookups_by_worker(metrics_dir: Path) -> dict[int, float]:
    """Successful lookups each worker answered, read from its own metrics file."""
    answered = {}
    for pid in worker_pids(metrics_dir):
        files = [str(metrics_dir / f"counter_{pid}.db")]
        families = MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
        answered[pid] = sum(
            s.value
            for family in families
            for s in family.samples
            if s.name == "gateway_http_requests_total" and s.labels == LOOKUP
        )
    return answered


def start_two_workers(
    gateways: list[Gateway], sandbox: Sandbox, tmp_path: Path
) -> tuple[Gateway, Path]:
    """A two-worker gateway on the embedded Redis; returns it and its metrics directory, once
    both workers have started."""
    tmp = tmp_path / "tmp"  # the gateway's TMPDIR: where its metrics directory is made
    tmp.mkdir()
    config = gateway_config(sandbox, None, tmp_path / "data", log={"level": "INFO"})
    gw = Gateway(config, tmp_path, args=["--workers", "2"], env={"TMPDIR": str(tmp)})
    gateways.append(gw.start(timeout_s=30))
    [metrics_dir] = tmp.glob("gateway-metrics-*")
    deadline = time.monotonic() + 20
    while len(worker_pids(metrics_dir)) < 2:
        assert time.monotonic() < deadline, f"one worker only: {gw.logs()[-2000:]}"
        time.sleep(0.1)
    return gw, metrics_dir


def lookup(gw: Gateway, task_id: str) -> int:
    return httpx.get(f"{gw.url}/v1/videos/{task_id}", headers=FRESH, timeout=10).status_code


def scrape(gw: Gateway) -> Scrape:
    return Scrape(httpx.get(f"{gw.url}/metrics", headers={"Connection": "close"}, timeout=5).text)


def test_two_workers_share_tasks_and_one_embedded_redis_and_metrics_add_up(
    sandbox: Sandbox, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw, metrics_dir = start_two_workers(gateways, sandbox, tmp_path)
    assert gw.process is not None
    parent = gw.process.pid

    tree = descendants(parent)
    redis_servers = [pid for pid in tree if command(pid) == "redis-server"]
    assert len(redis_servers) == 1, tree
    assert tree[redis_servers[0]] == parent  # started by the parent, not by a worker
    assert list((tmp_path / "data").glob("*.sock")) == [tmp_path / "data" / "redis.sock"]
    workers = worker_pids(metrics_dir)
    assert all(tree.get(pid) == parent for pid in workers)

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(
            lambda i: httpx.post(f"{gw.url}/v1/videos", headers=FRESH, timeout=10,
                                 json={"prompt": f"fox {i}", "image": IMAGE}),
            range(8),
        ))  # fmt: skip
        assert [r.status_code for r in created] == [202] * 8
        ids = [r.json()["id"] for r in created]
        # Look every task up, whichever worker created it, until both workers have answered.
        sent, deadline = 0, time.monotonic() + 15
        while min(lookups_by_worker(metrics_dir).values()) == 0:
            assert time.monotonic() < deadline, lookups_by_worker(metrics_dir)
            assert set(pool.map(lambda task_id: lookup(gw, task_id), ids)) == {200}
            sent += len(ids)
    assert set(lookups_by_worker(metrics_dir)) == workers

    # A request is counted just after its answer is sent: wait for the last ones, then every
    # scrape, whichever worker serves it, shows the requests of both.
    deadline = time.monotonic() + 5
    while scrape(gw).value("gateway_http_requests_total", **LOOKUP) < sent:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(6):
        s = scrape(gw)
        assert s.value("gateway_http_requests_total", **LOOKUP) == sent
        assert s.value("gateway_http_requests_total", **CREATE) == 8
        assert sum(s.nonzero("gateway_tasks_created_total", "provider").values()) == 8
        assert [x.value for x in s if x.name == "gateway_build_info"] == [1]
        assert s.value("gateway_circuit_state", provider="runapi") == 0

    with gw.client() as client:  # tasks created through either worker complete
        assert all(wait_final(client, task_id)["status"] == "completed" for task_id in ids)


def test_sigterm_stops_the_parent_its_workers_and_redis_and_removes_the_metrics_dir(
    sandbox: Sandbox, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw, metrics_dir = start_two_workers(gateways, sandbox, tmp_path)
    assert gw.process is not None
    with gw.client() as client:
        task = client.post("/v1/videos", json={"prompt": "a fox", "image": IMAGE})
        assert task.status_code == 202
    children = descendants(gw.process.pid)
    assert worker_pids(metrics_dir) <= set(children)
    assert "redis-server" in {command(pid) for pid in children}

    started = time.monotonic()
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.wait(15) == 0
    assert time.monotonic() - started < 15
    # multiprocessing's resource tracker, a child too, exits once the parent has: allow it a
    # moment.
    deadline = time.monotonic() + 5
    while left := [pid for pid in children if Path(f"/proc/{pid}").exists()]:
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.05)
    assert not metrics_dir.exists()
    assert "Traceback" not in gw.logs()
