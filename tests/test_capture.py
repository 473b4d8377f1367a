"""The counting policy: what one query is, what is left out, and where it is attributed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import Project
from sqlalchemy import create_engine, text

from pytest_noplusone import capture_queries

POLICY_TESTS = """
import asyncio
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

    with capture_queries() as log:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    engine.dispose()
    assert log.count == len(log.queries) == 2 * rounds * threads
    per_shape = {stats.example.sql: stats.count for stats in log.shapes.values()}
    assert per_shape == {"SELECT ?": rounds * threads, "SELECT 2": rounds * threads}
