"""N+1 detection: what is caught, what never is, modes, threshold and the allow marker."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
from conftest import Project
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from pytest_noplusone import Finding, Location, capture_queries
from pytest_noplusone.detection import LOOP, REPEAT, Allowance, check, find

LOOPS = """
import asyncio
import threading

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import selectinload

import app
from conftest import make_engine
from models import Comment, Post, User


@pytest.mark.parametrize("n", [2, 3, 10])
async def test_per_row_loop(session, n):
    posts = (await session.scalars(select(Post).order_by(Post.id))).all()
    for post in posts[:n]:
        await session.scalars(select(Comment).where(Comment.post_id == post.id))  # LOOP


async def test_awaitable_attrs_loop(session):
    for user in (await session.scalars(select(User))).all():
        await user.awaitable_attrs.posts  # ATTRS


async def test_session_get_loop(session):
    for post_id in (1, 2, 3):
        await session.get(Post, post_id)  # GET


async def test_per_row_loop_with_limit(session):
    for user in (await session.scalars(select(User))).all():
        await session.scalars(select(Post).where(Post.author_id == user.id).limit(1))  # LIMITED


async def test_same_parameters_repeated(session):
    for _ in range(3):
        await session.scalar(select(func.count()).select_from(User))  # REPEAT


async def test_gather_children_looped(sessionmaker):
    await app.titles_of_each(sessionmaker, (1, 2, 3))


def test_thread_looped():
    async def work():
        engine = make_engine()
        try:
            async with engine.connect() as conn:
                for user_id in (1, 2, 3):
                    await conn.execute(select(Post.id).where(Post.author_id == user_id))  # THREAD
        finally:
            await engine.dispose()

    thread = threading.Thread(target=asyncio.run, args=(work(),))
    thread.start()
    thread.join()


@pytest.mark.max_queries(2)
async def test_budget_and_finding(session):
    for post_id in (1, 2, 3):
        await session.get(Post, post_id)  # BOTH
"""

APP = """
import asyncio

from sqlalchemy import select

from models import Post


async def load_titles(sessionmaker, user_id):
    async with sessionmaker() as session:
        return (await session.scalars(select(Post.title).where(Post.author_id == user_id))).all()  # CHILD


async def titles_of_each(sessionmaker, user_ids):
    return await asyncio.gather(*(load_titles(sessionmaker, user_id) for user_id in user_ids))  # GATHER
"""

CLEAN = """
import asyncio
import threading

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import selectinload

from conftest import make_engine
from models import Comment, Post, User, post_tags


async def test_same_select_from_two_lines(session):
    await session.scalars(select(Post).where(Post.author_id == 1))
    await session.scalars(select(Post).where(Post.author_id == 2))


async def test_selectinload_over_1200_parents(session):
    await session.execute(insert(User), [{"name": f"bulk{i}"} for i in range(1200)])
    users = (await session.scalars(select(User).options(selectinload(User.posts)))).all()
    assert len(users) == 1205
    assert sum(len(user.posts) for user in users) == 10


async def test_offset_pagination(session):
    offset, seen = 0, 0
    while rows := (await session.scalars(select(Post).order_by(Post.id).limit(3).offset(offset))).all():
        offset += 3
        seen += len(rows)
    assert seen == 10


async def test_keyset_pagination(session):
    last, seen = 0, 0
    while rows := (
        await session.scalars(select(Post).where(Post.id > last).order_by(Post.id).limit(3))
    ).all():
        last = rows[-1].id
        seen += len(rows)
    assert seen == 10


async def test_writes_and_executemany_in_loops(session):
    for i in range(3):
        session.add(User(name=f"new{i}"))
        await session.flush()
        await session.execute(insert(User), [{"name": f"many{i}.{j}"} for j in range(3)])
        await session.execute(update(Post).where(Post.id == i + 1).values(title="t"))
    await session.commit()


async def load(sessionmaker, user_id):
    async with sessionmaker() as session:
        return (await session.scalars(select(Post).where(Post.author_id == user_id))).all()


async def load_other(sessionmaker, user_id):
    async with sessionmaker() as session:
        return (await session.scalars(select(Post).where(Post.author_id == user_id))).all()


async def test_gather_of_two_different_lines(sessionmaker):
    await asyncio.gather(load(sessionmaker, 1), load_other(sessionmaker, 2))


