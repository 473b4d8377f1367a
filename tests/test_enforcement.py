"""Enforcement: every implicitly lazy relationship raises, everything legitimate keeps working,
and the mapping is restored exactly at the end of the session."""

from __future__ import annotations

import textwrap

import pytest
from conftest import Project

#: A second DeclarativeBase, imported by the test module (so mapped after the session started):
#: joined and single inheritance, an imperative mapping with a backref, viewonly, eager defaults,
#: and the lazy values that must be left alone.
EXTRA_MODELS = '''
from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import (
    DeclarativeBase, DynamicMapped, Mapped, WriteOnlyMapped, backref, mapped_column, relationship
)


class Base2(AsyncAttrs, DeclarativeBase):
    pass


class Company(Base2):
    __tablename__ = "companies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    employees: Mapped[list[Employee]] = relationship(
        back_populates="company", order_by="Employee.id"
    )
    staff_selectin: Mapped[list[Employee]] = relationship(lazy="selectin", viewonly=True)
    staff_joined: Mapped[list[Employee]] = relationship(lazy="joined", viewonly=True)
    staff_subquery: Mapped[list[Employee]] = relationship(lazy="subquery", viewonly=True)
    staff_immediate: Mapped[list[Employee]] = relationship(lazy="immediate", viewonly=True)
    staff_true: Mapped[list[Employee]] = relationship(lazy=True, viewonly=True)
    staff_noload: Mapped[list[Employee]] = relationship(lazy="noload", viewonly=True)
    staff_viewonly: Mapped[list[Employee]] = relationship(viewonly=True)
    staff_raise: Mapped[list[Employee]] = relationship(lazy="raise", viewonly=True)
    staff_dynamic: DynamicMapped[Employee] = relationship(viewonly=True)
    notes: WriteOnlyMapped[Note] = relationship()


class Note(Base2):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    text: Mapped[str] = mapped_column(String(50))


class Employee(Base2):
    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    company: Mapped[Company] = relationship(back_populates="employees")
    __mapper_args__ = {"polymorphic_on": "type", "polymorphic_identity": "employee"}


class Manager(Employee):  # single-table inheritance
    __mapper_args__ = {"polymorphic_identity": "manager"}


class Engineer(Employee):  # joined-table inheritance
    __tablename__ = "engineers"
    id: Mapped[int] = mapped_column(ForeignKey("employees.id"), primary_key=True)
    laptop_id: Mapped[int | None] = mapped_column(ForeignKey("laptops.id"))
    laptop: Mapped[Laptop | None] = relationship()
    __mapper_args__ = {"polymorphic_identity": "engineer"}


class Laptop(Base2):
    __tablename__ = "laptops"
    id: Mapped[int] = mapped_column(primary_key=True)


badges = Table(
    "badges",
    Base2.metadata,
    Column("id", Integer, primary_key=True),
    Column("employee_id", ForeignKey("employees.id")),
)


class Badge:  # imperative mapping; its backref adds Employee.badges
    pass


Base2.registry.map_imperatively(
    Badge,
    badges,
    properties={"employee": relationship(Employee, backref=backref("badges", order_by=badges.c.id))},
)


def seed():
    laptop = Laptop(id=1)
    company = Company(id=1, name="acme")
    staff = [
        Manager(id=1, company=company),
        Engineer(id=2, company=company, laptop=laptop),
        Employee(id=3, company=company),
    ]
    badge = Badge()
    badge.employee = staff[0]
    return [laptop, company, *staff, badge]
'''

LATE_MODELS = '''
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base3(DeclarativeBase):
    pass


class Shelf(Base3):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    books: Mapped[list["Book"]] = relationship()


class Book(Base3):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))
'''

