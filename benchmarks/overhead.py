"""Suite overhead in CPU instructions: pytest-noplusone, and its peers, over no plugin at all.

For every Python given (``--python``, repeatable; default: the one running this script) a
virtualenv outside the repository (``--venvs``, default ``~/.cache/pytest-noplusone/bench``) is
created on first use and reused later: the plugin installed editable from the checkout this
script belongs to, its drivers, pytest-asyncio and the peers that support that Python. Then
generated suites run under ``valgrind --tool=callgrind``, the whole pytest process counted:

* ``sync``: sync pysqlite ``:memory:``, ``--tests`` tests of ``--statements`` Core
  ``select(items).where(items.c.id == ...)`` statements on one connection;
* ``aiosqlite`` and ``asyncpg``: the same number of ORM ``select(Item).where(Item.id == ...)``
  statements through an ``AsyncSession`` (asyncpg only with ``--pg-url`` or
  ``NOPLUSONE_PG_URL``, and only when that server answers).

Each suite runs once with no plugin (``-p no:noplusone`` and every peer disabled too), once with
pytest-noplusone alone (defaults: counting, fingerprints, call sites, N+1 detection; the tests
carry ``allow_nplusone``) and once with each installed peer alone, configured to count every
statement without failing: pytest-queryguard ``--queryguard-mode=warn``, pytest-querycount
``--querycount-max=1000000``, queryspy ``--queryspy-report=PATH``, pytest-capquery (3.13 and
later only) a ``CapQueryWrapper`` around the suite's engine in every test (it records only
inside such a block).
The table gives each plugin's instructions over the no-plugin run's. A warm-up run of every
variant first writes the bytecode caches, as on a developer's machine.

Run-to-run variation, and why there are no memory layouts: three plain runs of the same
command (``--python python3.11 --backends sync --no-peers --tests 100 --statements 100``, each
with its own random hash seed and suite directory; Python 3.11.7, SQLAlchemy 2.1.9, pytest
9.2.0, 2026-12-04) gave 1.068, 1.075 and 1.074 (no plugin: 3,118 M, 3,109 M and 3,098 M
instructions). The ratios differ by at most 0.7 %, less than the 1 % that would call for
running each variant in several memory layouts (the ``layouts.py`` that the C module's figures
needed), so every variant runs once, in a plain process. Differences below about 0.01 in a
ratio are within that run-to-run spread.

Usage (a full run takes tens of minutes under valgrind; ``--jobs`` runs counts in parallel,
which does not change them):

    python benchmarks/overhead.py --python python3.11 --python python3.13 \\
        [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/test] \\
        [--tests 200] [--statements 100] [--backends sync,aiosqlite,asyncpg] [--no-peers] \\
        [--jobs 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENVS = Path.home() / ".cache" / "pytest-noplusone" / "bench"

#: What every benchmark virtualenv holds besides the plugin (installed editable from REPO).
REQUIREMENTS = [
    "aiosqlite>=0.19",
    "asyncpg>=0.29",
    "pytest-asyncio>=1.0",
    "pytest-queryguard",
    "pytest-querycount",
    "queryspy",
    'pytest-capquery; python_version >= "3.13"',
]

#: pytest11 entry-point name -> the options that make it count every statement without failing.
PLUGINS = {
    "noplusone": [],
    "queryspy": ["--queryspy-report=queryspy.json"],
    "queryguard": ["--queryguard-mode=warn"],
    "querycount": ["--querycount-max=1000000"],
    "capquery": ["-p", "bench_capquery"],
}

BACKENDS = ("sync", "aiosqlite", "asyncpg")

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
        c.execute(items.insert(), [{{"id": i, "name": f"n{{i}}"}} for i in range({rows})])
    with engine.connect() as c:
        yield c
"""

SYNC_TESTS = (
    """
import pytest
from sqlalchemy import bindparam, select
from conftest import items

QUERY = select(items).where(items.c.id == bindparam("id"))
""",
    """
@pytest.mark.allow_nplusone
def test_{n}(conn):
    for i in range({statements}):
        conn.execute(QUERY, {{"id": i}}).one()
""",
)

