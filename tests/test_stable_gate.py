"""A gate that never flakes: schema work, xdist worker names, pytest-benchmark and -q."""

from __future__ import annotations

import json
import random
import textwrap

import pytest
from conftest import Project

from pytest_noplusone import counts
from pytest_noplusone.schema import is_schema

sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
OFF = "--noplusone-nplusone=off"

# --- schema work ------------------------------------------------------------------------------

#: Two tests that run create_all on one MetaData: whichever runs first creates the table.
SHARED_HEAD = """
import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from conftest import make_engine

shared = MetaData()
notes = Table("notes", shared, Column("id", Integer, primary_key=True), Column("name", String(50)))


@pytest.fixture(scope="module", autouse=True)
def no_notes():
    async def drop():
        engine = make_engine()
        async with engine.begin() as conn:
            await conn.run_sync(shared.drop_all)
        await engine.dispose()

    asyncio.run(drop())


async def work(selects=1):
    engine = make_engine()
    async with engine.begin() as conn:
        await conn.run_sync(shared.create_all)
        await conn.execute(insert(notes).values(name="x"))
        for _ in range(selects):
            await conn.execute(select(notes.c.id))
    await engine.dispose()
"""

FIRST = """

async def test_a():
    await work()
"""

SECOND = """

async def test_b():
    await work({selects})
"""

#: The has-table checks and the CREATE TABLE of the test that runs first, then of the other.
SCHEMA = {"sqlite": (3, 1), "postgresql": (2, 1)}
NOTES = "select notes.id from notes"


def write_shared(project: Project, *, b_first: bool, selects: int = 1) -> None:
    tests = [FIRST, SECOND.format(selects=selects)]
    project.write_test(SHARED_HEAD + "".join(reversed(tests) if b_first else tests))


def test_schema_work_is_counted_and_reported_but_not_compared(project: Project) -> None:
    first, then = SCHEMA[project.db.name]
    path = project.pytester.path / "b.json"
    write_shared(project, b_first=False)
    args = [OFF, "--noplusone-baseline=b.json"]
    result = project.run(*args, "--noplusone-update-baseline", "--noplusone-compare-schema")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["noplusone: * baseline=b.json update-baseline compare-schema"])
    recorded = counts.load_counts(path)
    assert recorded["test_scenario.py::test_a"].queries == first + 2
    assert recorded["test_scenario.py::test_b"].queries == then + 2
    # The other order: test_b now creates the table.
    write_shared(project, b_first=True)
    result = project.run(*args, "--noplusone-compare-schema")
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"Expected at most {then + 2} queries (the count in the baseline b.json) but "
            f"{first + 2} were run.",
            "baseline b.json: 1 regression, 1 improvement, 0 new",
        ]
    )
    # By default the same runs compare clean: only the statements of the test's own code.
    result = project.run(*args, "--noplusone-report=r.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "baseline b.json: 0 regressions, 0 improvements, 0 new",
            "schema work (DDL, PRAGMA, catalog reads) not compared with the baseline: "
            f"{first + then} statements in 2 tests",
        ]
    )
    report = json.loads((project.pytester.path / "r.json").read_text())
    assert report["totals"]["schema_queries"] == first + then
    tests = report["tests"]
    assert tests["test_scenario.py::test_b"]["schema_queries"] == first
    assert tests["test_scenario.py::test_b"]["queries"] == first + 2
    assert tests["test_scenario.py::test_a"]["schema_queries"] == then
    # An update records what is compared: no schema statement in the baseline.
    result = project.run(*args, "--noplusone-update-baseline")
    result.stdout.fnmatch_lines(["baseline b.json updated: 0 regressions, 0 improvements, 0 new"])
    entries = counts.load_counts(path)
    assert {nodeid: entry.queries for nodeid, entry in entries.items()} == {
        "test_scenario.py::test_a": 2,
        "test_scenario.py::test_b": 2,
    }
    assert not [fp for entry in entries.values() for fp in entry.fingerprints if is_schema(fp)]
    write_shared(project, b_first=False)
    result = project.run(*args, "--noplusone-update-baseline")
    result.stdout.fnmatch_lines(
        ["baseline b.json unchanged: 0 regressions, 0 improvements, 0 new"]
    )
    # A real regression says what it left out.
    write_shared(project, b_first=True, selects=3)
    result = project.run(*args)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*_ test_b _*",
            "Expected at most 2 queries (the count in the baseline b.json) but 4 were run, "
            f"besides {first} schema statements (not compared).",
            "Statements that ran more often than in the baseline:",
            f"  {NOTES}: 1 -> 3",
            "Where they ran:",
            "  1. 3x SELECT notes.id *FROM notes",
            "       from test_scenario.py:* in work",
            "       called from test_scenario.py:* in test_b",
            "fix: *",
        ]
    )


