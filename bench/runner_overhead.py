"""Runner overhead per step with a no-op connector.

    python bench/runner_overhead.py [--steps 50] [--runs 200]

Prints the time per step the runner adds beyond the connector's own (the no-op connector
returns at once), with and without a template in the payload, and the direct-call baseline.
Target (issue 2): under 100 µs per step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from levqor_kernel import hookimpl
from levqor_kernel.context import make_context
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import Runner, RunRequest

COOPERATIVE = True


class Noop:
    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "noop",
                "title": "No-op",
                "description": "returns at once",
                "cooperative": COOPERATIVE,
                "actions": {
                    "go": {
                        "title": "Go",
                        "payload": {"type": "object", "properties": {"text": {"type": "string"}}},
                        "output": {"type": "object"},
                        "example": {},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument(
        "--watchdog",
        action="store_true",
        help="declare the connector non-cooperative (thread hop per step)",
    )
    args = ap.parse_args()
    global COOPERATIVE
    COOPERATIVE = not args.watchdog
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[("noop", Noop())])
    runner = Runner(pm, env={})
    ctx = make_context()
    # baseline: the connector called directly, N times
    t0 = time.perf_counter()
    for _ in range(args.runs * args.steps):
        Noop.run_task(None, "noop", "go", {}, None, ctx)
    direct = (time.perf_counter() - t0) / (args.runs * args.steps)

    def measure(payload: dict) -> list[float]:
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {"id": f"s{i}", "connector": "noop", "action": "go", "payload": payload}
                for i in range(args.steps)
            ],
        }
        for _ in range(5):  # warm-up (template cache, validators)
            runner.run(RunRequest("warm", doc, {"name": "x"}))
        per_step = []
        for r in range(args.runs):
            t = time.perf_counter()
            res = runner.run(RunRequest(f"r{r}", doc, {"name": "x"}))
            per_step.append((time.perf_counter() - t) / args.steps)
            assert res.status == "succeeded"
        return per_step

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}"
    )
    print(
        f"steps/run={args.steps} runs={args.runs} connector={'watchdog thread' if args.watchdog else 'cooperative (inline)'}"
    )
    print(f"direct connector call: {direct * 1e6:.2f} µs")
    for label, payload in (
        ("plain payload", {"text": "hello"}),
        ("templated payload", {"text": "hi {{ trigger.name }}"}),
    ):
        ps = measure(payload)
        med = statistics.median(ps)
        p90 = statistics.quantiles(ps, n=10)[-1]
        print(
            f"{label}: median {med * 1e6:.1f} µs/step, p90 {p90 * 1e6:.1f} µs/step, "
            f"overhead beyond connector {(med - direct) * 1e6:.1f} µs/step"
        )
    runner.close()


if __name__ == "__main__":
    main()
