"""``python -m pytest_noplusone compare OLD.json NEW.json``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_noplusone import __version__, counts
from pytest_noplusone.__main__ import main

USERS = "select users.id, users.name from users"
POSTS = "select posts.id, posts.title from posts where posts.author_id = ?"


def write(path: Path, tests: dict[str, dict[str, object]]) -> Path:
    path.write_text(counts.dumps({"queries": 0, "tests": len(tests)}, tests))
    return path


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return write(
        tmp_path / "old.json",
        {
            "t.py::test_grows": {"queries": 2, "fingerprints": {USERS: 1, POSTS: 1}},
            "t.py::test_shrinks": {"queries": 6, "fingerprints": {USERS: 1, POSTS: 5}},
            "t.py::test_same": {"queries": 1, "fingerprints": {USERS: 1}},
            "t.py::test_removed": {"queries": 3, "fingerprints": {USERS: 3}},
        },
    )


@pytest.fixture
def new(tmp_path: Path) -> Path:
    return write(
        tmp_path / "new.json",
        {
            "t.py::test_grows": {"queries": 7, "fingerprints": {USERS: 2, POSTS: 5}},
            "t.py::test_shrinks": {"queries": 2, "fingerprints": {USERS: 1, POSTS: 1}},
            "t.py::test_same": {"queries": 1, "fingerprints": {USERS: 1}},
            "t.py::test_added": {"queries": 4, "fingerprints": {USERS: 4}},
        },
    )


def test_compare_lists_deltas_and_fails_when_a_count_rose(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(old), str(new)]) == 1
    assert capsys.readouterr().out == (
        "test                old  new   change\n"
        "t.py::test_grows      2    7       +5\n"
        "t.py::test_added      -    4      new\n"
        "t.py::test_shrinks    6    2       -4\n"
        "t.py::test_removed    3    -  removed\n"
        "\n"
        "t.py::test_grows (2 -> 7):\n"
        "  select posts.id, posts.title from posts where posts.author_id = ?: 1 -> 5\n"
        "  select users.id, users.name from users: 1 -> 2\n"
        "\n"
        "1 rose, 1 fell, 1 new, 1 removed, 1 unchanged; 12 -> 14 queries in total.\n"
    )


def test_compare_passes_when_nothing_rose(
    old: Path, new: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(new), str(new), "--all"]) == 0
    assert capsys.readouterr().out == (
        "test                old  new     change\n"
        "t.py::test_added      4    4  unchanged\n"
        "t.py::test_grows      7    7  unchanged\n"
        "t.py::test_same       1    1  unchanged\n"
        "t.py::test_shrinks    2    2  unchanged\n"
        "\n"
        "0 rose, 0 fell, 0 new, 0 removed, 4 unchanged; 14 -> 14 queries in total.\n"
    )


def test_compare_reads_reports_and_skips_incomplete_tests(
    tmp_path: Path, old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A report's failed body ran part of its queries: it is not a fall, it is not compared.
    report = write(
        tmp_path / "report.json",
        {
            "t.py::test_grows": {
                "queries": 1,
                "fingerprints": {USERS: 1},
                "complete": False,
                "outcome": "failed",
                "findings": [],
            },
            "t.py::test_same": {
                "queries": 1,
                "fingerprints": {USERS: 1},
                "complete": True,
                "outcome": "passed",
                "findings": [],
            },
        },
    )
    assert main(["compare", str(old), str(report)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "0 rose, 0 fell, 0 new, 3 removed, 1 unchanged; 12 -> 1 query in total."
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("{", "not valid JSON (Expecting property name enclosed in double quotes: line 1 "
              "column 2 (char 1))"),
        ('{"version": 1, "tests": {"t": {"queries": "3"}}}',
         "tests['t'][\"queries\"] is not a non-negative integer"),
    ],
)
def test_bad_file_is_one_line_naming_the_path_and_exit_2(
    tmp_path: Path,
    old: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    reason: str,
) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert main(["compare", str(old), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {bad}: {reason}\n"


def test_module_entry_point(old: Path, new: Path) -> None:
    command = [sys.executable, "-m", "pytest_noplusone", "compare", str(old), str(new)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("test ")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_noplusone", "compare", str(old)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "the following arguments are required: NEW.json" in done.stderr



def test_compare_leaves_schema_work_out_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pragma = 'pragma main.table_info ("notes")'
    before = write(
        tmp_path / "before.json",
        {"t.py::test_a": {"queries": 2, "fingerprints": {USERS: 1, pragma: 1}}},
    )
    after = write(
        tmp_path / "after.json",
        {"t.py::test_a": {"queries": 4, "fingerprints": {USERS: 1, pragma: 3}}},
    )
    assert main(["compare", str(before), str(after)]) == 0
    assert capsys.readouterr().out == "0 rose, 0 fell, 0 new, 0 removed, 1 unchanged; 1 -> 1 query in total.\n"
    assert main(["compare", "--compare-schema", str(before), str(after)]) == 1
    assert capsys.readouterr().out.splitlines()[1].split() == ["t.py::test_a", "2", "4", "+2"]


def module(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest_noplusone", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_no_arguments_print_the_help() -> None:
    done = module()
    assert done.returncode == 0
    assert done.stdout.splitlines()[:3] == [
        "usage: python -m pytest_noplusone [-h] [--version] COMMAND ...",
        "",
        "Tools for pytest-noplusone report and baseline files.",
    ]
    assert "    compare   compare the per-test query counts of two report or baseline" in (
        done.stdout.splitlines()
    )


def test_version() -> None:
    done = module("--version")
    assert (done.returncode, done.stdout) == (0, f"pytest-noplusone {__version__}\n")


def test_bad_call_prints_the_subcommands_usage() -> None:
    done = module("compare", "only-one.json")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "usage: python -m pytest_noplusone compare [-h] [--all] [--compare-schema]",
        "                                          OLD.json NEW.json",
        "python -m pytest_noplusone compare: error: the following arguments are required: NEW.json",
    ]
    done = module("comprae")
    assert done.returncode == 2
    usage, error = done.stderr.splitlines()
    assert usage == "usage: python -m pytest_noplusone [-h] [--version] COMMAND ..."
    # Python 3.12.8 stopped quoting the choices: (choose from compare).
    assert error.startswith(
        "python -m pytest_noplusone: error: argument COMMAND: invalid choice: 'comprae'"
    )


def test_console_script_is_named_noplusone(old: Path, new: Path) -> None:
    script = Path(sys.executable).with_name("noplusone")
    done = subprocess.run(
        [str(script), "compare", str(old)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "usage: noplusone compare [-h] [--all] [--compare-schema] OLD.json NEW.json"
    )
