"""The full-size SIGKILL fault run of issue 10: 20 kills of Celery worker processes across 1,000
runs (the test suite runs 6 kills across 300 runs).

    python bench/celery_faults.py [--runs 1000] [--kills 20]

It runs tests/test_scale_faults.py::test_sigkill_of_celery_workers_mid_run at that size (same
assertions: every run succeeded and finished exactly once, one jobs.jsonl line per run, no step
that had succeeded at a kill was sent again, at most 4 re-sent steps per kill) and prints the
outcome, the number of re-sent in-flight steps and the wall time. Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20)
    args = ap.parse_args()
    env = {
        **os.environ,
        "LEVQOR_TEST_KILL_RUNS": str(args.runs),
        "LEVQOR_TEST_KILLS": str(args.kills),
        "LEVQOR_REQUIRE_SERVICES": "1",
    }
    t = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-o",
            "timeout=1800",
            "tests/test_scale_faults.py::test_sigkill_of_celery_workers_mid_run",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t
    lines = [
        x
        for x in r.stdout.splitlines()
        if "kills:" in x or "settling" in x or " passed" in x or " failed" in x
    ]
    print("\n".join(lines))
    print(
        f"{args.runs} runs, {args.kills} SIGKILLs: {'PASSED' if r.returncode == 0 else 'FAILED'} in {wall:.0f} s"
    )
    if r.returncode:
        print(r.stdout[-5000:])
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
