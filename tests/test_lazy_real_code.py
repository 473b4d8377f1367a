"""Lazy loads on real code (issue 20): sync code and ``noplusone_sync_lazy``,
``AsyncSession.run_sync``, assignments that load a collection first, and tests that expect a
lazy-load failure; on aiosqlite and PostgreSQL, in sync and async code."""

from __future__ import annotations

import pytest
from conftest import CONFTEST, INI, Project

SYNC_FIXTURES = '''

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

SYNC_URL = URL.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


@pytest.fixture
def sync_session():
    """A sync Session on a sync engine (pysqlite, psycopg), on freshly seeded tables."""
    kwargs = {"connect_args": {"options": f"-csearch_path={SCHEMA}"}} if SCHEMA else {}
    engine = create_engine(SYNC_URL, **kwargs)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_objects())
        session.commit()
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()
'''

APP = '''
async def titles(session, user_id):
    """A handler that turns every error into a 500, as web frameworks do."""
    from models import User

    try:
        user = await session.get(User, user_id)
        return 200, [post.title for post in user.posts]
    except Exception:
        return 500, []


def update(instance, key, value):
    """An admin's generic update path."""
    setattr(instance, key, value)  # setattr


async def titles_in_sync_code(session, user):
    return await session.run_sync(lambda sync: [post.title for post in user.posts])  # run-sync
'''


def write(project: Project, test: str, ini: str = "") -> None:
    project.pytester.makepyfile(conftest=CONFTEST + SYNC_FIXTURES, app=APP)
    project.pytester.makefile(".ini", pytest=INI + ini)
    project.write_test(test)


def at(project: Project, marker: str, function: str, name: str = "test_scenario") -> str:
    return f"{name}.py:{project.line_of(marker, name)} in {function}"


SYNC_TEST = '''
from sqlalchemy import select

from models import Post, User


def test_one_user(sync_session):
    user = sync_session.get(User, 1)  # get-one
    assert [post.title for post in user.posts] == ["post 0.0", "post 0.1"]  # touch-one


def test_a_loop_over_users(sync_session):
    for user in sync_session.scalars(select(User)).all():
        assert len(user.posts) == 2  # touch-loop


def test_assigning_in_sync_code(sync_session):
    user = sync_session.get(User, 2)
    user.posts = [Post(title="new")]  # assign-sync
    assert [post.title for post in user.posts] == ["new"]


async def test_async_code_still_raises(session):
    user = await session.get(User, 1)  # get-async
    user.posts  # touch-async
'''


def test_sync_lazy_loads_raise_by_default(project: Project) -> None:
    write(project, SYNC_TEST)
    result = project.run()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*_ test_one_user _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            f"  touched at: {at(project, 'touch-one', 'test_one_user')}",
            f"  the User was loaded at: {at(project, 'get-one', 'test_one_user')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            '  if the lazy load is intended: @pytest.mark.allow_lazy("User.posts"), '
            "or noplusone_allow_lazy = User.posts",
            "  or let every lazy load of sync code run (counted, N+1 checked): "
            "noplusone_sync_lazy = allow",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_assigning_in_sync_code _*",
            "noplusone: assigning to User.posts (one-to-many collection) loads its current "
            "contents first: a lazy load, which lazy='raise_on_sql' forbids (enforced by "
            "pytest-noplusone).",
            f"  touched at: {at(project, 'assign-sync', 'test_assigning_in_sync_code')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            '       or load it just before assigning: session.refresh(user, ["posts"])',
            '       or, if the code only adds and removes rows: relationship(lazy="write_only")',
            '  if the lazy load is intended: @pytest.mark.allow_lazy("User.posts"), *',
        ]
    )


