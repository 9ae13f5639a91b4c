"""Flow control: what a loop, a plain step and a waiting run cost (issue 17).

    python bench/flow.py [--items 10000] [--steps 50] [--runs 200] [--waiting 1000] [--idle 10]
    python bench/flow.py --only loop|step|wait

Prints, for each part:
  1. loop: a for_each of --items items over a core.transform body, on the embedded executor
     (EmbeddedExecutor.execute of a run queued by the run service) of a real app on SQLite:
     items/s, and the process's resident memory before and after (and its peak) over the run;
     then the same loop through the kernel's runner alone (NullRecorder) to separate the
     runner's share from the recording's;
  2. step: the runner's overhead per plain step: a pipeline of --steps core.transform steps
     through Runner.run with a NullRecorder, against core's run_task called directly;
  3. wait: --waiting runs waiting at once (a wait of an hour): the threads of the process and
     its CPU time (time.process_time) over --idle seconds while they wait. On a host whose
     executor suspends waiting runs, they are queued through the run service and run by the
     embedded executor's workers; otherwise the kernel's runner suspends them and the figures
     say so.
Targets (issue 17): >= 1,000 items/s, < 50 MB of resident memory growth, < 100 us of overhead
per plain step, no thread and no measurable CPU for waiting runs. Figures only, no assertions;
docs/benchmarks.md records them with the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for src in ("kernel/src", "host/src"):
    sys.path.insert(0, str(ROOT / src))


def status_kb(field: str) -> int:
    """A figure of /proc/self/status in kB (VmRSS, VmHWM), or a count (Threads)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def transform(sid: str, value: object) -> dict:
    return {"id": sid, "connector": "core", "action": "transform", "payload": {"value": value}}


def loop_doc() -> dict:
    body = transform("net", {"order": "{{ item.id }}", "net": "{{ item.total * 0.8 }}"})
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "each", "type": "for_each", "items": "{{ trigger.orders }}", "steps": [body]},
            transform("count", "{{ steps.each.output | length }}"),
        ],
    }


def make_host(data: Path, workers: int):
    from levqor_host.app import create_app
    from levqor_host.config import Config

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVQOR_", "DATABASE_URL"))}
    env.update(
        LEVQOR_EXECUTOR="embedded",
        LEVQOR_SCHEDULER="off",
        LEVQOR_LOG_LEVEL="WARNING",
        LEVQOR_RATE_LIMITS="off",
        LEVQOR_MAX_RUNNING_PER_USER="100000",
        LEVQOR_CACHE_DIR="",
    )
    cfg = Config.from_env(env, data_dir=data, executor={"workers": workers})
    app = create_app(cfg, start_workers=workers > 0, start_scheduler=False)
    st = app.extensions["levqor"]
    user = st.store.users.create(f"bench{time.time_ns()}@example.com", plan="business")
    return app, st, user


def stop_host(app) -> None:
    st = app.extensions["levqor"]
    if st.executor is not None:
        st.executor.stop(2)
    st.runner.close()
    st.store.close()


