"""Shared harness: a small real project (models + conftest) run through pytester.

Every scenario runs on aiosqlite and, when ``NOPLUSONE_PG_URL`` is set, on PostgreSQL through
asyncpg. Without the URL the PostgreSQL cases skip, unless ``NOPLUSONE_REQUIRE_PG=1`` (set by
``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Imported here, not in a fixture: pytester drops modules first imported during a test from
# sys.modules, and re-importing asyncpg's Python modules over its cached C extensions crashes.
try:
    import asyncpg
except ImportError:  # pragma: no cover - asyncpg is a test dependency
    asyncpg = None

PG_URL = os.environ.get("NOPLUSONE_PG_URL", "")
REQUIRE_PG = os.environ.get("NOPLUSONE_REQUIRE_PG", "") not in ("", "0", "false")

MODELS = '''
from __future__ import annotations

from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


post_tags = Table(
    "post_tags",
    Base.metadata,
    Column("post_id", ForeignKey("posts.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    posts: Mapped[list[Post]] = relationship(back_populates="author", order_by="Post.id")
    profile: Mapped[Profile | None] = relationship(back_populates="user")


class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    bio: Mapped[str] = mapped_column(String(200))
    user: Mapped[User] = relationship(back_populates="profile")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(back_populates="post", order_by="Comment.id")
    tags: Mapped[list[Tag]] = relationship(secondary=post_tags, back_populates="posts")


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(200))
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    post: Mapped[Post] = relationship(back_populates="comments")


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    posts: Mapped[list[Post]] = relationship(secondary=post_tags, back_populates="tags")


def seed_objects(users: int = 5) -> list[User]:
    """``users`` users, each with a profile and two posts; each post has a comment and tags."""
    tags = [Tag(name="python"), Tag(name="sql")]
    objects = []
    for i in range(users):
        posts = [
            Post(title=f"post {i}.{j}", comments=[Comment(body=f"comment {i}.{j}")], tags=tags)
            for j in range(2)
        ]
        objects.append(User(name=f"user{i}", profile=Profile(bio=f"bio {i}"), posts=posts))
    return objects
'''

CONFTEST = '''
import os

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from models import Base, seed_objects

URL = os.environ["NOPLUSONE_TEST_URL"]
SCHEMA = os.environ.get("NOPLUSONE_TEST_SCHEMA")


def make_engine(**kwargs):
    """A fresh AsyncEngine on the test database (its own schema on PostgreSQL)."""
    if SCHEMA:
        kwargs.setdefault("connect_args", {"server_settings": {"search_path": SCHEMA}})
    return create_async_engine(URL, **kwargs)


async def reset(engine, users=5):
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    async with async_sessionmaker(engine)() as session:
        session.add_all(seed_objects(users))
        await session.commit()


@pytest.fixture
async def engine():
    engine = make_engine()
    await reset(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine):
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
async def session(sessionmaker):
    """A fresh session: nothing seeded is in its identity map."""
    async with sessionmaker() as session:
        yield session
'''

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider -p no:randomly
"""


@dataclass
class Database:
    """Where a pytester project's database lives."""

    name: str  # "sqlite" or "postgresql"
    url: str
    schema: str | None = None


def _pg_execute(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg", "postgresql"))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The database of a scenario: aiosqlite in a temp file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.sqlite3"
        yield Database("sqlite", f"sqlite+aiosqlite:///{path}")
        return
    if not PG_URL:
        message = "PostgreSQL tests need NOPLUSONE_PG_URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
        if REQUIRE_PG:
            pytest.fail(message + "; NOPLUSONE_REQUIRE_PG is set, so a skip is a failure")
        pytest.skip(message)
    schema = f"noplusone_{uuid.uuid4().hex[:12]}"
    _pg_execute(f"CREATE SCHEMA {schema}")
    try:
        yield Database("postgresql", PG_URL, schema)
    finally:
        _pg_execute(f"DROP SCHEMA {schema} CASCADE")


@dataclass
class Project:
    """A pytester project with the shared models and conftest on one database."""

    pytester: pytest.Pytester
    db: Database

    def write_test(self, source: str, name: str = "test_scenario") -> None:
        """Write a test module (dedented)."""
        self.pytester.makepyfile(**{name: textwrap.dedent(source)})

    def line_of(self, marker: str, name: str = "test_scenario") -> int:
        """The 1-based number of the line of module ``name`` that contains ``marker``."""
        lines = (self.pytester.path / f"{name}.py").read_text().splitlines()
        matches = [number for number, line in enumerate(lines, start=1) if marker in line]
        assert len(matches) == 1, f"{marker!r} is on lines {matches} of {name}.py"
        return matches[0]

    def run(self, *args: str) -> pytest.RunResult:
        """Run the project in a subprocess (enforcement mutates mapper state)."""
        return self.pytester.runpytest_subprocess(*args)


@pytest.fixture
def project(pytester: pytest.Pytester, db: Database, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A small real project: models.py, conftest.py and pytest.ini on the scenario's database."""
    pytester.makepyfile(models=MODELS, conftest=CONFTEST)
    pytester.makefile(".ini", pytest=INI)
    monkeypatch.setenv("NOPLUSONE_TEST_URL", db.url)
    if db.schema:
        monkeypatch.setenv("NOPLUSONE_TEST_SCHEMA", db.schema)
    else:
        monkeypatch.delenv("NOPLUSONE_TEST_SCHEMA", raising=False)
    return Project(pytester, db)
