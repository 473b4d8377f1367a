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

Each round runs both variants in the next of the memory layouts of ``layouts.py`` (objects and
classes made before pytest starts), so that the medians cover several draws of CPython's type
attribute cache instead of the one hand a plain process deals (see that module: one hand moves
the result by more than the plugin's own work does).

``--callgrind N`` adds a count that does not depend on the machine's load: each variant runs
once in each of the first N layouts (with ``PYTHONHASHSEED`` set to the layout's number) under
``valgrind --tool=callgrind``; the ratio of CPU instructions executed is printed per layout,
with their median and mean. Usage:

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

from layouts import LAYOUTS, Layout, boot, layout_count

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


def _pytest(options: list[str], layout: Layout) -> list[str]:
    return [sys.executable, "-c", boot(layout), "-q", "-p", "no:cacheprovider", "-x", *options]


def _environment(url: str) -> dict[str, str]:
    # Bytecode caches are written (and the warm-up run fills them) as on a developer's machine:
    # with PYTHONDONTWRITEBYTECODE set, every run would recompile pytest's rewritten modules
    # and both variants would pay a second or more of start-up that users do not.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_URL"] = url
    return env


def run_once(
    directory: Path, url: str, options: list[str], layout: Layout = LAYOUTS[0]
) -> tuple[float, float]:
    """One pytest run with extra command-line ``options``; its wall and CPU times in seconds."""
    command, env = _pytest(options, layout), _environment(url)
    cpu, start = _children_cpu(), time.perf_counter()
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"{directory.name}: pytest failed\n{result.stdout[-3000:]}")
    return elapsed, cpu


def instructions(directory: Path, url: str, options: list[str], number: int) -> int:
    """CPU instructions of one pytest run under callgrind, in layout ``number``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        *_pytest(options, LAYOUTS[number]),
    ]
    env = _environment(url)
    env["PYTHONHASHSEED"] = str(number)
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"{directory.name}: callgrind run failed\n{result.stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--statements", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="0: only --callgrind")
    parser.add_argument(
        "--backends", default="sync-pysqlite-memory,aiosqlite,asyncpg", help="comma-separated"
    )
    parser.add_argument("--callgrind", type=layout_count, default=0, metavar="LAYOUTS")
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
                layout = LAYOUTS[round_ % len(LAYOUTS)]
                # ABBA: which variant runs first alternates, so that a drift in the machine's
                # speed (seen: several percent within a minute) does not favour one of them.
                if round_ % 2:
                    on.append(run_once(directory, url, [], layout))
                off.append(run_once(directory, url, ["-p", "no:noplusone"], layout))
                if not round_ % 2:
                    on.append(run_once(directory, url, [], layout))
            for kind, index in (("wall", 0), ("cpu", 1)) if args.rounds else ():
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
            for number in range(args.callgrind):
                without_count = instructions(directory, url, ["-p", "no:noplusone"], number)
                ratios.append(instructions(directory, url, [], number) / without_count)
            if ratios:
                shown = " ".join(
                    f"{LAYOUTS[number]}: {ratio:5.3f}" for number, ratio in enumerate(ratios)
                )
                print(
                    f"{backend:<22} instructions ratio median {statistics.median(ratios):5.3f} "
                    f"mean {statistics.mean(ratios):5.3f} (layouts {shown})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
