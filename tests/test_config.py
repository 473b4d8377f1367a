"""Configuration conventions: typed ini options in every config style, the off switch."""

from __future__ import annotations

import pytest
from conftest import Project


@pytest.mark.parametrize(
    ("filename", "config"),
    [
        ("pytest.ini", "[pytest]\nnoplusone_max_queries = 1\nnoplusone_threshold = 3\n"),
        (
            "pyproject.toml",
            "[tool.pytest.ini_options]\nnoplusone_max_queries = 1\nnoplusone_threshold = 3\n",
        ),
        # pytest 9's native TOML table: real ints, no strings.
        ("pyproject.toml", "[tool.pytest]\nnoplusone_max_queries = 1\nnoplusone_threshold = 3\n"),
    ],
    ids=["ini", "toml-ini_options", "toml-native"],
)
def test_int_options_in_every_config_style(
    pytester: pytest.Pytester, filename: str, config: str
) -> None:
    if config.startswith("[tool.pytest]\n") and int(pytest.__version__.split(".")[0]) < 9:
        pytest.skip("the native [tool.pytest] table is pytest 9's")
    (pytester.path / filename).write_text(config)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["noplusone: enforce=raise_on_sql nplusone=fail threshold=3 max_queries=1"])


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            "[pytest]\nnoplusone_show_params = perhaps\n",
            "'perhaps' is not a valid noplusone_show_params; use true or false.",
        ),
        (
            "[pytest]\nnoplusone = sometimes\n",
            "'sometimes' is not a valid noplusone; use true or false.",
        ),
    ],
)
def test_bad_bool_names_the_option_and_value(
    pytester: pytest.Pytester, config: str, error: str
) -> None:
    pytester.makeini(config)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {error}"])


def test_native_toml_string_for_an_int_names_the_option(pytester: pytest.Pytester) -> None:
    if int(pytest.__version__.split(".")[0]) < 9:
        pytest.skip("the native [tool.pytest] table is pytest 9's")
    pytester.makepyprojecttoml('[tool.pytest]\nnoplusone_threshold = "many"\n')
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: 'many' is not a valid noplusone_threshold; use a whole number >= 2."]
    )


OFF_SUITE = """
import pytest
from sqlalchemy import select

from models import User


@pytest.mark.max_queries(0)
@pytest.mark.allow_lazy("User.posts")
async def test_markers_are_accepted_and_ignored(session, noplusone_queries):
    users = (await session.scalars(select(User))).all()
    for user in users:  # an N+1, and the budget of 0 broken: neither is checked
        await session.scalars(select(User).where(User.id == user.id))
    assert noplusone_queries.count == 6


async def test_lazy_loads_are_not_forced(sessionmaker):
    def titles(sync_session):
        user = sync_session.scalars(select(User)).first()
        return [post.title for post in user.posts]  # a sync lazy load: allowed again

    async with sessionmaker() as session:
        assert await session.run_sync(titles) == ["post 0.0", "post 0.1"]
"""


@pytest.mark.parametrize(
    "switch", [("--noplusone-off",), ("-o", "noplusone=off")], ids=["option", "ini"]
)
def test_off_switch_keeps_markers_and_fixture(project: Project, switch: tuple[str, ...]) -> None:
    project.write_test(OFF_SUITE)
    result = project.run("--strict-markers", "--noplusone-report=report.json", *switch)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["noplusone: off (markers are ignored; noplusone_queries still counts)"]
    )
    result.stdout.no_fnmatch_line("*= noplusone =*")
    assert not (project.pytester.path / "report.json").exists()


def test_without_the_switch_the_same_suite_fails(project: Project) -> None:
    project.write_test(OFF_SUITE)
    # run_sync's lazy loads run by default; forbidden, the lazy load of the suite is forced.
    result = project.run("--strict-markers", "-o", "noplusone_run_sync=forbid")
    result.assert_outcomes(passed=0, failed=2)