ENFORCEMENT_TEST = '''
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import (
    immediateload, joinedload, raiseload, selectinload, subqueryload, with_polymorphic
)

from conftest import make_engine
from extra import Badge, Base2, Company, Employee, Engineer, Manager, Note, seed
from models import Post, Profile, Tag, User


def refused(name):
    return pytest.raises(
        InvalidRequestError, match=f"'{name}' is not available due to lazy='raise_on_sql'"
    )


@pytest.fixture
async def extra(engine):
    async with engine.begin() as conn:
        await conn.run_sync(Base2.metadata.drop_all)
        await conn.run_sync(Base2.metadata.create_all)
    async with async_sessionmaker(engine)() as session:
        session.add_all(seed())
        await session.commit()
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield session


async def users(session, *options):
    return (await session.scalars(select(User).options(*options).order_by(User.id))).all()


async def test_one_to_many_collection_raises(session):
    user = (await users(session))[0]
    with refused("User.posts"):
        user.posts


async def test_many_to_many_collection_raises(session):
    post = (await session.scalars(select(Post))).first()
    with refused("Post.tags"):
        post.tags


async def test_many_to_one_raises(session):
    post = (await session.scalars(select(Post))).first()
    with refused("Post.author"):
        post.author


async def test_one_to_one_scalar_raises(session):
    user = (await users(session))[0]
    with refused("User.profile"):
        user.profile


async def test_many_to_one_in_the_identity_map_needs_no_sql(session):
    loaded = await users(session)  # kept: the identity map holds objects weakly
    posts = (await session.scalars(select(Post))).all()
    assert {post.author.name for post in posts} == {user.name for user in loaded}


@pytest.mark.allow_nplusone("User.profile")  # immediateload: one query per user, by design
async def test_loader_options_keep_working(session):
    loaded = await users(session, selectinload(User.posts).selectinload(Post.tags))
    assert [tag.name for tag in loaded[0].posts[0].tags] == ["python", "sql"]
    session.expunge_all()
    loaded = await users(session, joinedload(User.profile))
    assert loaded[1].profile.bio == "bio 1"
    session.expunge_all()
    loaded = await users(session, subqueryload(User.posts))
    assert len(loaded[2].posts) == 2
    session.expunge_all()
    loaded = await users(session, immediateload(User.profile))
    assert loaded[3].profile.bio == "bio 3"
    session.expunge_all()
    loaded = await users(session, raiseload("*"))
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        loaded[0].posts


async def test_refresh_run_sync_and_writes(session):
    user = (await users(session))[0]
    await session.refresh(user, ["posts"])
    assert len(user.posts) == 2
    count = await session.run_sync(lambda sync: len(sync.scalars(select(Tag)).all()))
    assert count == 2
    session.add(Post(title="new", author=user))  # the backref does not load User.posts
    other = (await users(session))[1]
    other.name = "renamed"
    await session.delete(await session.get(Profile, 1))
    await session.commit()
    assert [post.title for post in user.posts][-1] == "new"


async def test_run_sync_loads_run(session):
    def touch(sync):
        return [post.title for post in sync.get(User, 1).posts]

    assert await session.run_sync(touch) == ["post 0.0", "post 0.1"]


async def test_the_mapping_says_raise_on_sql(session):
    posts = inspect(User).relationships["posts"]
    assert (posts.lazy, posts.strategy_key) == ("raise_on_sql", (("lazy", "raise_on_sql"),))
    # class-level, or loading rows would install per-instance loaders (and crash without one)
    assert posts.strategy.is_class_level
    assert inspect(Company).relationships["staff_selectin"].lazy == "selectin"
    assert inspect(Company).relationships["staff_raise"].lazy == "raise"
    assert inspect(Company).relationships["staff_dynamic"].lazy == "dynamic"
    assert inspect(Company).relationships["staff_noload"].lazy == "noload"
    assert inspect(Company).relationships["notes"].lazy == "write_only"


async def test_inheritance_imperative_backref_and_viewonly_raise(extra):
    staff = (await extra.scalars(select(with_polymorphic(Employee, "*")).order_by(Employee.id))).all()
    manager, engineer, employee = staff
    assert (type(manager), type(engineer)) == (Manager, Engineer)
    for instance, name in [
        (manager, "Employee.company"),
        (engineer, "Employee.company"),
        (employee, "Employee.company"),
        (engineer, "Engineer.laptop"),
        (manager, "Employee.badges"),
    ]:
        with refused(name):
            getattr(instance, name.split(".")[1])
    extra.expunge_all()  # or the badge's employee is found in the identity map: no SQL
    badge = (await extra.scalars(select(Badge))).first()
    with refused("Badge.employee"):
        badge.employee
    company = (await extra.scalars(select(Company))).first()
    with refused("Company.staff_viewonly"):
        company.staff_viewonly
    with refused("Company.employees"):
        company.employees


async def test_eager_defaults_load_and_their_lazy_fallback_is_enforced(extra):
    company = (await extra.scalars(select(Company))).unique().first()
    eager = ["staff_selectin", "staff_joined", "staff_subquery", "staff_immediate"]
    assert [len(getattr(company, key)) for key in eager] == [3, 3, 3, 3]
    extra.expire(company, eager)
    for key in eager:
        with refused(f"Company.{key}"):
            getattr(company, key)
    with refused("Company.staff_true"):  # lazy=True is lazy="select"
        company.staff_true


async def test_other_lazy_values_are_left_alone(extra):
    company = (await extra.scalars(select(Company))).unique().first()
    with pytest.raises(InvalidRequestError, match="'Company.staff_raise' .* lazy='raise'"):
        company.staff_raise
    assert company.staff_dynamic is not None  # a query object: no load on access
    assert company.staff_noload == []
    company.notes.add(Note(text="write-only collections still write"))
    await extra.commit()
    notes = await extra.scalars(company.notes.select())
    assert [note.text for note in notes] == ["write-only collections still write"]


async def test_a_mapper_defined_during_the_test_is_enforced(engine):
    import late

    async with engine.begin() as conn:
        await conn.run_sync(late.Base3.metadata.create_all, checkfirst=False)
    async with async_sessionmaker(engine)() as session:
        session.add(late.Shelf(id=1))
        await session.commit()
        shelf = (await session.scalars(select(late.Shelf))).first()
        with refused("Shelf.books"):
            shelf.books
'''


