"""The conftest.py to copy into your project (this copy also runs as a test module in CI).

Copy the fixtures below into your ``conftest.py``, replace the stand-in models with an import of
your own (``from myapp.models import Base``), and seed the data your tests need in ``populate``.

It needs pytest-asyncio 1.0 or later and works in its default ``strict`` mode and in ``auto``
mode: the async fixtures are ``pytest_asyncio.fixture`` (function-scoped, on the test's event
loop) and async tests carry ``@pytest.mark.asyncio`` (in auto mode the mark is optional).

Two habits make lazy loads visible in tests:

* seed the data in one session and test in a *fresh* one, so the identity map cannot serve a
  relationship that the code under test forgot to load;
* use ``expire_on_commit=False`` only in the test's session, as most async apps do.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import ForeignKey, select, text
from sqlalchemy.ext.asyncio import (
    AsyncAttrs,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload


# --- stand-in models: replace with `from myapp.models import Base, Author, Book` -------------
class Base(AsyncAttrs, DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "example_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "example_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("example_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


# --- the fixtures to copy --------------------------------------------------------------------
async def make_engine(tmp_path: Path) -> AsyncEngine:
    """aiosqlite in a temp file; with NOPLUSONE_PG_URL, asyncpg in a schema per xdist worker."""
    pg_url = os.environ.get("NOPLUSONE_PG_URL")
    if not pg_url:
        return create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/test.sqlite3")
    schema = "example_" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    admin = create_async_engine(pg_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    await admin.dispose()
    return create_async_engine(
        pg_url, connect_args={"server_settings": {"search_path": schema}}
    )


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A database with empty tables (fixture setup and teardown queries are never counted)."""
    engine = await make_engine(tmp_path)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
    await engine.dispose()


@pytest_asyncio.fixture
async def populate(engine: AsyncEngine) -> None:
    """Seed in a session of its own: nothing seeded stays in the test's identity map."""
    async with async_sessionmaker(engine)() as session:
        session.add_all(
            [Author(name=f"author {i}", books=[Book(title=f"book {i}")]) for i in range(3)]
        )
        await session.commit()


@pytest_asyncio.fixture
async def session(engine: AsyncEngine, populate: None) -> AsyncIterator[AsyncSession]:
    """A fresh session on seeded data, the one the code under test uses."""
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield session


# --- what a test then looks like ---------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.max_queries(2)
async def test_authors_with_books(session: AsyncSession) -> None:
    authors = await session.scalars(select(Author).options(selectinload(Author.books)))
    assert {a.name: [b.title for b in a.books] for a in authors}["author 1"] == ["book 1"]
