"""Fixtures for the blog's tests: the same shape as the top-level conftest_example.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from .models import Base
from .seed import blog_objects


async def make_engine(tmp_path: Path) -> AsyncEngine:
    """aiosqlite in a temp file; with NOPLUSONE_PG_URL, asyncpg in a schema per xdist worker."""
    pg_url = os.environ.get("NOPLUSONE_PG_URL")
    if not pg_url:
        return create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/blog.sqlite3")
    schema = "blog_" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    admin = create_async_engine(pg_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    await admin.dispose()
    return create_async_engine(pg_url, connect_args={"server_settings": {"search_path": schema}})


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty blog database: aiosqlite by default, PostgreSQL when NOPLUSONE_PG_URL is set."""
    engine = await make_engine(tmp_path)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
    await engine.dispose()


@pytest.fixture
def populate(engine: AsyncEngine) -> Callable[..., Awaitable[None]]:
    """Seed the blog in a session of its own, so the test's session starts empty."""

    async def populate(authors: int = 3, posts_per_author: int = 2) -> None:
        async with async_sessionmaker(engine)() as session:
            session.add_all(blog_objects(authors, posts_per_author))
            await session.commit()

    return populate


@pytest.fixture
async def session(
    engine: AsyncEngine, populate: Callable[..., Awaitable[None]]
) -> AsyncIterator[AsyncSession]:
    """A fresh session on a seeded blog: its identity map cannot hide a lazy load."""
    await populate()
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
