"""Fingerprints: one shape per statement, whatever the values, list lengths, paramstyle or spacing."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, select, tuple_
from sqlalchemy.dialects import mssql, mysql, oracle, postgresql, sqlite
from sqlalchemy.engine import Dialect

from pytest_noplusone import fingerprint
from pytest_noplusone.detection import parameter_key

_users = Table(
    "users", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(50))
)

DIALECTS: list[Dialect] = [
    sqlite.dialect(),
    postgresql.asyncpg.dialect(),  # type: ignore[no-untyped-call]
    postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
    mysql.pymysql.dialect(),  # type: ignore[no-untyped-call]
    mssql.pyodbc.dialect(),  # type: ignore[no-untyped-call]
    oracle.oracledb.dialect(),  # type: ignore[no-untyped-call]
]


def _rendered(statement: object, dialect: Dialect) -> str:
    """The SQL as the DB-API receives it: expanding IN lists rendered."""
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, compile_kwargs={"render_postcompile": True}
    )
    return str(compiled)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: f"{d.name}-{d.driver}")
def test_in_lists_of_any_length_share_one_fingerprint_in_every_paramstyle(
    dialect: Dialect,
) -> None:
    shapes = {
        fingerprint(_rendered(select(_users).where(_users.c.id.in_(ids)), dialect))
        for ids in ([1], [1, 2], list(range(500)), [])
    }
    unexpanded = str(select(_users).where(_users.c.id.in_([1, 2])).compile(dialect=dialect))
    assert "POSTCOMPILE" in unexpanded
    shapes.add(fingerprint(unexpanded))
    # Casts (asyncpg's $1::INTEGER) and placeholder styles all collapse to one form.
    assert shapes == {"select users.id, users.name from users where users.id in (?)"}


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: f"{d.name}-{d.driver}")
def test_tuple_in_lists_collapse(dialect: Dialect) -> None:
    pairs = tuple_(_users.c.id, _users.c.name)
    shapes = {
        fingerprint(_rendered(select(_users).where(pairs.in_(rows)), dialect))
        for rows in ([(1, "a")], [(1, "a"), (2, "b")], [(i, "x") for i in range(7)])
    }
    assert len(shapes) == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("SELECT * FROM t WHERE a = 1", "select *\n  from t\twhere a = 42 -- the answer"),
        ("SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = 'it''s -- not a comment'"),
        ("SELECT * FROM t WHERE a = ?", "SELECT * FROM t WHERE a = %(a_1)s"),
        ("SELECT * FROM t WHERE a = $1", "SELECT * FROM t WHERE a = :a_1"),
        ("SELECT * FROM t WHERE a = %s", "SELECT /* hint */ * FROM t WHERE a=-1.5e3"),
        ("SELECT * FROM t WHERE a IN (1, 2, 3)", "SELECT * FROM t WHERE a IN ('a')"),
        ("SELECT * FROM t WHERE a IN (__[POSTCOMPILE_a_1])", "SELECT * FROM t WHERE a IN(?,?)"),
        (
            "SELECT * FROM t WHERE a IN (NULL) AND (1 != 1)",
            "SELECT * FROM t WHERE a IN (SELECT 1 FROM (SELECT 1) WHERE 1!=1)",
        ),
        ("INSERT INTO t (a, b) VALUES (?, ?)", "INSERT INTO t (a, b) VALUES (1, 2), (3, 4), (5, 6)"),
        ("SELECT * FROM t WHERE a = $1::INTEGER", "SELECT * FROM t WHERE a = ?"),
        ("SELECT a % 2 FROM t WHERE b LIKE 'x%'", "SELECT a %% 2 FROM t WHERE b LIKE 'y%%'"),
    ],
)
def test_same_shape(one: str, other: str) -> None:
    assert fingerprint(one) == fingerprint(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("SELECT * FROM users WHERE id = ?", "SELECT * FROM posts WHERE id = ?"),
        ("SELECT * FROM t WHERE a = ?", "SELECT * FROM t WHERE b = ?"),
        ("SELECT a FROM t", "SELECT a, b FROM t"),
        ("SELECT * FROM t1 WHERE a = ?", "SELECT * FROM t2 WHERE a = ?"),
        ("SELECT * FROM t WHERE a = ?", "SELECT * FROM t WHERE a > ?"),
        ("SELECT * FROM t WHERE a = ?", "DELETE FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a LIKE '%%s'", "SELECT * FROM t WHERE a LIKE %%s"),
    ],
)
def test_different_shape(one: str, other: str) -> None:
    assert fingerprint(one) != fingerprint(other)


def test_fingerprint_is_readable() -> None:
    sql = "SELECT count(*) AS n FROM (SELECT a FROM t WHERE (a, b) IN ((1, 2), (3, 4))) AS x"
    assert fingerprint(sql) == (
        "select count (*) as n from (select a from t where (a, b) in ((?))) as x"
    )


@pytest.mark.parametrize(
    ("sql", "one", "other", "same"),
    [
        # OFFSET pagination: only the LIMIT/OFFSET values differ.
        ("SELECT * FROM t ORDER BY id LIMIT ? OFFSET ?", (3, 0), (3, 3), True),
        ("SELECT * FROM t ORDER BY id LIMIT $1::INTEGER OFFSET $2::INTEGER", (3, 0), (3, 3), True),
        ("SELECT * FROM t ORDER BY id LIMIT %s, %s", (0, 3), (3, 3), True),
        (
            "SELECT * FROM t ORDER BY id LIMIT %(param_1)s OFFSET %(param_2)s",
            {"param_1": 3, "param_2": 0},
            {"param_1": 3, "param_2": 3},
            True,
        ),
        ("SELECT * FROM t ORDER BY id OFFSET ? ROWS FETCH FIRST ? ROWS ONLY", (0, 3), (3, 3), True),
        # Keyset pagination: a range bound in a statement with ORDER BY and LIMIT.
        ("SELECT * FROM t WHERE a = ? AND id > ? ORDER BY id LIMIT ?", (1, 0, 3), (1, 9, 3), True),
        (
            "SELECT * FROM t WHERE (a, id) > (?, ?) ORDER BY a, id LIMIT ?",
            (1, 0, 3),
            (2, 9, 3),
            True,
        ),
        # A per-row loop with a LIMIT: a value other than paging differs.
        ("SELECT * FROM t WHERE a = ? LIMIT ? OFFSET ?", (1, 1, 0), (2, 1, 0), False),
        ("SELECT * FROM t WHERE a = ? AND id > ? ORDER BY id LIMIT ?", (1, 0, 3), (2, 0, 3), False),
        # A range bound without ORDER BY ... LIMIT is not pagination.
        ("SELECT * FROM t WHERE id > ?", (1,), (2,), False),
        # A '?' inside a string literal is not a placeholder.
        ("SELECT * FROM t WHERE b = 'LIMIT ?' AND a = ? LIMIT ?", (1, 3), (2, 3), False),
    ],
)
def test_parameter_key_leaves_out_paging_values(
    sql: str, one: object, other: object, same: bool
) -> None:
    assert (parameter_key(sql, one) == parameter_key(sql, other)) is same


def test_parameter_key_never_raises() -> None:
    unhashable = ([1, 2], {"a": [1]})
    assert parameter_key("SELECT ?", unhashable) == parameter_key("SELECT ?", ([1, 2], {"a": [1]}))
    assert parameter_key("SELECT ?", None) is None


# --- properties ---------------------------------------------------------------------------

identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
literals = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=20).map(lambda text: "'" + text.replace("'", "''") + "'"),
)
placeholder_styles = st.sampled_from(["?", "%s", "%(p{i})s", "${i}", ":p{i}", "${i}::INTEGER"])
whitespace = st.text(alphabet=" \t\n", min_size=1, max_size=3)


@st.composite
def values(draw: st.DrawFn) -> str:
    """A literal or a placeholder of any style."""
    if draw(st.booleans()):
        return draw(literals)
    index = draw(st.integers(min_value=1, max_value=999))
    return draw(placeholder_styles).format(i=index)


@st.composite
def statements(
    draw: st.DrawFn, table: str, key: str, column: str
) -> str:
    """One rendering of ``SELECT key, column FROM table WHERE key IN (...) AND column = ...``."""
    items = draw(st.lists(values(), min_size=1, max_size=30))
    upper = draw(st.booleans())
    tokens = [
        "SELECT" if upper else "select",
        f"{table}.{key},",
        f"{table}.{column}",
        "FROM" if upper else "from",
        table,
    ]
    if draw(st.booleans()):
        tokens.append(f"/* {draw(st.text(alphabet='abc -', max_size=8))} */")
    tokens += ["WHERE", f"{table}.{key}", "IN", "(" + ", ".join(items) + ")"]
    tokens += ["AND", f"{table}.{column}", "=", draw(values())]
    separators = [draw(whitespace) for _ in tokens]
    text = "".join(sep + token for sep, token in zip(separators, tokens, strict=True))
    if draw(st.booleans()):
        text += " -- " + draw(st.text(alphabet="xyz '", max_size=10))
    return text


@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    assert isinstance(fingerprint(text), str)


@given(st.lists(st.sampled_from(["'", '"', "--", "/*", "*/", "(", ")", "?", "$1", ":a", "%s",
                                 "%(", "IN", "VALUES", "::", "1", ",", " ", "\n", "`", "__[POSTCOMPILE_"])))
def test_never_raises_on_sql_fragments(parts: list[str]) -> None:
    assert isinstance(fingerprint("".join(parts)), str)


@given(st.data(), identifiers, identifiers, identifiers)
def test_same_shape_with_other_values_lengths_styles_and_spacing(
    data: st.DataObject, table: str, key: str, column: str
) -> None:
    one = data.draw(statements(table, key, column))
    other = data.draw(statements(table, key, column))
    assert fingerprint(one) == fingerprint(other)


@given(st.data(), identifiers, identifiers, identifiers, identifiers)
def test_different_tables_or_columns_differ(
    data: st.DataObject, table: str, key: str, column: str, renamed: str
) -> None:
    which = data.draw(st.sampled_from(["table", "key", "column"]))
    names = {"table": table, "key": key, "column": column}
    if fingerprint(names[which]) == fingerprint(renamed):
        return  # the same name, or one that differs only in an xdist worker's id
    other = {**names, which: renamed}
    one = data.draw(statements(table, key, column))
    two = data.draw(statements(other["table"], other["key"], other["column"]))
    assert fingerprint(one) != fingerprint(two)


@pytest.mark.parametrize(
    "sql",
    ["%(" * 50_000, "'" * 100_001, "/*" + "x" * 100_000, "?::a" * 25_000 + "(", "(" * 100_000],
    ids=["unclosed-pyformat", "quotes", "open-comment", "casts", "parentheses"],
)
def test_adversarial_statements_take_linear_time(sql: str) -> None:
    # Quadratic scanning of these took 4 to 35 seconds; linear takes about 0.1 s.
    start = time.perf_counter()
    fingerprint(sql)
    parameter_key(sql, (1,))
    assert time.perf_counter() - start < 3


# --- pytest-xdist worker ids ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM uuid_author_gw1 WHERE id = 3", "select * from uuid_author_{worker} where id = ?"),
        ('SELECT * FROM "uuid_author_gw12"', 'select * from "uuid_author_{worker}"'),
        ("SELECT gw0_users.id FROM gw0_users", "select {worker}_users.id from {worker}_users"),
        ("SELECT * FROM test_gw3.users", "select * from test_{worker}.users"),
        # pytest-xdist's worker_id fixture without workers (-n 0, or no xdist)
        ("SELECT * FROM uuid_author_master", "select * from uuid_author_{worker}"),
    ],
)
def test_a_worker_id_in_an_identifier_is_normalised(sql: str, expected: str) -> None:
    assert fingerprint(sql) == expected
    assert fingerprint(sql.replace("gw1", "gw0").replace("master", "gw7")) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "select gw1 from t",  # a whole name, not a part of one
        "select * from t_gw1x",
        "select * from sqlite_master",
        "select * from sqlite_temp_master",
        "select master from t",
        "select * from master_data",
    ],
)
def test_names_that_only_look_like_worker_ids_are_kept(sql: str) -> None:
    assert "{worker}" not in fingerprint(sql)


def test_suggested_allow_entries_match_on_every_worker() -> None:
    from pytest_noplusone import messages
    from pytest_noplusone.detection import LOOP, Allowance, Finding

    def finding(worker: str) -> Finding:
        sql = f"SELECT uuid_author_{worker}.id FROM uuid_author_{worker} WHERE uuid_author_{worker}.id = ?"
        return Finding(LOOP, 3, 2, fingerprint(sql), sql, ())

    on_gw1, on_gw0, serial = finding("gw1"), finding("gw0"), finding("master")
    assert on_gw1.fingerprint == on_gw0.fingerprint == serial.fingerprint
    entry = messages.allow_entry(on_gw1)
    assert entry == "select uuid_author_{worker}.id from uuid_author_{worker} where uuid_author_{worker}.id = ?"
    # The suggested entry, and one copied from the SQL of one worker, allow it on all of them.
    for written in (entry, "FROM uuid_author_gw1 WHERE"):
        assert all(Allowance(entries=(written,)).allows(each) for each in (on_gw0, on_gw1, serial))