def bench_loop(items: int) -> None:
    from levqor_host.workers.embedded import EmbeddedExecutor
    from levqor_kernel.recording import NullRecorder
    from levqor_kernel.runner import RunRequest

    orders = [{"id": f"A-{i}", "total": i % 500} for i in range(items)]
    doc = loop_doc()
    with tempfile.TemporaryDirectory(prefix="levqor-bench-flow-") as tmp:
        app, st, user = make_host(Path(tmp), workers=0)
        p = st.store.pipelines.create(user["id"], "loop", doc)
        p = st.store.pipelines.get(user["id"], p["id"])
        ex = EmbeddedExecutor(st.runs, threads=0, worker_id="bench")
        # warm-up: a short run (imports, template compilation, validators, the connection)
        st.runs.start(user, p, {"orders": orders[:50]})
        ex.execute(st.runs.claim("bench")[0])
        run, _ = st.runs.start(user, p, {"orders": orders})
        [claimed] = st.runs.claim("bench")
        rss0, hwm0 = status_kb("VmRSS"), status_kb("VmHWM")
        t, cpu = time.perf_counter(), time.process_time()
        status = ex.execute(claimed)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        rss1, hwm1 = status_kb("VmRSS"), status_kb("VmHWM")
        full = st.store.runs.get(None, run["id"], with_steps=False)
        rows = st.store.steps.items(run["id"], "each", after=None, limit=1)
        print(
            f"loop, embedded executor on SQLite: {items} items in {wall:.2f} s = "
            f"{items / wall:,.0f} items/s (CPU {cpu:.2f} s), run {status}/{full['status']}, "
            f"items by status {rows['by_status'] if rows else '?'}"
        )
        print(
            f"  resident memory: {rss0 / 1024:.1f} MB before, {rss1 / 1024:.1f} MB after "
            f"(+{(rss1 - rss0) / 1024:.1f} MB); peak {hwm1 / 1024:.1f} MB "
            f"(+{(hwm1 - max(rss0, hwm0 if hwm0 < rss0 else rss0)) / 1024:.1f} MB over the start)"
        )
        runner = st.runner
        stop_host(app)
    # the same loop through the runner alone: what the kernel costs per item
    runner_t = []
    from levqor_kernel.plugins import make_plugin_manager
    from levqor_kernel.runner import Runner

    r = Runner(make_plugin_manager(entry_points=False), env={})
    r.run(RunRequest("warm", doc, {"orders": orders[:50]}), recorder=NullRecorder())
    for i in range(3):
        t = time.perf_counter()
        res = r.run(RunRequest(f"k{i}", doc, {"orders": orders}), recorder=NullRecorder())
        runner_t.append(time.perf_counter() - t)
        assert res.status == "succeeded", res.error
    best = min(runner_t)
    print(
        f"loop, kernel runner alone (NullRecorder): {items / best:,.0f} items/s "
        f"({best / items * 1e6:.1f} us per item, best of 3)"
    )
    r.close()
    del runner


def bench_step(steps: int, runs: int) -> None:
    from levqor_kernel.builtins import core
    from levqor_kernel.context import make_context
    from levqor_kernel.plugins import make_plugin_manager
    from levqor_kernel.recording import NullRecorder
    from levqor_kernel.runner import Runner, RunRequest

    ctx = make_context()
    n = runs * steps
    t = time.perf_counter()
    for _ in range(n):
        core.run_task("core", "transform", {"value": "hello"}, None, ctx)
    direct = (time.perf_counter() - t) / n
    runner = Runner(make_plugin_manager(entry_points=False), env={})
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [transform(f"s{i}", "hello") for i in range(steps)],
    }
    for _ in range(5):
        runner.run(RunRequest("warm", doc, {}), recorder=NullRecorder())
    per_step = []
    for i in range(runs):
        t = time.perf_counter()
        res = runner.run(RunRequest(f"r{i}", doc, {}), recorder=NullRecorder())
        per_step.append((time.perf_counter() - t) / steps)
        assert res.status == "succeeded", res.error
    runner.close()
    med = statistics.median(per_step)
    p90 = statistics.quantiles(per_step, n=10)[-1]
    print(
        f"plain step ({steps} core.transform steps x {runs} runs, NullRecorder): direct call "
        f"{direct * 1e6:.2f} us; through Runner.run median {med * 1e6:.1f} us, p90 "
        f"{p90 * 1e6:.1f} us; overhead {(med - direct) * 1e6:.1f} us per step"
    )


def wait_doc() -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            transform("before", "{{ trigger.n }}"),
            {"id": "pause", "type": "wait", "seconds": 3600},
            transform("after", "done"),
        ],
    }


