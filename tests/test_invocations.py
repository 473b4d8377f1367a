"""The N+1 rule on layered code: repeats within one invocation of the code under test (or of the
test function that made the statements itself) are findings; repeats that are separate calls
are not. Each legitimate pattern runs next to its real twin, on aiosqlite and PostgreSQL."""

from __future__ import annotations

import textwrap

import pytest
from conftest import Project

APP = """
import asyncio
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from conftest import make_engine
from models import Post, User


async def posts_of(session, user_id):
    return (await session.scalars(select(Post).where(Post.author_id == user_id))).all()  # REPO


async def feed(session, user_id):
    return [post.title for post in await posts_of(session, user_id)]  # SERVICE


async def feeds(session, user_ids):
    return [await feed(session, user_id) for user_id in user_ids]  # APP LOOP


async def count_users(session):
    return await session.scalar(select(func.count()).select_from(User))  # COUNT


async def request(session, path):
    if path == "/count":
        return await count_users(session)
    return await feed(session, int(path.rsplit("/", 1)[1]))


async def titles_by_chunks(session, ids, size):
    titles = []
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        titles += (await session.scalars(select(Post.title).where(Post.id.in_(chunk)))).all()
    return titles


async def first_after(session, users):
    return [
        (await session.scalars(select(Post.title).where(Post.id > user.id).order_by(Post.id).limit(1))).first()  # KEYSET
        for user in users
    ]


async def pages_with_totals(session):
    pages, offset = [], 0
    while True:
        total = await session.scalar(select(func.count()).select_from(Post))
        rows = (await session.scalars(select(Post).order_by(Post.id).limit(3).offset(offset))).all()
        if not rows:
            return pages, total
        pages.append(rows)
        offset += 3


async def renamed(session, users):
    for user in users:
        user.name += "!"
    await session.commit()  # the session expires its objects on commit
    names = []
    for user in users:
        names.append(await user.awaitable_attrs.name)  # EXPIRED
    return names


def _titles_in_a_thread(user_id):
    async def run():
        engine = make_engine()
        try:
            async with engine.connect() as conn:
                return (await conn.execute(select(Post.title).where(Post.author_id == user_id))).all()  # THREAD
        finally:
            await engine.dispose()

    return asyncio.run(run())  # RUN


def titles_in_threads(user_ids):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(_titles_in_a_thread, user_ids))  # POOL
"""

# A library installed in site-packages: its frames are never "your line".
LIBRARY = """
from sqlalchemy import select

from models import Post


async def check(session):
    for _ in range(2):  # its own internals: two checks in one call (like Alembic's heads)
        await session.scalars(select(Post.id).where(Post.id == 1))


async def get(session, post_id):
    return (await session.scalars(select(Post).where(Post.id == post_id))).first()
"""

TESTS = """
import asyncio
import os
import sys
import threading
import time

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "site-packages"))

import app
import fakerepo
from conftest import make_engine
from models import Post, User


async def test_two_requests_from_two_lines(session):
    await app.request(session, "/count")
    await app.request(session, "/count")


async def test_one_call_per_input(session):
    for user_id in (1, 2, 3):
        await app.feed(session, user_id)


async def test_app_loop(session):
    await app.feeds(session, [1, 2, 3])  # FEEDS


async def test_loop_in_the_test(session):
    for user_id in (1, 2, 3):
        await session.scalars(select(Post).where(Post.author_id == user_id))  # BODY


async def test_manual_chunks(session):
    assert len(await app.titles_by_chunks(session, list(range(1, 11)), 4)) == 10


async def test_range_bound_with_limit_one_per_user(session):
    users = (await session.scalars(select(User).order_by(User.id))).all()
    await app.first_after(session, users)  # FIRST AFTER


async def test_exact_repeats_with_limit_one(session):
    for _ in range(3):
        await session.scalars(select(Post).where(Post.id == 1).limit(1))  # LIMIT ONE


async def test_count_beside_pages(session):
    pages, total = await app.pages_with_totals(session)
    assert (len(pages), total) == (4, 10)


async def test_reads_after_commit_in_the_test(engine):
    async with async_sessionmaker(engine)() as session:
        first, second = (await session.scalars(select(User).order_by(User.id).limit(2))).all()
        await session.commit()
        assert await first.awaitable_attrs.name != await second.awaitable_attrs.name


async def test_expired_reloads_in_the_app(engine):
    async with async_sessionmaker(engine)() as session:
        users = (await session.scalars(select(User).order_by(User.id))).all()
        await app.renamed(session, users)  # RENAMED


async def test_library_internals(session):
    await fakerepo.check(session)


async def test_library_called_once_per_row(session):
    for post_id in (1, 2, 3):
        await fakerepo.get(session, post_id)  # LIBRARY ROW


def test_threads_of_the_app():
    assert len(app.titles_in_threads([1, 2, 3])) == 3  # THREADS


@pytest.fixture
def poller():
    stop = threading.Event()

    async def once():
        engine = make_engine()
        try:
            async with engine.connect() as conn:
                await conn.execute(select(User.id).where(User.id == 1))
        finally:
            await engine.dispose()

    def poll():
        while not stop.is_set():
            asyncio.run(once())
            time.sleep(0.005)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.05)
    yield
    stop.set()
    thread.join()


async def test_a_poller_started_by_a_fixture(poller, session):
    await asyncio.sleep(0.1)
    await session.scalars(select(User).where(User.id == 1))
"""


