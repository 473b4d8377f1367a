"""Type-checked use of the detection and scale API (mypy --strict; pytest does not collect it)."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from pytest_noplusone import (
    Finding,
    NPlusOneWarning,
    QueryScaleError,
    UnusedAllowWarning,
    assert_constant_queries,
    fingerprint,
)


def sync_use() -> None:
    engine = create_engine("sqlite://")

    def action() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def populate(n: int) -> None:
        print(n)

    result: None = assert_constant_queries(action, populate=populate, scales=[1, 2], warmup=False)
    print(result)


async def async_use() -> dict[int, int]:
    async def action() -> None:
        pass

    async def populate(n: int) -> None:
        print(n)

    def sync_action() -> None:
        pass

    try:
        await assert_constant_queries(action, populate=lambda n: None)
        await assert_constant_queries(sync_action, populate=populate, scales=(2, 3))
    except QueryScaleError as error:
        return error.counts
    return {}


def fingerprints(finding: Finding) -> tuple[str, str, str, int]:
    shape: str = fingerprint("SELECT 1")
    warnings: tuple[type[Warning], ...] = (NPlusOneWarning, UnusedAllowWarning)
    print(warnings)
    return shape, finding.label, finding.location, finding.count