def idle(seconds: float) -> tuple[float, int, int]:
    """CPU seconds of the process over ``seconds`` of doing nothing, threads before and after."""
    th0 = status_kb("Threads")
    cpu = time.process_time()
    time.sleep(seconds)
    return time.process_time() - cpu, th0, status_kb("Threads")


def host_suspends() -> bool:
    """Whether this host's executor suspends waiting runs (a run status ``waiting``)."""
    from typing import get_args

    from levqor_host.store.rows import RunStatus

    return "waiting" in get_args(RunStatus)


def count_runs(st, user_id: str, status: str) -> int:
    n, cursor = 0, None
    while True:
        items, cursor = st.store.runs.list(user_id, status=status, limit=200, cursor=cursor)
        n += len(items)
        if not cursor:
            return n


def bench_wait_host(n: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="levqor-bench-wait-") as tmp:
        app, st, user = make_host(Path(tmp), workers=2)
        p = st.store.pipelines.create(user["id"], "wait", wait_doc())
        p = st.store.pipelines.get(user["id"], p["id"])
        time.sleep(1)
        base_cpu, th_idle, _ = idle(seconds)  # the idle app: workers, heartbeat, sweep
        t = time.perf_counter()
        for i in range(n):
            st.runs.start(user, p, {"n": i})
        while count_runs(st, user["id"], "waiting") < n:
            if time.perf_counter() - t > 900:
                raise RuntimeError("the runs did not all reach waiting")
            time.sleep(0.5)
        reached = time.perf_counter() - t
        cpu, th0, th1 = idle(seconds)
        print(
            f"waiting runs on the host (embedded executor, 2 workers, SQLite): {n} runs started "
            f"and all waiting after {reached:.1f} s ({n / reached:.0f} runs/s)"
        )
        print(
            f"  idle app before the runs: {th_idle} threads, CPU {base_cpu * 1000:.0f} ms over "
            f"{seconds:g} s; with {n} runs waiting: {th0} -> {th1} threads, CPU "
            f"{cpu * 1000:.0f} ms over {seconds:g} s ({cpu / seconds * 100:.2f} % of one core), "
            f"active runs on the workers: {len(st.executor.active_runs)}"
        )
        stop_host(app)


def bench_wait_kernel(n: int, seconds: float) -> None:
    from levqor_kernel.plugins import make_plugin_manager
    from levqor_kernel.recording import NullRecorder
    from levqor_kernel.runner import Runner, RunRequest

    runner = Runner(make_plugin_manager(entry_points=False), env={})
    doc = wait_doc()
    th0 = status_kb("Threads")
    t = time.perf_counter()
    results = [
        runner.run(RunRequest(f"w{i}", doc, {"n": i}), recorder=NullRecorder()) for i in range(n)
    ]
    took = time.perf_counter() - t
    waiting = sum(
        1 for r in results if r.status == "waiting" and r.wait and r.wait["kind"] == "time"
    )
    cpu, th1, th2 = idle(seconds)
    print(
        f"waiting runs, kernel only (the host's suspension is not measured here): {waiting} of {n} "
        f"Runner.run calls returned 'waiting' in {took * 1000:.0f} ms "
        f"({took / n * 1e6:.0f} us each); threads {th0} before, {th1} after "
        f"({threading.active_count()} Python threads); CPU over {seconds:g} s while they wait: "
        f"{cpu * 1000:.1f} ms"
    )
    runner.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--waiting", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--only", choices=["loop", "step", "wait"])
    args = ap.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.only in (None, "loop"):
        bench_loop(args.items)
    if args.only in (None, "step"):
        bench_step(args.steps, args.runs)
    if args.only in (None, "wait"):
        bench_wait_kernel(args.waiting, args.idle)
        if host_suspends():
            bench_wait_host(args.waiting, args.idle)
        else:
            print(
                "waiting runs on the host: not measured (this host's executor does not suspend runs)"
            )


if __name__ == "__main__":
    main()
