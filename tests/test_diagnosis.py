"""Diagnosis: a failure caused by a lazy load starts with a short explanation (what, which kind,
the line that touched it, the query that loaded the parents, the fix), then the original
traceback; errors that the code under test swallowed still fail the test."""

from __future__ import annotations

import textwrap

from conftest import Project

APP = '''
from sqlalchemy import select

from models import User


async def titles(session, user_id):
    """A handler that turns every error into a 500, as web frameworks do."""
    try:
        user = await session.get(User, user_id)
        return 200, [post.title for post in user.posts]
    except Exception:
        return 500, []


def count_in_a_thread(user):
    """A worker thread that logs and drops its errors."""
    import threading

    def work():
        try:
            len(user.posts)
        except Exception:
            pass

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
'''

ENFORCED_TEST = '''
import asyncio
import sys

import pytest
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import async_sessionmaker

import app
from models import Post, User


async def test_collection(session):
    users = (await session.scalars(select(User).order_by(User.id))).all()  # load-users
    titles = []
    for user in users:
        for post in user.posts:  # touch-posts
            titles.append(post.title)


async def test_many_to_one(session):
    posts = (await session.scalars(select(Post))).all()  # load-posts
    assert posts[0].author.name  # touch-author


async def test_one_to_one(session):
    user = await session.get(User, 1)  # get-user
    user.profile  # touch-profile


async def test_many_to_many_in_a_task_group(session):
    post = await session.get(Post, 1)
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup needs Python 3.11")

    async def tags():
        return post.tags  # touch-tags

    async with asyncio.TaskGroup() as group:  # the error arrives in an ExceptionGroup
        group.create_task(tags())


async def test_app_hid_the_error_and_the_test_failed(session):
    status, _ = await app.titles(session, 1)  # call-app
    assert status == 200


async def test_app_hid_the_error_and_the_test_passed(session):
    await app.titles(session, 2)


async def test_a_worker_thread_hid_the_error(session):
    app.count_in_a_thread(await session.get(User, 5))


async def test_an_expected_error_is_not_a_failure(session):
    user = await session.get(User, 3)
    with pytest.raises(InvalidRequestError):
        user.posts


def refuses(instance, key):
    with pytest.raises(InvalidRequestError):
        getattr(instance, key)


async def test_an_error_expected_by_a_test_helper_is_not_a_failure(session):
    refuses(await session.get(User, 4), "posts")


async def test_detached(sessionmaker):
    async with sessionmaker() as session:
        user = await session.get(User, 1)
    user.posts  # touch-detached


async def test_expired_column_after_commit(engine):
    async with async_sessionmaker(engine)() as session:  # expire_on_commit=True
        user = await session.get(User, 1)
        user.name = "renamed"
        await session.commit()
        user.name  # touch-expired-column


async def test_expired_relationship_after_commit(engine):
    async with async_sessionmaker(engine)() as session:
        user = await session.get(User, 1)
        await session.commit()
        user.posts  # touch-expired-posts
'''


def line(source: str, marker: str) -> int:
    """The line number of ``marker`` in a scenario file as pytester writes it."""
    lines = textwrap.dedent(source).strip().splitlines()
    return next(number for number, text in enumerate(lines, 1) if marker in text)


def at(marker: str, function: str, source: str = ENFORCED_TEST, name: str = "test_scenario") -> str:
    return f"{name}.py:{line(source, marker)} in {function}"


