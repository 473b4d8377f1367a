"""Every user-facing text of the plugin."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import detection
from .capture import Location, QueryLog, ShapeStats

if TYPE_CHECKING:
    from .diagnosis import LazyLoad, Violation
    from .enforcement import AuditEntry

#: The forms of an allow_lazy entry.
FORMS = "Model.attr, Model.*, *.attr, package.module.Model.attr or package.module.*"
#: Statement groups listed in one message before the rest is summarised.
MAX_LISTED = 25
_SQL_WIDTH = 200
_PARAMS_WIDTH = 200
_WHITESPACE = re.compile(r"\s+")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 query``, ``2 queries``."""
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {plural_form or singular + 's'}"


def were(count: int) -> str:
    """``1 was``, ``6 were``."""
    return f"{count} {'was' if count == 1 else 'were'}"


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters."""
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def expectation(kind: str, expected: int, actual: int) -> str:
    """``Expected at most 2 queries but 6 were run.``"""
    return f"Expected {kind} {plural(expected, 'query', 'queries')} but {were(actual)} run."


def statement_lines(shapes: Iterable[ShapeStats], *, show_params: bool) -> list[str]:
    """The numbered statements, identical shapes from one call site grouped with their count."""
    lines: list[str] = []
    groups = list(shapes)
    for number, stats in enumerate(groups[:MAX_LISTED], start=1):
        example = stats.example
        repeat = f"{stats.count}x " if stats.count > 1 else ""
        lines.append(f"{number:>3}. {repeat}{shorten(example.sql, _SQL_WIDTH)}")
        lines.extend(_site_lines(example.call_site, "       "))
        if example.background:
            lines.append("       in background work started before the test (a fixture's thread)")
        if show_params and example.parameters not in (None, (), {}, []):
            label = "first parameters" if stats.count > 1 else "parameters"
            lines.append(f"       {label}: {shorten(repr(example.parameters), _PARAMS_WIDTH)}")
    if len(groups) > MAX_LISTED:
        rest = sum(stats.count for stats in groups[MAX_LISTED:])
        lines.append(
            f"  ... and {plural(rest, 'more statement')} in "
            f"{plural(len(groups) - MAX_LISTED, 'more group')}"
        )
    return lines


def budget_fix(log: QueryLog, raise_with: str) -> str:
    """The ``fix:`` line of a budget failure; ``raise_with`` formats the new budget."""
    bigger = raise_with.format(log.count)
    repeated = max(log.shapes.values(), key=lambda stats: stats.count, default=None)
    if repeated is not None and repeated.count > 1:
        example = repeated.example
        where = f" from {example.location}" if example.location else ""
        if example.relationship:
            return (
                f"fix: {example.relationship} was lazily loaded {repeated.count} times{where}; "
                f"eager-load it in the query that loads the parents, e.g. "
                f".options(selectinload({example.relationship}))"
            )
        return (
            f"fix: the same statement ran {repeated.count} times{where}; load all rows in one "
            f"query (e.g. .where(Model.id.in_(ids)) or selectinload), or raise the budget: "
            f"{bigger}"
        )
    return f"fix: remove queries, or raise the budget: {bigger}"


def budget_failure(
    kind: str, expected: int, log: QueryLog, *, raise_with: str, show_params: bool
) -> str:
    """The failure message of a query budget (marker or context manager)."""
    lines = [expectation(kind, expected, log.count)]
    lines.extend(statement_lines(log.shapes.values(), show_params=show_params))
    lines.append(budget_fix(log, raise_with))
    return "\n".join(lines)


def bad_marker_argument(marker: str, signature: str, value: str) -> str:
    """A one-line error for a misused marker."""
    return f"@pytest.mark.{marker} expects {signature}, got {value}"


# --- the CI gate: baseline, report, summary ------------------------------------------------

_FINGERPRINT_WIDTH = 120


def update_without_baseline() -> str:
    """The UsageError of --noplusone-update-baseline without a baseline path."""
    return (
        "--noplusone-update-baseline needs a baseline file: pass --noplusone-baseline PATH "
        "or set noplusone_baseline in the ini file."
    )


def report_is_baseline(path: object) -> str:
    """The UsageError of a report path that is also the baseline path."""
    return f"noplusone: the report and the baseline are the same file ({path}); use two paths."


def bad_baseline(path: object, reason: str, *, missing: bool) -> str:
    """The UsageError of a baseline that cannot be used; the file is never touched."""
    if missing:
        return (
            f"noplusone baseline {path}: no such file; create it with "
            f"--noplusone-update-baseline, or fix the path."
        )
    return (
        f"noplusone baseline {path}: {reason}; fix it, restore it from version control, or "
        f"delete it and rerun with --noplusone-update-baseline. The file was left untouched."
    )


def baseline_is_directory(path: object) -> str:
    """The UsageError of a baseline path that names a directory (never to be deleted)."""
    return (
        f"noplusone baseline {path}: a directory, not a file; give the path of a file, "
        f"e.g. --noplusone-baseline={path}/noplusone-baseline.json."
    )


def cannot_write(path: object, problem: str) -> str:
    """A report or baseline that cannot be written."""
    return f"noplusone could not write {path}: {problem}."


def gate_error(error: BaseException) -> str:
    """An unexpected error of the gate: shown, and the run fails instead of crashing."""
    return f"noplusone: the CI gate failed ({type(error).__name__}: {error}); the run fails."


def grown_line(fingerprint: str, old: int, new: int) -> str:
    """``select posts ... where posts.author_id = ?: 1 -> 5``."""
    return f"{shorten(fingerprint, _FINGERPRINT_WIDTH)}: {old} -> {new}"


def baseline_regression(
    old: int,
    new: int,
    grown: Iterable[tuple[str, int, int]],
    shapes: Iterable[ShapeStats],
    *,
    baseline: str,
    show_params: bool,
    schema: int = 0,
) -> str:
    """The failure of a test that ran more queries than its baseline count (``schema``: the
    schema statements it ran besides, which the baseline does not compare)."""
    besides = f", besides {plural(schema, 'schema statement')} (not compared)" if schema else ""
    lines = [
        f"Expected at most {plural(old, 'query', 'queries')} (the count in the baseline "
        f"{baseline}) but {were(new)} run{besides}.",
        "Statements that ran more often than in the baseline:",
    ]
    lines.extend(f"  {grown_line(*row)}" for row in grown)
    lines.append("Where they ran:")
    lines.extend(statement_lines(shapes, show_params=show_params))
    lines.append(
        "fix: remove the extra queries (eager-load relationships, load rows in one query), or "
        "if the new count is intended, record it with --noplusone-update-baseline"
    )
    return "\n".join(lines)


def summary_totals(queries: int, tests: int, budgets_exceeded: int, findings: int) -> str:
    """``42 queries in 5 tests; 1 budget exceeded; 2 findings``."""
    return (
        f"{plural(queries, 'query', 'queries')} in {plural(tests, 'test')}; "
        f"{plural(budgets_exceeded, 'budget')} exceeded; {plural(findings, 'N+1 finding')}"
    )


def summary_baseline(
    path: str,
    regressions: int,
    improvements: int,
    new: int,
    *,
    updated: bool,
    unchanged: bool = False,
) -> str:
    """``baseline noplusone-baseline.json: 1 regression, 2 improvements, 3 new`` (``updated``
    or ``unchanged`` after the path when the run wrote the baseline or found it up to date)."""
    counts = (
        f"{plural(regressions, 'regression')}, {plural(improvements, 'improvement')}, {new} new"
    )
    if updated:
        return f"baseline {path} {'unchanged' if unchanged else 'updated'}: {counts}"
    return f"baseline {path}: {counts}"


def quiet_baseline(line: str) -> str:
    """The baseline line as ``-q`` shows it, without the section that names the plugin."""
    return f"noplusone: {line}"


def summary_schema(statements: int, tests: int) -> str:
    """The schema work a baseline run counted but did not compare."""
    return (
        f"schema work (DDL, PRAGMA, catalog reads) not compared with the baseline: "
        f"{plural(statements, 'statement')} in {plural(tests, 'test')}"
    )


def summary_benchmarks(tests: int) -> str:
    """The tests using pytest-benchmark's fixture, which the baseline leaves out."""
    return (
        f"left out of the baseline: {plural(tests, 'test')} using the benchmark fixture "
        f"(pytest-benchmark runs a varying number of rounds)"
    )


