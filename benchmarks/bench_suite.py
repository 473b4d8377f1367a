"""Suite overhead: a generated suite run with the plugin and with ``-p no:noplusone``.

Generates ``--tests`` tests of ``--statements`` statements each for every backend (sync pysqlite
``:memory:``, aiosqlite, and asyncpg when ``NOPLUSONE_PG_URL`` is set), then runs the suite
alternately with the plugin (counting, fingerprints, locations and N+1 detection all on) and
without it, ``--rounds`` times each (in ABBA order: which one runs first alternates from round
to round), and prints the median wall times and their ratio, and the median CPU times (user +
system of the pytest process) and theirs: on a shared or throttled machine the CPU time is the
steadier of the two. Each line also gives the median of the per-round ratios (a run with the
plugin over the run without it next to it), which cancels slow drift in the machine's speed,
and from 4 rounds on the quartiles of those per-round ratios, which show how much a single
round's ratio varies on this machine.

``--callgrind N`` adds a count that does not depend on the machine's load: each variant runs
once per hash seed 0..N-1 under ``valgrind --tool=callgrind``, and the median ratio of CPU
instructions executed is printed (string hashes change dict layouts, hence several seeds).
Usage:

    python benchmarks/bench_suite.py [--tests 200] [--statements 100] [--rounds 5]
                                     [--callgrind 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
markers =
    allow_nplusone: (registered here too so that -p no:noplusone runs cleanly)
"""

SYNC_CONFTEST = """
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String))


@pytest.fixture(scope="session")
def conn():
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as c:
        c.execute(items.insert(), [{"id": i, "name": f"n{i}"} for i in range(100)])
    with engine.connect() as c:
        yield c
"""

ASYNC_CONFTEST = """
import os

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String))
URL = os.environ["BENCH_URL"]


@pytest.fixture(scope="session")
async def engine():
    kwargs = {}
    if URL.startswith("postgresql"):
        kwargs["connect_args"] = {"server_settings": {"search_path": "noplusone_bench"}}
        admin = create_async_engine(URL)
        async with admin.begin() as c:
            await c.execute(text("CREATE SCHEMA IF NOT EXISTS noplusone_bench"))
        await admin.dispose()
    engine = create_async_engine(URL, **kwargs)
    async with engine.begin() as c:
        await c.run_sync(metadata.drop_all)
        await c.run_sync(metadata.create_all)
        await c.execute(items.insert(), [{"id": i, "name": f"n{i}"} for i in range(100)])
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine):
    async with AsyncSession(engine) as session:
        yield session
"""

SYNC_TEST = """
@pytest.mark.allow_nplusone
def test_{n}(conn):
    for i in range({statements}):
        conn.execute(QUERY, {{"id": i}}).all()
"""

ASYNC_TEST = """
@pytest.mark.allow_nplusone
async def test_{n}(session):
    for i in range({statements}):
        (await session.execute(QUERY, {{"id": i}})).all()
"""

HEADER = """
import pytest
from sqlalchemy import bindparam, select
from conftest import items

QUERY = select(items.c.name).where(items.c.id == bindparam("id"))
"""


def generate(root: Path, backend: str, tests: int, statements: int) -> Path:
    """Write one backend's suite and return its directory."""
    directory = root / backend
    directory.mkdir()
    (directory / "pytest.ini").write_text(INI)
    is_sync = backend == "sync-pysqlite-memory"
    (directory / "conftest.py").write_text(SYNC_CONFTEST if is_sync else ASYNC_CONFTEST)
    body = (SYNC_TEST if is_sync else ASYNC_TEST).format
    source = HEADER + "".join(body(n=n, statements=statements) for n in range(tests))
    (directory / "test_generated.py").write_text(textwrap.dedent(source))
    return directory


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pytest(options: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *options]


def _environment(url: str) -> dict[str, str]:
    # Bytecode caches are written (and the warm-up run fills them) as on a developer's machine:
    # with PYTHONDONTWRITEBYTECODE set, every run would recompile pytest's rewritten modules
    # and both variants would pay a second or more of start-up that users do not.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_URL"] = url
    return env


def run_once(directory: Path, url: str, options: list[str]) -> tuple[float, float]:
    """One pytest run with extra command-line ``options``; its wall and CPU times in seconds."""
    command, env = _pytest(options), _environment(url)
    cpu, start = _children_cpu(), time.perf_counter()
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"{directory.name}: pytest failed\n{result.stdout[-3000:]}")
    return elapsed, cpu


def instructions(directory: Path, url: str, options: list[str], seed: int) -> int:
    """CPU instructions of one pytest run under callgrind, with ``PYTHONHASHSEED=seed``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *_pytest(options)]
    env = _environment(url)
    env["PYTHONHASHSEED"] = str(seed)
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"{directory.name}: callgrind run failed\n{result.stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--statements", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--backends", default="sync-pysqlite-memory,aiosqlite,asyncpg", help="comma-separated"
    )
    parser.add_argument("--callgrind", type=int, default=0, metavar="SEEDS")
    args = parser.parse_args()
    if args.callgrind and shutil.which("valgrind") is None:
        parser.error("--callgrind needs valgrind on PATH")
    wanted = set(args.backends.split(","))
    backends = {"sync-pysqlite-memory": "", "aiosqlite": "sqlite+aiosqlite://"}
    if os.environ.get("NOPLUSONE_PG_URL"):
        backends["asyncpg"] = os.environ["NOPLUSONE_PG_URL"]
    backends = {name: url for name, url in backends.items() if name in wanted}
    print(f"{args.tests} tests x {args.statements} statements, {args.rounds} A/B rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in backends.items():
            directory = generate(Path(tmp), backend, args.tests, args.statements)
            run_once(directory, url, [])  # warm the file system and bytecode caches
            on, off = [], []
            for round_ in range(args.rounds):
                # ABBA: which variant runs first alternates, so that a drift in the machine's
                # speed (seen: several percent within a minute) does not favour one of them.
                if round_ % 2:
                    on.append(run_once(directory, url, []))
                off.append(run_once(directory, url, ["-p", "no:noplusone"]))
                if not round_ % 2:
                    on.append(run_once(directory, url, []))
            for kind, index in (("wall", 0), ("cpu", 1)):
                with_plugin = statistics.median(run[index] for run in on)
                without = statistics.median(run[index] for run in off)
                pairs = [a[index] / b[index] for a, b in zip(on, off, strict=True)]
                paired = statistics.median(pairs)
                # The spread says how far one run's ratio can be trusted on this machine.
                spread = ""
                if len(pairs) >= 4:
                    low, _, high = statistics.quantiles(pairs, n=4)
                    spread = f" (quartiles {low:5.3f}-{high:5.3f})"
                print(
                    f"{backend:<22} {kind:<4} without {without:6.2f} s   "
                    f"with {with_plugin:6.2f} s   ratio {with_plugin / without:5.3f}   "
                    f"paired {paired:5.3f}{spread}",
                    flush=True,
                )
            ratios = []
            for seed in range(args.callgrind):
                without_count = instructions(directory, url, ["-p", "no:noplusone"], seed)
                ratios.append(instructions(directory, url, [], seed) / without_count)
            if ratios:
                shown = " ".join(f"{ratio:5.3f}" for ratio in ratios)
                print(
                    f"{backend:<22} instructions ratio {statistics.median(ratios):5.3f} "
                    f"(seeds 0-{args.callgrind - 1}: {shown})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