def test_sync_lazy_allow_counts_sync_loads_and_async_ones_still_raise(project: Project) -> None:
    write(project, SYNC_TEST, "noplusone_sync_lazy = allow\n")
    result = project.run()
    result.stdout.fnmatch_lines(["noplusone: enforce=raise_on_sql * sync_lazy=allow*"])
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_loop_over_users _*",
            "N+1 query: User.posts was lazily loaded 5 times in one call of test_a_loop_over_users, "
            "for 5 different User objects.",
            f"  from {at(project, 'touch-loop', 'test_a_loop_over_users')}",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_async_code_still_raises _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            f"  touched at: {at(project, 'touch-async', 'test_async_code_still_raises')}",
            f"  the User was loaded at: {at(project, 'get-async', 'test_async_code_still_raises')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            "       or, for one object: await user.awaitable_attrs.posts",
            "  allow_lazy cannot make a lazy load work in async code; a test that expects this "
            'error (caught by your code): @pytest.mark.allow_lazy("User.posts")',
        ]
    )
    result.stdout.no_fnmatch_line("*noplusone_sync_lazy = allow")


def test_bad_sync_lazy_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnoplusone_sync_lazy = yes\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: 'yes' is not a valid noplusone_sync_lazy; use one of: forbid, allow."]
    )


RUN_SYNC_TEST = '''
from sqlalchemy import select

import app
from models import User


async def test_one_object(session):
    user = await session.get(User, 1)
    assert await app.titles_in_sync_code(session, user) == ["post 0.0", "post 0.1"]  # call


async def test_a_loop_in_run_sync(session, noplusone_queries):
    users = (await session.scalars(select(User))).all()
    await session.run_sync(lambda sync: [len(user.posts) for user in users])  # loop
'''


def test_run_sync_loads_run_and_are_judged(project: Project) -> None:
    write(project, RUN_SYNC_TEST)
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_loop_in_run_sync _*",
            "N+1 query: User.posts was lazily loaded 5 times in one call of *, for 5 different User objects.",
            # <listcomp> on Python < 3.12, <lambda> since comprehensions are inlined
            f"  from {at(project, '# loop', '*')}",
        ]
    )


def test_run_sync_loads_can_be_forbidden(project: Project) -> None:
    write(project, RUN_SYNC_TEST, "noplusone_run_sync = forbid\n")
    result = project.run()
    result.stdout.fnmatch_lines(["noplusone: enforce=raise_on_sql * run_sync=forbid*"])
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_one_object _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            # the lambda is on the line that calls run_sync: its caller is shown instead
            f"  touched at: {at(project, '# run-sync', '<lambda>', 'app')}",
            f"  called from: {at(project, '# call', 'test_one_object')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            '  if the lazy load is intended: @pytest.mark.allow_lazy("User.posts"), '
            "or noplusone_allow_lazy = User.posts",
        ]
    )
    result.stdout.no_fnmatch_line("*noplusone_sync_lazy = allow")


WRITE_TEST = '''
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

import app
from models import Post, User


async def test_assigning_a_collection(session):
    user = await session.get(User, 1)  # get-user
    user.posts = [Post(title="a"), Post(title="b")]  # assign


async def test_setattr_in_an_update_path(session):
    user = await session.get(User, 2)
    app.update(user, "posts", [Post(title="c")])  # update


async def test_refresh_first(session):
    user = await session.get(User, 3)
    await session.refresh(user, ["posts"])
    user.posts = [Post(title="d")]  # the old posts become orphans (not flushed here)
    assert [post.title for post in user.posts] == ["d"]


async def test_eager_loaded(session):
    user = (await session.scalars(select(User).options(selectinload(User.posts)))).first()
    user.posts = [Post(title="e")]
    assert [post.title for post in user.posts] == ["e"]
'''


def test_assigning_to_an_unloaded_collection(project: Project) -> None:
    write(project, WRITE_TEST)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_assigning_a_collection _*",
            "noplusone: assigning to User.posts (one-to-many collection) loads its current "
            "contents first: a lazy load, which lazy='raise_on_sql' forbids (enforced by "
            "pytest-noplusone).",
            f"  touched at: {at(project, '# assign', 'test_assigning_a_collection')}",
            f"  the User was loaded at: {at(project, 'get-user', 'test_assigning_a_collection')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.posts))",
            '       or load it just before assigning: await session.refresh(user, ["posts"])',
            '       or, if the code only adds and removes rows: relationship(lazy="write_only")',
            "  allow_lazy cannot make a lazy load work in async code; *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_setattr_in_an_update_path _*",
            "noplusone: assigning to User.posts (one-to-many collection) loads its current *",
            f"  touched at: {at(project, '# setattr', 'update', 'app')}",
            f"  called from: {at(project, '# update', 'test_setattr_in_an_update_path')}",
        ]
    )


