"""Suite overhead in wall and CPU time: the suites of overhead.py, with and without the plugin.

Generates the suites of ``overhead.py`` (``--tests`` tests of ``--statements`` statements: Core
on sync pysqlite ``:memory:``, ORM on aiosqlite, and on asyncpg when ``NOPLUSONE_PG_URL`` is
set) and runs each alternately with the plugin (counting, fingerprints, call sites and N+1
detection all on) and with ``-p no:noplusone``, ``--rounds`` times each, in ABBA order (which
one runs first alternates from round to round). It prints the median wall times and their
ratio, and the median CPU times (user + system of the pytest process) and theirs; each line
also gives the median of the per-round ratios (a run with the plugin over the run without it
next to it), which cancels slow drift in the machine's speed, and from 4 rounds on their
quartiles, which show how far one round's ratio can be trusted on this machine. Wall and CPU
time move with the machine's load; the figures to compare are overhead.py's instruction
counts. Run it with an interpreter that has the project, its drivers and pytest-asyncio
installed (overhead.py's virtualenvs do):

    python benchmarks/bench_suite.py [--tests 200] [--statements 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import BACKENDS, generate


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(directory: Path, url: str, options: list[str]) -> tuple[float, float]:
    """One pytest run with extra command-line ``options``; its wall and CPU times in seconds."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *options]
    # Bytecode caches are written (the warm-up run fills them) as on a developer's machine:
    # with PYTHONDONTWRITEBYTECODE set every run would recompile pytest's rewritten modules.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_URL"] = url
    if url.startswith("postgresql"):
        env["BENCH_SCHEMA"] = "noplusone_bench_wall"
    cpu, start = _children_cpu(), time.perf_counter()
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"{directory.name}: pytest failed\n{result.stdout[-3000:]}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--statements", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    args = parser.parse_args()
    urls = {"sync": "", "aiosqlite": "sqlite+aiosqlite://"}
    if os.environ.get("NOPLUSONE_PG_URL"):
        urls["asyncpg"] = os.environ["NOPLUSONE_PG_URL"]
    backends = {name: url for name, url in urls.items() if name in args.backends.split(",")}
    # Peers installed beside the plugin stay out of both variants.
    off = ["-p", "no:queryspy", "-p", "no:queryguard", "-p", "no:querycount", "-p", "no:capquery"]
    print(f"{args.tests} tests x {args.statements} statements, {args.rounds} A/B rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in backends.items():
            directory = generate(Path(tmp), backend, args.tests, args.statements)
            run_once(directory, url, off)  # warm the file system and bytecode caches
            on, without_plugin = [], []
            for round_ in range(args.rounds):
                # ABBA: which variant runs first alternates, so that a drift in the machine's
                # speed (seen: several percent within a minute) does not favour one of them.
                if round_ % 2:
                    on.append(run_once(directory, url, off))
                without_plugin.append(run_once(directory, url, [*off, "-p", "no:noplusone"]))
                if not round_ % 2:
                    on.append(run_once(directory, url, off))
            for kind, index in ("wall", 0), ("cpu", 1):
                with_plugin = statistics.median(run[index] for run in on)
                without = statistics.median(run[index] for run in without_plugin)
                pairs = [a[index] / b[index] for a, b in zip(on, without_plugin, strict=True)]
                paired = statistics.median(pairs)
                # The spread says how far one run's ratio can be trusted on this machine.
                spread = ""
                if len(pairs) >= 4:
                    low, _, high = statistics.quantiles(pairs, n=4)
                    spread = f" (quartiles {low:5.3f}-{high:5.3f})"
                print(
                    f"{backend:<10} {kind:<4} without {without:6.2f} s   "
                    f"with {with_plugin:6.2f} s   ratio {with_plugin / without:5.3f}   "
                    f"paired {paired:5.3f}{spread}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