def _write_enforcement_project(project: Project) -> None:
    project.pytester.makepyfile(extra=EXTRA_MODELS, late=LATE_MODELS)
    project.write_test(ENFORCEMENT_TEST)


def test_every_lazy_relationship_raises_and_the_rest_keeps_working(project: Project) -> None:
    _write_enforcement_project(project)
    result = project.run("-v")
    result.stdout.fnmatch_lines(["noplusone: enforce=raise_on_sql *"])
    result.assert_outcomes(passed=13)


RAISE_TEST = '''
import pytest
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError

from models import Post, User


async def test_identity_map_many_to_one_raises_under_raise(session):
    await session.scalars(select(User))
    post = (await session.scalars(select(Post))).first()
    with pytest.raises(InvalidRequestError, match="'Post.author' is not available due to lazy='raise'"):
        post.author


async def test_collections_raise_too(session):
    user = (await session.scalars(select(User))).first()
    with pytest.raises(InvalidRequestError, match="'User.posts' .* lazy='raise'"):
        user.posts
'''


def test_raise_mode_also_refuses_loads_from_the_identity_map(project: Project) -> None:
    project.write_test(RAISE_TEST)
    result = project.run("--noplusone-enforce=raise")
    result.stdout.fnmatch_lines(["noplusone: enforce=raise *"])
    result.assert_outcomes(passed=2)


OFF_TEST = '''
from sqlalchemy import inspect, select
from sqlalchemy.exc import MissingGreenlet, StatementError

from models import User


async def test_nothing_is_forced(session):
    assert inspect(User).relationships["posts"].lazy == "select"
    user = (await session.scalars(select(User))).first()
    try:
        user.posts
    except (MissingGreenlet, StatementError) as error:  # 2.0 bare, 2.1 wrapped
        assert "greenlet_spawn has not been called" in str(error)
    else:
        raise AssertionError("expected SQLAlchemy's own MissingGreenlet")
'''


def test_enforce_off_leaves_the_mapping_alone(project: Project) -> None:
    project.write_test(OFF_TEST)
    project.pytester.makeini(
        textwrap.dedent(
            """
            [pytest]
            asyncio_mode = auto
            asyncio_default_fixture_loop_scope = function
            addopts = --strict-markers -p no:cacheprovider -p no:randomly
            noplusone_enforce = raise
            """
        )
    )
    result = project.run("--noplusone-enforce=off")  # the command line wins over the ini
    result.stdout.fnmatch_lines(["noplusone: enforce=off *"])
    result.assert_outcomes(passed=1)


RESTORE_TEST = '''
import textwrap

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Mapper, configure_mappers

from models import Base, User
from pytest_noplusone import capture, diagnosis, enforcement
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncAttrs
import sqlalchemy.dialects.sqlite  # every dialect class the inner runs use exists already

INNER = """
import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session

from models import Base, User, seed_objects


def test_enforced_inside():
    assert inspect(User).relationships["posts"].lazy == "{mode}"
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_objects(2))
        session.commit()
        user = session.scalars(select(User)).first()
        with pytest.raises(InvalidRequestError, match="lazy='{mode}'"):
            user.posts
"""


def snapshot():
    state = {}
    for mapper in Base.registry.mappers:
        for prop in mapper.relationships:
            impl = mapper.class_manager[prop.key].impl
            state[str(prop), mapper.class_.__name__] = (
                prop.lazy,
                prop.strategy_key,
                id(prop.strategy),
                impl.callable_,  # bound methods compare by function and instance
                sorted(map(str, prop._strategies)),
            )
    state["awaitable_attrs"] = AsyncAttrs._AsyncAttrGetitem.__dict__["__getattr__"]
    state["loader_entry"] = diagnosis._loader_owner.__dict__["_fire_loader_callables"]
    state["listeners"] = (
        event.contains(Engine, "do_execute", capture._capture),
        event.contains(Mapper, "after_configured", enforcement._after_configured),
        event.contains(Mapper, "load", diagnosis._on_load),
    )
    return state


def inner_run(tmp_path, mode):
    path = tmp_path / f"test_inner_{mode}.py"
    path.write_text(textwrap.dedent(INNER.format(mode=mode)))
    args = [str(path), "-p", "no:cacheprovider", "-p", "no:randomly", "-q"]
    return pytest.main([*args, f"--noplusone-enforce={mode}", f"--rootdir={tmp_path}"])


def test_in_process_runs_restore_the_mapping_exactly(tmp_path):
    configure_mappers()
    before = snapshot()
    assert inner_run(tmp_path, "raise") == 0
    assert snapshot() == before
    assert inner_run(tmp_path, "raise_on_sql") == 0
    assert snapshot() == before
'''


