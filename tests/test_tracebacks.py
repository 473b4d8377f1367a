"""Failures point at the user's code: no plugin frame in tracebacks, the same summary under xdist."""

from __future__ import annotations

import pytest
from conftest import Project

LAZY = """
from sqlalchemy import select

from models import User


async def test_async_lazy_load(session):
    users = (await session.scalars(select(User))).all()
    assert [post.title for post in users[0].posts]  # touched here


async def test_sync_lazy_load(sessionmaker):
    def titles(sync_session):
        user = sync_session.scalars(select(User)).first()
        return [post.title for post in user.posts]  # touched in sync

    async with sessionmaker() as session:
        await session.run_sync(titles)
"""

# The sync lazy load runs inside run_sync, whose lazy loads run by default: forbidden here.
FORBID_RUN_SYNC = ("-o", "noplusone_run_sync=forbid")

SUMMARY = [
    "FAILED test_scenario.py::test_async_lazy_load - noplusone: User.posts (one-to-many collection) was lazily loaded, which lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
    "FAILED test_scenario.py::test_sync_lazy_load - noplusone: User.posts (one-to-many collection) was lazily loaded, which lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
]


def test_no_plugin_frame_in_the_traceback(project: Project) -> None:
    project.write_test(LAZY)
    result = project.run(*FORBID_RUN_SYNC, "--tb=long")
    result.assert_outcomes(failed=2)
    # No entry of the plugin's files (a local's repr may still name its forced loader class).
    assert [line for line in result.stdout.lines if "pytest_noplusone/" in line] == []
    assert [line for line in result.stdout.lines if "enforcement.py" in line] == []


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_the_same_short_summary_with_and_without_xdist(
    project: Project, workers: list[str]
) -> None:
    project.write_test(LAZY)
    # One test at a time: the project's tests share one database.
    for number, test in enumerate(["test_async_lazy_load", "test_sync_lazy_load"]):
        result = project.run(*FORBID_RUN_SYNC, "-rf", "-vv", "--tb=no", "-k", test, *workers)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([SUMMARY[number]], consecutive=True)
        result.stdout.no_fnmatch_line("  touched at: *")


def test_tb_line_points_at_the_users_line(project: Project) -> None:
    project.write_test(LAZY)
    result = project.run(*FORBID_RUN_SYNC, "--tb=line")
    result.assert_outcomes(failed=2)
    first = project.line_of("# touched here")
    second = project.line_of("# touched in sync")
    result.stdout.fnmatch_lines_random(
        [
            f"test_scenario.py:{first}: noplusone: User.posts (one-to-many collection) was lazily loaded, *",
            f"test_scenario.py:{second}: noplusone: User.posts (one-to-many collection) was lazily loaded, *",
        ]
    )


BUDGET = """
import pytest
from sqlalchemy import select

from models import User


@pytest.mark.max_queries(1)
async def test_over_budget(session):
    await session.scalars(select(User))
    await session.scalars(select(User).where(User.id == 1))
"""


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["no-xdist", "xdist"])
def test_tb_line_of_a_budget_failure_points_at_the_test(
    project: Project, workers: list[str]
) -> None:
    project.write_test(BUDGET)
    result = project.run(*FORBID_RUN_SYNC, "--tb=line", "-rf", *workers)
    result.assert_outcomes(failed=1)
    line = project.line_of("@pytest.mark.max_queries(1)")
    result.stdout.fnmatch_lines(
        [
            f"test_scenario.py:{line}: Failed: Expected at most 1 query but 2 were run.",
            "FAILED test_scenario.py::test_over_budget - Failed: Expected at most 1 query*",
        ]
    )
    result.stdout.no_fnmatch_line("*plugin.py*")
