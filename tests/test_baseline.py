"""The count baseline: create, compare (regression, improvement, new), partial update, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project

from pytest_noplusone import counts

#: ``test_one`` and ``test_two`` run 1 + n queries for n users; the loop is not an N+1 finding
#: here because these runs pass --noplusone-nplusone=off (the gate is about counts).
SCENARIO = """
import pytest
from sqlalchemy import select
from models import Post, User


async def posts_of(session, users):
    for user in (await session.scalars(select(User).order_by(User.id).limit(users))).all():
        await session.scalars(select(Post).where(Post.author_id == user.id))


async def test_one(session):
    await posts_of(session, {one})


async def test_two(session):
    await posts_of(session, {two})


def test_none():
    pass
{extra}
"""

USERS = "select users.id, users.name from users order by users.id limit ? offset ?"
POSTS = "select posts.id, posts.title, posts.author_id from posts where posts.author_id = ?"
OFF = "--noplusone-nplusone=off"

sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def write(project: Project, one: int, two: int, extra: str = "") -> None:
    project.write_test(SCENARIO.format(one=one, two=two, extra=extra))


def entry(users: int) -> dict[str, object]:
    return {"queries": 1 + users, "fingerprints": {USERS: 1, POSTS: users}}


def create(project: Project, path: Path) -> pytest.RunResult:
    result = project.run(OFF, f"--noplusone-baseline={path}", "--noplusone-update-baseline")
    assert result.ret == 0, result.stdout.str()
    return result


@sqlite_only
def test_update_creates_a_sorted_versioned_baseline(project: Project) -> None:
    write(project, one=1, two=2)
    path = project.pytester.path / "counts" / "baseline.json"
    result = create(project, path)
    result.stdout.fnmatch_lines(["baseline counts/baseline.json updated: 0 regressions, *3 new"])
    text = path.read_text()
    assert json.loads(text) == {
        "version": 1,
        "totals": {"queries": 5, "tests": 3},
        "tests": {
            "test_scenario.py::test_none": {"queries": 0, "fingerprints": {}},
            "test_scenario.py::test_one": entry(1),
            "test_scenario.py::test_two": entry(2),
        },
    }
    assert text.startswith('{\n  "version": 1,\n  "totals": {')
    assert text.endswith("}\n")
    # An unchanged run compares clean and leaves the file alone.
    before = path.stat().st_mtime_ns
    result = project.run(OFF, f"--noplusone-baseline={path}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["baseline counts/baseline.json: 0 regressions, 0 improvements, 0 new"])
    assert path.stat().st_mtime_ns == before
    # Fewer queries and a new test pass the counts.
    write(project, one=0, two=2, extra="\n\ndef test_added():\n    pass\n")
    result = project.run(OFF, f"--noplusone-baseline={path}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["baseline counts/baseline.json: 0 regressions, 1 improvement, 1 new"])


def test_regression_fails_the_test_with_the_statements_that_grew(project: Project) -> None:
    write(project, one=2, two=2)
    path = project.pytester.path / "baseline.json"
    create(project, path)
    original = path.read_bytes()
    write(project, one=1, two=4, extra="\n\nasync def test_new(session):\n    pass\n")
    result = project.run(OFF, f"--noplusone-baseline={path}")
    assert result.ret == 1
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_two _*",
            "Expected at most 3 queries (the count in the baseline baseline.json) but 5 were run.",
            "Statements that ran more often than in the baseline:",
            "  select posts.id, posts.title, posts.author_id from posts where posts.author_id = ?: "
            "2 -> 4",
            "Where they ran:",
            "  1. 4x SELECT posts.id, posts.title, posts.author_id FROM posts WHERE *",
            "       from test_scenario.py:8 in posts_of",
            "       called from test_scenario.py:16 in test_two",
            "fix: remove the extra queries *, or if the new count is intended, record it with "
            "--noplusone-update-baseline",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "baseline baseline.json: 1 regression, 1 improvement, 1 new",
            "  regression   test_scenario.py::test_two: 3 -> 5 queries",
            "  improvement  test_scenario.py::test_one: 3 -> 2 queries",
            "  new          test_scenario.py::test_new: 0 queries",
        ]
    )
    assert path.read_bytes() == original  # comparing never writes


@sqlite_only
def test_regression_in_a_test_that_cannot_fail_still_fails_the_run(project: Project) -> None:
    # A non-strict xfail swallows the test's failure; the gate still fails the session.
    write(project, one=1, two=1)
    path = project.pytester.path / "baseline.json"
    create(project, path)
    project.write_test(
        SCENARIO.format(one=1, two=3, extra="").replace(
            "async def test_two", "@pytest.mark.xfail(strict=False)\nasync def test_two"
        )
    )
    result = project.run(OFF, f"--noplusone-baseline={path}")
    result.assert_outcomes(passed=2, xfailed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "test_scenario.py::test_two ran 4 queries, above its baseline of 2, but was not "
            "reported as failed (xfail?); the run fails."
        ]
    )


@sqlite_only
def test_partial_update_keeps_the_tests_that_did_not_run(project: Project) -> None:
    write(project, one=1, two=1)
    path = project.pytester.path / "baseline.json"
    create(project, path)
    write(project, one=3, two=4)
    result = project.run(
        OFF, f"--noplusone-baseline={path}", "--noplusone-update-baseline", "-k", "test_one"
    )
    assert result.ret == 0
    entries = counts.load_counts(path)
    assert entries["test_scenario.py::test_one"].queries == 4  # updated
    assert entries["test_scenario.py::test_two"].queries == 2  # kept: it did not run
    assert entries["test_scenario.py::test_none"].queries == 0
    assert json.loads(path.read_text())["totals"] == {"queries": 6, "tests": 3}


@sqlite_only
def test_update_keeps_the_entry_of_a_test_whose_body_failed(project: Project) -> None:
    # A failed body ran only part of its queries: its count is not recorded.
    write(project, one=2, two=2)
    path = project.pytester.path / "baseline.json"
    create(project, path)
    write(project, one=1, two=1, extra="\n\ndef test_more():\n    pass\n")
    source = (project.pytester.path / "test_scenario.py").read_text()
    (project.pytester.path / "test_scenario.py").write_text(
        source.replace("await posts_of(session, 1)\n", "await posts_of(session, 1)\n    assert 0\n", 1)
    )
    result = project.run(OFF, f"--noplusone-baseline={path}", "--noplusone-update-baseline")
    result.assert_outcomes(passed=3, failed=1)
    entries = counts.load_counts(path)
    assert entries["test_scenario.py::test_one"].queries == 3  # kept
    assert entries["test_scenario.py::test_two"].queries == 2  # lowered: the ratchet
    assert entries["test_scenario.py::test_more"].queries == 0  # added


@sqlite_only
@pytest.mark.parametrize("update", [False, True])
def test_corrupt_baseline_is_a_usage_error_and_left_untouched(
    project: Project, update: bool
) -> None:
    write(project, one=1, two=1)
    path = project.pytester.path / "baseline.json"
    path.write_text('{"version": 1, "tests": {')
    args = [f"--noplusone-baseline={path}"] + (["--noplusone-update-baseline"] if update else [])
    result = project.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: noplusone baseline {path}: not valid JSON (Expecting *); fix it, restore it "
            "from version control, or delete it and rerun with --noplusone-update-baseline. "
            "The file was left untouched."
        ]
    )
    assert path.read_text() == '{"version": 1, "tests": {'


@sqlite_only
def test_missing_baseline_is_a_usage_error_naming_the_path(project: Project) -> None:
    write(project, one=1, two=1)
    result = project.run("--noplusone-baseline=nowhere/baseline.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: noplusone baseline nowhere/baseline.json: no such file; create it with "
            "--noplusone-update-baseline, or fix the path."
        ]
    )
    assert not (project.pytester.path / "nowhere").exists()


@sqlite_only
@pytest.mark.parametrize("update", [False, True])
def test_directory_as_baseline_is_told_to_name_a_file(project: Project, update: bool) -> None:
    write(project, one=1, two=1)
    (project.pytester.path / "ci").mkdir()
    args = ["--noplusone-baseline=ci"] + (["--noplusone-update-baseline"] if update else [])
    result = project.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: noplusone baseline ci: a directory, not a file; give the path of a file, "
            "e.g. --noplusone-baseline=ci/noplusone-baseline.json."
        ]
    )
    assert list((project.pytester.path / "ci").iterdir()) == []


@sqlite_only
def test_ini_baseline_is_resolved_against_the_rootdir(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(project, one=1, two=1)
    root = project.pytester.path
    (root / "pytest.ini").write_text(
        (root / "pytest.ini").read_text() + "\nnoplusone_baseline = ci/counts.json\n"
    )
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    result = project.run(OFF, "--noplusone-update-baseline", str(root))
    assert result.ret == 0, result.stdout.str()
    assert len(counts.load_counts(root / "ci" / "counts.json")) == 3
    assert not (root / "sub" / "ci").exists()


@sqlite_only
def test_unwritable_baseline_is_reported_before_the_run(project: Project) -> None:
    write(project, one=1, two=1)
    (project.pytester.path / "blocker").write_text("a file, not a directory")
    result = project.run("--noplusone-baseline=blocker/baseline.json", "--noplusone-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: noplusone could not write blocker/baseline.json: blocker is not a directory."]
    )


def test_update_without_a_baseline_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--noplusone-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --noplusone-update-baseline needs a baseline file: pass "
            "--noplusone-baseline PATH or set noplusone_baseline in the ini file."
        ]
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[]", "not a JSON object"),
        ('{"version": 2, "tests": {}}', '"version": 2, but this plugin reads "version": 1'),
        (
            '{"version": "1", "tests": {}}',
            '"version": "1", but this plugin reads "version": 1 (a number, not a string)',
        ),
        ('{"tests": {}}', 'no "version"; this plugin reads "version": 1'),
        ('{"version": 1}', 'no "tests" object'),
        ('{"version": 1, "tests": {"t": 3}}', "tests['t'] is not an object"),
        (
            '{"version": 1, "tests": {"t": {"queries": -1}}}',
            "tests['t'][\"queries\"] is not a non-negative integer",
        ),
        (
            '{"version": 1, "tests": {"t": {"queries": true}}}',
            "tests['t'][\"queries\"] is not a non-negative integer",
        ),
        (
            '{"version": 1, "tests": {"t": {"queries": 1, "fingerprints": {"x": "1"}}}}',
            "tests['t'][\"fingerprints\"] is not an object of non-negative integers",
        ),
        (b"\xff\xfe", "unreadable ("),
    ],
)
def test_load_counts_names_what_is_wrong(
    tmp_path: Path, content: str | bytes, reason: str
) -> None:
    path = tmp_path / "baseline.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(counts.CountsFileError) as error:
        counts.load_counts(path)
    assert error.value.reason.startswith(reason)
    assert str(error.value).startswith(f"{path}: ")


def test_load_counts_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(counts.CountsFileError, match="a directory, not a file"):
        counts.load_counts(tmp_path)


def test_atomic_write_leaves_the_old_file_when_the_rename_fails(tmp_path: Path) -> None:
    target = tmp_path / "baseline.json"
    target.mkdir()  # os.replace of a file onto a directory fails after the data was written
    (target / "keep").write_text("old")
    with pytest.raises(OSError, match="directory"):
        counts.write_atomic(target, '{"version": 1}\n')
    assert (target / "keep").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]  # no temp file left


def test_atomic_write_keeps_the_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "baseline.json"
    target.write_text("old")
    target.chmod(0o640)
    counts.write_atomic(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640


CRASH = """
import os
import signal


def pytest_configure(config):
    # The process dies after the new content was written to the temp file, before the rename.
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
"""


@sqlite_only
def test_a_crash_mid_write_leaves_the_old_baseline(project: Project) -> None:
    write(project, one=1, two=1)
    path = project.pytester.path / "baseline.json"
    create(project, path)
    original = path.read_bytes()
    write(project, one=2, two=3)
    project.pytester.makepyfile(crash=CRASH)
    result = project.run(
        OFF, "-p", "crash", f"--noplusone-baseline={path}", "--noplusone-update-baseline"
    )
    assert result.ret == -9  # killed
    assert path.read_bytes() == original
    leftovers = [p.name for p in project.pytester.path.glob(".baseline.json.*.tmp")]
    assert len(leftovers) == 1
    # The next run is not disturbed by the leftover and writes the new counts.
    result = project.run(OFF, f"--noplusone-baseline={path}", "--noplusone-update-baseline")
    assert result.ret == 0
    assert counts.load_counts(path)["test_scenario.py::test_two"].queries == 4
