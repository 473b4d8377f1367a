"""Budgets: the max_queries/num_queries markers and the noplusone_max_queries default."""

from __future__ import annotations

from conftest import Project

NPLUSONE_TEST = """
import pytest
from sqlalchemy import select
from models import Post, User


async def titles(session):
    result = []
    for user in (await session.scalars(select(User).order_by(User.id))).all():
        posts = await session.scalars(select(Post).where(Post.author_id == user.id))
        result.extend(post.title for post in posts)
    return result


@pytest.mark.max_queries(2)
async def test_titles(session):
    assert len(await titles(session)) == 10
"""


def test_budget_failure_names_every_statement_and_its_await_line(project: Project) -> None:
    project.write_test(NPLUSONE_TEST)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "Expected at most 2 queries but 6 were run.",
            "  1. SELECT users.id, users.name FROM users ORDER BY users.id",
            "       from test_scenario.py:8 in titles",
            "       called from test_scenario.py:16 in test_titles",
            "  2. 5x SELECT posts.id, posts.title, posts.author_id FROM posts WHERE posts.author_id = *",
            "       from test_scenario.py:9 in titles",
            "       called from test_scenario.py:16 in test_titles",
            "       first parameters: (1,)",
            "fix: the same statement ran 5 times from test_scenario.py:9 in titles; *",
        ]
    )
