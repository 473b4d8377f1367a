"""Where the plugin's instructions go: callgrind's inclusive cost of each Python function.

Runs one generated test of ORM statements on sync pysqlite ``:memory:``
(``session.execute(select(User).where(User.id == i)).scalar_one()``, one mapped class) under
``valgrind --tool=callgrind``, with the plugin and with ``-p no:noplusone``, at two sizes
(``--statements``, default 1,000, and 1): the small run is the fixed cost (imports,
enforcement, hooks), the difference between the two sizes over the difference in statements is
the cost per statement.

Python functions are visible to callgrind through CPython's perf trampolines (``-X perf``,
CPython 3.12 and later): each code object gets a small stub of machine code through which its
frames are evaluated, and ``/tmp/perf-PID.map`` names the stubs, so ``callgrind_annotate
--inclusive=yes`` gives every Python function's inclusive count. The trampolines cost
instructions of their own and turn off the inlining of Python-to-Python calls, so the counts
under ``-X perf`` are higher than in a plain run; the plain run's totals (``-X perf`` off) are
printed too, and the per-function figures are best read as shares of them.

Printed: the totals, the plugin's own functions (``pytest_noplusone/``), and the Python
functions whose inclusive cost grows most with the plugin on (its listeners make SQLAlchemy do
work too: event dispatch, for instance), each per statement and for the small run. Usage, with
an interpreter of 3.12 or later that has the plugin installed (overhead.py's virtualenvs do):

    ~/.cache/pytest-noplusone/bench/python3.13.X/bin/python benchmarks/bench_profile.py \\
        [--statements 1000] [--top 25] [--jobs 1]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CONFTEST = """
import pytest
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


@pytest.fixture(scope="session")
def engine():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(User(id=i, name=f"u{{i}}") for i in range({rows}))
        session.commit()
    return engine


@pytest.fixture
def session(engine):
    with Session(engine) as session:
        yield session
"""

TEST = """
import pytest
from sqlalchemy import select
from conftest import User


@pytest.mark.allow_nplusone
def test_orm(session):
    for i in range({statements}):
        session.execute(select(User).where(User.id == i)).scalar_one()
"""

INI = """
[pytest]
markers =
    allow_nplusone: (registered here too so that -p no:noplusone runs cleanly)
"""

_LINE = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(\S.*?)(?: \[.*\])?$")


def generate(root: Path, statements: int, rows: int) -> Path:
    directory = root / f"s{statements}"
    directory.mkdir()
    (directory / "pytest.ini").write_text(INI)
    (directory / "conftest.py").write_text(CONFTEST.format(rows=rows))
    (directory / "test_orm.py").write_text(textwrap.dedent(TEST.format(statements=statements)))
    return directory


def _name(symbol: str, maps: dict[int, str]) -> str | None:
    """``module-path:qualname`` for a Python function's trampoline, None for other symbols."""
    if not symbol.startswith("???:0x") or "'" in symbol:
        return None  # not a trampoline, or a recursive call's (counted in the outer call's)
    name = maps.get(int(symbol[4:], 16))
    if name is None or not name.startswith("py::"):
        return None
    qualname, _, filename = name[4:].partition(":")
    for marker in ("site-packages/", "lib/python3."):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:  # an editable install, or the generated test: its directory and file
        filename = "/".join(Path(filename).parts[-2:])
    return f"{filename}:{qualname}"


