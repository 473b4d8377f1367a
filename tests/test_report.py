"""The JSON report and the JUnit properties; no parameter value or password in any file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import PG_URL, Project

sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

SCENARIO = """
import pytest
from sqlalchemy import select
from models import Post, User


async def posts_of(session, users):
    for user in (await session.scalars(select(User).order_by(User.id).limit(users))).all():
        await session.scalars(select(Post).where(Post.author_id == user.id))


@pytest.mark.max_queries(2)
async def test_over_budget(session):
    await session.scalars(select(User))
    await session.scalars(select(Post))
    await session.get(User, 1)


async def test_nplusone(session):
    await posts_of(session, 3)


async def test_body_fails(session):
    await session.scalars(select(User))
    assert False


def test_skipped():
    pytest.skip("not today")


def test_no_queries():
    pass
"""

USERS = "select users.id, users.name from users order by users.id limit ? offset ?"
POSTS = "select posts.id, posts.title, posts.author_id from posts where posts.author_id = ?"


@sqlite_only
def test_report_content(project: Project) -> None:
    project.write_test(SCENARIO)
    result = project.run("--noplusone-report=out/report.json")
    result.assert_outcomes(passed=1, failed=3, skipped=1)
    text = (project.pytester.path / "out" / "report.json").read_text()
    report = json.loads(text)
    assert list(report) == ["version", "totals", "tests"]  # totals at the top
    assert report["version"] == 1
    assert report["totals"] == {
        "budgets_exceeded": 1,
        "findings": 1,
        "queries": 8,
        "schema_queries": 0,
        "tests": 5,
    }
    tests = report["tests"]
    assert list(tests) == sorted(tests)
    assert tests["test_scenario.py::test_nplusone"] == {
        "complete": True,
        "findings": [
            {
                "count": 3,
                "kind": "loop",
                "label": POSTS,
                "location": {"function": "posts_of", "line": 8, "path": "test_scenario.py"},
            }
        ],
        "fingerprints": {POSTS: 3, USERS: 1},
        "outcome": "failed",
        "queries": 4,
        "schema_queries": 0,
    }
    over = tests["test_scenario.py::test_over_budget"]
    assert over["budget"] == {"kind": "at most", "limit": 2, "source": "@pytest.mark.max_queries"}
    assert over["budget_exceeded"] is True
    assert over["queries"] == 3
    assert over["complete"] is True
    # A failed body ran part of its queries: reported, marked incomplete.
    failed = tests["test_scenario.py::test_body_fails"]
    assert (failed["queries"], failed["complete"], failed["outcome"]) == (1, False, "failed")
    skipped = tests["test_scenario.py::test_skipped"]
    assert (skipped["queries"], skipped["complete"], skipped["outcome"]) == (0, False, "skipped")
    assert tests["test_scenario.py::test_no_queries"]["queries"] == 0
    assert "budget" not in tests["test_scenario.py::test_no_queries"]
    result.stdout.fnmatch_lines(["report: out/report.json"])


@sqlite_only
def test_report_is_not_written_by_collect_only(project: Project) -> None:
    project.write_test(SCENARIO)
    result = project.run("--noplusone-report=report.json", "--collect-only")
    assert result.ret == 0
    assert not (project.pytester.path / "report.json").exists()


@sqlite_only
def test_a_report_that_cannot_be_written_fails_the_run(project: Project) -> None:
    # The directory is fine before the run (checked up front) and broken by the time of writing.
    (project.pytester.path / "out").mkdir()
    project.write_test(
        """
        import pathlib


        def test_breaks_the_report_directory():
            pathlib.Path("out").rmdir()
            pathlib.Path("out").write_text("now a file")
        """
    )
    result = project.run("--noplusone-report=out/report.json")
    result.assert_outcomes(passed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["noplusone could not write out/report.json: [[]Errno 17[]] File exists: 'out'."]
    )


@sqlite_only
def test_junit_properties(project: Project) -> None:
    project.write_test(SCENARIO)
    project.run("--junitxml=junit.xml")
    root = ET.parse(project.pytester.path / "junit.xml").getroot()
    properties = {
        case.get("name"): {
            prop.get("name"): prop.get("value") for prop in case.iter("property")
        }
        for case in root.iter("testcase")
    }
    assert properties == {
        "test_over_budget": {"noplusone_queries": "3"},
        "test_nplusone": {"noplusone_queries": "4", "noplusone_findings": "1"},
        "test_body_fails": {"noplusone_queries": "1"},
        "test_skipped": {"noplusone_queries": "0"},
        "test_no_queries": {"noplusone_queries": "0"},
    }


SECRET_SCENARIO = """
import os

from sqlalchemy import select, text
from models import User

SECRET = os.environ["SCENARIO_SECRET"]


async def test_secret_in_parameters(session):
    await session.scalars(select(User).where(User.name == SECRET))
    assert (await session.execute(text("SELECT :value"), {{"value": SECRET}})).scalar() == SECRET
    await session.execute(text("SELECT '" + SECRET + "'"))
    await session.execute(text("SELECT 1 WHERE 'x' = '" + SECRET + "'"))


async def test_secret_in_a_loop(session):
    for _ in range(3):
        await session.scalars(select(User).where(User.name == SECRET + "{suffix}"))
"""


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and "__pycache__" not in path.parts]


def test_no_secret_in_any_file(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_no_secret_in_any_file(project, monkeypatch, "s3cr3t-f0r-n0plus0ne")


# The URL password exists only on PostgreSQL (SQLite URLs reject one): no SQLite case to skip.
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_no_url_password_in_any_file(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-f0r-n0plus0ne"
    # Trust authentication accepts any password: it still travels in the engine URL.
    monkeypatch.setenv("NOPLUSONE_TEST_URL", PG_URL.replace("postgres@", f"postgres:{secret}@"))
    _assert_no_secret_in_any_file(project, monkeypatch, secret)


def _assert_no_secret_in_any_file(
    project: Project, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("SCENARIO_SECRET", secret)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.pytester.path / "step-summary.md"))
    project.write_test(SECRET_SCENARIO.format(suffix=""))
    root = project.pytester.path
    result = project.run(
        "--noplusone-report=report.json",
        "--noplusone-baseline=baseline.json",
        "--noplusone-update-baseline",
        "--noplusone-nplusone=warn",
        "--junitxml=junit.xml",
    )
    result.assert_outcomes(passed=2, warnings=1)
    project.write_test(SECRET_SCENARIO.format(suffix="-other"))
    result = project.run(
        "--noplusone-report=report.json",
        "--noplusone-baseline=baseline.json",
        "--noplusone-nplusone=warn",
        "--junitxml=j.xml",
    )
    result.assert_outcomes(passed=2, warnings=1)
    written = {path.name for path in _files(root)}
    assert {"report.json", "baseline.json", "junit.xml", "j.xml", "step-summary.md"} <= written
    report = json.loads((root / "report.json").read_text())
    assert report["totals"]["queries"] == 7
    assert report["totals"]["findings"] == 1
    for path in _files(root):
        assert secret.encode() not in path.read_bytes(), path