def summary_change(status: str, nodeid: str, old: int | None, new: int) -> str:
    """One test of the baseline lists in the summary."""
    if old is None:
        return f"  {status:<11}  {nodeid}: {plural(new, 'query', 'queries')}"
    return f"  {status:<11}  {nodeid}: {old} -> {plural(new, 'query', 'queries')}"


def unreported_regression(nodeid: str, old: int | None, new: int) -> str:
    """A regression whose test did not fail (an xfail, a plugin changing outcomes)."""
    return (
        f"{nodeid} ran {new} queries, above its baseline of {old}, but was not reported as "
        f"failed (xfail?); the run fails."
    )


def finding_annotation(nodeid: str, kind: str, label: str, count: int | None) -> str:
    """The text of a GitHub annotation for an N+1 finding."""
    times = f", {count} times" if count else ""
    return f"N+1 ({kind}): {label}{times} in {nodeid}"


def regression_annotation(
    nodeid: str, old: int | None, new: int, grown: Iterable[tuple[str, int, int]], baseline: str
) -> str:
    """The text of a GitHub annotation for a baseline regression."""
    lines = [f"{nodeid} ran {new} queries, above its baseline of {old} in {baseline}."]
    lines.extend(grown_line(*row) for row in grown)
    return "\n".join(lines)


