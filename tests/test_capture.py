"""The counting policy: what one query is, what is left out, and where it is attributed."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from conftest import Project
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from pytest_noplusone import capture, capture_queries, detection, frames

POLICY_TESTS = """
import asyncio
import json
import threading

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import make_engine
from models import Post, Tag, User
from pytest_noplusone import capture_queries


async def test_fresh_engine_runs_one_query(noplusone_queries):
    engine = make_engine()  # first-connect initialisation must not count
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    await engine.dispose()
    assert noplusone_queries.count == 1, [q.sql for q in noplusone_queries]


async def test_transaction_control_is_not_counted(sessionmaker, noplusone_queries):
    async with sessionmaker() as session, session.begin():
        async with session.begin_nested():
            await session.execute(select(User.id))
        savepoint = await session.begin_nested()
        await session.execute(select(Post.id))
        await savepoint.rollback()
    assert [q.sql.split()[0] for q in noplusone_queries] == ["SELECT", "SELECT"]


async def test_flush_of_ten_rows_with_keys_is_one_executemany(session, noplusone_queries):
    session.add_all([Tag(id=100 + i, name=f"tag{i}") for i in range(10)])
    await session.flush()
    assert noplusone_queries.count == 1
    assert noplusone_queries.queries[0].sql.startswith("INSERT INTO tags")
    assert noplusone_queries.queries[0].executemany is True


async def test_each_insertmanyvalues_batch_counts_once(noplusone_queries):
    engine = make_engine(insertmanyvalues_page_size=4)
    async with engine.begin() as conn:
        statement = insert(Tag).returning(Tag.id)
        result = await conn.execute(statement, [{"name": f"tag{i}"} for i in range(10)])
        assert len(result.all()) == 10
    await engine.dispose()
    assert noplusone_queries.count == 3, [q.sql for q in noplusone_queries]


async def test_executemany_counts_once(session, noplusone_queries):
    await session.execute(insert(Tag), [{"name": f"tag{i}"} for i in range(10)])
    await session.execute(
        text("UPDATE tags SET name = :name WHERE id = :id"),
        [{"name": "renamed", "id": i} for i in range(1, 4)],
    )
    executemany = [q.executemany for q in noplusone_queries]
    assert noplusone_queries.count == 2, [q.sql for q in noplusone_queries]
    assert executemany[1] is True


@pytest.mark.allow_nplusone  # the repeats are how this test shows every thread and task counts
async def test_queries_of_other_threads_and_tasks_count(tmp_path, sessionmaker, noplusone_queries):
    sync_engine = create_engine(f"sqlite:///{tmp_path}/side.sqlite3")

    def in_a_thread():
        with sync_engine.connect() as conn:
            conn.execute(text("SELECT 42"))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    await asyncio.to_thread(in_a_thread)

    async def one(user_id):
        async with sessionmaker() as session:
            return await session.get(User, user_id)

    await asyncio.gather(one(1), one(2), one(3))
    sync_engine.dispose()
    assert noplusone_queries.count == 5
    locations = {str(q.location).split(" in ")[1] for q in noplusone_queries}
    assert locations == {"in_a_thread", "one"}


async def test_captured_query_fields(session):
    async with capture_queries() as log:
        await session.execute(select(User).where(User.name == "user1"))  # the select
    (query,) = log
    assert len(log) == log.count == 1
    assert query.sql.startswith("SELECT users.id, users.name")
    assert "user1" in repr(query.parameters)
    assert str(query.location) == "test_scenario.py:{select_line} in test_captured_query_fields"
    assert query.location.lineno == {select_line}
    assert query.executemany is False
    assert query.engine.split("://")[0] in ("sqlite+aiosqlite", "postgresql+asyncpg")


async def test_engine_filter(engine, session, tmp_path):
    other = create_engine(f"sqlite:///{tmp_path}/other.sqlite3")
    async with capture_queries(engine=engine) as mine:
        with capture_queries(engine=other) as theirs:
            await session.execute(select(User.id))
            with other.connect() as conn:
                conn.execute(text("SELECT 1"))
    other.dispose()
    assert (mine.count, theirs.count) == (1, 1)
    assert theirs.queries[0].sql == "SELECT 1"