ASYNC_CONFTEST = """
import os

import pytest
from sqlalchemy import String, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

URL = os.environ["BENCH_URL"]
SCHEMA = os.environ.get("BENCH_SCHEMA", "")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


@pytest.fixture(scope="session")
async def engine():
    kwargs = {{}}
    if SCHEMA:
        kwargs["connect_args"] = {{"server_settings": {{"search_path": SCHEMA}}}}
        admin = create_async_engine(URL)
        async with admin.begin() as c:
            await c.execute(text(f"DROP SCHEMA IF EXISTS {{SCHEMA}} CASCADE"))
            await c.execute(text(f"CREATE SCHEMA {{SCHEMA}}"))
    engine = create_async_engine(URL, **kwargs)
    async with engine.begin() as c:
        await c.run_sync(Base.metadata.create_all)
        await c.execute(
            Item.__table__.insert(), [{{"id": i, "name": f"n{{i}}"}} for i in range({rows})]
        )
    yield engine
    await engine.dispose()
    if SCHEMA:
        async with admin.begin() as c:
            await c.execute(text(f"DROP SCHEMA {{SCHEMA}} CASCADE"))
        await admin.dispose()


@pytest.fixture
async def session(engine):
    async with AsyncSession(engine) as session:
        yield session
"""

ASYNC_TESTS = (
    """
import pytest
from sqlalchemy import select
from conftest import Item
""",
    """
@pytest.mark.allow_nplusone
async def test_{n}(session):
    for i in range({statements}):
        (await session.execute(select(Item).where(Item.id == i))).scalar_one()
""",
)

#: Loaded with ``-p bench_capquery`` in capquery's variant only: capquery records what runs
#: inside a ``CapQueryWrapper(engine)`` block, so every test gets one around the suite's engine.
CAPQUERY_FIXTURE = """
import pytest
from pytest_capquery.plugin import CapQueryWrapper


@pytest.fixture(autouse=True)
def _capquery({fixture}):
    with CapQueryWrapper({engine}) as capquery:
        yield capquery
"""


def generate(root: Path, backend: str, tests: int, statements: int) -> Path:
    """Write one backend's suite under ``root`` and return its directory."""
    directory = root / backend
    directory.mkdir()
    rows = max(statements, 1)
    (directory / "pytest.ini").write_text(INI)
    if backend == "sync":
        conftest, (header, body) = SYNC_CONFTEST, SYNC_TESTS
        fixture, engine = "conn", "conn.engine"
    else:
        conftest, (header, body) = ASYNC_CONFTEST, ASYNC_TESTS
        fixture, engine = "engine", "engine.sync_engine"
    (directory / "conftest.py").write_text(conftest.format(rows=rows))
    source = header + "".join(body.format(n=n, statements=statements) for n in range(tests))
    (directory / "test_generated.py").write_text(textwrap.dedent(source))
    capquery = CAPQUERY_FIXTURE.format(fixture=fixture, engine=engine)
    (directory / "bench_capquery.py").write_text(capquery)
    return directory


class Venv(NamedTuple):
    python: Path
    version: str  # "3.11.7"
    plugins: tuple[str, ...]  # the entry points of PLUGINS that are installed
    versions: str  # SQLAlchemy's and pytest's


