"""Cost of forcing raise_on_sql: 1,500 relationships over 500 models, forced and restored.

Run: ``python benchmarks/bench_enforcement.py`` (prints milliseconds; nothing is asserted).
Also measures what the diagnosis's ``load`` listener adds per loaded object.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, configure_mappers, mapped_column
from sqlalchemy.orm import relationship as relationship_

from pytest_noplusone import diagnosis, enforcement

MODELS = 500
ROUNDS = 7


class Base(DeclarativeBase):
    pass


def build(count: int) -> list[type[Any]]:
    """``count`` models in a chain; each has parent (many-to-one), children (one-to-many) and
    grandparent (many-to-one without a backref): 3 relationships per model, minus the ends."""
    classes: list[type[Any]] = []
    for i in range(count):
        namespace: dict[str, Any] = {
            "__tablename__": f"m{i}",
            "__annotations__": {"id": Mapped[int]},
            "id": mapped_column(primary_key=True),
        }
        if i >= 1:
            namespace["__annotations__"]["parent_id"] = Mapped[int | None]
            namespace["parent_id"] = mapped_column(ForeignKey(f"m{i - 1}.id"))
            namespace["parent"] = relationship_(
                f"M{i - 1}", foreign_keys=f"M{i}.parent_id", back_populates="children"
            )
        if i >= 2:
            namespace["__annotations__"]["grandparent_id"] = Mapped[int | None]
            namespace["grandparent_id"] = mapped_column(ForeignKey(f"m{i - 2}.id"))
            namespace["grandparent"] = relationship_(
                f"M{i - 2}", foreign_keys=f"M{i}.grandparent_id"
            )
        if i < count - 1:
            namespace["children"] = relationship_(
                f"M{i + 1}", foreign_keys=f"M{i + 1}.parent_id", back_populates="parent"
            )
        classes.append(type(f"M{i}", (Base,), namespace))
    return classes


def force_and_restore(clock: Any) -> tuple[int, list[float], list[float]]:
    """Milliseconds of ``start`` and ``stop`` over ``ROUNDS`` rounds, on ``clock``."""
    forced = 0
    starts: list[float] = []
    stops: list[float] = []
    for _ in range(ROUNDS):
        began = clock()
        enforcer = enforcement.start("raise_on_sql", frozenset(), "allow")
        starts.append((clock() - began) * 1000)
        forced = len(enforcer.records)
        began = clock()
        enforcement.stop(enforcer)
        stops.append((clock() - began) * 1000)
    return forced, starts, stops


def load_overhead(classes: list[type[Any]], rows: int = 20_000) -> tuple[float, float]:
    """Milliseconds to load ``rows`` objects without and with the diagnosis listeners."""
    engine = create_engine("sqlite://")
    model = classes[0]
    model.__table__.create(engine)
    with Session(engine) as session:
        session.add_all(model(id=i + 1) for i in range(rows))
        session.commit()

    def load() -> float:
        with Session(engine) as session:
            began = time.thread_time()
            session.scalars(select(model)).all()
            return (time.thread_time() - began) * 1000

    load()  # warm the compiled cache
    without: list[float] = []
    with_listener: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so that machine noise hits both alike
        without.append(load())
        diagnosis.install()
        try:
            with_listener.append(load())
        finally:
            diagnosis.uninstall()
    return statistics.median(without), statistics.median(with_listener)


def main() -> None:
    classes = build(MODELS)
    began = time.perf_counter()
    configure_mappers()
    configured = (time.perf_counter() - began) * 1000
    relationships = sum(len(mapper.relationships) for mapper in Base.registry.mappers)
    print(f"python {sys.version.split()[0]}, sqlalchemy {__import__('sqlalchemy').__version__}")
    print(f"configure_mappers (for scale): {configured:8.1f} ms")
    # Wall time suffers from other processes on a busy machine; CPU time of this thread does not.
    for label, clock in (("wall", time.perf_counter), ("cpu", time.thread_time)):
        forced, starts, stops = force_and_restore(clock)
        print(
            f"{label:>4}: {MODELS} models, {relationships} relationships, {forced} forced: "
            f"force median {statistics.median(starts):5.1f} ms (max {max(starts):5.1f}), "
            f"restore median {statistics.median(stops):5.1f} ms (max {max(stops):5.1f})"
        )
    without, with_listener = load_overhead(classes)
    print(
        f" cpu: load 20,000 objects: {without:6.1f} ms without, {with_listener:6.1f} ms with the "
        f"diagnosis load listener ({(with_listener - without) / 20:+.2f} us per object)"
    )


if __name__ == "__main__":
    main()