def test_assigning_without_enforcement_is_explained_too(project: Project) -> None:
    write(project, WRITE_TEST)
    result = project.run("-p", "no:randomly", "--noplusone-enforce=off")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_assigning_a_collection _*",
            "noplusone: assigning to User.posts (one-to-many collection) loads its current "
            "contents first: a lazy load, which SQLAlchemy cannot run implicitly in async code "
            "(MissingGreenlet).",
            f"  touched at: {at(project, '# assign', 'test_assigning_a_collection')}",
            "  fix: eager-load it in the query that loads the User objects:",
        ]
    )


EXPECTED_FAILURE_TEST = '''
import pytest

import app


@pytest.mark.allow_lazy("User.posts")
async def test_the_handler_answers_500(session):
    status, _ = await app.titles(session, 1)
    assert status == 500


@pytest.mark.allow_lazy("Post.author")
async def test_another_relationship_is_not_expected(session):
    status, _ = await app.titles(session, 1)
    assert status == 500
'''


def test_allow_lazy_accepts_an_expected_failure_in_async_code(project: Project) -> None:
    write(project, EXPECTED_FAILURE_TEST)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_another_relationship_is_not_expected _*",
            "noplusone: a lazy load failed in this test, but the error never reached the test: "
            "your code caught it (an HTTP 500 response, for example).",
            "",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
        ]
    )



BATCH_APP = '''
import inspect as signature

from sqlalchemy import inspect, select
from sqlalchemy.orm import strategies

from models import User


def batch_load_posts(session, users):
    """A GraphQL batch loader (as graphene-sqlalchemy's): SQLAlchemy's selectin loader called
    on the AsyncSession's sync_session, every error turned into a GraphQL error."""
    sync = session.sync_session
    mapper = inspect(User)
    prop = mapper.relationships["posts"]
    loader_class = getattr(strategies, "SelectInLoader", None) or strategies._SelectInLoader
    loader = loader_class(prop, (("lazy", "selectin"),))
    arguments = {
        "context": sync.query(User)._compile_context(),
        "path": mapper._path_registry,
        "states": [(inspect(user), True) for user in users],
        "load_only": None,
        "effective_entity": prop.mapper,
        "loadopt": None,
        "recursion_depth": None,
        "execution_options": {},
    }
    names = signature.signature(loader._load_for_path).parameters
    try:
        loader._load_for_path(**{name: arguments[name] for name in names})  # batch
        return {"data": [user.posts for user in users]}
    except Exception as error:
        return {"errors": [str(error)]}


def count_users(session):
    """A sync helper called from async code, its error logged and dropped."""
    try:
        return len(session.sync_session.scalars(select(User)).all())  # sync-query
    except Exception:
        return None
'''

BATCH_TEST = '''
import pytest
from sqlalchemy import select

import batch
from models import User


async def test_a_batch_loader(session):
    users = (await session.scalars(select(User))).all()
    assert "errors" in batch.batch_load_posts(session, users)  # call-batch


async def test_a_sync_helper(session):
    assert batch.count_users(session) is None  # call-helper


async def test_a_query_without_await_seen_by_the_test(session):
    session.sync_session.scalars(select(User)).all()  # seen


@pytest.mark.allow_lazy("User.posts")
async def test_an_expected_batch_loader_failure(session):
    users = (await session.scalars(select(User))).all()
    assert "errors" in batch.batch_load_posts(session, users)
'''