@pytest.fixture
async def busy_fixture(session):
    await session.execute(select(User.id))
    yield
    await session.execute(select(User.id))


@pytest.mark.num_queries(1)
async def test_fixture_setup_and_teardown_do_not_count(busy_fixture, session, noplusone_queries):
    await session.execute(select(Post.id))
"""


def test_counting_policy(project: Project) -> None:
    project.write_test(POLICY_TESTS)
    select_line = project.line_of("# the select")
    project.write_test(POLICY_TESTS.replace("{select_line}", str(select_line)))
    result = project.run("-v")
    result.assert_outcomes(passed=9)


IGNORE_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider
noplusone_ignore =
    ^SELECT pg_
    (?i)from\\s+tags\\b
noplusone_show_params = false
"""


def test_ignore_patterns_and_hidden_params(project: Project) -> None:
    project.pytester.makefile(".ini", pytest=IGNORE_INI)
    project.write_test(
        """
        import pytest
        from sqlalchemy import select, text
        from models import Tag, User


        @pytest.mark.max_queries(0)
        async def test_ignored(session):
            await session.execute(select(Tag))
            await session.execute(text("SELECT pg_backend_pid()" if session.bind.dialect.name == "postgresql" else "SELECT 1 FROM tags"))


        @pytest.mark.max_queries(0)
        async def test_hidden_params(session):
            await session.execute(select(User).where(User.name == "secret-value"))
        """
    )
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["Expected at most 0 queries but 1 was run."])
    result.stdout.no_fnmatch_line("*secret-value*")
    result.stdout.no_fnmatch_line("*parameters:*")


