"""Start-up time of the `levqor` command, side by side with a bare interpreter.

    python bench/cli_startup.py [--repeat 7] [--src DIR]

Times whole processes: ``python -c pass``, ``levqor --version``, ``levqor --help``,
``levqor pipelines list`` and ``levqor run NAME`` (queue only: no worker runs it), in turns
(one of each, then the next round), on a fresh SQLite data folder with one user and one
pipeline. Prints, per command, the median wall time and CPU time (user + system of the process)
and both as a ratio to ``python -c pass``. ``--src DIR`` puts another checkout's ``host/src``
first on ``PYTHONPATH`` (to measure an older revision with the same interpreter and packages);
``--against DIR`` measures that checkout's ``host/src`` too, in the same rounds (each command of
one, then of the other), so a busy machine slows both alike.
Targets: ``--version`` and ``--help`` under 0.3 s, ``pipelines list`` under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "t", "connector": "core", "action": "transform", "payload": {"value": 1}}],
}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``cmd``, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="counted rounds (after one warm-up)")
    ap.add_argument("--src", type=Path, default=None, help="a checkout's host/src to measure")
    ap.add_argument(
        "--against", type=Path, default=None, help="another host/src measured in the same rounds"
    )
    args = ap.parse_args()

    levqor = [sys.executable, "-c", "from levqor_host.cli import main; main()"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LEVQOR_") and k != "DATABASE_URL"
        }
        env.update(LEVQOR_DATA_DIR=str(Path(tmp) / "data"), LEVQOR_SCHEDULER="off")
        if args.src is not None:
            env["PYTHONPATH"] = str(args.src.resolve())
        # the console script `levqor` is `from levqor_host.cli import main; main()`: the same
        # process, and --src works for it without reinstalling anything
        timed([*levqor, "users", "create", "bench@example.com", "--admin"], env)
        doc = Path(tmp) / "bench.json"
        doc.write_text(json.dumps({"name": "bench", "doc": PIPELINE}))
        timed([*levqor, "pipelines", "import", str(doc)], env)
        where = subprocess.run(
            [sys.executable, "-c", "import levqor_host; print(levqor_host.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "levqor --version": [*levqor, "--version"],
            "levqor --help": [*levqor, "--help"],
            "levqor pipelines list": [*levqor, "pipelines", "list"],
            "levqor run bench (queue only)": [*levqor, "run", "bench"],
        }
        envs = {"": env}
        if args.against is not None:
            envs[" [against]"] = {**env, "PYTHONPATH": str(args.against.resolve())}
        figures: dict[str, list[tuple[float, float]]] = {}
        for round_ in range(args.repeat + 1):
            for name, cmd in commands.items():
                for label, cmd_env in envs.items():
                    if label and name == "python -c pass":
                        continue
                    w, c = timed(cmd, cmd_env)
                    if round_:  # the first round warms the caches
                        figures.setdefault(name + label, []).append((w, c))

    base_w = statistics.median(w for w, _ in figures["python -c pass"])
    base_c = statistics.median(c for _, c in figures["python -c pass"])
    print(f"levqor_host from {where}; {args.repeat} rounds after one warm-up; medians")
    if args.against is not None:
        print(f"[against]: levqor_host from {args.against.resolve()}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<42} {'wall s':>8} {'x pass':>8} {'CPU s':>8} {'x pass':>8}")
    for name, runs in figures.items():
        w = statistics.median(x for x, _ in runs)
        c = statistics.median(y for _, y in runs)
        print(f"{name:<42} {w:>8.3f} {w / base_w:>8.1f} {c:>8.3f} {c / base_c:>8.1f}")


if __name__ == "__main__":
    main()
