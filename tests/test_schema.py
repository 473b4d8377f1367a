"""Schema work: which statements the baseline leaves out of its comparison by default."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    inspect,
    select,
)

from pytest_noplusone import fingerprint
from pytest_noplusone.schema import is_schema


# Reflection reads the schema table once per table: schema work, never an N+1 finding.
def test_create_all_drop_all_and_reflection_on_sqlite_are_schema_work() -> None:
    metadata = MetaData()
    users = Table("users", metadata, Column("id", Integer, primary_key=True), Column("name", String))
    Table("posts", metadata, Column("id", Integer, primary_key=True), Column("user_id", ForeignKey("users.id")))
    engine = create_engine("sqlite://")
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    with engine.begin() as connection:
        metadata.create_all(connection)
        metadata.create_all(connection)  # checkfirst: only the has-table checks
        inspector = inspect(connection)
        assert inspector.has_table("users")
        inspector.get_columns("posts")
        inspector.get_foreign_keys("posts")
        MetaData().reflect(connection)
        metadata.drop_all(connection)
    assert len(seen) > 10
    assert [sql for sql in seen if not is_schema(sql)] == []
    assert all(is_schema(fingerprint(sql)) for sql in seen)
    with engine.begin() as connection:
        metadata.create_all(connection)
        seen.clear()
        connection.execute(insert(users).values(name="a"))
        connection.execute(select(users).where(users.c.name == "drop"))
    assert len(seen) == 2
    assert [sql for sql in seen if is_schema(sql)] == []


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE x (id INTEGER)",
        "  /* a comment */ DROP TABLE IF EXISTS x",
        "-- why\nALTER TABLE x ADD COLUMN y INTEGER",
        "COMMENT ON TABLE x IS 'y'",
        'PRAGMA main.table_info("x")',
        "SELECT name FROM sqlite_master WHERE type='table'",
        "SELECT name FROM sqlite_schema",
        # PostgreSQL's has-table and enum checks
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
        "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE "
        "pg_catalog.pg_class.relname = $1::VARCHAR",
        "select table_name from information_schema.tables where table_schema = %s",
        # MySQL and MariaDB
        "DESCRIBE `x`",
        "SHOW CREATE TABLE `x`",
        "show standard_conforming_strings",
    ],
)
def test_schema_statements(sql: str) -> None:
    assert is_schema(sql)
    assert is_schema(fingerprint(sql))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT users.id FROM users",
        "select created, dropped from t",
        "UPDATE t SET description = 'drop table x'",
        "INSERT INTO catalog (name) VALUES (?)",
        "select * from my_pg_catalog_copy",
        "TRUNCATE TABLE x",  # the test's own cleanup, the same on every run
    ],
)
def test_statements_on_rows(sql: str) -> None:
    assert not is_schema(sql)
    assert not is_schema(fingerprint(sql))