def test_each_lazy_load_failure_is_explained_before_its_traceback(project: Project) -> None:
    project.pytester.makepyfile(app=APP)
    project.write_test(ENFORCED_TEST)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(failed=10, passed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_collection _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            f"  touched at: {at('touch-posts', 'test_collection')}",
            f"  the User was loaded at: {at('load-users', 'test_collection')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            "       or, for one object: await user.awaitable_attrs.posts",
            "  allow_lazy cannot make a lazy load work in async code; a test that expects this "
            'error (caught by your code): @pytest.mark.allow_lazy("User.posts")',
            "",
            # then the original traceback, untouched
            "*async def test_collection(session):",
            "E   *sqlalchemy.exc.InvalidRequestError: 'User.posts' is not available due to "
            "lazy='raise_on_sql'",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_many_to_one _*",
            "noplusone: Post.author (many-to-one) was lazily loaded, which lazy='raise_on_sql' "
            "forbids (enforced by pytest-noplusone).",
            f"  touched at: {at('touch-author', 'test_many_to_one')}",
            f"  the Post was loaded at: {at('load-posts', 'test_many_to_one')}",
            "  fix: eager-load it in the query that loads the Post objects:",
            "       select(Post).options(joinedload(Post.author))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_one_to_one _*",
            "noplusone: User.profile (one-to-one scalar) was lazily loaded, *",
            f"  touched at: {at('touch-profile', 'test_one_to_one')}",
            f"  the User was loaded at: {at('get-user', 'test_one_to_one')}",
            "       select(User).options(joinedload(User.profile))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_many_to_many_in_a_task_group _*",
            "noplusone: Post.tags (many-to-many collection) was lazily loaded, *",
            f"  touched at: {at('touch-tags', 'tags')}",
            "       select(Post).options(selectinload(Post.tags))",
        ]
    )
    app_touch = f"app.py:{line(APP, 'user.posts')} in titles"
    app_get = f"app.py:{line(APP, 'session.get')} in titles"
    result.stdout.fnmatch_lines(
        [
            "*_ test_app_hid_the_error_and_the_test_failed _*",
            "noplusone: a lazy load failed during this test, and your code caught the error "
            "before the test saw it (it may be why the test failed).",
            "",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, *",
            f"  touched at: {app_touch}",
            f"  called from: {at('call-app', 'test_app_hid_the_error_and_the_test_failed')}",
            f"  the User was loaded at: {app_get}",
            "*assert status == 200*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_app_hid_the_error_and_the_test_passed _*",
            "noplusone: a lazy load failed in this test, but the error never reached the test: "
            "your code caught it (an HTTP 500 response, for example).",
            "",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, *",
            f"  touched at: {app_touch}",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_worker_thread_hid_the_error _*",
            "noplusone: a lazy load failed in this test, but the error never reached the test: *",
            "",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, *",
            f"  touched at: app.py:{line(APP, 'len(user.posts)')} in work",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_detached _*",
            "noplusone: User.posts (one-to-many collection) was touched on a detached User (its "
            "session was closed or it was expunged), so it cannot be loaded "
            "(DetachedInstanceError).",
            f"  touched at: {at('touch-detached', 'test_detached')}",
            "  fix: eager-load it while the session is open, in the query that loads the User "
            "objects:",
            "       select(User).options(selectinload(User.posts))",
            "E   *DetachedInstanceError: Parent instance <User at *> is not bound to a Session*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_expired_column_after_commit _*",
            "noplusone: User.name was touched after commit() expired it (expire_on_commit=True); "
            "reloading needs a query that cannot run here (async code, or a closed session).",
            f"  touched at: {at('touch-expired-column', 'test_expired_column_after_commit')}",
            "  fix: keep loaded attributes after commit: "
            "async_sessionmaker(engine, expire_on_commit=False),",
            "       or reload them explicitly: await session.refresh(user)",
            "E   *MissingGreenlet*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_expired_relationship_after_commit _*",
            "noplusone: User.posts (one-to-many collection) was touched on a User expired by "
            "commit() (expire_on_commit=True); *",
            f"  touched at: {at('touch-expired-posts', 'test_expired_relationship_after_commit')}",
            "  fix: keep loaded attributes after commit: *",
            "       and eager-load it: select(User).options(selectinload(User.posts))",
        ]
    )
    result.stdout.no_fnmatch_line("*_ test_an_expected_error_is_not_a_failure _*")
    result.stdout.no_fnmatch_line("*_ test_an_error_expected_by_a_test_helper_is_not_a_failure _*")


