"""The terminal summary section, GitHub Actions annotations and the step summary."""

from __future__ import annotations

import pytest
from conftest import Project

sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
OFF = "--noplusone-nplusone=off"

COUNTS = """
import pytest
from sqlalchemy import select
from models import User


@pytest.mark.parametrize("n", range(12))
async def test_count(session, n):
    for _ in range(n):
        await session.scalars(select(User))
"""


@sqlite_only
def test_summary_section_lists_totals_baseline_changes_and_the_top_ten(project: Project) -> None:
    project.write_test(COUNTS)
    result = project.run(OFF, "--noplusone-baseline=b.json", "--noplusone-update-baseline")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*= noplusone =*",
            "66 queries in 12 tests; 0 budgets exceeded; 0 N+1 findings",
            "baseline b.json updated: 0 regressions, 0 improvements, 12 new",
            "  new          test_scenario.py::test_count[0]: 0 queries",
            "  new          test_scenario.py::test_count[10]: 10 queries",
            "  new          test_scenario.py::test_count[11]: 11 queries",
            "  new          test_scenario.py::test_count[1]: 1 query",
            "  new          test_scenario.py::test_count[2]: 2 queries",
            "  new          test_scenario.py::test_count[3]: 3 queries",
            "  new          test_scenario.py::test_count[4]: 4 queries",
            "  new          test_scenario.py::test_count[5]: 5 queries",
            "  new          test_scenario.py::test_count[6]: 6 queries",
            "  new          test_scenario.py::test_count[7]: 7 queries",
            "  ... and 2 more",
            "top 10 tests by queries:",
            "  11  test_scenario.py::test_count[11]",
            "  10  test_scenario.py::test_count[10]",
            "   9  test_scenario.py::test_count[9]",
            "   8  test_scenario.py::test_count[8]",
            "   7  test_scenario.py::test_count[7]",
            "   6  test_scenario.py::test_count[6]",
            "   5  test_scenario.py::test_count[5]",
            "   4  test_scenario.py::test_count[4]",
            "   3  test_scenario.py::test_count[3]",
            "   2  test_scenario.py::test_count[2]",
            "*= 12 passed in *",
        ],
        consecutive=True,
    )
    assert "::error" not in result.stdout.str()  # not on GitHub Actions


@sqlite_only
def test_quiet_run_prints_no_section(project: Project) -> None:
    project.write_test(COUNTS)
    result = project.run(OFF, "-q", "--noplusone-report=r.json")
    assert result.ret == 0
    assert "noplusone" not in result.stdout.str()
    assert (project.pytester.path / "r.json").exists()


BEFORE = """
from sqlalchemy import select
from models import Post, User


async def test_grows(session):
    await session.scalars(select(User))
"""

AFTER = """
from sqlalchemy import select
from models import Post, User


async def test_grows(session):
    await session.scalars(select(User))
    await session.scalars(select(Post))


async def test_loops(session):
    for user in (await session.scalars(select(User).order_by(User.id))).all():
        await session.scalars(select(Post).where(Post.author_id == user.id))
"""


@sqlite_only
def test_github_annotations_and_step_summary(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project.pytester.path
    summary = root / "summary.md"
    summary.write_text("earlier step\n")
    project.write_test(BEFORE)
    project.run("--noplusone-baseline=b.json", "--noplusone-update-baseline")
    project.write_test(AFTER)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(root.parent))
    result = project.run("--noplusone-baseline=b.json")
    result.assert_outcomes(failed=2)
    folder = root.name
    result.stdout.fnmatch_lines(
        [
            f"::error file={folder}/test_scenario.py,line=12,title=noplusone N+1::N+1 (loop): "
            "select posts.id, posts.title, posts.author_id from posts where posts.author_id = ?, "
            "5 times in test_scenario.py::test_loops",
            f"::error file={folder}/test_scenario.py,line=5,title=noplusone baseline::"
            "test_scenario.py::test_grows ran 2 queries, above its baseline of 1 in b.json.%0A"
            "select posts.id, posts.title, posts.author_id from posts: 0 -> 1",
        ],
        consecutive=True,
    )
    assert summary.read_text() == (
        "earlier step\n"
        "### noplusone\n"
        "\n"
        "8 queries in 2 tests; 0 budgets exceeded; 1 N+1 finding; "
        "baseline b.json: 1 regression, 0 improvements, 1 new\n"
        "\n"
        "| Test | Queries | Baseline | Change |\n"
        "|---|---:|---:|---:|\n"
        "| `test_scenario.py::test_grows` | 2 | 1 | +1 |\n"
        "| `test_scenario.py::test_loops` | 6 |  | new |\n"
        "\n"
    )