def profile(directory: Path, options: list[str], perf: bool) -> tuple[int, dict[str, int]]:
    """Total instructions of one pytest run, and each Python function's inclusive count."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    python = [sys.executable, *(["-X", "perf"] if perf else [])]
    command = [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *options]
    subprocess.run(command, cwd=directory, env=env, capture_output=True, check=True)  # warm
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]
        result = subprocess.run(
            [*valgrind, *command], cwd=directory, env=env, capture_output=True, text=True
        )
        found = re.search(r"==(\d+)== Collected : (\d+)", result.stderr)
        if result.returncode != 0 or found is None:
            output = result.stdout[-2000:] + result.stderr[-2000:]
            raise SystemExit(f"callgrind run failed\n{output}")
        pid, total = found.group(1), int(found.group(2))
        if not perf:
            return total, {}
        maps: dict[int, str] = {}
        perf_map = Path(f"/tmp/perf-{pid}.map")
        for line in perf_map.read_text().splitlines():
            start, _, name = line.split(" ", 2)
            maps[int(start, 16)] = name
        perf_map.unlink()
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", f"{out}.{pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    costs: collections.Counter[str] = collections.Counter()
    for line in annotated.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        function = _name(match.group(2), maps)
        if function is not None:
            costs[function] += int(match.group(1).replace(",", ""))
    return total, dict(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--jobs", type=int, default=1, help="callgrind runs at a time")
    args = parser.parse_args()
    if sys.version_info < (3, 12) or not hasattr(sys, "activate_stack_trampoline"):
        parser.error("needs CPython 3.12 or later built with perf trampolines (-X perf)")
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            parser.error(f"needs {tool} on PATH")
    small, large = 1, args.statements
    per = large - small
    with tempfile.TemporaryDirectory(prefix="noplusone-profile-") as tmp:
        dirs = {n: generate(Path(tmp), n, rows=large) for n in (small, large)}
        keys = [(n, on) for n in (small, large) for on in (True, False)]

        def one(key: tuple[int, bool], perf: bool) -> tuple[int, dict[str, int]]:
            n, on = key
            return profile(dirs[n], [] if on else ["-p", "no:noplusone"], perf=perf)

        # Counts do not depend on how many run at once.
        with concurrent.futures.ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            plain = dict(zip(keys, (r[0] for r in pool.map(one, keys, [False] * 4)), strict=True))
            perfd = dict(zip(keys, pool.map(one, keys, [True] * 4), strict=True))
    print(f"one test of N ORM statements, sync pysqlite :memory:, Python {sys.version.split()[0]}")
    for label, table in (("plain", plain), ("-X perf", {k: v[0] for k, v in perfd.items()})):
        fixed = table[small, True] - table[small, False]
        grown = (table[large, True] - table[large, False] - fixed) / per
        print(
            f"{label:>8}: N={large}: {table[large, False]:,} without, {table[large, True]:,} "
            f"with the plugin; N={small}: {table[small, False]:,} / {table[small, True]:,}; "
            f"the plugin's fixed cost {fixed:,}, per statement {grown:,.0f}"
        )

    def row(name: str, on: bool) -> tuple[float, int]:
        big = perfd[large, on][1].get(name, 0)
        little = perfd[small, on][1].get(name, 0)
        return (big - little) / per, little

    names = set(perfd[large, True][1]) | set(perfd[small, True][1])
    own = sorted(
        (name for name in names if name.startswith("pytest_noplusone/")),
        key=lambda name: -row(name, True)[0],
    )
    print("\nthe plugin's functions (inclusive, -X perf): per statement, and in the N=1 run")
    for name in own[: args.top]:
        each, little = row(name, True)
        print(f"  {each:>10,.0f}  {little:>14,}  {name}")
    grown_most = sorted(
        names | set(perfd[large, False][1]),
        key=lambda name: -(row(name, True)[0] - row(name, False)[0]),
    )
    print("\nfunctions whose inclusive cost per statement grows most with the plugin on:")
    print("  on - off    with the plugin   without")
    for name in grown_most[: args.top]:
        on_each, off_each = row(name, True)[0], row(name, False)[0]
        print(f"  {on_each - off_each:>10,.0f}  {on_each:>12,.0f}  {off_each:>10,.0f}  {name}")
    fixed_most = sorted(
        names | set(perfd[small, False][1]),
        key=lambda name: -(row(name, True)[1] - row(name, False)[1]),
    )
    print(f"\nfunctions whose inclusive cost in the N={small} run grows most with the plugin on:")
    for name in fixed_most[: args.top]:
        delta = row(name, True)[1] - row(name, False)[1]
        print(f"  {delta:>14,}  {name}")


if __name__ == "__main__":
    main()