def _run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def prepare(interpreter: str, venvs: Path) -> Venv:
    """The benchmark virtualenv for ``interpreter``: made and filled on first use."""
    found = shutil.which(interpreter) or interpreter
    probe = _run([found, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    if probe.returncode != 0:
        raise SystemExit(f"--python {interpreter}: cannot run it\n{probe.stderr}")
    version = probe.stdout.strip()
    root = venvs / f"python{version}"
    python = root / "bin" / "python"
    wanted = {"interpreter": os.path.realpath(found), "repo": str(REPO), "requires": REQUIREMENTS}
    stamp = root / "noplusone-bench.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted and python.exists()):
        print(f"setting up {root} (once)", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        for command in (
            [found, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "-q", "-e", str(REPO), *REQUIREMENTS],
        ):
            result = _run(command)
            if result.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed\n{result.stdout}{result.stderr}")
        stamp.write_text(json.dumps(wanted))
    listing = _run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, sqlalchemy, pytest\n"
            "print(' '.join(e.name for e in m.entry_points(group='pytest11')))\n"
            "print(f'SQLAlchemy {sqlalchemy.__version__}, pytest {pytest.__version__}')",
        ]
    )
    if listing.returncode != 0:
        raise SystemExit(f"{python}: broken virtualenv (delete {root})\n{listing.stderr}")
    names, versions = listing.stdout.splitlines()
    plugins = tuple(name for name in PLUGINS if name in names.split())
    return Venv(python, version, plugins, versions)


def reachable(url: str) -> bool:
    """Whether the database server of ``url`` accepts a TCP connection."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 3):
            return True
    except OSError:
        return False


class Run(NamedTuple):
    venv: Venv
    backend: str
    directory: Path
    url: str
    variant: str  # "none" or a name of PLUGINS


def _command(run: Run) -> tuple[list[str], dict[str, str]]:
    disabled = [name for name in run.venv.plugins if name != run.variant]
    options = [o for name in disabled for o in ("-p", f"no:{name}")]
    options += PLUGINS.get(run.variant, [])
    command = [str(run.venv.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    # Bytecode caches are written (the warm-up runs fill them) as on a developer's machine:
    # with PYTHONDONTWRITEBYTECODE set every run would recompile pytest's rewritten modules.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_URL"] = run.url
    if run.backend == "asyncpg":
        # One schema per variant, so that parallel runs do not share tables.
        env["BENCH_SCHEMA"] = f"noplusone_bench_{run.variant}"
    return [*command, *options], env


def warm(run: Run) -> None:
    """Run the variant's first test natively: bytecode caches written, failures caught early."""
    command, env = _command(run)
    result = _run([*command, "test_generated.py::test_0"], cwd=run.directory, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{run.backend} / {run.variant}: pytest failed\n{result.stdout[-3000:]}")


def instructions(run: Run) -> int:
    """CPU instructions of the variant's whole pytest run under callgrind."""
    command, env = _command(run)
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    result = _run([*valgrind, *command], cwd=run.directory, env=env)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(
            f"{run.backend} / {run.variant}: callgrind run failed\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    count = int(found.group(1))
    # Each count as it lands, so that an interrupted run still tells something.
    print(f"  Python {run.venv.version} {run.backend} {run.variant}: {count:,}", file=sys.stderr)
    return count


LABELS = {
    "sync": "sync pysqlite :memory:, Core",
    "aiosqlite": "aiosqlite, ORM",
    "asyncpg": "asyncpg, ORM",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="an interpreter to measure (repeatable)")
    parser.add_argument(
        "--venvs", type=Path, default=DEFAULT_VENVS, help=f"virtualenvs (default {DEFAULT_VENVS})"
    )
    parser.add_argument("--tests", type=int, default=200, help="tests per suite (200)")
    parser.add_argument("--statements", type=int, default=100, help="statements per test (100)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("NOPLUSONE_PG_URL", ""),
        help="postgresql+asyncpg:// URL for the asyncpg suite (default $NOPLUSONE_PG_URL)",
    )
    parser.add_argument("--no-peers", action="store_true", help="only pytest-noplusone")
    parser.add_argument("--jobs", type=int, default=1, help="callgrind runs at a time")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (callgrind) on PATH")
    backends = [name for name in args.backends.split(",") if name]
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"--backends: unknown {', '.join(sorted(unknown))}; use {BACKENDS}")
    notes = []
    if "asyncpg" in backends:
        if not args.pg_url:
            backends.remove("asyncpg")
            notes.append("asyncpg left out: no --pg-url or NOPLUSONE_PG_URL")
        elif not reachable(args.pg_url):
            backends.remove("asyncpg")
            notes.append(f"asyncpg left out: {urlsplit(args.pg_url).netloc} does not answer")
    venvs = [prepare(python, args.venvs) for python in args.python or [sys.executable]]
    urls = {"sync": "", "aiosqlite": "sqlite+aiosqlite://", "asyncpg": args.pg_url}
    with tempfile.TemporaryDirectory(prefix="noplusone-bench-") as tmp:
        runs: list[Run] = []
        for backend in backends:
            directory = generate(Path(tmp), backend, args.tests, args.statements)
            for venv in venvs:
                chosen = [p for p in venv.plugins if p == "noplusone" or not args.no_peers]
                runs += [Run(venv, backend, directory, urls[backend], v) for v in ["none", *chosen]]
        for run in runs:
            warm(run)
        print(
            f"CPU instructions of whole pytest runs (callgrind), {args.tests} tests x "
            f"{args.statements} statements; each plugin alone over no plugin",
            flush=True,
        )
        with concurrent.futures.ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            counts = dict(zip(runs, pool.map(instructions, runs), strict=True))
    shown = [name for name in PLUGINS if any(run.variant == name for run in counts)]
    header = f"{'python':<8} {'backend':<30} {'no plugin':>15}" + "".join(
        f" {name:>10}" for name in shown
    )
    print(header)
    print("-" * len(header))
    for venv in venvs:
        for backend in backends:
            cells = {run.variant: n for run, n in counts.items() if run[:2] == (venv, backend)}
            base = cells["none"]
            row = f"{venv.version:<8} {LABELS[backend]:<30} {base:>15,}"
            for name in shown:
                row += f" {cells[name] / base:>10.3f}" if name in cells else f" {'-':>10}"
            print(row)
    for venv in venvs:
        print(f"Python {venv.version}: {venv.versions} ({venv.python})")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
