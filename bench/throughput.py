"""Webhook-to-finished throughput of a two-step pipeline under `levqor serve --prod` on SQLite.

    python bench/throughput.py [--duration 15] [--soak 300] [--connections 16]

Needs `wrk` (Debian package) for the closed-loop load. Measures, in one run:
  1. the ceiling: a bare Flask route under the same gunicorn settings (2 workers, 4 threads);
  2. Levqor webhook acceptances per second (wrk, closed loop) for a pipeline
     webhook -> core.transform -> http (POST to a local fake endpoint);
  3. completed runs per second (from the runs table: runs finished / time from first start
     to last finish, while the queue drains);
  4. p50/p99 from webhook accepted (run created) to run finished, at half the completed rate
     (open-loop sender);
  5. resident memory of the server processes over a soak at that rate (first vs last minute).
Prints every figure; docs/benchmarks.md records them with the command and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "kernel" / "src"))
from levqor_kernel.testing import FakeServer, Reply  # noqa: E402

LUA = 'wrk.method = "POST"\nwrk.body = \'{"id": "A-1", "amount": 50}\'\nwrk.headers["Content-Type"] = "application/json"\n'


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, duration: int, connections: int, script: Path) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return {"rps": rps, "non2xx": int(non2xx.group(1)) if non2xx else 0, "raw": out,
            "p50": lat.get("50", "?"), "p99": lat.get("99", "?")}


def rss_kb(pid: int) -> int:
    total = 0
    pids = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def db_runs(db: Path, since: str | None = None) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        q = "select status, created_at, started_at, finished_at from runs"
        rows = con.execute(q + (" where created_at >= ?" if since else ""), (since,) if since else ()).fetchall()
    finally:
        con.close()
    return rows


def ts(v: str | None) -> float | None:
    return datetime.fromisoformat(v).timestamp() if v else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--soak", type=int, default=300)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="levqor-bench-"))
    script = tmp / "post.lua"
    script.write_text(LUA)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env.update({"LEVQOR_DATA_DIR": str(tmp / "data"), "LEVQOR_SSRF_ALLOW": "127.0.0.1", "PYTHONUNBUFFERED": "1",
                "LEVQOR_LOG_LEVEL": "WARNING", "LEVQOR_SCHEDULER": "off", "LEVQOR_RATE_LIMITS": "off"})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"gunicorn: 2 workers x 4 threads (gthread); wrk -t2 -c{args.connections}; SQLite in {tmp}")

    # 1. the ceiling: a bare Flask route under the same gunicorn settings
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "4", "-k", "gthread", "-b",
                             f"127.0.0.1:{port}", "--chdir", str(ROOT / "bench"), "bare_app:app"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        wrk(f"http://127.0.0.1:{port}/hooks/x", 3, args.connections, script)  # warm-up
        ceiling = wrk(f"http://127.0.0.1:{port}/hooks/x", args.duration, args.connections, script)
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(30)
    print(f"bare Flask route: {ceiling['rps']:.0f} req/s, response p50 {ceiling['p50']}, p99 {ceiling['p99']}")

    with FakeServer() as downstream:
        downstream.route("POST", "/orders", lambda req: Reply(201, {"ok": True}))
        port = free_port()
        log = tmp / "serve.log"
        srv = subprocess.Popen([sys.executable, "-m", "levqor_host.cli", "serve", "--prod", "--port", str(port)],
                               env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/health")
            key = re.search(r"(lvq_\S+)", log.read_text()).group(1)
            doc = {"levqor": 1, "trigger": {"type": "webhook"}, "steps": [
                {"id": "shape", "connector": "core", "action": "transform",
                 "payload": {"value": {"order": "{{ trigger.id }}", "total": "{{ trigger.amount * 1.2 }}"}}},
                {"id": "send", "connector": "http", "action": "request",
                 "payload": {"method": "POST", "url": f"{downstream.url}/orders",
                             "json": {"order": "{{ steps.shape.output.value.order }}"}}}]}
            p = requests.post(base + "/api/v1/pipelines", headers={"Authorization": f"Bearer {key}"},
                              json={"name": "bench", "pipeline": doc}, timeout=10).json()
            hook = p["webhook_url"]
            db = tmp / "data" / "levqor.db"
            wrk(hook, 3, args.connections, script)  # warm-up
            drain(db, 120)
            # 2. acceptances
            acc = wrk(hook, args.duration, args.connections, script)
            print(f"levqor webhook acceptances: {acc['rps']:.0f} req/s ({acc['rps'] / ceiling['rps'] * 100:.0f} % of "
                  f"the bare route), non-2xx: {acc['non2xx']}, response p50 {acc['p50']}, p99 {acc['p99']}")
            # 3. completed runs per second while the backlog drains
            t0 = time.time()
            drain(db, 600)
            rows = db_runs(db)
            fin = sorted(ts(r[3]) for r in rows if r[3] and ts(r[3]) >= t0 - args.duration - 1)
            starts = sorted(ts(r[2]) for r in rows if r[2] and ts(r[2]) >= t0 - args.duration - 1)
            done = len(fin)
            span = fin[-1] - starts[0]
            print(f"completed runs: {done} in {span:.1f} s = {done / span:.0f} runs/s "
                  f"(failed: {sum(1 for r in rows if r[0] != 'succeeded')})")
            rate = max(1.0, done / span / 2)
            # 4. latency at half the completed rate, 5. memory over the soak
            mark = datetime.utcnow().isoformat(sep=" ")
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.time(), rss_kb(srv.pid)))
                    stop.wait(5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            sent = open_loop(hook, rate, max(args.soak, 20))
            stop.set()
            drain(db, 120)
            rows = db_runs(db, mark)
            lat = sorted((ts(r[3]) - ts(r[1])) * 1000 for r in rows if r[3])
            p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
            print(f"latency webhook->finished at {rate:.0f} runs/s ({sent} sent): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            first = [kb for t, kb in samples if t - samples[0][0] <= 60]
            last = [kb for t, kb in samples if samples[-1][0] - t <= 60]
            growth = (statistics.mean(last) - statistics.mean(first)) / statistics.mean(first) * 100
            print(f"server RSS over {samples[-1][0] - samples[0][0]:.0f} s: first minute {statistics.mean(first) / 1024:.1f}"
                  f" MiB, last minute {statistics.mean(last) / 1024:.1f} MiB, growth {growth:+.1f} %")
            print(json.dumps({"ceiling_rps": ceiling["rps"], "accept_rps": acc["rps"], "completed_rps": done / span,
                              "p50_ms": p50, "p99_ms": p99, "rss_growth_pct": growth}))
        finally:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(40)
            except subprocess.TimeoutExpired:
                srv.kill()


def drain(db: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            n = con.execute("select count(*) from runs where status in ('queued','running')").fetchone()[0]
        finally:
            con.close()
        if n == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("runs did not drain")


def open_loop(url: str, rate: float, seconds: float) -> int:
    """Send at a fixed rate regardless of answers (8 sender threads sharing the schedule)."""
    interval = 1.0 / rate
    start = time.monotonic()
    n_total = int(rate * seconds)
    counter = {"next": 0}
    lock = threading.Lock()

    def sender() -> None:
        s = requests.Session()
        while True:
            with lock:
                i = counter["next"]
                counter["next"] += 1
            if i >= n_total:
                return
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                s.post(url, json={"id": f"L-{i}", "amount": 1}, timeout=10)
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n_total


if __name__ == "__main__":
    main()