def test_one_query_in_another_thread_and_one_here(engine):
    async def work():
        other = make_engine()
        try:
            async with other.connect() as conn:
                await conn.execute(select(Post.id).where(Post.author_id == 1))
        finally:
            await other.dispose()

    thread = threading.Thread(target=asyncio.run, args=(work(),))
    thread.start()
    thread.join()
"""


def line_of(source: str, marker: str) -> int:
    """The 1-based line of ``marker`` in a scenario as written to disk."""
    lines = textwrap.dedent(source).strip("\n").splitlines()  # as pytester writes it
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


def test_loops_are_caught_with_their_line_sql_and_fix(project: Project) -> None:
    project.write_test(APP, name="app")
    project.write_test(LOOPS)
    result = project.run()
    result.assert_outcomes(failed=10)
    loop, attrs = line_of(LOOPS, "# LOOP"), line_of(LOOPS, "# ATTRS")
    get, limited = line_of(LOOPS, "# GET"), line_of(LOOPS, "# LIMITED")
    for n in (2, 3, 10):
        result.stdout.fnmatch_lines(
            [
                f"*test_per_row_loop?{n}?*",
                f"N+1 query: the same SELECT ran {n} times in one call of test_per_row_loop, "
                "with different values.",
                f"  from test_scenario.py:{loop} in test_per_row_loop",
                "  SQL: SELECT comments.id* FROM comments WHERE comments.post_id = *",
                "  fix: load all rows in one query, e.g. "
                "select(Comment).where(Comment.post_id.in_(ids))",
                "  or, if intended: @pytest.mark.allow_nplusone("
                "'select comments.id, * from comments where comments.post_id = *')",
            ]
        )
    result.stdout.fnmatch_lines(
        [
            "N+1 query: User.posts was lazily loaded 5 times in one call of "
            "test_awaitable_attrs_loop, for 5 different User objects.",
            f"  from test_scenario.py:{attrs} in test_awaitable_attrs_loop",
            "  SQL: SELECT posts.id* FROM posts WHERE * = posts.author_id*",  # 2.0 adds labels
            "  fix: eager-load it where the User objects are loaded: "
            ".options(selectinload(User.posts))",
            "  or, if intended: @pytest.mark.allow_nplusone('User.posts')",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "N+1 query: the same SELECT ran 3 times in one call of test_session_get_loop, "
            "with different values.",
            f"  from test_scenario.py:{get} in test_session_get_loop",
            "  SQL: SELECT posts.id* FROM posts WHERE posts.id = *",
            "  fix: load all rows in one query, e.g. select(Post).where(Post.id.in_(ids))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "N+1 query: the same SELECT ran 5 times in one call of "
            "test_per_row_loop_with_limit, with different values.",
            f"  from test_scenario.py:{limited} in test_per_row_loop_with_limit",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "Repeated query: the same SELECT ran 3 times in one call of "
            "test_same_parameters_repeated, with the same values.",
            f"  from test_scenario.py:{line_of(LOOPS, '# REPEAT')} in test_same_parameters_repeated",
            "  SQL: SELECT count(*) AS count_1 FROM users",
            "  fix: run it once and reuse the result",
        ]
    )
    # Queries in asyncio.gather children belong to the call that gathered them; in another
    # thread, to the code that started it.
    result.stdout.fnmatch_lines(
        [
            "N+1 query: the same SELECT ran 3 times in one call of titles_of_each, "
            "with different values.",
            f"  from app.py:{line_of(APP, '# CHILD')} in load_titles",
            f"  called from app.py:{line_of(APP, '# GATHER')} in titles_of_each",
            f"  called from test_scenario.py:{line_of(LOOPS, 'await app.titles_of_each')} "
            "in test_gather_children_looped",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "N+1 query: the same SELECT ran 3 times in one call of work, with different values.",
            f"  from test_scenario.py:{line_of(LOOPS, '# THREAD')} in work",
            f"  called from test_scenario.py:{line_of(LOOPS, 'thread.start()')} "
            "in test_thread_looped",
        ]
    )
    # A budget and a finding fail one test, in one message.
    result.stdout.fnmatch_lines(
        [
            "Expected at most 2 queries but 3 were run.",
            "*",
            "fix: *",
            "",
            "N+1 query: the same SELECT ran 3 times in one call of test_budget_and_finding, "
            "with different values.",
            f"  from test_scenario.py:{line_of(LOOPS, '# BOTH')} in test_budget_and_finding",
        ]
    )


def test_batches_pagination_writes_and_unrelated_repeats_are_never_findings(
    project: Project,
) -> None:
    project.write_test(CLEAN)
    result = project.run("-W", "error")
    result.assert_outcomes(passed=7)


THRESHOLD = """
import pytest
from sqlalchemy import select
from models import Post


