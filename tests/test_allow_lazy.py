"""Opt-outs: the noplusone_allow_lazy ini list, the allow_lazy marker, awaitable_attrs, and the
warnings and errors for entries that cannot mean anything."""

from __future__ import annotations

import pytest
from conftest import Project

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider -p no:randomly
noplusone_allow_lazy =
    User.posts
    Post.*
    *.profile
    Usr.postz
{extra}
"""

ALLOW_TEST = '''
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import InvalidRequestError

from models import Comment, Post, Profile, Tag, User


def lazy(model, key):
    return inspect(model).relationships[key].lazy


def count_in_sync_code(session, model, key):
    """Lazy loading works in sync code: it shows that the relationship is allowed."""
    return session.run_sync(lambda sync: len(getattr(sync.get(model, 1), key) or []))


async def test_ini_entries_are_not_forced(session):
    assert lazy(User, "posts") == "select"  # User.posts
    assert lazy(Post, "author") == lazy(Post, "tags") == "select"  # Post.*
    assert lazy(User, "profile") == "select"  # *.profile
    assert lazy(Profile, "user") == lazy(Comment, "post") == "raise_on_sql"
    assert await count_in_sync_code(session, User, "posts") == 2


@pytest.mark.allow_lazy("Comment.post", "Tag.*")
async def test_marker_names(session):
    assert lazy(Comment, "post") == "raise_on_sql"  # allowed per test, still forced
    comment = await session.get(Comment, 1)
    assert await session.run_sync(lambda sync: sync.merge(comment).post.title) == "post 0.0"
    assert await count_in_sync_code(session, Tag, "posts") == 10
    profile = await session.get(Profile, 1)
    with pytest.raises(InvalidRequestError, match="'Profile.user' is not available"):
        profile.user


@pytest.mark.allow_lazy
async def test_marker_without_names_allows_everything(session):
    profile = await session.get(Profile, 2)
    assert await session.run_sync(lambda sync: sync.merge(profile).user.id) == profile.user_id


async def test_the_marker_lasts_one_test(session):
    comment = await session.get(Comment, 1)
    with pytest.raises(InvalidRequestError, match="'Comment.post' is not available"):
        comment.post


@pytest.mark.allow_lazy("Coment.post")
async def test_marker_typo():
    pass


@pytest.mark.allow_lazy(42)
async def test_bad_marker_argument():
    pass


async def test_awaitable_attrs_is_an_explicit_load(session, noplusone_queries):
    tag = await session.get(Tag, 1)
    posts = await tag.awaitable_attrs.posts
    assert len(posts) == 10
    lazy_loads = [query for query in noplusone_queries if query.loader == "lazy"]
    assert [query.relationship for query in lazy_loads] == ["Tag.posts"]
'''


def test_allow_list_marker_and_awaitable_attrs(project: Project) -> None:
    project.pytester.makefile(".ini", pytest=INI.format(extra=""))
    project.write_test(ALLOW_TEST)
    result = project.run()
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_bad_marker_argument _*",
            "@pytest.mark.allow_lazy expects names like 'Model.attr', 'Model.*', '*.attr', "
            "'package.module.Model.attr' or 'package.module.*' (none: every relationship), got "
            "allow_lazy(42)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*AllowLazyWarning: noplusone_allow_lazy entry 'Usr.postz' matches no mapped "
            "relationship; use Model.attr, Model.*, *.attr, package.module.Model.attr or "
            "package.module.* with the names of a mapped class and relationship.",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "test_scenario.py::test_marker_typo",
            "*AllowLazyWarning: @pytest.mark.allow_lazy entry 'Coment.post' matches no mapped "
            "relationship; *",
        ]
    )


FORBID_TEST = '''
from models import Tag


async def test_awaitable_attrs_forbidden(session):
    tag = await session.get(Tag, 1)
    await tag.awaitable_attrs.posts
'''


def test_awaitable_attrs_can_be_forbidden(project: Project) -> None:
    project.pytester.makefile(
        ".ini", pytest=INI.format(extra="noplusone_awaitable_attrs = forbid")
    )
    project.write_test(FORBID_TEST)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "noplusone: Tag.posts (many-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            "  touched at: test_scenario.py:6 in test_awaitable_attrs_forbidden",
            "*InvalidRequestError: 'Tag.posts' is not available due to lazy='raise_on_sql'",
        ]
    )


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        (
            "noplusone_allow_lazy = User",
            "ERROR: noplusone_allow_lazy: 'User' is not Model.attr, Model.*, *.attr, "
            "package.module.Model.attr or package.module.*",
        ),
        (
            "noplusone_awaitable_attrs = maybe",
            "ERROR: 'maybe' is not a valid noplusone_awaitable_attrs; use one of: allow, forbid.",
        ),
    ],
)
def test_bad_ini_values_are_usage_errors(pytester: pytest.Pytester, ini: str, message: str) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n" + ini)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