@sqlite_only
def test_compare_schema_from_the_ini(project: Project) -> None:
    project.pytester.makefile(
        ".ini",
        pytest=textwrap.dedent(
            """
            [pytest]
            asyncio_mode = auto
            asyncio_default_fixture_loop_scope = function
            addopts = --strict-markers -p no:cacheprovider -p no:randomly
            noplusone_baseline = b.json
            noplusone_compare_schema = true
            """
        ),
    )
    project.write_test("def test_nothing():\n    pass\n")
    result = project.run("--noplusone-update-baseline")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["noplusone: * update-baseline compare-schema"])


# --- proof of stability under xdist ------------------------------------------------------

#: Each xdist worker gets its own database (a SQLite file, a PostgreSQL schema), emptied at the
#: start of every run: the schema work a test does depends on what its worker ran before.
PER_WORKER = """
import asyncio
import os

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
URL = os.environ["NOPLUSONE_TEST_URL"]
if WORKER and URL.startswith("sqlite"):
    os.environ["NOPLUSONE_TEST_URL"] = URL.replace(".sqlite3", f"-{WORKER}.sqlite3")
elif WORKER:
    os.environ["NOPLUSONE_TEST_SCHEMA"] += "_" + WORKER


@pytest.fixture(scope="session", autouse=True)
def fresh_database():
    url = os.environ["NOPLUSONE_TEST_URL"]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        if os.path.exists(path):
            os.remove(path)
        yield
        return
    import asyncpg

    schema = os.environ["NOPLUSONE_TEST_SCHEMA"]

    async def execute(*statements):
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}"))
    yield
    if WORKER:
        asyncio.run(execute(f"DROP SCHEMA {schema} CASCADE"))
"""

#: Tests on one shared MetaData: tables with fixed names and tables named after the worker
#: (``uuid_author_gw1``; ``uuid_author_master`` without workers), created, reflected and
#: dropped in the test bodies.
STABILITY_HEAD = """
import os

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, inspect, select
from conftest import make_engine

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "master")
shared = MetaData()


def table(name):
    return Table(name, shared, Column("id", Integer, primary_key=True), Column("name", String(50)))


notes, books, tags = table("notes"), table("books"), table("tags")
authors = table(f"uuid_author_{WORKER}")
shelves = table(f"uuid_shelf_{WORKER}")


@pytest.fixture
async def engine():
    engine = make_engine()
    yield engine
    await engine.dispose()


async def work(engine, tables, drop=()):
    async with engine.begin() as conn:
        if drop:
            await conn.run_sync(shared.drop_all, tables=list(drop))
        await conn.run_sync(shared.create_all, tables=list(tables))
        for each in tables:
            await conn.execute(insert(each).values(name="x"))
        await conn.execute(select(func.count()).select_from(tables[0]))
"""

STABILITY_TESTS = {
    "notes": "await work(engine, [notes])",
    "books": "await work(engine, [books])",
    "notes_and_tags": "await work(engine, [notes, tags])",
    "everything": "await work(engine, shared.sorted_tables)",
    "drop_tags": "await work(engine, [tags], drop=[tags])",
    "authors": "await work(engine, [authors])",
    "authors_and_shelves": "await work(engine, [authors, shelves, books])",
    "drop_authors": "await work(engine, [authors], drop=[authors])",
    "reflect": (
        "async with engine.connect() as conn:\n"
        "        await conn.run_sync(lambda sync: inspect(sync).has_table(authors.name))\n"
        "        await conn.run_sync(lambda sync: inspect(sync).get_table_names())\n"
        "    await work(engine, [authors, notes])"
    ),
}


def write_stability(project: Project, seed: int) -> None:
    """The tests in two modules, each in a shuffled order (the node ids stay the same)."""
    names = sorted(STABILITY_TESTS)
    modules: dict[str, list[str]] = {"test_left": [], "test_right": []}
    for index, name in enumerate(names):
        body = STABILITY_TESTS[name]
        modules["test_left" if index % 2 else "test_right"].append(
            f"\n\nasync def test_{name}(engine):\n    {body}\n"
        )
    for tests in modules.values():
        random.Random(seed).shuffle(tests)
    for module, tests in modules.items():
        project.pytester.makepyfile(**{module: STABILITY_HEAD + "".join(tests)})