@pytest.mark.parametrize("n", [2, 3])
async def test_loop(session, n):
    for post_id in range(1, n + 1):
        await session.get(Post, post_id)
"""


def test_threshold_from_ini(project: Project) -> None:
    project.write_test(THRESHOLD)
    result = project.run("-o", "noplusone_threshold=3")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*noplusone: * threshold=3*",
            "*test_loop?3?*",
            "N+1 query: the same SELECT ran 3 times in one call of test_loop, with different values.",
        ]
    )
    result.stdout.no_fnmatch_line("*ran 2 times*")


def test_warn_mode_warns_once_per_finding_and_off_mode_is_silent(project: Project) -> None:
    project.write_test(THRESHOLD)
    result = project.run("--noplusone-nplusone=warn")
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*NPlusOneWarning: N+1 query: the same SELECT ran 2 times in one call of test_loop*",
            "*NPlusOneWarning: N+1 query: the same SELECT ran 3 times in one call of test_loop*",
        ]
    )
    result = project.run("-o", "noplusone_nplusone=off", "-W", "error")
    result.assert_outcomes(passed=2)


ALLOW = """
import pytest
from sqlalchemy import select
from models import Comment, Post, User


async def posts_loop(session):
    for user in (await session.scalars(select(User))).all():
        await user.awaitable_attrs.posts


async def comments_loop(session):
    for post_id in (1, 2, 3):
        await session.scalars(select(Comment).where(Comment.post_id == post_id))  # COMMENTS


@pytest.mark.allow_nplusone
async def test_bare_allows_everything(session):
    await posts_loop(session)
    await comments_loop(session)


@pytest.mark.allow_nplusone("User.posts", "FROM Comments WHERE comments.post_id")
async def test_entries_allow_what_they_name(session):
    await posts_loop(session)
    await comments_loop(session)


@pytest.mark.allow_nplusone("User.posts")
async def test_entry_allows_only_what_it_names(session):
    await posts_loop(session)
    await comments_loop(session)  # ONLY


@pytest.mark.allow_nplusone("User.posts", "Post.tagz")
async def test_unused_entry_is_reported(session):
    await posts_loop(session)


@pytest.mark.allow_nplusone
async def test_bare_marker_that_allowed_nothing(session):
    await session.get(Post, 1)


@pytest.mark.allow_nplusone(3)
async def test_bad_argument(session):
    pass