def test_bad_ignore_pattern_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnoplusone_ignore = (unclosed\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*'(unclosed' in noplusone_ignore is not a valid regular expression: *"]
    )
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_engine_url_hides_the_password(pytester: pytest.Pytester, tmp_path: object) -> None:
    pytester.makepyfile(
        """
        from sqlalchemy import create_engine, text
        from pytest_noplusone import capture_queries


        def test_url(tmp_path):
            engine = create_engine(f"sqlite:///{tmp_path}/x.sqlite3")
            engine.url = engine.url.set(username="me", password="hunter2")
            with capture_queries() as log, engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            assert "hunter2" not in log.queries[0].engine
            assert "***" in log.queries[0].engine
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


@pytest.mark.allow_nplusone  # the outer test window sees the same loop
def test_threads_racing_are_counted_exactly(tmp_path: Path) -> None:
    """The listener records without a lock: every statement of racing threads still counts,
    in the total, per shape and per call site, across many fold batches."""
    engine = create_engine(f"sqlite:///{tmp_path}/race.sqlite3")
    rounds, threads = 700, 4

    def work() -> None:
        with engine.connect() as conn:
            for i in range(rounds):
                conn.execute(text("SELECT :i"), {"i": i})
                conn.execute(text("SELECT 2"))

    # A log that keeps no statement (as a test body's), read (folded) by this thread while the
    # workers record into it.
    counting = capture.QueryLog(keep=0)
    capture.open_window(counting)
    try:
        with capture_queries() as log:
            workers = [threading.Thread(target=work) for _ in range(threads)]
            for worker in workers:
                worker.start()
            reads = 0
            while any(worker.is_alive() for worker in workers):
                reads += counting.count >= 0
            for worker in workers:
                worker.join()
    finally:
        capture.close_window(counting)
    engine.dispose()
    assert log.count == len(log.queries) == 2 * rounds * threads
    assert counting.count == 2 * rounds * threads
    assert not counting.queries
    for each in (log, counting):
        per_shape = {stats.example.sql: stats.count for stats in each.shapes.values()}
        assert per_shape == {"SELECT ?": rounds * threads, "SELECT 2": rounds * threads}
    assert reads > 0


WALK_TESTS = """
import asyncio
import json
import os
import json
import threading

import pytest
from sqlalchemy import create_engine, select, text

from models import Post, User
from pytest_noplusone import capture_queries


def dump(name, log):
    sites = [[q.sql, [str(frame) for frame in q.call_site]] for q in log]
    with open(os.environ["WALK_DUMP"], "a") as out:
        out.write(json.dumps([name, sites]) + "\\n")


async def test_body(session, noplusone_queries):
    await session.execute(select(User.id))
    dump("body", noplusone_queries)


async def level5(session):
    return await session.execute(select(Post.id))


async def level4(session):
    return await level5(session)


async def level3(session):
    return await level4(session)


async def level2(session):
    return await level3(session)


async def test_deep_helpers_out_to_the_test(session, noplusone_queries):
    await level2(session)
    dump("deep", noplusone_queries)


@pytest.mark.allow_lazy("User.posts")
@pytest.mark.allow_nplusone
async def test_awaitable_attrs(session, noplusone_queries):
    users = (await session.scalars(select(User).order_by(User.id))).all()
    for user in users[:2]:
        await user.awaitable_attrs.posts
    dump("awaitable_attrs", noplusone_queries)


def sync_part(connection):
    connection.execute(text("SELECT 1"))


async def test_run_sync_walks_both_greenlets(engine, noplusone_queries):
    async with engine.connect() as connection:
        await connection.run_sync(sync_part)
    dump("run_sync", noplusone_queries)


async def rows(session):
    for table in (User, Post):
        yield (await session.execute(select(table.id))).all()


async def test_async_generator(session, noplusone_queries):
    async for _ in rows(session):
        pass
    dump("async_generator", noplusone_queries)


def numbers(connection):
    for i in range(2):
        yield connection.execute(text("SELECT :i"), {"i": i}).scalar()


@pytest.mark.allow_nplusone
def test_generator_resumed_from_two_lines(tmp_path, noplusone_queries):
    engine = create_engine(f"sqlite:///{tmp_path}/gen.sqlite3")
    with engine.connect() as connection:
        generator = numbers(connection)
        next(generator)
        next(generator)
    engine.dispose()
    dump("generator", noplusone_queries)


@pytest.mark.allow_nplusone
async def test_tasks_and_threads(session, sessionmaker, tmp_path, noplusone_queries):
    async def task(n):
        async with sessionmaker() as own:
            await own.execute(select(User.id).where(User.id == n))

    await asyncio.gather(task(1), task(2))
    engine = create_engine(f"sqlite:///{tmp_path}/thread.sqlite3")

    def in_a_thread():
        with engine.connect() as connection:
            connection.execute(text("SELECT 2"))

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    engine.dispose()
    with capture_queries() as inner:
        await session.execute(select(Post.title))
    dump("tasks_and_threads", noplusone_queries)
    dump("window", inner)
"""


def _walks(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    dump = tmp_path / "walks.jsonl"
    monkeypatch.setenv("WALK_DUMP", str(dump))
    project.run().assert_outcomes(passed=7)
    return [json.loads(line) for line in dump.read_text().splitlines()]


def test_the_walk_finds_the_call_sites(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement is attributed to the user's frames: in test bodies, deep helpers, lazy
    loads, run_sync callbacks, generators, tasks and threads."""
    project.write_test(WALK_TESTS)
    walks = _walks(project, tmp_path, monkeypatch)

    def at(marker: str, function: str) -> str:
        return f"test_scenario.py:{project.line_of(marker)} in {function}"

    sites = {name: [frames for _, frames in queries] for name, queries in walks}
    assert sites["body"] == [[at("await session.execute(select(User.id))", "test_body")]]
    assert sites["deep"] == [
        [
            at("return await session.execute(select(Post.id))", "level5"),
            at("return await level5(session)", "level4"),
            at("return await level4(session)", "level3"),
            at("return await level3(session)", "level2"),
            at("await level2(session)", "test_deep_helpers_out_to_the_test"),
        ]
    ]
    lazy = at("await user.awaitable_attrs.posts", "test_awaitable_attrs")
    assert sites["awaitable_attrs"][1:] == [[lazy], [lazy]]
    assert sites["run_sync"] == [
        [
            at('connection.execute(text("SELECT 1"))', "sync_part"),
            at("await connection.run_sync(sync_part)", "test_run_sync_walks_both_greenlets"),
        ]
    ]
    source = (project.pytester.path / "test_scenario.py").read_text().splitlines()
    generator_lines = [
        number for number, text in enumerate(source, start=1) if text.strip() == "next(generator)"
    ]
    assert sites["generator"] == [
        [
            at("yield connection.execute", "numbers"),
            f"test_scenario.py:{number} in test_generator_resumed_from_two_lines",
        ]
        for number in generator_lines
    ]
    task = at("await own.execute(select(User.id)", "task")
    gather = at("await asyncio.gather(task(1), task(2))", "test_tasks_and_threads")
    assert sites["tasks_and_threads"] == [
        [task, gather],
        [task, gather],
        [
            at('connection.execute(text("SELECT 2"))', "in_a_thread"),
            at("worker.start()", "test_tasks_and_threads"),
        ],
        [at("await session.execute(select(Post.title))", "test_tasks_and_threads")],
    ]
    assert sites["window"] == sites["tasks_and_threads"][-1:]
    assert (
        sites["async_generator"]
        == [
            [
                at("yield (await session.execute", "rows"),
                at("async for _ in rows", "test_async_generator"),
            ]
        ]
        * 2
    )



def _reference_fold(raws: list) -> dict:
    """The fold written plainly, statement by statement: what QueryLog must compute."""
    shapes: dict = {}
    for raw in raws:
        stats = shapes.setdefault(
            (raw[3], raw[5].site), {"count": 0, "parents": set(), "params": []}
        )
        stats["count"] += 1
        if raw[6] is not None and raw[6][0] == "lazy":
            if raw[6][2] is not None and len(stats["parents"]) < detection.MAX_DISTINCT:
                stats["parents"].add(raw[6][2])
        elif len(stats["params"]) < capture.MAX_SAMPLES and not raw[2]:
            stats["params"].append(detection.parameter_key(raw[0], raw[1]))
    return shapes


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),  # shape
            st.integers(0, 2),  # site
            st.integers(0, 3),  # parameter value
            st.booleans(),  # executemany
            st.integers(0, 80),  # parent
        ),
        min_size=1,
        max_size=40,
    ),
    repeat=st.integers(1, 30),  # up to 1,200 statements: several batches of 256
    reads=st.lists(st.integers(0, 1200), max_size=3),
)
def test_folding_in_batches_counts_like_one_statement_at_a_time(
    pattern: list, repeat: int, reads: list
) -> None:
    """Counts, sampled parameter sets and parents are the same whether the log folds every
    256 statements, when read in between, or once; and shapes stay in first-seen order.
    (A shape is one statement from one call site, so it is a lazy load, an eager batch or
    neither, never a mix.)"""
    nodes = [
        frames.Node(object(), frames.Site(((f"site{n}.py", n, "f"),), (False,), False), None)  # type: ignore[arg-type]
        for n in range(3)
    ]
    kinds = {"a": None, "b": "lazy", "c": "eager"}
    raws = []
    for index, (shape, site, value, many, parent) in enumerate(pattern * repeat):
        value, parent = value + index % 2, parent + index % 70
        sql = f"SELECT {shape} WHERE x = ?"
        kind = kinds[shape]
        load = None if kind is None else (kind, "A.b", parent if kind == "lazy" else None)
        raws.append((sql, (value,), many and kind is None, sql, None, nodes[site], load, None))
    log = capture.QueryLog(keep=0)
    for index, raw in enumerate(raws):
        log._pending.append(raw)
        if len(log._pending) >= capture._BATCH:
            log._fold()
        if index in reads:
            log._fold()
    expected = _reference_fold(raws)
    assert list(log.shapes) == list(expected)
    assert log.count == len(raws)
    for key, stats in log.shapes.items():
        assert stats.count == expected[key]["count"]
        assert stats.parent_keys == expected[key]["parents"]
        assert stats.parameter_sets == set(expected[key]["params"])
        assert [values for values, _, _ in stats.samples] == expected[key]["params"]


