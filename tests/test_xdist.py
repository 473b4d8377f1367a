"""With pytest-xdist the report, baseline update, summary, annotations and gate equal -n 0."""

from __future__ import annotations

import shutil

import pytest
from conftest import Project

ALPHA_BEFORE = """
from sqlalchemy import select
from models import Post, User


async def test_grows(session):
    await session.scalars(select(User))


async def test_shrinks(session):
    await session.scalars(select(User))
    await session.scalars(select(Post))
    await session.get(User, 1)


def test_none():
    pass
"""

ALPHA_AFTER = """
from sqlalchemy import select
from models import Post, User


async def test_grows(session):
    await session.scalars(select(User))
    await session.scalars(select(Post))


async def test_shrinks(session):
    await session.scalars(select(User))


def test_none():
    pass


async def test_loops(session):
    for user in (await session.scalars(select(User).order_by(User.id))).all():
        await session.scalars(select(Post).where(Post.author_id == user.id))
"""

BETA = """
import pytest
from sqlalchemy import select
from models import User


@pytest.mark.allow_nplusone  # the loop is the point here: budgets
@pytest.mark.max_queries(3)
@pytest.mark.parametrize("n", range(6))
async def test_budget(session, n):
    for i in range(n):
        await session.execute(select(User.id).where(User.id > i).limit(1 + i))
"""


#: The project's database is one SQLite file: give each xdist worker its own copy of it.
PER_WORKER = """
import os

worker = os.environ.get("PYTEST_XDIST_WORKER")
if worker:
    url = os.environ["NOPLUSONE_TEST_URL"]
    os.environ["NOPLUSONE_TEST_URL"] = url.replace(".sqlite3", f"-{worker}.sqlite3")
"""


def _section(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "= noplusone =" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    return lines[start:end]  # the GitHub annotations included


def _outcomes(result: pytest.RunResult) -> dict[str, int]:
    return result.parseoutcomes()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_xdist_runs_equal_serial_runs(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project.pytester.path
    project.pytester.makepyfile(per_worker=PER_WORKER)
    project.write_test(ALPHA_BEFORE, name="test_alpha")
    project.write_test(BETA, name="test_beta")
    result = project.run("--noplusone-baseline=start.json", "--noplusone-update-baseline", "-q")
    result.assert_outcomes(passed=7, failed=2, warnings=2)  # budget[4], [5] exceed the budget
    project.write_test(ALPHA_AFTER, name="test_alpha")
    summary = root / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.delenv("GITHUB_WORKSPACE", raising=False)

    def compare(workers: str) -> tuple[object, ...]:
        summary.write_text("")
        result = project.run(
            "-p",
            "per_worker",
            f"-n{workers}",
            "--noplusone-baseline=start.json",
            "--noplusone-report=r.json",
        )
        assert ("2 workers [10 items]" in result.stdout.str()) == (workers == "2")
        return (
            result.ret,
            _outcomes(result),
            _section(result),
            (root / "r.json").read_text(),
            summary.read_text(),
        )

    serial = compare("0")
    assert serial[0] == 1
    assert serial[1] == {"passed": 6, "failed": 4, "warnings": 2}  # grows, loops, budget[4], [5]
    section = serial[2]
    assert isinstance(section, list)
    assert "baseline start.json: 1 regression, 1 improvement, 1 new" in section
    assert sum(line.startswith("::error ") for line in section) == 2
    assert compare("2") == serial

    def update(workers: str) -> tuple[object, ...]:
        shutil.copy(root / "start.json", root / "b.json")
        result = project.run(
            "-p",
            "per_worker",
            f"-n{workers}",
            "--noplusone-baseline=b.json",
            "--noplusone-update-baseline",
        )
        return result.ret, _section(result), (root / "b.json").read_bytes()

    serial = update("0")
    assert serial[2] != (root / "start.json").read_bytes()
    assert update("2") == serial