"""


def test_allow_marker(project: Project) -> None:
    project.write_test(ALLOW)
    result = project.run("-rA")
    result.assert_outcomes(passed=4, failed=1, errors=1, warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*test_entry_allows_only_what_it_names*",
            "N+1 query: the same SELECT ran 3 times in one call of comments_loop, with different values.",
            f"  from test_scenario.py:{line_of(ALLOW, '# COMMENTS')} in comments_loop",
            f"  called from test_scenario.py:{line_of(ALLOW, '# ONLY')} "
            "in test_entry_allows_only_what_it_names",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*UnusedAllowWarning: @pytest.mark.allow_nplusone('Post.tagz') on "
            "test_scenario.py::test_unused_entry_is_reported allowed nothing: no N+1 finding "
            "matched it; remove it or fix its spelling.",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*UnusedAllowWarning: @pytest.mark.allow_nplusone on "
            "test_scenario.py::test_bare_marker_that_allowed_nothing allowed nothing: "
            "the test has no N+1 finding; remove the marker.",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_bad_argument*",
            "@pytest.mark.allow_nplusone expects Model.attr names or fingerprint substrings "
            "(non-empty strings), got allow_nplusone(3)",
        ]
    )
    result.stdout.no_fnmatch_line("*User.posts was lazily loaded*")


# --- the rules in process, on a sync in-memory SQLite engine (Core only: no mapper state) ----

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String))


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.connect() as connection:
        connection.execute(insert(items), [{"id": i, "name": f"n{i}"} for i in range(10)])
        yield connection
    engine.dispose()


def _by_id(conn: Connection, item_id: int) -> None:
    conn.execute(select(items).where(items.c.id == item_id)).all()


@pytest.mark.allow_nplusone("from items where items.id")
def test_threshold_is_inclusive_and_values_tell_loops_from_repeats(conn: Connection) -> None:
    with capture_queries() as loop:
        for item_id in (1, 2):
            conn.execute(select(items).where(items.c.id == item_id)).all()
    with capture_queries() as repeat:
        for _ in range(3):
            conn.execute(select(items).where(items.c.id == 1)).all()
    assert [finding.kind for finding in find(loop, 2)] == [LOOP]
    assert find(loop, 3) == []
    (finding,) = find(repeat, 3)
    assert (finding.kind, finding.count, finding.distinct) == (REPEAT, 3, 1)
    assert finding.location.startswith("tests/test_detection.py:")
    assert finding.location.endswith(
        " in test_threshold_is_inclusive_and_values_tell_loops_from_repeats"
    )
    assert len(finding.call_site) == 1


def test_a_test_calling_a_test_helper_once_per_input_is_no_loop(conn: Connection) -> None:
    """Each call of the helper is its own invocation: the repeats share only the test's frame,
    which is not the innermost one."""
    with capture_queries() as log:
        for item_id in (1, 2, 3):
            _by_id(conn, item_id)
    assert log.count == 3
    assert find(log, 2) == []


def test_same_statement_from_two_lines_writes_and_pages_are_not_findings(
    conn: Connection,
) -> None:
    with capture_queries() as log:
        conn.execute(select(items).where(items.c.id == 1)).all()
        conn.execute(select(items).where(items.c.id == 2)).all()
        for i in range(3):
            conn.execute(update(items).where(items.c.id == i).values(name="x"))
            conn.execute(insert(items), [{"name": "a"}, {"name": "b"}])
            conn.execute(select(items).order_by(items.c.id).limit(3).offset(3 * i)).all()
            conn.execute(
                select(items).where(items.c.id > 3 * i).order_by(items.c.id).limit(3)
            ).all()
    assert find(log, 2) == []


@pytest.mark.allow_nplusone("from items where items.name")
def test_a_per_row_loop_with_a_limit_is_still_a_loop(conn: Connection) -> None:
    with capture_queries() as log:
        for name in ("n1", "n2"):
            conn.execute(select(items).where(items.c.name == name).limit(1)).all()
    assert [finding.kind for finding in find(log, 2)] == [LOOP]


@pytest.mark.allow_nplusone("from items where items.id")
def test_allowance_entries_match_by_substring_or_sql_and_report_unused(conn: Connection) -> None:
    with capture_queries() as log:
        for item_id in (1, 2):
            conn.execute(select(items).where(items.c.id == item_id)).all()
    allow = Allowance(entries=("WHERE  items.id = :id_1", "Item.nothing"))
    outcome = check(log, 2, allow)
    assert outcome.findings == []
    assert len(outcome.allowed) == 1
    assert outcome.unused == ["Item.nothing"]
    assert check(log, 2, Allowance(entries=("FROM other",))).findings != []


@pytest.mark.allow_nplusone("from items where items.id")
def test_a_finding_is_an_immutable_value(conn: Connection) -> None:
    # Finding is a plain class (a dataclass cost a millisecond of every run's start-up): it must
    # still behave as the frozen dataclass it replaced.
    def one() -> Finding:
        with capture_queries() as log:
            for item_id in (1, 2):
                conn.execute(select(items).where(items.c.id == item_id)).all()
        (finding,) = find(log, 2)
        return finding

    first, second = one(), one()
    assert first == second
    assert hash(first) == hash(second)
    assert first != "x"
    assert first.kind == LOOP
    assert first.count == 2
    assert first.relationship is None
    assert repr(first).startswith("Finding(kind='loop', count=2, distinct=2, fingerprint=")
    with pytest.raises(AttributeError, match="cannot assign to field 'count'"):
        first.count = 3
    with pytest.raises(AttributeError, match="cannot delete field 'kind'"):
        del first.kind
    assert first.location == str(first.call_site[0])
    assert isinstance(first.call_site[0], Location)
    assert first.call_site[0].lineno > 0