def test_a_missing_greenlet_from_any_path_is_reported(project: Project) -> None:
    write(project, BATCH_TEST)
    project.pytester.makepyfile(batch=BATCH_APP)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=3)
    hidden = (
        "noplusone: a lazy load failed in this test, but the error never reached the test: "
        "your code caught it (an HTTP 500 response, for example)."
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_batch_loader _*",
            hidden,
            "",
            "noplusone: User.posts (one-to-many collection) was loaded in async code without an "
            "await (not through the attribute: a loader called on the sync session), where "
            "SQLAlchemy cannot run the query (MissingGreenlet).",
            f"  touched at: {at(project, '# batch', 'batch_load_posts', 'batch')}",
            f"  called from: {at(project, '# call-batch', 'test_a_batch_loader')}",
            "  fix: run sync-style code with: await session.run_sync(fn) (fn gets the sync "
            "Session),",
            "       or load it in an awaited query: select(User).options(selectinload(User.posts))",
            "  allow_lazy cannot make a lazy load work in async code; *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_sync_helper _*",
            hidden,
            "",
            "noplusone: a query ran in async code without an await, where SQLAlchemy cannot run "
            "it (MissingGreenlet).",
            f"  touched at: {at(project, '# sync-query', 'count_users', 'batch')}",
            f"  called from: {at(project, '# call-helper', 'test_a_sync_helper')}",
            "  fix: run sync-style code with: await session.run_sync(fn) (fn gets the sync "
            "Session),",
            "       or await the query: await session.execute(...)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_query_without_await_seen_by_the_test _*",
            "noplusone: a query ran in async code without an await, where SQLAlchemy cannot run "
            "it (MissingGreenlet).",
            f"  touched at: {at(project, '# seen', 'test_a_query_without_await_seen_by_the_test')}",
            "",
            "*MissingGreenlet*",
        ]
    )


SHOP_MODELS = '''
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "{prefix}_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    {key}: Mapped[list["{child}"]] = relationship()


class {child}(Base):
    __tablename__ = "{prefix}_{key}"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("{prefix}_users.id"))
'''

MODULE_TEST = '''
import pytest
from sqlalchemy import inspect

import billing
import models
from shop import models as shop_models


@pytest.fixture
def billing_user(sync_session):
    bind = sync_session.get_bind()
    billing.Base.metadata.drop_all(bind)
    billing.Base.metadata.create_all(bind)
    sync_session.add(billing.User(id=1, invoices=[]))
    sync_session.commit()
    sync_session.expunge_all()
    return sync_session.get(billing.User, 1)


def test_an_ini_entry_names_one_of_three_user_classes():
    assert inspect(shop_models.User).relationships["orders"].lazy == "select"
    assert inspect(billing.User).relationships["invoices"].lazy == "raise_on_sql"
    assert inspect(models.User).relationships["posts"].lazy == "raise_on_sql"


@pytest.mark.allow_lazy("billing.*")
def test_a_marker_allows_a_module(billing_user):
    assert billing_user.invoices == []


def test_the_message_names_the_module(billing_user):
    billing_user.invoices  # touch
'''

LOCAL_MODELS_TEST = '''
import pytest
from sqlalchemy import ForeignKey, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column, relationship


def define(name):
    class Base(DeclarativeBase):
        pass

    parent = type(name, (Base,), {
        "__tablename__": name.lower(),
        "id": mapped_column(primary_key=True),
        "things": relationship(lambda: child),
        "__annotations__": {"id": Mapped[int]},
    })
    child = type(name + "Thing", (Base,), {
        "__tablename__": name.lower() + "_things",
        "id": mapped_column(primary_key=True),
        "parent_id": mapped_column(ForeignKey(name.lower() + ".id")),
        "__annotations__": {"id": Mapped[int], "parent_id": Mapped[int]},
    })
    configure_mappers()
    return parent


@pytest.mark.allow_lazy("Local.things")
def test_a_marker_for_a_model_defined_in_the_test():
    define("Local")


def test_an_ini_entry_for_a_model_defined_in_a_test():
    assert inspect(define("Late")).relationships["things"].lazy == "select"
'''


def test_allow_entries_by_module(project: Project) -> None:
    write(project, MODULE_TEST, "noplusone_allow_lazy = shop.models.User.orders\n")
    project.pytester.makepyfile(
        billing=SHOP_MODELS.format(prefix="billing", key="invoices", child="Invoice")
    )
    project.pytester.mkpydir("shop")
    project.pytester.makepyfile(
        **{"shop/models": SHOP_MODELS.format(prefix="shop", key="orders", child="Order")}
    )
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_the_message_names_the_module _*",
            "noplusone: billing.User.invoices (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            f"  touched at: {at(project, '# touch', 'test_the_message_names_the_module')}",
            "  fix: eager-load it in the query that loads the User objects:",
            "       select(User).options(selectinload(User.invoices))",
            '  if the lazy load is intended: @pytest.mark.allow_lazy("billing.User.invoices"), '
            "or noplusone_allow_lazy = billing.User.invoices",
        ]
    )
    result.stdout.no_fnmatch_line("*AllowLazyWarning*")


