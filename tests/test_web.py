"""Requests through Starlette: its frames are never "your line"; each request is its own
invocation (TestClient in a fixture, its portal thread started before the test; httpx with an
ASGI transport), and a loop in an endpoint is a finding with the chain down to the test line."""

from __future__ import annotations

from conftest import Project

WEB_APP = """
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

from models import Post, User

sessionmaker = None  # set by the tests' fixture


async def count(request):
    async with sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(User))  # COUNT
    return JSONResponse({"users": total})


async def titles(request):
    async with sessionmaker() as session:
        users = (await session.scalars(select(User).order_by(User.id))).all()
        titles = []
        for user in users:
            posts = await session.scalars(select(Post.title).where(Post.author_id == user.id))  # PER USER
            titles += posts.all()
    return JSONResponse({"titles": titles})


def _square(n):
    return n * n


async def squares(request):
    return JSONResponse({"n": await run_in_threadpool(_square, 3)})


app = Starlette(routes=[Route("/count", count), Route("/titles", titles), Route("/squares", squares)])
"""

WEB_TESTS = """
import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

import web
from conftest import make_engine


@pytest.fixture
def client(engine):  # engine: the seeded database
    # The app runs in the TestClient's own event loop: connections of its own (NullPool).
    web.sessionmaker = async_sessionmaker(make_engine(poolclass=NullPool))
    with TestClient(web.app) as client:  # its portal thread starts here, before the test
        yield client


def test_two_requests_through_the_test_client(client):
    assert client.get("/count").json() == {"users": 5}
    assert client.get("/count").json() == {"users": 5}


def test_a_loop_in_an_endpoint_through_the_test_client(client):
    assert len(client.get("/titles").json()["titles"]) == 10  # CLIENT TITLES


async def test_two_requests_through_httpx(sessionmaker):
    web.sessionmaker = sessionmaker
    transport = httpx.ASGITransport(app=web.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/count")
        await client.get("/count")
        await client.get("/squares")


async def test_a_loop_in_an_endpoint_through_httpx(sessionmaker):
    web.sessionmaker = sessionmaker
    transport = httpx.ASGITransport(app=web.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/titles")  # HTTPX TITLES
"""


def test_requests_are_invocations_and_endpoint_loops_are_findings(project: Project) -> None:
    project.write_test(WEB_APP, name="web")
    project.write_test(WEB_TESTS)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    per_user = project.line_of("# PER USER", "web")
    for test, marker in (
        ("test_a_loop_in_an_endpoint_through_the_test_client", "# CLIENT TITLES"),
        ("test_a_loop_in_an_endpoint_through_httpx", "# HTTPX TITLES"),
    ):
        result.stdout.fnmatch_lines(
            [
                f"*_ {test} _*",
                "N+1 query: the same SELECT ran 5 times in one call of titles, "
                "with different values.",
                f"  from web.py:{per_user} in titles",
                f"  called from test_scenario.py:{project.line_of(marker)} in {test}",
                "  SQL: SELECT posts.title FROM posts WHERE posts.author_id = *",
            ]
        )