def test_one_invocation_is_a_finding_separate_calls_are_not(project: Project) -> None:
    project.write_test(APP, name="app")
    library = project.pytester.path / "site-packages" / "fakerepo"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text(textwrap.dedent(LIBRARY))
    project.write_test(TESTS)
    result = project.run("-p", "no:randomly")

    def at(marker: str, name: str = "test_scenario") -> str:
        return f"{name}.py:{project.line_of(marker, name)}"

    result.stdout.fnmatch_lines(
        [
            "*_ test_app_loop _*",
            "N+1 query: the same SELECT ran 3 times in one call of feeds, with different values.",
            f"  from {at('# REPO', 'app')} in posts_of",
            f"  called from {at('# SERVICE', 'app')} in feed",
            f"  called from {at('# APP LOOP', 'app')} in *",
            f"  called from {at('# FEEDS')} in test_app_loop",
            "  SQL: SELECT posts.id, posts.title, posts.author_id FROM posts WHERE posts.author_id = *",
            "  fix: load all rows in one query, e.g. select(Post).where(Post.author_id.in_(ids))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_loop_in_the_test _*",
            "N+1 query: the same SELECT ran 3 times in one call of test_loop_in_the_test, "
            "with different values.",
            f"  from {at('# BODY')} in test_loop_in_the_test",
            "  SQL: *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_range_bound_with_limit_one_per_user _*",
            "N+1 query: the same SELECT ran 5 times in one call of first_after, "
            "with different values.",
            f"  from {at('# KEYSET', 'app')} in *",
            f"  called from {at('# FIRST AFTER')} in test_range_bound_with_limit_one_per_user",
            "  SQL: SELECT posts.title FROM posts WHERE posts.id > * ORDER BY posts.id*LIMIT*",
            "  fix: load all rows in one query, e.g. select(Post).where(Post.id.in_(ids))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_exact_repeats_with_limit_one _*",
            "Repeated query: the same SELECT ran 3 times in one call of "
            "test_exact_repeats_with_limit_one, with the same values.",
            f"  from {at('# LIMIT ONE')} in test_exact_repeats_with_limit_one",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_expired_reloads_in_the_app _*",
            "N+1 query: 5 User objects were reloaded after commit() or expire() one by one, "
            "5 times in one call of renamed.",
            f"  from {at('# EXPIRED', 'app')} in renamed",
            f"  called from {at('# RENAMED')} in test_expired_reloads_in_the_app",
            "  SQL: SELECT users.id* FROM users WHERE users.id = *",  # 2.0 adds labels
            "  fix: load them again in one query (select(User).where(User.id.in_(ids))), "
            "or keep them loaded: sessionmaker(..., expire_on_commit=False)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_library_called_once_per_row _*",
            "N+1 query: the same SELECT ran 3 times in one call of "
            "test_library_called_once_per_row, with different values.",
            f"  from {at('# LIBRARY ROW')} in test_library_called_once_per_row",
            "  SQL: *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_threads_of_the_app _*",
            "N+1 query: the same SELECT ran 3 times in one call of titles_in_threads, "
            "with different values.",
            f"  from {at('# THREAD', 'app')} in run",
            f"  called from {at('# RUN', 'app')} in _titles_in_a_thread",
            f"  called from {at('# POOL', 'app')} in titles_in_threads",
            f"  called from {at('# THREADS')} in test_threads_of_the_app",
        ]
    )
    result.assert_outcomes(passed=7, failed=7)
    for passing in (
        "test_two_requests_from_two_lines",
        "test_one_call_per_input",
        "test_manual_chunks",
        "test_count_beside_pages",
        "test_reads_after_commit_in_the_test",
        "test_library_internals",
        "test_a_poller_started_by_a_fixture",
    ):
        assert f"_ {passing} _" not in result.stdout.str()


