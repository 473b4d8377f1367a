"""The blog's tests: query budgets that fail the build when a page starts to N+1."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pytest_noplusone import QueryCountError, QueryLog, assert_max_queries, assert_queries

from .models import Post, User
from .queries import author_page, front_page, tag_cloud, titles_by_author, titles_by_author_slow


@pytest.mark.max_queries(3)
async def test_front_page(session: AsyncSession) -> None:
    page = await front_page(session)
    assert page[0] == {
        "title": "Post 0.0",
        "author": "author0",
        "tags": ["python", "sql"],
        "comments": 1,
    }


@pytest.mark.num_queries(3)
async def test_author_page(session: AsyncSession) -> None:
    page = await author_page(session, 1)
    assert page["posts"] == {"Post 0.0": ["Nice post 0.0"], "Post 0.1": ["Nice post 0.1"]}


async def test_tag_cloud_in_two_queries(session: AsyncSession) -> None:
    async with assert_queries(2):
        assert await tag_cloud(session) == {"python": 6, "sql": 3}


async def test_fixed_titles_page(session: AsyncSession, noplusone_queries: QueryLog) -> None:
    titles = await titles_by_author(session)
    assert titles["author2"] == ["Post 2.0", "Post 2.1"]
    assert noplusone_queries.count == 2


# The loop is deliberate here: allow the N+1 finding so that the budget's message can be checked.
@pytest.mark.allow_nplusone("from posts where posts.author_id")
async def test_the_slow_page_is_caught(session: AsyncSession) -> None:
    with pytest.raises(QueryCountError) as excinfo:
        async with assert_max_queries(2):
            await titles_by_author_slow(session)
    message = str(excinfo.value)
    assert message.startswith("Expected at most 2 queries but 4 were run.\n")
    assert "3x SELECT posts.title FROM posts WHERE posts.author_id = " in message
    assert "in titles_by_author_slow" in message


@pytest.mark.num_queries(2)
async def test_writes_count_one_statement_per_batch(session: AsyncSession) -> None:
    session.add_all([Post(title=f"Draft {i}", author_id=1, id=100 + i) for i in range(10)])
    await session.flush()
    assert len((await session.scalars(select(User))).all()) == 3
