"""Force lazy="raise_on_sql" (or "raise") on every lazily loaded relationship; restore it exactly.

A relationship's lazy loading lives in two places (NOTES-sqlalchemy.md, "Forcing raise_on_sql at
runtime"): its default strategy (``lazy``, ``strategy_key``, ``strategy``), read when a query
loads the class, and the class-level attribute implementation's ``callable_`` on its mapper and
every descendant mapper, which fires when an unloaded attribute is touched. Forcing swaps both:
the strategy for a *copy* of the relationship's own lazy loader with the raise flag set (marked
class-level, or every query of the class would break), and ``callable_`` for a ``_Guard`` that
calls that copy, lets allowed loads through to the original loader and records violations.
Restoring puts back each swapped object only while it is still ours (identity-checked).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import greenlet
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import Mapper, RelationshipProperty, configure_mappers
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.orm import strategies as _strategies
from sqlalchemy.util import greenlet_spawn

from . import diagnosis
from .allow_lazy import Pattern, matches, permits

__all__ = ["AuditEntry", "Enforcer", "Policy", "audit", "known_names", "start", "stop", "unmatched"]

#: The lazy loader class: ``_LazyLoader`` on SQLAlchemy 2.1, ``LazyLoader`` on 2.0.
_LazyLoader: Any = vars(_strategies).get("_LazyLoader") or vars(_strategies)["LazyLoader"]
# sqlalchemy.orm.mapper is shadowed by the deprecated mapper() function on 2.0.
_mapperlib: Any = importlib.import_module("sqlalchemy.orm.mapper")

MODES = ("raise_on_sql", "raise")
#: Default lazy values that mean "load on access with a SELECT".
_IMPLICIT = ("select", True)
#: Eager defaults: they keep loading eagerly; only their lazy fallback (after expiry) is forced.
_EAGER = ("selectin", "joined", False, "subquery", "immediate")
_SELECT_KEY = (("lazy", "select"),)

#: Greenlets currently running an ``await obj.awaitable_attrs.x`` (an explicit load).
_explicit: set[greenlet.greenlet] = set()


class Policy(NamedTuple):
    """Which lazy loads run (and are counted) instead of raising, besides ``allow_lazy``."""

    #: ``await obj.awaitable_attrs.rel``.
    awaitable_attrs: bool = True
    #: Loads in sync-style code run by ``greenlet_spawn``: ``AsyncSession.run_sync(fn)``.
    run_sync: bool = True
    #: Loads in sync code: a ``Session`` on a sync engine (``noplusone_sync_lazy = allow``).
    sync: bool = False


def _allowed(policy: Policy, state: Any) -> bool:
    """Whether ``policy`` lets this load run: it can run here, and the user asked for it."""
    if _explicit and greenlet.getcurrent() in _explicit:
        return policy.awaitable_attrs
    if diagnosis.in_greenlet_spawn():
        return policy.run_sync
    return policy.sync and diagnosis.context_of(state) == "sync"


class _Guard:
    """The class-level lazy callable of a forced relationship."""

    __slots__ = ("forced", "original", "policy", "prop")

    def __init__(
        self,
        prop: Any,
        forced: Callable[[Any, Any], Any],
        original: Callable[[Any, Any], Any],
        policy: Policy,
    ) -> None:
        self.prop = prop
        self.forced = forced
        self.original = original
        self.policy = policy

    def __call__(self, state: Any, passive: Any) -> Any:
        __tracebackhide__ = True  # a failure points at the user's line, not at this guard
        if (
            permits(lambda: names_of(self.prop))
            or _allowed(self.policy, state)
            # asked for with lazyload(): runs (and in async code fails with MissingGreenlet)
            or (
                (state.load_options or diagnosis._lazy_runs)
                and diagnosis.lazy_option(state, self.prop) is not None
            )
        ):
            return self.original(state, passive)
        try:
            return self.forced(state, passive)
        except (exc.InvalidRequestError, orm_exc.DetachedInstanceError) as error:
            # A MissingGreenlet (an InvalidRequestError) is recorded by diagnosis's wrapper of
            # _fire_loader_callables.
            if not isinstance(error, exc.MissingGreenlet):
                diagnosis.record(self.prop, state, error)
            raise


# -- await obj.awaitable_attrs.x: an explicit load, allowed unless noplusone_awaitable_attrs=forbid
# (it runs in greenlet_spawn like run_sync: marking its greenlet tells the two apart)


def _explicit_getattr(instance: Any, name: str) -> Any:
    current = greenlet.getcurrent()
    _explicit.add(current)
    try:
        return getattr(instance, name)
    finally:
        _explicit.discard(current)


def _awaitable_getattr(self: Any, name: str) -> Any:
    return greenlet_spawn(_explicit_getattr, self._instance, name)


_getitem_class: Any = AsyncAttrs._AsyncAttrGetitem


# -- forcing ----------------------------------------------------------------------------------


def _delegate(self: Any, key: str) -> Any:
    # Called only for attributes the copy does not hold yet: take (and keep) the original's,
    # so the lazy clauses the original computed are shared, not rebuilt.
    if key == "_noplusone_original":
        raise AttributeError(key)
    value = getattr(self._noplusone_original, key)
    with contextlib.suppress(AttributeError):  # not a slot: nothing to keep
        setattr(self, key, value)
    return value


#: A lazy loader that raises: a subclass of SQLAlchemy's, so ``isinstance`` checks in the ORM
#: hold, reading everything it does not override from the relationship's own loader.
_RaisingLazyLoader: Any = type(
    "_RaisingLazyLoader",
    (_LazyLoader,),
    {"__slots__": ("_noplusone_original",), "__getattr__": _delegate, "__module__": __name__},
)


def _raising_copy(loader: Any, mode: str) -> Any:
    """The relationship's own lazy loader, with the raise flag of ``mode`` set.

    Constructing a loader recomputes its lazy clauses (about 150 us per relationship, too slow
    for thousands); this copy sets five attributes and borrows the rest on first use.
    """
    new = _RaisingLazyLoader.__new__(_RaisingLazyLoader)
    new._noplusone_original = loader
    key = (("lazy", mode),)
    new.strategy_key = key
    new.strategy_opts = dict(key)
    new._raise_always = mode == "raise"
    new._raise_on_sql = mode == "raise_on_sql"
    # The copy is the relationship's default strategy: class-level, so loading rows does not
    # install per-instance callables (which would need a loader option and crash without one).
    new.is_class_level = True
    return new


def _hierarchy(prop: Any) -> tuple[Any, ...]:
    """The mappers that map ``prop``: its own and its descendants that do not override it."""
    mapper = prop.parent
    if not mapper._inheriting_mappers:  # the common case, without building a WeakSequence
        return (mapper,)
    return tuple(m for m in mapper.self_and_descendants if m._props.get(prop.key) is prop)


def names_of(prop: Any, hierarchy: tuple[Any, ...] | None = None) -> tuple[Pattern, ...]:
    """Every name under which ``prop`` is mapped (its class and subclasses): ``(Class, key)``,
    ``(module.Class, key)``, and ``(package, key)`` for its module and each package above it
    (see ``allow_lazy.matches``)."""
    key = prop.key
    names: list[Pattern] = []
    for mapper in hierarchy or _hierarchy(prop):
        cls = mapper.class_
        module = cls.__module__
        names += ((cls.__name__, key), (f"{module}.{cls.__qualname__}", key))
        parts = module.split(".")
        names += ((".".join(parts[:end]), key) for end in range(1, len(parts) + 1))
    return tuple(names)


class _Record:
    """One forced relationship: what it was mapped with, and what was put in its place."""

    __slots__ = ("forced", "impls", "lazy", "owns_default", "prop", "strategy", "strategy_key")

    def __init__(
        self, prop: Any, lazy: Any, strategy_key: Any, strategy: Any, forced: Any, owns: bool
    ) -> None:
        self.prop = prop
        self.lazy = lazy
        self.strategy_key = strategy_key
        self.strategy = strategy
        self.forced = forced
        self.owns_default = owns
        self.impls: list[tuple[Any, Any, _Guard]] = []


def _all_mappers() -> Iterator[Any]:
    for registry in list(_mapperlib._all_registries()):
        yield from list(registry.mappers)


def _relationships(mapper: Any) -> Iterator[Any]:
    # Mapper.relationships would configure the mappers; _props is there from construction.
    for prop in list(mapper._props.values()):
        if isinstance(prop, RelationshipProperty) and prop.parent is mapper:
            yield prop


class Enforcer:
    """Forcing for one pytest session: which relationships it swapped and how to put them back."""

    def __init__(self, mode: str, allow: frozenset[Pattern], policy: Policy) -> None:
        self.mode = mode
        self.allow = allow
        self.policy = policy
        self.records: dict[Any, _Record] = {}
        self.skipped: set[Any] = set()
        #: Swapped objects someone else replaced before we restored (left as they were).
        self.conflicts: list[str] = []
        self._getattr: Any = None

    def apply(self) -> None:
        """Force every configured relationship not yet forced (idempotent)."""
        if self._getattr is None:
            self._getattr = _getitem_class.__dict__["__getattr__"]
            _getitem_class.__getattr__ = _awaitable_getattr
        for mapper in _all_mappers():
            if not mapper.configured or getattr(mapper, "non_primary", False):
                continue
            for prop in _relationships(mapper):
                record = self.records.get(prop)
                if record is not None:
                    if mapper._inheriting_mappers:  # a subclass may have been mapped since
                        self._guard(record, _hierarchy(prop))
                elif prop not in self.skipped:
                    self._force(prop)

    def _force(self, prop: Any) -> None:
        strategy = getattr(prop, "strategy", None)
        if strategy is None:  # not configured yet; after_configured brings it back here
            return
        hierarchy = _hierarchy(prop)
        if self.allow and matches(names_of(prop, hierarchy), self.allow):
            self.skipped.add(prop)
            return
        lazy = prop.lazy
        if lazy in _IMPLICIT and type(strategy) is _LazyLoader:
            record = _Record(prop, lazy, prop.strategy_key, strategy, None, True)
            record.forced = forced = _raising_copy(strategy, self.mode)
            prop.lazy = self.mode
            prop.strategy_key = forced.strategy_key
            prop.strategy = forced
        elif lazy in _EAGER:
            select = prop._strategies.get(_SELECT_KEY)
            if type(select) is not _LazyLoader:
                self.skipped.add(prop)
                return
            record = _Record(prop, lazy, prop.strategy_key, strategy, None, False)
            record.forced = _raising_copy(select, self.mode)
        else:  # raise, raise_on_sql, noload, dynamic, write_only, viewonly "noload"...
            self.skipped.add(prop)
            return
        self.records[prop] = record
        self._guard(record, hierarchy)
        _forget_polymorphic_loads(hierarchy)

    def _guard(self, record: _Record, hierarchy: tuple[Any, ...]) -> None:
        prop = record.prop
        key = prop.key
        for mapper in hierarchy:
            manager = mapper.class_manager
            if not manager._attr_has_impl(key):
                continue
            impl = manager[key].impl
            current = impl.callable_
            if isinstance(current, _Guard):
                continue
            owner = getattr(current, "__self__", None)
            if owner is record.forced:
                # Instrumented while forced (a subclass mapped later): without us it would
                # hold the original loader.
                current = record.strategy._load_for_state
            elif type(owner) is not _LazyLoader:
                continue
            guard = _Guard(prop, record.forced._load_for_state, current, self.policy)
            impl.callable_ = guard
            record.impls.append((impl, current, guard))

    def restore(self, *, suspend: bool = False) -> None:
        """Put back everything this enforcer swapped, where it is still ours.

        ``suspend`` keeps the records, so that ``resume`` reinstalls the very same objects.
        """
        for record in self.records.values():
            prop = record.prop
            for impl, original, guard in record.impls:
                if impl.callable_ is guard:
                    impl.callable_ = original
                else:
                    self.conflicts.append(f"{prop} (class attribute)")
            if record.owns_default:
                if prop.strategy is record.forced:
                    prop.strategy = record.strategy
                    prop.strategy_key = record.strategy_key
                    prop.lazy = record.lazy
                else:
                    self.conflicts.append(f"{prop} (default strategy)")
            _forget_polymorphic_loads(_hierarchy(prop))
        if not suspend:
            self.records.clear()
            self.skipped.clear()
        if self._getattr is not None:
            if _getitem_class.__dict__.get("__getattr__") is _awaitable_getattr:
                _getitem_class.__getattr__ = self._getattr
            self._getattr = None

    def resume(self) -> None:
        """Reinstall what ``restore(suspend=True)`` put back, then force anything new."""
        for record in self.records.values():
            prop = record.prop
            for impl, original, guard in record.impls:
                if impl.callable_ is original:
                    impl.callable_ = guard
            if record.owns_default and prop.strategy is record.strategy:
                prop.strategy = record.forced
                prop.strategy_key = record.forced.strategy_key
                prop.lazy = self.mode
            _forget_polymorphic_loads(_hierarchy(prop))
        self.apply()

    def original_lazy(self, prop: Any) -> Any:
        """``prop.lazy`` as the user mapped it."""
        record = self.records.get(prop)
        return record.lazy if record is not None else prop.lazy


def _forget_polymorphic_loads(hierarchy: tuple[Any, ...]) -> None:
    # polymorphic_load="selectin" memoizes loader options built from prop.strategy_key.
    for mapper in hierarchy:
        if getattr(mapper, "polymorphic_load", None) == "selectin":
            mapper.__dict__.pop("_subclass_load_via_in_mapper", None)


# -- sessions: a stack, so a nested in-process run (pytester) suspends the outer one ----------

_stack: list[Enforcer] = []
_lock = threading.RLock()


def _after_configured() -> None:
    with _lock:
        if _stack:
            _stack[-1].apply()


def start(
    mode: str,
    allow: frozenset[Pattern],
    awaitable_attrs: str,
    *,
    run_sync: str = "allow",
    sync_lazy: str = "forbid",
) -> Enforcer:
    """Force every relationship now and every one configured later, until ``stop``.

    ``awaitable_attrs``, ``run_sync`` and ``sync_lazy`` ("allow" or "forbid") say which lazy
    loads still run: ``await obj.awaitable_attrs.rel``, loads inside
    ``AsyncSession.run_sync``, and loads in sync code.
    """
    if mode not in MODES:
        raise ValueError(f"{mode!r} is not one of {MODES}")
    policy = Policy(awaitable_attrs == "allow", run_sync == "allow", sync_lazy == "allow")
    enforcer = Enforcer(mode, allow, policy)
    with _lock:
        if _stack:
            _stack[-1].restore(suspend=True)
        else:
            event.listen(Mapper, "after_configured", _after_configured)
        _stack.append(enforcer)
        enforcer.apply()
    return enforcer


def stop(enforcer: Enforcer) -> list[str]:
    """Restore exactly what ``enforcer`` forced; returns what could not be restored."""
    with _lock:
        enforcer.restore()
        if enforcer in _stack:
            _stack.remove(enforcer)
        if _stack:
            _stack[-1].resume()
        elif event.contains(Mapper, "after_configured", _after_configured):
            event.remove(Mapper, "after_configured", _after_configured)
    return enforcer.conflicts


def known_names() -> set[Pattern]:
    """``(Class, key)`` of every mapped relationship, configured or not."""
    names: set[Pattern] = set()
    for mapper in _all_mappers():
        for prop in _relationships(mapper):
            names.update(names_of(prop))
    return names


def unmatched(patterns: Iterable[Pattern], names: set[Pattern] | None = None) -> list[Pattern]:
    """The patterns that match no mapped relationship (typos)."""
    patterns = list(patterns)
    if not patterns:
        return []  # the common case, every test: no mapper is visited
    if names is None:
        names = known_names()
    return [pattern for pattern in patterns if not matches(names, frozenset([pattern]))]


# -- audit ------------------------------------------------------------------------------------


class AuditEntry(NamedTuple):
    """A relationship that relies on implicit lazy loading."""

    name: str
    kind: str
    filename: str
    lineno: int


def audit(enforcer: Enforcer | None) -> list[AuditEntry]:
    """Every relationship whose mapping still says lazy="select", sorted by where it is defined."""
    # The kind needs configured relationships; a broken mapping is for the user's tests to report.
    with contextlib.suppress(Exception):
        configure_mappers()
    entries = []
    for mapper in _all_mappers():
        for prop in _relationships(mapper):
            lazy = enforcer.original_lazy(prop) if enforcer is not None else prop.lazy
            if lazy not in _IMPLICIT:
                continue
            try:
                kind = diagnosis.relationship_kind(prop)
            except Exception:
                kind = "relationship"
            filename, lineno = _definition_site(prop)
            entries.append(AuditEntry(str(prop), kind, filename, lineno))
    return sorted(entries, key=lambda entry: (entry.filename, entry.lineno, entry.name))


_class_lines: dict[str, dict[str, list[tuple[int, set[str], dict[str, int]]]]] = {}


def _classes_in(filename: str) -> dict[str, list[tuple[int, set[str], dict[str, int]]]]:
    """Per class name: (line, names assigned in its body, their lines), parsed once per file."""
    found = _class_lines.get(filename)
    if found is None:
        found = {}
        try:
            with open(filename, encoding="utf-8") as source:
                tree = ast.parse(source.read(), filename)
        except (OSError, SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                lines: dict[str, int] = {}
                for statement in node.body:
                    targets: list[ast.expr] = []
                    if isinstance(statement, ast.Assign):
                        targets = list(statement.targets)
                    elif isinstance(statement, ast.AnnAssign):
                        targets = [statement.target]
                    for target in targets:
                        if isinstance(target, ast.Name):
                            lines.setdefault(target.id, statement.lineno)
                found.setdefault(node.name, []).append((node.lineno, set(lines), lines))
        _class_lines[filename] = found
    return found


def _definition_site(prop: Any, depth: int = 0) -> tuple[str, int]:
    cls = prop.parent.class_
    try:
        filename = inspect.getsourcefile(cls) or "?"
    except TypeError:
        return "?", 0
    candidates = _classes_in(os.path.abspath(filename)).get(cls.__name__, [])
    for _, names, lines in candidates:
        if prop.key in names:
            return filename, lines[prop.key]
    if depth == 0:
        # A backref is declared on the other side's relationship().
        for other in getattr(prop, "_reverse_property", ()):
            if getattr(other, "backref", None):
                return _definition_site(other, depth + 1)
    return filename, candidates[0][0] if candidates else 0