class _BrokenContext:
    """An execution context whose first attribute the listener reads raises."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    @property
    def root_connection(self) -> object:
        raise self.error


@pytest.mark.parametrize("recorder", ["_capture", "_do_executemany"])
def test_the_listener_never_raises_into_the_users_statement(recorder: str) -> None:
    """An Exception inside the listener is kept, not raised into the statement, and records
    nothing; what is not an Exception (KeyboardInterrupt) still propagates."""
    listener = getattr(capture, recorder)
    log = capture.QueryLog()
    errors = capture.listener_errors()
    before = len(errors)
    capture.open_window(log)
    try:
        kept = listener(None, "SELECT 1", {}, _BrokenContext(RuntimeError("broken context")))
        with pytest.raises(KeyboardInterrupt):
            listener(None, "SELECT 1", {}, _BrokenContext(KeyboardInterrupt()))
    finally:
        capture.close_window(log)
        new = errors[before:]
        del errors[before:]
    assert kept is None
    assert [repr(error) for error in new] == ["RuntimeError('broken context')"]
    assert new[0].__traceback__ is not None
    assert log.count == 0


@pytest.mark.allow_nplusone  # one line, many statements
def test_a_log_that_keeps_nothing_counts_settled_shapes_exactly(tmp_path: Path) -> None:
    """A test body's log keeps no statements; raising the log's limit later records
    statements again, and every count stays exact."""
    engine = create_engine(f"sqlite:///{tmp_path}/settle.sqlite3")
    log = capture.QueryLog(keep=0)
    capture.open_window(log)
    try:
        with engine.connect() as conn:
            for i in range(40):
                conn.execute(text("SELECT :i"), {"i": i})
            log._retain(3)
            for i in range(5):
                conn.execute(text("SELECT :i"), {"i": i})
    finally:
        capture.close_window(log)
    engine.dispose()
    assert log.count == 45
    assert [query.parameters for query in log.queries] == [(0,), (1,), (2,)]
    assert [stats.count for stats in log.shapes.values()] == [40, 5]  # two lines


@pytest.mark.allow_nplusone  # the same two lines run once per ignore setting
def test_changing_what_is_ignored_applies_to_the_next_statement(tmp_path: Path) -> None:
    """The listener remembers the last compiled statement's fingerprint; set_ignore (an
    in-process run with other ignore patterns) makes it look again."""
    engine = create_engine(f"sqlite:///{tmp_path}/ignore.sqlite3")
    statement = text("SELECT 41 + :i")
    counts, configured = [], capture._ignore
    try:
        with engine.connect() as conn:
            for patterns in ([], [re.compile(r"SELECT 41")], []):
                capture.set_ignore(patterns)
                with capture_queries() as log:
                    conn.execute(statement, {"i": 1})
                    conn.execute(statement, {"i": 2})
                counts.append(log.count)
    finally:
        capture.set_ignore(configured)
        engine.dispose()
    assert counts == [2, 0, 2]


DIALECT_CONFTEST = '''
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite


def runs_statements_itself(name, module=__name__):
    """A dialect class, created when called, that runs each statement itself (no super())."""

    def do_execute(self, cursor, statement, parameters, context=None):
        cursor.execute(statement, parameters)

    def do_executemany(self, cursor, statement, parameters, context=None):
        cursor.executemany(statement, parameters)

    def do_execute_no_params(self, cursor, statement, context=None):
        cursor.execute(statement)

    methods = {
        "do_execute": do_execute,
        "do_executemany": do_executemany,
        "do_execute_no_params": do_execute_no_params,
        "__module__": module,
    }
    return type(name, (SQLiteDialect_pysqlite,), methods)


DefinedFirst = runs_statements_itself("DefinedFirst")  # exists before the plugin starts


class Traced:
    """Another tool's wrapper, set before the plugin starts: a descriptor, not a function."""

    def __init__(self, function):
        self.function = function
        self.calls = 0

    def __get__(self, instance, owner):
        def bound(*args):
            self.calls += 1
            return self.function(instance, *args)

        return self if instance is None else bound


