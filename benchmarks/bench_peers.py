"""Peers side by side: the suite of bench_suite.py under each installed query-counting plugin.

Every variant runs the same generated suite with only one plugin active (the others disabled
with ``-p no:NAME``), alternating with a run that has none, and prints each plugin's median
wall-time and CPU-time ratios. Each round runs every variant in the next memory layout of
``layouts.py``; ``--callgrind N`` adds the median ratio of CPU instructions over the first N
layouts (``valgrind`` needed; see bench_suite.py). Each peer is configured to count
every statement without failing the suite:

* pytest-noplusone: defaults (counting, locations, fingerprints, N+1 detection; the generated
  tests carry ``allow_nplusone``);
* pytest-queryguard: ``--queryguard-mode=warn`` (its N+1 detection on, reported as warnings);
* pytest-querycount: ``--querycount-max=1000000`` (a budget on every test, so it counts);
* queryspy: ``--queryspy-report=PATH`` (tracking on, findings written to a file).

Install the peers next to this project (``pip install -e ".[bench]"``), then run:

    python benchmarks/bench_peers.py [--tests 200] [--statements 100] [--rounds 3]
                                     [--backends sync-pysqlite-memory,aiosqlite] [--callgrind 1]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import tempfile
from pathlib import Path

from bench_suite import generate, instructions, run_once
from layouts import LAYOUTS, layout_count

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
    parser.add_argument("--backends", default="sync-pysqlite-memory,aiosqlite")
    parser.add_argument("--callgrind", type=layout_count, default=0, metavar="LAYOUTS")
    args = parser.parse_args()
    installed = {entry.name for entry in importlib.metadata.entry_points(group="pytest11")}
    plugins = {name: options for name, options in PLUGINS.items() if name in installed}
    missing = sorted(set(PLUGINS) - set(plugins))
    print(f"{args.tests} tests x {args.statements} statements, {args.rounds} A/B rounds")
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    none = [option for name in plugins for option in ("-p", f"no:{name}")]
    backends = {"sync-pysqlite-memory": "", "aiosqlite": "sqlite+aiosqlite://"}
    wanted = set(args.backends.split(","))
    variants = {
        name: [o for other in plugins if other != name for o in ("-p", f"no:{other}")] + options
        for name, options in plugins.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in backends.items():
            if backend not in wanted:
                continue
            directory = generate(Path(tmp), backend, args.tests, args.statements)
            run_once(directory, url, none)  # warm caches
            baseline: list[tuple[float, float]] = []
            timings: dict[str, list[tuple[float, float]]] = {name: [] for name in plugins}
            for round_ in range(args.rounds):
                layout = LAYOUTS[round_ % len(LAYOUTS)]
                baseline.append(run_once(directory, url, none, layout))
                for name, options in variants.items():
                    timings[name].append(run_once(directory, url, options, layout))
            for kind, index in (("wall", 0), ("cpu", 1)):
                base = statistics.median(run[index] for run in baseline)
                cells = "   ".join(
                    f"{name} {statistics.median(run[index] for run in runs) / base:5.3f}"
                    for name, runs in timings.items()
                )
                print(f"{backend:<22} {kind:<4} none {base:6.2f} s   {cells}", flush=True)
            ratios: dict[str, list[float]] = {name: [] for name in plugins}
            for number in range(args.callgrind):
                base_count = instructions(directory, url, none, number)
                for name, options in variants.items():
                    ratios[name].append(instructions(directory, url, options, number) / base_count)
            if args.callgrind:
                cells = "   ".join(
                    f"{name} {statistics.median(values):5.3f}" for name, values in ratios.items()
                )
                print(f"{backend:<22} instructions   {cells}", flush=True)


if __name__ == "__main__":
    main()