def test_in_process_runs_never_leak_enforcement(project: Project) -> None:
    """pytest.main twice in one process: the outer mapping is back exactly after each run,
    both when the outer session has no enforcement and when it has its own (suspended)."""
    project.write_test(RESTORE_TEST)
    # Only the scenario: the inner runs' files land in the project's basetemp.
    result = project.run("test_scenario.py", "-p", "no:noplusone", "-s")
    result.assert_outcomes(passed=1)
    result = project.run("test_scenario.py", "-s")
    result.assert_outcomes(passed=1)
    # the inner runs passed too (their summaries come first)
    result.stdout.fnmatch_lines(["*1 passed*", "*1 passed*", "*1 passed*"])


def test_bad_enforce_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--noplusone-enforce=rase")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --noplusone-enforce: invalid choice: 'rase'*"])


CORE_ONLY_TEST = '''
import sys

import pytest
from sqlalchemy import create_engine, text


@pytest.fixture
def conn():
    with create_engine("sqlite://").connect() as conn:
        yield conn


def test_the_plugin_did_not_import_the_orm(conn):
    conn.execute(text("SELECT 1"))
    assert "sqlalchemy.orm" not in sys.modules
    assert "sqlalchemy.ext.asyncio" not in sys.modules


@pytest.mark.max_queries(1)
def test_budgets_still_count(conn):
    conn.execute(text("SELECT 1"))
    conn.execute(text("SELECT 2"))  # second


@pytest.mark.allow_lazy("User.posts")
def test_allow_lazy_names_nothing_mapped(conn):
    conn.execute(text("SELECT 1"))
'''


def test_a_core_only_suite_never_imports_the_orm(pytester: pytest.Pytester) -> None:
    """Enforcement and diagnosis start with the ORM; a Core-only suite does not pay its import."""
    pytester.makepyfile(test_core=CORE_ONLY_TEST)
    pytester.makeini("[pytest]\naddopts = -p no:randomly -p no:cacheprovider\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_budgets_still_count _*",
            "Expected at most 1 query but 2 were run.",
            "  1. SELECT 1",
            "       from test_core.py:21 in test_budgets_still_count",
            "  2. SELECT 2",
            "       from test_core.py:22 in test_budgets_still_count",
            "*AllowLazyWarning: @pytest.mark.allow_lazy entry 'User.posts' matches no mapped "
            "relationship*",
        ]
    )


FIXTURE_IMPORTS_ORM_CONFTEST = '''
import os

import pytest

URL = os.environ["NOPLUSONE_TEST_URL"]
SCHEMA = os.environ.get("NOPLUSONE_TEST_SCHEMA")


@pytest.fixture
async def session():
    # The first import of the ORM in this run: nothing before this fixture imported it.
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from models import Base, seed_objects

    args = {"server_settings": {"search_path": SCHEMA}} if SCHEMA else {}
    engine = create_async_engine(URL, connect_args=args)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        session.add_all(seed_objects(2))
        await session.commit()
    async with async_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()
'''

FIXTURE_IMPORTS_ORM_TEST = '''
import sys

import pytest


async def test_orm_first_imported_by_a_fixture(session):
    from sqlalchemy import select
    from models import User

    user = (await session.scalars(select(User))).first()  # load-users
    user.posts  # touch-posts


@pytest.mark.allow_lazy("Usr.posts")
async def test_the_next_test_is_enforced_from_its_setup(session):
    from sqlalchemy import inspect
    from models import User

    assert inspect(User).relationships["posts"].lazy == "raise_on_sql"
'''


def test_models_first_imported_by_a_fixture_are_enforced(project: Project) -> None:
    """Enforcement starts when the ORM appears, even when a fixture is the first to import it."""
    project.pytester.makepyfile(conftest=FIXTURE_IMPORTS_ORM_CONFTEST)  # replaces the shared one
    project.write_test(FIXTURE_IMPORTS_ORM_TEST)
    result = project.run()
    result.assert_outcomes(passed=1, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_orm_first_imported_by_a_fixture _*",
            "noplusone: User.posts (one-to-many collection) was lazily loaded, which "
            "lazy='raise_on_sql' forbids (enforced by pytest-noplusone).",
            f"  touched at: test_scenario.py:{project.line_of('touch-posts')} "
            "in test_orm_first_imported_by_a_fixture",
            "*AllowLazyWarning: @pytest.mark.allow_lazy entry 'Usr.posts' matches no mapped "
            "relationship*",
        ]
    )
