"""Plugin discovery time with 5 and 200 generated dummy plugin distributions.

    python bench/plugin_discovery.py [--counts 5,200] [--repeat 5]

Each dummy is a real installed distribution (dist-info with an entry point in the `levqor`
group, plus its module) in a fresh directory on PYTHONPATH. The time is make_plugin_manager()
in a fresh interpreter: discovery, import, describe_schema checks and the catalog.
Targets (issue 2): 200 plugins load in under 1 s and in under twice the time of 5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PLUGIN = textwrap.dedent("""
    from levqor_kernel import hookimpl

    @hookimpl
    def describe_schema():
        return [{{"name": "dummy{i}", "title": "Dummy {i}", "description": "generated",
                 "credentials": {{"type": "object", "properties": {{"token": {{"type": "string"}}}}}},
                 "actions": {{"go": {{"title": "Go", "payload": {{"type": "object", "properties": {{"x": {{"type": "integer"}}}}}},
                                     "output": {{"type": "object"}}, "example": {{"x": 1}}}}}}}}]

    @hookimpl
    def run_task(connector, action, payload, credentials, context):
        return {{}}
""")

PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from levqor_kernel.plugins import make_plugin_manager
    t1 = time.perf_counter()
    pm = make_plugin_manager(allow=sys.argv[1].split(","), schema_cache_dir=sys.argv[2])
    t2 = time.perf_counter()
    n = sum(1 for c in pm.catalog if c.name.startswith("dummy"))
    print(json.dumps({"import": t1 - t0, "manager": t2 - t1, "dummies": n, "failures": len(pm.failures)}))
""")


def make_site(root: Path, count: int) -> None:
    for i in range(count):
        mod = f"levqor_dummy{i}"
        (root / f"{mod}.py").write_text(PLUGIN.format(i=i))
        info = root / f"levqor_dummy{i}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: levqor-dummy{i}\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(f"[levqor]\ndummy{i} = {mod}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="5,200")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    results = {}
    for count in [int(c) for c in args.counts.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            make_site(Path(d), count)
            cache = tempfile.mkdtemp()
            env = {**os.environ, "PYTHONPATH": d + os.pathsep + os.environ.get("PYTHONPATH", "")}
            allow = ",".join(f"dummy{i}" for i in range(count))
            times, totals = [], []
            for i in range(args.repeat + 1):
                out = subprocess.run(
                    [sys.executable, "-c", PROBE, allow, cache],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                data = json.loads(out.stdout)
                assert data["dummies"] == count, data
                if i == 0:
                    cold = data["manager"]  # first start: schema checks not yet cached
                    continue
                times.append(data["manager"])
                totals.append(data["import"] + data["manager"])
            med = sorted(times)[len(times) // 2]
            tot = sorted(totals)[len(totals) // 2]
            results[count] = (med, tot)
            print(
                f"{count:4d} plugins: first start {cold * 1000:.1f} ms; then make_plugin_manager median "
                f"{med * 1000:.1f} ms, kernel import + make_plugin_manager median {tot * 1000:.1f} ms"
            )
    if len(results) >= 2:
        lo, hi = min(results), max(results)
        print(
            f"ratio {hi}/{lo}: make_plugin_manager {results[hi][0] / results[lo][0]:.2f}x, "
            f"kernel import + make_plugin_manager {results[hi][1] / results[lo][1]:.2f}x"
        )


if __name__ == "__main__":
    main()
