"""Budgets: the max_queries/num_queries markers and the noplusone_max_queries default."""

from __future__ import annotations

import pytest
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


SCOPES_TESTS = """
import pytest
from sqlalchemy import select
from models import Post, User

pytestmark = pytest.mark.max_queries(1)


async def two_queries(session):
    await session.execute(select(User.id))
    await session.execute(select(Post.id))


async def test_module_budget_fails(session):
    await two_queries(session)


@pytest.mark.max_queries(2)
async def test_function_marker_beats_module_marker(session):
    await two_queries(session)


@pytest.mark.num_queries(2)
class TestClassBudget:
    async def test_class_marker_beats_module_marker(self, session):
        await two_queries(session)

    @pytest.mark.num_queries(1)
    async def test_closest_marker_wins(self, session):
        await two_queries(session)


@pytest.mark.num_queries(1)
async def test_exactly_one_but_none_ran(session):
    pass


@pytest.mark.max_queries(0)
async def test_own_exception_is_not_hidden(session):
    await two_queries(session)
    assert 1 + 1 == 3, "the body's own failure"
"""


def test_marker_scopes_and_messages(project: Project) -> None:
    project.write_test(SCOPES_TESTS)
    result = project.run("-rA")
    result.assert_outcomes(passed=2, failed=4)
    result.stdout.fnmatch_lines(
        [
            "*_ test_module_budget_fails _*",
            "Expected at most 1 query but 2 were run.",
            "*_ TestClassBudget.test_closest_marker_wins _*",
            "Expected exactly 1 query but 2 were run.",
            "fix: remove queries, or raise the budget: @pytest.mark.num_queries(2)",
            "*_ test_exactly_one_but_none_ran _*",
            "Expected exactly 1 query but 0 were run.",
            "*_ test_own_exception_is_not_hidden _*",
            "E       AssertionError: the body's own failure",
        ]
    )
    result.stdout.no_fnmatch_line("Expected at most 0 queries*")


def test_ini_default_budget(project: Project) -> None:
    project.pytester.makefile(
        ".ini",
        pytest="[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "noplusone_max_queries = 1\n",
    )
    project.write_test(
        """
        import pytest
        from sqlalchemy import select
        from models import User


        async def test_default_applies(session):
            await session.execute(select(User.id))
            await session.execute(select(User.name))


        @pytest.mark.max_queries(2)
        async def test_marker_overrides_default(session):
            await session.execute(select(User.id))
            await session.execute(select(User.name))
        """
    )
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "noplusone: * max_queries=1",
            "Expected at most 1 query but 2 were run.",
            "fix: remove queries, or raise the budget: @pytest.mark.max_queries(2)",
        ]
    )


def test_bad_marker_arguments_are_test_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.max_queries("two")
        def test_string(): pass

        @pytest.mark.max_queries(-1)
        def test_negative(): pass

        @pytest.mark.max_queries()
        def test_missing(): pass

        @pytest.mark.max_queries(2, 3)
        def test_two_args(): pass

        @pytest.mark.num_queries(True)
        def test_bool(): pass

        @pytest.mark.num_queries(n=1)
        def test_keyword(): pass

        def test_still_runs(): pass
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=6)
    result.stdout.fnmatch_lines_random(
        [
            "@pytest.mark.max_queries expects one non-negative int, got max_queries('two')",
            "@pytest.mark.max_queries expects one non-negative int, got max_queries(-1)",
            "@pytest.mark.max_queries expects one non-negative int, got max_queries()",
            "@pytest.mark.max_queries expects one non-negative int, got max_queries(2, 3)",
            "@pytest.mark.num_queries expects one non-negative int, got num_queries(True)",
            "@pytest.mark.num_queries expects one non-negative int, got num_queries(n=1)",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    ("ini", "error"),
    [
        (
            "noplusone_max_queries = many",
            "'many' is not a valid noplusone_max_queries; use a whole number >= 0.",
        ),
        (
            "noplusone_enforce = rase",
            "'rase' is not a valid noplusone_enforce; use one of: raise_on_sql, raise, off.",
        ),
        (
            "noplusone_threshold = 1",
            "'1' is not a valid noplusone_threshold; use a whole number >= 2.",
        ),
    ],
)
def test_bad_ini_values_are_usage_errors(pytester: pytest.Pytester, ini: str, error: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {error}"])