SYNC_APP = """
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from sync_models import Item


def item(session, item_id):
    return session.execute(select(Item).where(Item.id == item_id)).scalar_one()  # GET


def items(session, ids):
    return [item(session, item_id) for item_id in ids]  # EACH


def in_a_pool(session, ids):
    with ThreadPoolExecutor(1) as pool:
        futures = []
        for item_id in ids:
            futures.append(pool.submit(session.execute, select(Item).where(Item.id == item_id)))  # SUBMIT
        return [future.result().all() for future in futures]


def refresh_each(session, objects):
    for each in objects:
        session.refresh(each)  # REFRESH
"""

SYNC_MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
"""

SYNC_TESTS = """
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import sync_app
from sync_models import Base, Item


@pytest.fixture
def session(tmp_path):
    engine = create_engine(
        f"sqlite:///{tmp_path}/sync.sqlite3", connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Item(id=i, name=f"item {i}") for i in range(1, 6)])
        session.commit()
        yield session
    engine.dispose()


def rounds(fn, n=3):  # as pytest-benchmark runs its rounds: one call of fn each
    for _ in range(n):
        fn()


def test_sync_app_loop(session):
    sync_app.items(session, [1, 2, 3])  # ITEMS


def test_sync_one_call_per_input(session):
    for item_id in (1, 2, 3):
        sync_app.item(session, item_id)


def test_sync_rounds_of_a_lambda(session):
    rounds(lambda: session.execute(select(Item).where(Item.id == 1)).all())


def test_sync_pool_runs_sqlalchemys_own_method(session):
    sync_app.in_a_pool(session, [1, 2, 3])  # POOL


def test_sync_refresh_each(session):
    sync_app.refresh_each(session, session.scalars(select(Item)).all())  # REFRESH EACH


def test_sync_refresh_in_the_test(session):
    first, second = session.scalars(select(Item).limit(2)).all()
    session.refresh(first)
    session.refresh(second)
"""


def test_sync_code_follows_the_same_rule(pytester: pytest.Pytester) -> None:
    """Sync Session, no greenlet: the app's loop, SQLAlchemy's own method handed to a pool by
    the app, and refreshes one by one in the app are findings; a test calling the app once per
    input, rounds of a lambda, and a test refreshing its objects are not."""
    pytester.makepyfile(sync_models=SYNC_MODELS, sync_app=SYNC_APP, test_sync=SYNC_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=3)

    def at(marker: str, name: str = "sync_app") -> int:
        lines = (pytester.path / f"{name}.py").read_text().splitlines()
        return next(n for n, text in enumerate(lines, 1) if marker in text)

    get, each = at("# GET"), at("# EACH")
    result.stdout.fnmatch_lines(
        [
            "*_ test_sync_pool_runs_sqlalchemys_own_method _*",
            "N+1 query: the same SELECT ran 3 times in one call of in_a_pool, "
            "with different values.",
            f"  from sync_app.py:{at('# SUBMIT')} in in_a_pool",
            f"  called from test_sync.py:{at('# POOL', 'test_sync')} "
            "in test_sync_pool_runs_sqlalchemys_own_method",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_sync_refresh_each _*",
            "N+1 query: 5 Item objects were refreshed with session.refresh() one by one, "
            "5 times in one call of refresh_each.",
            f"  from sync_app.py:{at('# REFRESH')} in refresh_each",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_sync_app_loop _*",
            "N+1 query: the same SELECT ran 3 times in one call of items, with different values.",
            f"  from sync_app.py:{get} in item",
            f"  called from sync_app.py:{each} in *",
            "  called from test_sync.py:* in test_sync_app_loop",
            "  SQL: SELECT items.id, items.name FROM items WHERE items.id = ?",
            "  fix: load all rows in one query, e.g. select(Item).where(Item.id.in_(ids))",
            "  or, if intended: @pytest.mark.allow_nplusone("
            "'select items.id, items.name from items where items.id = ?')",
        ]
    )
