"""Peers side by side: the suite of bench_suite.py under each installed query-counting plugin.

Every variant runs the same generated suite with only one plugin active (the others disabled
with ``-p no:NAME``), alternating with a run that has none, and prints each plugin's median
wall-time ratio. Each peer is configured to count every statement without failing the suite:

* pytest-noplusone: defaults (counting, locations, fingerprints, N+1 detection; the generated
  tests carry ``allow_nplusone``);
* pytest-queryguard: ``--queryguard-mode=warn`` (its N+1 detection on, reported as warnings);
* pytest-querycount: ``--querycount-max=1000000`` (a budget on every test, so it counts);
* queryspy: ``--queryspy-report=PATH`` (tracking on, findings written to a file).

Install the peers next to this project (``pip install -e ".[bench]"``), then run:

    python benchmarks/bench_peers.py [--tests 200] [--statements 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import tempfile
from pathlib import Path

from bench_suite import generate, run_once

PLUGINS = {
    "noplusone": [],
    "queryguard": ["--queryguard-mode=warn"],
    "querycount": ["--querycount-max=1000000"],
    "queryspy": ["--queryspy-report=queryspy.json"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--statements", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    installed = {entry.name for entry in importlib.metadata.entry_points(group="pytest11")}
    plugins = {name: options for name, options in PLUGINS.items() if name in installed}
    missing = sorted(set(PLUGINS) - set(plugins))
    print(f"{args.tests} tests x {args.statements} statements, {args.rounds} A/B rounds")
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    none = [option for name in plugins for option in ("-p", f"no:{name}")]
    backends = {"sync-pysqlite-memory": "", "aiosqlite": "sqlite+aiosqlite://"}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in backends.items():
            directory = generate(Path(tmp), backend, args.tests, args.statements)
            run_once(directory, url, none)  # warm caches
            baseline: list[float] = []
            timings: dict[str, list[float]] = {name: [] for name in plugins}
            for _ in range(args.rounds):
                baseline.append(run_once(directory, url, none))
                for name, options in plugins.items():
                    others = [
                        option
                        for other in plugins
                        if other != name
                        for option in ("-p", f"no:{other}")
                    ]
                    timings[name].append(run_once(directory, url, others + options))
            base = statistics.median(baseline)
            cells = "   ".join(
                f"{name} {statistics.median(times) / base:5.3f}" for name, times in timings.items()
            )
            print(f"{backend:<22} none {base:6.2f} s   {cells}")


if __name__ == "__main__":
    main()