def compare_verdict(counts: dict[str, int], old_total: int, new_total: int) -> str:
    """``1 rose, 0 fell, 2 new, 0 removed, 5 unchanged; 40 -> 43 queries in total.``"""
    listed = ", ".join(f"{count} {status}" for status, count in counts.items())
    return f"{listed}; {old_total} -> {plural(new_total, 'query', 'queries')} in total."


def compare_bad_file(path: object, reason: str) -> str:
    """The one-line error of ``compare`` for a file it cannot use."""
    return f"error: {path}: {reason}"


# --- N+1 findings and scale assertions (issue 4) ---


def _parent_class(relationship: str) -> str:
    return relationship.rsplit(".", 1)[0]


#: Frames of a chain shown in an N+1 message; the innermost and the outermost (the test's
#: line) are always among them.
_CHAIN_SHOWN = 8


def _site_lines(
    call_site: Sequence[Location], indent: str = "  ", *, depth: int = 2
) -> list[str]:
    """``from`` the innermost frame, then up to ``depth - 1`` callers; a longer chain shows
    its outermost frame (the test's line) last, after how many frames were left out."""
    if not call_site:
        return [f"{indent}from (no frame of your code on the stack)"]
    lines = [f"{indent}from {call_site[0]}"]
    # A comprehension or lambda on its caller's line adds nothing: its caller is shown.
    callers = [
        site
        for index, site in enumerate(call_site[1:], start=1)
        if index + 1 >= len(call_site) or not _same_line(site, call_site[index + 1])
    ]
    if len(callers) >= depth and depth > 2:
        shown = callers[: depth - 3]
        lines.extend(f"{indent}called from {site}" for site in shown)
        lines.append(f"{indent}... ({plural(len(callers) - len(shown) - 1, 'frame')})")
        lines.append(f"{indent}called from {callers[-1]}")
        return lines
    lines.extend(f"{indent}called from {site}" for site in callers[: depth - 1])
    return lines


def _same_line(inner: Location, outer: Location) -> bool:
    return (inner.filename, inner.lineno) == (outer.filename, outer.lineno) and (
        inner.function.startswith("<")
    )


