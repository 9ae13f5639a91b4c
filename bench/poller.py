"""The poller: 1,000 polling app triggers due every minute, polled by one scheduler (issue 18).

    python bench/poller.py [--triggers 1000] [--interval 60] [--minutes 3] [--workers 8]
                           [--database-url postgresql+psycopg://...]   (an empty database)

One Levqor app on SQLite (or the database given) with its scheduler (leader lock, poller) and no executor; a bench
connector whose polling trigger reads ``GET /items`` of a local upstream over HTTP (a
FakeServer in a child process, so its CPU is not the host's); --triggers pipelines with that
trigger and an interval of --interval seconds. The first round (every trigger's baseline, all due
at once when they are saved) is reported apart; the figures are those of the rounds after it,
over --minutes: lateness of each poll (when the poll began minus when the trigger was due, its
jitter included in the due time), polls per second, and the CPU seconds of the host process
(``time.process_time``) per minute of polling. Target (issue 18): p99 lateness under 5 s.
Figures only, no assertions; docs/benchmarks.md records them with the command and machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for src in ("kernel/src", "host/src"):
    sys.path.insert(0, str(ROOT / src))

from levqor_kernel import hookimpl  # noqa: E402


def upstream(conn) -> None:
    """The child process: a local upstream answering ``GET /items`` with one stable item."""
    from levqor_kernel.testing import FakeServer

    srv = FakeServer()
    srv.route("GET", "/items", lambda req: {"items": [{"id": 1, "text": "old"}]})
    srv.start()
    conn.send(srv.url)
    conn.recv()  # until the bench is done
    srv.stop()


class Bench:
    """The bench connector (a plugin object)."""

    @hookimpl
    def describe_schema(self):
        item = {"type": "object", "properties": {"id": {"type": "integer"}}}
        return [
            {
                "name": "bench",
                "title": "Bench",
                "description": "a polling trigger over HTTP",
                "credentials": None,
                "triggers": {
                    "tick": {"title": "Tick", "kind": "polling", "config": {"type": "object"},
                             "output": item, "sample": {"id": 1}},  # fmt: skip
                },
                "actions": {
                    "noop": {"title": "No-op", "payload": {"type": "object"},
                             "output": {"type": "object"}, "example": {}},  # fmt: skip
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {}

    @hookimpl
    def poll_trigger(self, connector, trigger, config, credentials, state, context):
        from levqor_kernel import Poll, TriggerItem

        base, _ = context.api_base("bench", "http://bench.invalid")
        body = context.http.request("GET", f"{base}/items", service="bench").json()
        return Poll(items=[TriggerItem(id=str(i["id"]), data=i) for i in body["items"]], state={"seen": 1})


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triggers", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--database-url", default="", help="an empty database (default: SQLite)")
    args = ap.parse_args()

    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=upstream, args=(child,), daemon=True)
    proc.start()
    url = parent.recv()

    from levqor_host.app import create_app
    from levqor_host.config import Config

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVQOR_", "DATABASE_URL"))}
    env.update(
        LEVQOR_EXECUTOR="off", LEVQOR_LOG_LEVEL="WARNING", LEVQOR_CACHE_DIR="",
        LEVQOR_SSRF_ALLOW="127.0.0.1", LEVQOR_BENCH_API_BASE=url,
        LEVQOR_POLL_WORKERS=str(args.workers), LEVQOR_POLL_MIN_INTERVAL=str(min(60, args.interval)),
    )  # fmt: skip
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    with tempfile.TemporaryDirectory(prefix="levqor-bench-poller-") as tmp:
        cfg = Config.from_env(env, data_dir=Path(tmp))
        app = create_app(cfg, start_workers=False, start_scheduler=False, plugins=[Bench()])
        st = app.extensions["levqor"]
        user = st.store.users.create("bench@example.com", plan="business")
        doc = {
            "levqor": 1,
            "trigger": {"type": "app", "connector": "bench", "trigger": "tick", "interval": args.interval},
            "steps": [{"id": "n", "connector": "bench", "action": "noop", "payload": {}}],
        }
        t = time.perf_counter()
        for i in range(args.triggers):
            p = st.store.pipelines.create(user["id"], f"p{i}", doc)
            st.triggers.sync(p)
        print(f"{args.triggers} pipelines with a polling trigger saved in {time.perf_counter() - t:.1f} s")

        polls: list[tuple[float, float, bool, str]] = []  # (began, lateness, baseline, trigger)
        lock = threading.Lock()

        def polled(row, outcome, began) -> None:
            due = datetime.fromisoformat(row["next_poll_at"]).timestamp()
            with lock:
                polls.append((began, began - due, bool(outcome.get("baseline")), row["id"]))

        from levqor_host.app import start_background

        start_background(app, workers=False, scheduler=True)
        st.scheduler.poller.on_polled = polled
        t0 = time.time()
        while True:  # the first round: every baseline
            with lock:
                done = sum(1 for p in polls if p[2])
            if done >= args.triggers:
                break
            time.sleep(0.2)
        first = time.time() - t0
        base_late = [p[1] for p in polls if p[2]]
        print(
            f"first round (every trigger due at once, baselines): {args.triggers} polls in "
            f"{first:.1f} s ({args.triggers / first:.0f}/s); lateness p50 {pct(base_late, 50):.2f} s, "
            f"max {max(base_late):.2f} s"
        )
        w0, c0 = time.time(), time.process_time()
        time.sleep(args.minutes * 60)
        wall, cpu = time.time() - w0, time.process_time() - c0
        with lock:
            steady = [p for p in polls if not p[2] and p[0] >= w0]
        late = [p[1] for p in steady]
        st.scheduler.stop()
        print(
            f"after it, over {wall:.0f} s: {len(steady)} polls of {len({p[3] for p in steady})} "
            f"triggers ({len(steady) / wall:.1f}/s; each due every {args.interval} s plus jitter)"
        )
        if late:
            print(
                f"  lateness: p50 {pct(late, 50):.3f} s, p90 {pct(late, 90):.3f} s, "
                f"p99 {pct(late, 99):.3f} s, max {max(late):.3f} s "
                f"(mean {statistics.fmean(late):.3f} s)"
            )
        print(
            f"  CPU of the host process: {cpu:.1f} s over {wall:.0f} s = {cpu / wall * 60:.1f} CPU s "
            f"per minute ({cpu / max(1, len(steady)) * 1000:.2f} ms per poll)"
        )
        print(
            f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
            f"Python {platform.python_version()}, {st.store.dialect}"
        )
        st.runner.close()
        st.store.close()
    parent.send("stop")
    proc.join(5)


if __name__ == "__main__":
    main()