TRACED = Traced(SQLiteDialect_pysqlite.do_execute)


class WrappedByATool(SQLiteDialect_pysqlite):
    do_execute = TRACED
'''

DIALECT_TEST = '''
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.default import DefaultDialect

from conftest import TRACED, DefinedFirst, WrappedByATool, runs_statements_itself
from pytest_noplusone import capture_queries

# Created after the plugin started: this module is collected then.
DefinedLater = runs_statements_itself("DefinedLater", __name__)


class CallsSuper(SQLiteDialect_pysqlite):
    def do_execute(self, cursor, statement, parameters, context=None):
        super().do_execute(cursor, statement, parameters, context)

    def do_executemany(self, cursor, statement, parameters, context=None):
        super().do_executemany(cursor, statement, parameters, context)

    def do_execute_no_params(self, cursor, statement, context=None):
        super().do_execute_no_params(cursor, statement, context)


class CallsSuperTwice(CallsSuper):
    def do_execute(self, cursor, statement, parameters, context=None):
        super().do_execute(cursor, statement, parameters, context)


class StaticMethods(SQLiteDialect_pysqlite):
    @staticmethod
    def do_execute(cursor, statement, parameters, context=None):
        cursor.execute(statement, parameters)

    @classmethod
    def do_execute_no_params(cls, cursor, statement, context=None):
        assert cls is StaticMethods
        cursor.execute(statement)