def loop_fix(shape: str, column: str | None = None, *, guess: bool = False) -> str:
    """How to replace one query per row by one query for all rows (``column``: the one whose
    value changed from one statement to the next, ``Model.attr`` or ``table.column``; with
    ``guess``, the first key column of the statement when none is known)."""
    if column is None and guess:
        hint = detection.model_hint(shape)
        column = f"{hint[0]}.{hint[1]}" if hint is not None else None
    if column is None:
        return "load all rows in one query (an IN list of the values that changed)"
    model = column.rsplit(".", 1)[0]
    if "." in column and column[:1].isupper():
        return f"load all rows in one query, e.g. select({model}).where({column}.in_(ids))"
    return f"load all rows in one query, e.g. ... WHERE {column} IN (...)"


_SELECT_LIST = re.compile(r"^(\s*select\s+(?:distinct\s+)?)(.*?)(\s+from\s)", re.I | re.S)


def sql_shown(sql: str, width: int = _SQL_WIDTH) -> str:
    """The statement on one line; a long one loses its select list first, so that the FROM and
    WHERE clauses that tell statements apart stay."""
    text = _WHITESPACE.sub(" ", sql).strip()
    if len(text) <= width:
        return text
    match = _SELECT_LIST.match(text)
    if match is not None:
        first = match.group(2).split(",", 1)[0].strip()
        text = f"{match.group(1)}{first}, ...{match.group(3)}{text[match.end():]}"
    return text if len(text) <= 2 * width else text[: 2 * width - 3] + "..."


def lazy_fix(relationship: str) -> str:
    """How to eager-load a relationship."""
    return (
        f"eager-load it where the {_parent_class(relationship)} objects are loaded: "
        f".options(selectinload({relationship}))"
    )


def allow_entry(finding: detection.Finding) -> str:
    """The ``allow_nplusone`` argument that matches exactly this finding: its relationship, or
    its whole fingerprint (a whole statement matches only the same statement)."""
    if finding.kind == detection.LAZY_LOAD and finding.relationship:
        return finding.relationship
    shape = finding.fingerprint
    match = _SELECT_LIST.match(shape)
    if match is not None and len(match.group(2)) > _ALLOW_SELECT_LIST:
        first = match.group(2).split(",", 1)[0].strip()
        shape = f"{match.group(1)}{first}, ...{match.group(3)}{shape[match.end():]}"
    return shape


#: A longer select list is elided (``...``) in a suggested allow entry.
_ALLOW_SELECT_LIST = 60


def _distinct(count: int) -> str:
    return f"{count} or more" if count >= detection.MAX_DISTINCT else str(count)


def nplusone_finding(finding: detection.Finding) -> str:
    """One N+1 finding: what repeated, how often, in which call, where, the SQL and the fix."""
    times = plural(finding.count, "time")
    call = f" in one call of {finding.invocation}" if finding.invocation else ""
    if finding.kind == detection.LAZY_LOAD and finding.relationship:
        parent = _parent_class(finding.relationship)
        headline = (
            f"N+1 query: {finding.relationship} was lazily loaded {times}{call}, "
            f"for {_distinct(finding.distinct)} different {parent} objects."
        )
        fix = lazy_fix(finding.relationship)
    elif finding.kind in (detection.EXPIRED, detection.REFRESH) and finding.relationship:
        what = (
            "reloaded after commit() or expire()"
            if finding.kind == detection.EXPIRED
            else "refreshed with session.refresh()"
        )
        headline = (
            f"N+1 query: {_distinct(finding.distinct)} {finding.relationship} objects were "
            f"{what} one by one, {times}{call}."
        )
        fix = (
            f"load them again in one query (select({finding.relationship})"
            f".where({finding.relationship}.id.in_(ids)))"
            + (
                ", or keep them loaded: sessionmaker(..., expire_on_commit=False)"
                if finding.kind == detection.EXPIRED
                else ""
            )
        )
    elif finding.kind == detection.LOOP:
        headline = f"N+1 query: the same SELECT ran {times}{call}, with different values."
        fix = loop_fix(finding.fingerprint, finding.column)
    else:
        headline = f"Repeated query: the same SELECT ran {times}{call}, with the same values."
        fix = "run it once and reuse the result"
    lines = [headline, *_site_lines(finding.call_site, depth=_CHAIN_SHOWN)]
    lines.append(f"  SQL: {sql_shown(finding.sql)}")
    lines.append(f"  fix: {fix}")
    lines.append(f"  or, if intended: @pytest.mark.allow_nplusone({allow_entry(finding)!r})")
    return "\n".join(lines)


