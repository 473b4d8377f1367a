"""Scale assertions: the same number of queries at every data size, sync and async."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest
from conftest import Project
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from test_detection import line_of

from pytest_noplusone import QueryScaleError, assert_constant_queries, capture

SCENARIO = """
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from conftest import reset
from models import Post, User
from pytest_noplusone import assert_constant_queries


async def test_selectinload_is_constant(engine, sessionmaker):
    async def action():
        async with sessionmaker() as session:
            users = (await session.scalars(select(User).options(selectinload(User.posts)))).all()
            return [post.title for user in users for post in user.posts]

    await assert_constant_queries(action, populate=lambda n: reset(engine, n), scales=(2, 3, 5))


async def test_explicit_loop_grows(engine, sessionmaker):
    async def action():
        async with sessionmaker() as session:
            for user in (await session.scalars(select(User))).all():
                await session.scalars(select(Post).where(Post.author_id == user.id))  # LOOP

    await assert_constant_queries(action, populate=lambda n: reset(engine, n))  # CALL


async def test_awaitable_attrs_loop_grows(engine, sessionmaker):
    async def action():
        async with sessionmaker() as session:
            for user in (await session.scalars(select(User))).all():
                await user.awaitable_attrs.posts  # ATTRS

    await assert_constant_queries(action, populate=lambda n: reset(engine, n), scales=(1, 4))
"""


def test_scale_assertions_in_a_project(project: Project) -> None:
    project.write_test(SCENARIO)
    result = project.run()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E  *QueryScaleError: Expected the same number of queries at every scale, "
            "but got 3 for n=2 and 4 for n=3.",
            "E         SELECT posts.id* FROM posts WHERE posts.author_id = *: 2 -> 3",
            f"E             from test_scenario.py:{line_of(SCENARIO, '# LOOP')} in action",
            f"E             called from test_scenario.py:{line_of(SCENARIO, '# CALL')} "
            "in test_explicit_loop_grows",
            "E       fix: load all rows in one query, e.g. "
            "select(Post).where(Post.author_id.in_(ids))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E  *QueryScaleError: Expected the same number of queries at every scale, "
            "but got 2 for n=1 and 5 for n=4.",
            "E         SELECT posts.id* FROM posts WHERE * = posts.author_id*: 1 -> 4",
            f"E             from test_scenario.py:{line_of(SCENARIO, '# ATTRS')} in action",
            "E       fix: User.posts is lazily loaded per parent: eager-load it where the User "
            "objects are loaded: .options(selectinload(User.posts))",
        ]
    )
    # The passing assertion ran the same SELECT 4 times from one line: not an N+1 finding.
    result.stdout.no_fnmatch_line("*N+1 query*")


# --- in process, sync: Core tables on an in-memory SQLite engine -------------------------

metadata = MetaData()
authors = Table("authors", metadata, Column("id", Integer, primary_key=True), Column("name", String))
books = Table(
    "books",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("author_id", ForeignKey("authors.id")),
)


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _populate(engine: Engine):  # type: ignore[no-untyped-def]
    def populate(n: int) -> None:
        with engine.begin() as conn:
            conn.execute(delete(books))
            conn.execute(delete(authors))
            conn.execute(insert(authors), [{"id": i, "name": f"a{i}"} for i in range(n)])
            conn.execute(insert(books), [{"author_id": i} for i in range(n)])

    return populate


def test_sync_constant_action_passes_and_runs_synchronously(engine: Engine) -> None:
    calls = []

    def action() -> None:
        calls.append(1)
        with engine.connect() as conn:
            ids = conn.scalars(select(authors.c.id)).all()
            conn.execute(select(books).where(books.c.author_id.in_(ids))).all()

    result = assert_constant_queries(action, populate=_populate(engine), scales=(2, 3, 10))
    assert result is None
    assert len(calls) == 4  # warmup, then one run per scale


@pytest.mark.allow_nplusone("from books")
def test_sync_loop_fails_with_counts_per_scale(engine: Engine) -> None:
    def action() -> None:
        with engine.connect() as conn:
            for author_id in conn.scalars(select(authors.c.id)).all():
                conn.execute(select(books).where(books.c.author_id == author_id)).all()

    with pytest.raises(QueryScaleError) as caught:
        assert_constant_queries(action, populate=_populate(engine), scales=(2, 3, 10))
    error = caught.value
    assert error.counts == {2: 3, 3: 4, 10: 11}
    lines = str(error).splitlines()
    assert lines[0] == (
        "Expected the same number of queries at every scale, "
        "but got 3 for n=2, 4 for n=3 and 11 for n=10."
    )
    assert lines[1] == (
        "  SELECT books.id, books.author_id FROM books WHERE books.author_id = ?: 2 -> 3 -> 10"
    )
    assert lines[2].startswith("      from tests/test_scale.py:")
    assert lines[-1] == "fix: load all rows in one query (an IN list of the values that changed)"


def test_warmup_hides_first_use_caches(engine: Engine) -> None:
    cache: dict[str, list[int]] = {}

    def action() -> None:
        with engine.connect() as conn:
            if "ids" not in cache:  # a first-use cache: one extra query, once
                cache["ids"] = list(conn.scalars(select(authors.c.id)))
            conn.execute(select(books)).all()

    assert_constant_queries(action, populate=_populate(engine))
    cache.clear()
    with pytest.raises(QueryScaleError, match="but got 2 for n=2 and 1 for n=3"):
        assert_constant_queries(action, populate=_populate(engine), warmup=False)


def test_async_populate_with_sync_action_returns_an_awaitable(engine: Engine) -> None:
    populate = _populate(engine)

    async def async_populate(n: int) -> None:
        populate(n)

    def action() -> None:
        with engine.connect() as conn:
            conn.execute(select(books)).all()

    awaitable = assert_constant_queries(action, populate=async_populate)
    assert inspect.isawaitable(awaitable)
    asyncio.run(awaitable)  # type: ignore[arg-type]


def test_errors_in_the_action_propagate_and_close_the_windows(engine: Engine) -> None:
    before = len(capture.open_windows())

    async def action() -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        asyncio.run(assert_constant_queries(action, populate=_populate(engine)))  # type: ignore[arg-type]
    assert len(capture.open_windows()) == before


@pytest.mark.parametrize(
    ("scales", "error"),
    [((2,), ValueError), ((2, 2), ValueError), ([1, "2"], TypeError), (3, TypeError),
     ((True, 2), TypeError), ((-1, 2), TypeError)],
)
def test_bad_scales(scales: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"expects scales=\(at least two different non-negative ints\)"):
        assert_constant_queries(lambda: None, populate=lambda n: None, scales=scales)  # type: ignore[arg-type]