DIALECTS = [
    SQLiteDialect_pysqlite,
    DefinedFirst,
    DefinedLater,
    CallsSuper,
    CallsSuperTwice,
    StaticMethods,
    WrappedByATool,
]


def engine_of(dialect):
    name = f"noplusone_{dialect.__name__.lower()}"
    registry.register(f"sqlite.{name}", dialect.__module__, dialect.__name__)
    engine = create_engine(f"sqlite+{name}://")
    assert type(engine.dialect) is dialect
    return engine


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_round_trip_counts_once(dialect):
    with engine_of(dialect).connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        traced = TRACED.calls
        with capture_queries() as log:
            conn.execute(text("INSERT INTO t (x) VALUES (:x)"), [{"x": 1}, {"x": 2}])
            assert conn.execute(text("SELECT x FROM t WHERE x = :x"), {"x": 2}).all() == [(2,)]
            bare = conn.execution_options(no_parameters=True)
            assert bare.exec_driver_sql("SELECT count(*) FROM t").all() == [(2,)]
    assert [(query.sql.split()[0], query.executemany) for query in log] == [
        ("INSERT", True),
        ("SELECT", False),
        ("SELECT", False),
    ]
    assert {query.location.function for query in log} == {"test_each_round_trip_counts_once"}
    if dialect is WrappedByATool:  # the tool's wrapper still runs
        assert TRACED.calls - traced == 1  # the SELECT with parameters


def test_a_wrapper_set_while_the_plugin_runs_still_counts(monkeypatch):
    """Another tool wraps DefaultDialect.do_execute while the plugin runs."""
    original = DefaultDialect.__dict__["do_execute"]

    def wrapper(self, *args):
        wrapper.calls += 1
        return original(self, *args)

    wrapper.calls = 0
    monkeypatch.setattr(DefaultDialect, "do_execute", wrapper)
    with engine_of(SQLiteDialect_pysqlite).connect() as conn, capture_queries() as log:
        conn.execute(text("SELECT :x"), {"x": 1})
    assert (log.count, wrapper.calls) == (1, 1)
'''


def test_every_dialect_method_counts_each_round_trip_once(pytester: pytest.Pytester) -> None:
    """Dialects that run statements themselves, created before or after the plugin started;
    overrides that call super() (once or twice); static and class methods; another tool's
    wrapper, set before the plugin started or while it runs: one record per round trip each."""
    pytester.makeconftest(DIALECT_CONFTEST)
    pytester.makepyfile(test_dialects=DIALECT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=8)