def nplusone_failure(findings: Sequence[detection.Finding]) -> str:
    """The failure text of a test with N+1 findings."""
    return "\n\n".join(nplusone_finding(finding) for finding in findings)


def unused_allow(nodeid: str, entry: str) -> str:
    """An ``allow_nplusone`` entry (``""`` for a bare marker) that allowed nothing."""
    if not entry:
        return (
            f"@pytest.mark.allow_nplusone on {nodeid} allowed nothing: "
            "the test has no N+1 finding; remove the marker."
        )
    return (
        f"@pytest.mark.allow_nplusone({entry!r}) on {nodeid} allowed nothing: "
        "no N+1 finding matched it; remove it or fix its spelling."
    )


def _and(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scale_failure(
    scales: Sequence[int], logs: Sequence[QueryLog], grown: Sequence[tuple[ShapeStats, list[int]]]
) -> str:
    """``Expected the same number of queries at every scale, but got 3 for n=2 and 4 for n=3.``"""
    counts = [f"{log.count} for n={n}" for n, log in zip(scales, logs, strict=True)]
    lines = [f"Expected the same number of queries at every scale, but got {_and(counts)}."]
    fixes: list[str] = []
    for stats, per_scale in grown:
        example = stats.example
        steps = " -> ".join(str(count) for count in per_scale)
        lines.append(f"  {shorten(example.sql, _SQL_WIDTH)}: {steps}")
        lines.extend(_site_lines(example.call_site, "      "))
        if example.relationship:
            fix = f"{example.relationship} is lazily loaded per parent: " + lazy_fix(
                example.relationship
            )
        else:
            fix = loop_fix(example.fingerprint, guess=True)
        if fix not in fixes:
            fixes.append(fix)
    lines.extend(f"fix: {fix}" for fix in fixes[:3])
    return "\n".join(lines)


def bad_scales(value: object) -> str:
    """A one-line error for a bad ``scales`` argument."""
    return (
        "assert_constant_queries expects scales=(at least two different non-negative ints), "
        f"got {value!r}"
    )


# --- Lazy loads: enforcement, diagnosis and audit (issue 3) ---


def eager_load_fix(owner: str, key: str, *, collection: bool) -> str:
    """``select(User).options(selectinload(User.posts))``; joinedload for a scalar."""
    loader = "selectinload" if collection else "joinedload"
    return f"select({owner}).options({loader}({owner}.{key}))"


def _lazy_headline(load: LazyLoad, times: str) -> str:
    what = f"{load.attribute} ({load.kind})" if load.kind else load.attribute
    cause = load.cause
    if load.write and load.kind is not None and cause in ("raise_on_sql", "raise"):
        return (
            f"noplusone: assigning to {what}{times} loads its current contents first: a lazy "
            f"load, which lazy='{cause}' forbids (enforced by pytest-noplusone)."
        )
    if load.write and load.kind is not None and cause == "missing_greenlet":
        return (
            f"noplusone: assigning to {what}{times} loads its current contents first: a lazy "
            "load, which SQLAlchemy cannot run implicitly in async code (MissingGreenlet)."
        )
    if cause == "no_await":
        if not load.kind:
            return (
                f"noplusone: a query ran{times} in async code without an await, where "
                "SQLAlchemy cannot run it (MissingGreenlet)."
            )
        return (
            f"noplusone: {what} was loaded{times} in async code without an await (not through "
            "the attribute: a loader called on the sync session), where SQLAlchemy cannot run "
            "the query (MissingGreenlet)."
        )
    if cause in ("raise_on_sql", "raise"):
        return (
            f"noplusone: {what} was lazily loaded{times}, which lazy='{cause}' forbids "
            "(enforced by pytest-noplusone)."
        )
    if cause == "missing_greenlet":
        return (
            f"noplusone: {what} was lazily loaded{times} in async code, where SQLAlchemy cannot "
            "run the implicit query (MissingGreenlet)."
        )
    if cause == "detached":
        return (
            f"noplusone: {what} was touched{times} on a detached {load.owner} (its session was "
            "closed or it was expunged), so it cannot be loaded (DetachedInstanceError)."
        )
    if cause == "expired":
        subject = (
            f"{what} was touched{times} on a {load.owner} expired by commit()"
            if load.kind
            else f"{what} was touched{times} after commit() expired it"
        )
        return (
            f"noplusone: {subject} (expire_on_commit=True); reloading needs a query that "
            "cannot run here (async code, or a closed session)."
        )
    return (
        f"noplusone: {what} is a deferred column, touched{times} without being loaded; loading "
        "it needs a query that async code cannot run implicitly."
    )


def _in_async(load: LazyLoad) -> bool:
    """Whether the load was attempted in async code (where no lazy load can run)."""
    return load.cause == "missing_greenlet" or load.context == "async"


def _lazy_fix(load: LazyLoad) -> list[str]:
    eager = eager_load_fix(load.owner, load.key, collection=load.collection)
    variable = load.owner.lower()
    query = f"in the query that loads the {load.owner} objects:"
    if load.loaded_via is not None and load.kind is not None:
        # The objects came from a relationship load: chain the option there.
        root, hops = load.loaded_via
        loader = "selectinload" if load.collection else "joinedload"
        chain = ".".join([*hops, f"{loader}({load.owner}.{load.key})"])
        eager = f"select({root}).options({chain})"
        query = (
            f"in the query that loads the {root} objects, chained to the loader that brought "
            f"the {load.owner} objects:"
        )
    if load.cause == "no_await":
        lines = ["  fix: run sync-style code with: await session.run_sync(fn) (fn gets the sync "
                 "Session),"]
        if load.kind:
            lines.append(f"       or load it in an awaited query: {eager}")
        else:
            lines.append("       or await the query: await session.execute(...)")
        return lines
    if load.kind is None:
        if load.cause == "deferred":
            return [f"  fix: load it with the object: select({load.owner}).options(undefer("
                    f"{load.owner}.{load.key}))"]
        return [
            "  fix: keep loaded attributes after commit: "
            "async_sessionmaker(engine, expire_on_commit=False),",
            f"       or reload them explicitly: await session.refresh({variable})",
        ]
    if load.cause == "expired":
        return [
            "  fix: keep loaded attributes after commit: "
            "async_sessionmaker(engine, expire_on_commit=False),",
            f"       and eager-load it: {eager}",
        ]
    awaiting = "await " if _in_async(load) or load.context == "greenlet" else ""
    if load.lazy_option is not None and not load.write and load.cause != "detached":
        loader = "selectinload" if load.collection else "joinedload"
        lines = [
            f"  the cause: the query that loaded the {load.owner} asked for this lazy load with "
            f".options({load.lazy_option})",
            f"  fix: in that query, replace {load.lazy_option} with "
            f"{loader}({load.owner}.{load.key})",
        ]
        if _in_async(load) and load.async_attrs:
            lines.append(f"       or, for one object: await {variable}.awaitable_attrs.{load.key}")
        return lines
    refresh = f'{awaiting}session.refresh({variable}, ["{load.key}"])'
    if load.write and load.cause != "detached":
        lines = [f"  fix: eager-load it {query}"]
        lines.append(f"       {eager}")
        lines.append(f"       or load it just before assigning: {refresh}")
        if load.collection:
            lines.append(
                '       or, if the code only adds and removes rows: relationship(lazy="write_only")'
            )
        return lines
    where = "while the session is open, " if load.cause == "detached" else ""
    lines = [f"  fix: eager-load it {where}{query}"]
    lines.append(f"       {eager}")
    if _in_async(load) and load.cause != "detached":
        if load.async_attrs:
            lines.append(f"       or, for one object: await {variable}.awaitable_attrs.{load.key}")
        else:
            lines.append(f"       or, for one object: {refresh}")
    return lines


def _allow_lines(load: LazyLoad) -> list[str]:
    causes = ("raise_on_sql", "raise", "missing_greenlet", "no_await")
    if load.kind is None or load.cause not in causes:
        return []
    if _in_async(load):
        return [
            "  allow_lazy cannot make a lazy load work in async code; a test that expects this "
            f'error (caught by your code): @pytest.mark.allow_lazy("{load.attribute}")'
        ]
    lines = [
        f'  if the lazy load is intended: @pytest.mark.allow_lazy("{load.attribute}"), '
        f"or noplusone_allow_lazy = {load.attribute}"
    ]
    if load.context == "sync":
        lines.append(
            "  or let every lazy load of sync code run (counted, N+1 checked): "
            "noplusone_sync_lazy = allow"
        )
    return lines


def lazy_load_explanation(load: LazyLoad, count: int = 1) -> str:
    """What was lazily loaded, why that failed, where, and the fix with the real names."""
    times = "" if count == 1 else f" {plural(count, 'time')}"
    lines = [_lazy_headline(load, times)]
    if load.touched:
        lines.append(f"  touched at: {load.touched[0]}")
        lines.extend(f"  called from: {site}" for site in load.touched[1:])
    else:
        lines.append("  touched at: (no frame of your code on the stack)")
    if load.parents_loaded_at is not None:
        lines.append(f"  the {load.owner} was loaded at: {load.parents_loaded_at}")
    lines.extend(_lazy_fix(load))
    lines.extend(_allow_lines(load))
    return "\n".join(lines)


def lazy_load_report(violations: Sequence[Violation], *, swallowed: bool) -> str:
    """Lazy loads that failed during a test but did not surface as its exception."""
    if swallowed:
        header = (
            "noplusone: a lazy load failed in this test, but the error never reached the test: "
            "your code caught it (an HTTP 500 response, for example)."
        )
    else:
        header = (
            "noplusone: a lazy load failed during this test, and your code caught the error "
            "before the test saw it (it may be why the test failed)."
        )
    parts = [header]
    parts.extend(lazy_load_explanation(v.load, v.count) for v in violations)
    return "\n\n".join(parts)


def allow_lazy_unmatched(source: str, entry: str) -> str:
    """A pattern of the allow list that matches no relationship (a typo disables nothing)."""
    return (
        f"{source} entry {entry!r} matches no mapped relationship; "
        f"use {FORMS} with the names of a mapped class and relationship."
    )


def allow_lazy_invalid(source: str, problem: str) -> str:
    """A malformed allow-list entry."""
    return f"{source}: {problem}"


def audit_report(entries: Sequence[AuditEntry]) -> list[str]:
    """``User.posts  (one-to-many collection)  models.py:25`` per relationship, and the count."""
    if not entries:
        return ["noplusone audit: no relationship relies on implicit lazy loading."]
    verb = "relies" if len(entries) == 1 else "rely"
    lines = [
        f"noplusone audit: {plural(len(entries), 'relationship')} still {verb} on implicit "
        'lazy loading (lazy="select"):'
    ]
    name_width = max(len(entry.name) for entry in entries)
    kind_width = max(len(entry.kind) for entry in entries) + 2
    for entry in entries:
        site = f"{Location(entry.filename, entry.lineno, '').path}:{entry.lineno}"
        kind = f"({entry.kind})"
        lines.append(f"  {entry.name:<{name_width}}  {kind:<{kind_width}}  {site}")
    lines.append(
        'fix: give each a loading strategy in the mapping (lazy="selectin", "joined" or '
        '"raise_on_sql"), or eager-load it in every query whose code touches it.'
    )
    return lines