UNENFORCED_TEST = '''
from sqlalchemy import select

import app
from models import User


async def test_missing_greenlet(session):
    users = (await session.scalars(select(User).order_by(User.id))).all()  # load-users
    users[0].posts  # touch-posts


async def test_swallowed_without_enforcement_is_not_a_failure(session):
    await app.titles(session, 1)
'''


def test_missing_greenlet_is_explained_without_enforcement(project: Project) -> None:
    project.pytester.makepyfile(app=APP)
    project.write_test(UNENFORCED_TEST)
    result = project.run("--noplusone-enforce=off")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_missing_greenlet _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded in async code, "
            "where SQLAlchemy cannot run the implicit query (MissingGreenlet).",
            f"  touched at: {at('touch-posts', 'test_missing_greenlet', UNENFORCED_TEST)}",
            "  the User was loaded at: "
            f"{at('load-users', 'test_missing_greenlet', UNENFORCED_TEST)}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            "       or, for one object: await user.awaitable_attrs.posts",
            "",
            # SQLAlchemy 2.0 raises it bare, 2.1 inside a StatementError: both stay visible
            "E   *MissingGreenlet*greenlet_spawn has not been called*",
        ]
    )


HIDDEN_GREENLET_APP = '''
async def rename(session, user, name):
    """Renames and answers with the new name; every error becomes a 500."""
    try:
        user.name = name
        await session.commit()
        return 200, user.name  # expired by commit()
    except Exception:
        return 500, None


async def titles(user):
    try:
        return 200, [post.title for post in user.posts]  # allowed, so a real query
    except Exception:
        return 500, []
'''

HIDDEN_GREENLET_TEST = '''
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

import greenlet_app
from models import User


async def test_expired_column(engine):
    async with async_sessionmaker(engine)() as session:
        await greenlet_app.rename(session, await session.get(User, 1), "renamed")


@pytest.mark.allow_lazy("User.posts")
async def test_an_allowed_relationship_expects_the_error(session):
    status, _ = await greenlet_app.titles(await session.get(User, 1))
    assert status == 500
'''


def test_a_missing_greenlet_the_code_under_test_caught_still_fails(project: Project) -> None:
    """SQLAlchemy raises MissingGreenlet from the driver (in the cursor's creation on
    aiosqlite, in its execution on asyncpg): the plugin sees it where it is raised."""
    project.pytester.makepyfile(greenlet_app=HIDDEN_GREENLET_APP)
    project.write_test(HIDDEN_GREENLET_TEST)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1)
    hidden = (
        "noplusone: a lazy load failed in this test, but the error never reached the test: "
        "your code caught it (an HTTP 500 response, for example)."
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_expired_column _*",
            hidden,
            "",
            "noplusone: User.name was touched after commit() expired it (expire_on_commit=True); *",
            f"  touched at: greenlet_app.py:{line(HIDDEN_GREENLET_APP, 'return 200, user.name')}"
            " in rename",
            "  called from: "
            + at("greenlet_app.rename", "test_expired_column", HIDDEN_GREENLET_TEST),
        ]
    )
    # allow_lazy cannot make it work in async code, so the test says it expects the 500
    result.stdout.no_fnmatch_line("*_ test_an_allowed_relationship_expects_the_error _*")


XDIST_TEST = '''
from sqlalchemy import select

from models import User


async def test_collection(session):
    user = (await session.scalars(select(User))).first()
    user.posts
'''


def test_the_explanation_survives_xdist(project: Project) -> None:
    project.write_test(XDIST_TEST)
    result = project.run("-p", "xdist", "-n", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "noplusone: User.posts (one-to-many collection) was lazily loaded, *",
            "  touched at: test_scenario.py:8 in test_collection",
            "*InvalidRequestError: 'User.posts' is not available due to lazy='raise_on_sql'",
        ]
    )