def test_allow_entries_are_judged_once_every_model_exists(project: Project) -> None:
    write(project, LOCAL_MODELS_TEST, "noplusone_allow_lazy =\n    Late.things\n    Usr.postz\n")
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*AllowLazyWarning: noplusone_allow_lazy entry 'Usr.postz' matches no mapped "
            "relationship; *",
        ]
    )
    result.stdout.no_fnmatch_line("*'Late.things'*")
    result.stdout.no_fnmatch_line("*'Local.things'*")
    # with warnings as errors, the unmatched entry fails the run after the last test
    result = project.run("-p", "no:randomly", "-W", "error::pytest_noplusone.AllowLazyWarning")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_an_ini_entry_for_a_model_defined_in_a_test _*",
            "*AllowLazyWarning: noplusone_allow_lazy entry 'Usr.postz' matches no mapped *",
        ]
    )


NESTED_TEST = '''
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from models import Comment, Post


async def test_parents_from_a_selectin_load(session):
    posts = (await session.scalars(select(Post).options(selectinload(Post.author)))).all()  # q
    posts[0].author.profile  # touch


async def test_parents_two_loads_away(session):
    statement = select(Comment).options(joinedload(Comment.post).selectinload(Post.author))
    comments = (await session.scalars(statement)).unique().all()
    comments[0].post.author.posts  # deep
'''


def test_nested_loads_get_the_chained_option(project: Project) -> None:
    write(project, NESTED_TEST)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_parents_from_a_selectin_load _*",
            "noplusone: User.profile (one-to-one scalar) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            f"  touched at: {at(project, '# touch', 'test_parents_from_a_selectin_load')}",
            f"  the User was loaded at: {at(project, '# q', 'test_parents_from_a_selectin_load')}",
            "  fix: eager-load it in the query that loads the Post objects, chained to the "
            "loader that brought the User objects:",
            "       select(Post).options(selectinload(Post.author).joinedload(User.profile))",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_parents_two_loads_away _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, *",
            "  fix: eager-load it in the query that loads the Comment objects, chained to the "
            "loader that brought the User objects:",
            "       select(Comment).options(joinedload(Comment.post).selectinload(Post.author)"
            ".selectinload(User.posts))",
        ]
    )


LAZYLOAD_TEST = '''
from sqlalchemy import select
from sqlalchemy.orm import lazyload

from models import User


def test_one_user_with_a_lazyload_option(sync_session):
    user = sync_session.scalars(select(User).options(lazyload(User.posts))).first()
    assert len(user.posts) == 2


def test_a_repository_lazyload_star(sync_session):
    users = sync_session.scalars(select(User).options(lazyload("*"))).all()
    assert [len(user.posts) for user in users] == [2] * 5  # star-loop


async def test_async_code_with_a_lazyload_option(session):
    user = (await session.scalars(select(User).options(lazyload(User.posts)))).first()  # load
    user.posts  # touch
'''


def test_explicit_lazyload_options(project: Project) -> None:
    write(project, LAZYLOAD_TEST)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_repository_lazyload_star _*",
            "N+1 query: User.posts was lazily loaded 5 times in one call of *, for 5 different User objects.",
            f"  from {at(project, '# star-loop', '*')}",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_async_code_with_a_lazyload_option _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded in async code, "
            "where SQLAlchemy cannot run the implicit query (MissingGreenlet).",
            f"  touched at: {at(project, '# touch', 'test_async_code_with_a_lazyload_option')}",
            "  the User was loaded at: "
            f"{at(project, '# load', 'test_async_code_with_a_lazyload_option')}",
            "  the cause: the query that loaded the User asked for this lazy load with "
            ".options(lazyload(User.posts))",
            "  fix: in that query, replace lazyload(User.posts) with selectinload(User.posts)",
            "       or, for one object: await user.awaitable_attrs.posts",
            "  allow_lazy cannot make a lazy load work in async code; *",
        ]
    )