def test_baseline_under_xdist_is_stable_across_orders_and_workers(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this suite's own worker
    project.pytester.makepyfile(per_worker=PER_WORKER)
    root = project.pytester.path
    common = [OFF, "-p", "per_worker", "--noplusone-baseline=b.json"]
    write_stability(project, seed=0)
    result = project.run(*common, "-n", "2", "--noplusone-update-baseline", "--noplusone-report=r0.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["baseline b.json updated: 0 regressions, 0 improvements, 9 new"])
    baseline = json.loads((root / "b.json").read_text())["tests"]
    fingerprints = {fp for entry in baseline.values() for fp in entry["fingerprints"]}
    assert not [fp for fp in fingerprints if is_schema(fp)]
    assert "select count (*) as count_1 from uuid_author_{worker}" in fingerprints
    assert not [fp for fp in fingerprints if "gw0" in fp or "gw1" in fp or "master" in fp]
    schema_counts = []
    for seed in (1, 2, 3):
        write_stability(project, seed)
        result = project.run(*common, "-n", "2", f"--noplusone-report=r{seed}.json")
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(["baseline b.json: 0 regressions, 0 improvements, 0 new"])
        report = json.loads((root / f"r{seed}.json").read_text())
        schema_counts.append({n: t["schema_queries"] for n, t in report["tests"].items()})
        assert {n: t["queries"] - t["schema_queries"] for n, t in report["tests"].items()} == {
            nodeid: entry["queries"] for nodeid, entry in baseline.items()
        }
    assert all(sum(run.values()) > 0 for run in schema_counts)  # schema work ran and was counted
    # The same fingerprints without workers (the tables are named uuid_author_master).
    result = project.run(*common, "-n", "0")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["baseline b.json: 0 regressions, 0 improvements, 0 new"])


# --- pytest-benchmark ----------------------------------------------------------------------

BENCHMARK = """
import os

from sqlalchemy import create_engine, select


def test_bench(benchmark):
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        benchmark.pedantic(lambda: conn.execute(select(1)), rounds=int(os.environ["ROUNDS"]))


def test_plain():
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(select(1))
"""


@sqlite_only
def test_benchmark_tests_are_left_out_of_the_baseline(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytest_benchmark")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # it disables pytest-benchmark
    project.write_test(BENCHMARK)
    path = project.pytester.path / "b.json"
    # An entry from before the plugin knew: ignored when comparing, dropped by an update.
    path.write_text(
        counts.dumps(
            {"queries": 1, "tests": 1},
            {"test_scenario.py::test_bench": {"queries": 1, "fingerprints": {"select ?": 1}}},
        )
    )
    monkeypatch.setenv("ROUNDS", "3")
    args = [OFF, "--noplusone-baseline=b.json", "--noplusone-report=r.json"]
    result = project.run(*args)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "baseline b.json: 0 regressions, 0 improvements, 1 new",
            "left out of the baseline: 1 test using the benchmark fixture (pytest-benchmark "
            "runs a varying number of rounds)",
        ]
    )
    report = json.loads((project.pytester.path / "r.json").read_text())["tests"]
    assert report["test_scenario.py::test_bench"]["benchmark"] is True
    assert report["test_scenario.py::test_bench"]["queries"] == 3  # counted and reported
    assert "benchmark" not in report["test_scenario.py::test_plain"]
    result = project.run(*args, "--noplusone-update-baseline")
    assert result.ret == 0
    assert set(counts.load_counts(path)) == {"test_scenario.py::test_plain"}
    monkeypatch.setenv("ROUNDS", "7")
    result = project.run(*args)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["baseline b.json: 0 regressions, 0 improvements, 0 new"])


# --- always visible ------------------------------------------------------------------------

QUIET_BEFORE = """
from sqlalchemy import select
from models import Post, User


async def test_grows(session):
    await session.scalars(select(User))


async def test_shrinks(session):
    await session.scalars(select(User))
    await session.scalars(select(Post))
"""

QUIET_AFTER = """
from sqlalchemy import select
from models import Post, User


async def test_grows(session):
    await session.scalars(select(User))
    await session.scalars(select(Post))


async def test_shrinks(session):
    await session.scalars(select(User))
"""


@sqlite_only
def test_quiet_runs_still_show_the_gate(project: Project) -> None:
    project.write_test(QUIET_BEFORE)
    args = [OFF, "--noplusone-baseline=b.json"]
    result = project.run(*args, "--noplusone-update-baseline", "-q")
    assert result.ret == 0
    assert result.stdout.lines[-2:-1] == [
        "noplusone: baseline b.json updated: 0 regressions, 0 improvements, 2 new"
    ]
    result = project.run(*args, "--noplusone-update-baseline", "-qq")
    assert "noplusone: baseline b.json unchanged: 0 regressions, 0 improvements, 0 new" in (
        result.stdout.lines
    )
    project.write_test(QUIET_AFTER)
    outcomes = {}
    for verbosity in ("-v", "", "-q", "-qq"):
        result = project.run(*args, *([verbosity] if verbosity else []))
        outcomes[verbosity] = result.ret
        result.stdout.fnmatch_lines(
            [
                "*baseline b.json: 1 regression, 1 improvement, 0 new",
                "  regression   test_scenario.py::test_grows: 1 -> 2 queries",
                "  improvement  test_scenario.py::test_shrinks: 2 -> 1 query",
            ],
            consecutive=True,
        )
        quiet = verbosity in ("-q", "-qq")
        assert ("noplusone: baseline b.json: 1 regression" in result.stdout.str()) == quiet
        assert ("top 2 tests by queries:" in result.stdout.str()) == (not quiet)
    assert outcomes == {"-v": 1, "": 1, "-q": 1, "-qq": 1}
