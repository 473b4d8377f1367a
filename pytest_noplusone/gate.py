"""The CI gate: per-test data on reports, the JSON report, the count baseline and the summary.

Per-test numbers ride on the call-phase ``TestReport`` (``report.noplusone``), which pytest-xdist
serialises with the report, so the controller sees the same data with ``-n 0`` and ``-n 4``.
Files are written by the controller only, atomically, after the test loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pytest

from . import messages
from .capture import QueryLog
from .settings import Settings

if TYPE_CHECKING:  # imported where a baseline or report is used: most runs have neither
    from .counts import Change, Entry

__all__ = ["Gate", "attach", "finding_record", "per_test_record"]

#: The attribute of the call-phase TestReport that carries a test's data.
REPORT_ATTRIBUTE = "noplusone"
#: Rows listed per category in the terminal summary and the GitHub step summary.
LISTED = 10

class _Budget(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def source(self) -> str: ...

    def exceeded(self, count: int) -> bool: ...


# --- per-test data -----------------------------------------------------------------------


def _location(location: object) -> dict[str, Any] | None:
    """A finding's location as ``{"path", "line", "function"}`` (no values, no SQL)."""
    if location is None or location == "?":
        return None
    path = getattr(location, "path", None)
    line = getattr(location, "lineno", None)
    if isinstance(path, str) and isinstance(line, int):
        return {"path": path, "line": line, "function": str(getattr(location, "function", ""))}
    text = str(location)  # "path:line in function"
    head, _, function = text.partition(" in ")
    file, _, number = head.rpartition(":")
    if file and number.isdigit():
        return {"path": file, "line": int(number), "function": function}
    return {"path": text, "line": None, "function": ""}


def finding_record(finding: object) -> dict[str, Any]:
    """The JSON form of an N+1 finding: kind, label, location and count (never SQL values)."""
    call_site = getattr(finding, "call_site", None)
    location = call_site[0] if call_site else getattr(finding, "location", None)
    record: dict[str, Any] = {
        "kind": str(getattr(finding, "kind", "finding")),
        "label": str(getattr(finding, "label", "?")),
        "location": _location(location),
    }
    count = getattr(finding, "count", None)
    if isinstance(count, int):
        record["count"] = count
    return record


def per_test_record(
    log: QueryLog, budget: _Budget | None, findings: Iterable[object], *, complete: bool
) -> dict[str, Any]:
    """The JSON-ready data of one test, attached to its call-phase report."""
    record: dict[str, Any] = {
        "queries": log.count,
        "fingerprints": dict(sorted(log.fingerprints.items())),
        "complete": complete,
        "findings": [finding_record(finding) for finding in findings],
    }
    if budget is not None:
        record["budget"] = {"kind": budget.kind, "limit": budget.limit, "source": budget.source}
        record["budget_exceeded"] = budget.exceeded(log.count)
    return record


def attach(
    item: pytest.Item,
    report: pytest.TestReport,
    log: QueryLog,
    budget: _Budget | None,
    findings: Sequence[object],
    complete: bool,
) -> None:
    """Put the test's data on its call-phase report and its JUnit properties on the item
    (``complete``: whether the body ran to its end)."""
    record = per_test_record(log, budget, findings, complete=complete)
    if uses_benchmark(item):
        record["benchmark"] = True
    setattr(report, REPORT_ATTRIBUTE, record)
    # junitxml writes the teardown report's user_properties, copied from the item later on.
    item.user_properties.append(("noplusone_queries", log.count))
    if findings:
        item.user_properties.append(("noplusone_findings", len(findings)))


def uses_benchmark(item: pytest.Item) -> bool:
    """Whether the test uses pytest-benchmark's fixture, which runs its code a varying number
    of rounds: such tests are left out of the baseline."""
    return "benchmark" in getattr(item, "fixturenames", ())


# --- the session -------------------------------------------------------------------------


class _Test(NamedTuple):
    record: dict[str, Any]
    outcome: str
    file: str
    line: int | None


class Gate:
    """The session's gate: the baseline it compares with and the tests it has seen."""

    def __init__(self, settings: Settings, rootpath: Path, *, controller: bool) -> None:
        self.settings = settings
        self.rootpath = rootpath
        self.controller = controller
        self.baseline: dict[str, Entry] | None = None
        self.tests: dict[str, _Test] = {}
        self.changes: list[Change] = []
        self.errors: list[str] = []
        self.unreported: list[Change] = []
        self.finished = False
        #: After an update: whether the baseline file already held the counts.
        self.unchanged = False

    @classmethod
    def configure(cls, config: pytest.Config, settings: Settings) -> Gate:
        """Check the paths and read the baseline; a bad one is a ``pytest.UsageError``."""
        gate = cls(settings, config.rootpath, controller=not hasattr(config, "workerinput"))
        path = settings.baseline
        if settings.update_baseline and path is None:
            raise pytest.UsageError(messages.update_without_baseline())
        if path is not None and settings.report is not None and _same(path, settings.report):
            raise pytest.UsageError(messages.report_is_baseline(path))
        if path is not None and path.is_dir():
            raise pytest.UsageError(messages.baseline_is_directory(path))
        if path is not None:
            from .counts import CountsFileError, load_counts

            try:
                gate.baseline = {
                    nodeid: gate.compared(entry) for nodeid, entry in load_counts(path).items()
                }
            except CountsFileError as error:
                if not (error.missing and settings.update_baseline):
                    raise pytest.UsageError(
                        messages.bad_baseline(path, error.reason, missing=error.missing)
                    ) from None
                gate.baseline = {}
        for written in (settings.report, path if settings.update_baseline else None):
            problem = _unwritable(written) if written is not None else None
            if problem is not None and written is not None:
                raise pytest.UsageError(messages.cannot_write(written, problem))
        return gate

    @property
    def comparing(self) -> bool:
        """Whether counts above the baseline fail (a baseline without the update flag)."""
        return self.baseline is not None and not self.settings.update_baseline

    def compared(self, entry: Entry) -> Entry:
        """What of a test's counts the baseline compares: without schema work by default."""
        if self.settings.compare_schema:
            return entry
        from .counts import without_schema

        return without_schema(entry)

    def regression(self, item: pytest.Item, log: QueryLog) -> str | None:
        """The failure text when the test ran more queries than its baseline, else None."""
        path = self.settings.baseline
        if not self.comparing or self.baseline is None or path is None:
            return None
        entry = self.baseline.get(item.nodeid)
        if entry is None or log.count <= entry.queries or uses_benchmark(item):
            return None
        from .counts import Entry, grown

        measured = self.compared(Entry(log.count, log.fingerprints))
        if measured.queries <= entry.queries:
            return None
        rows = grown(entry.fingerprints, measured.fingerprints)
        fingerprints = {row[0] for row in rows}
        shapes = [
            stats for stats in log.shapes.values() if stats.example.fingerprint in fingerprints
        ]
        return messages.baseline_regression(
            entry.queries,
            measured.queries,
            rows,
            shapes,
            baseline=_shown(path),
            show_params=self.settings.show_params,
            schema=log.count - measured.queries,
        )

    def record(self, report: pytest.TestReport) -> None:
        """Collect a call-phase report's data (controller only)."""
        if not self.controller or report.when != "call":
            return
        record = getattr(report, REPORT_ATTRIBUTE, None)
        if not isinstance(record, dict):
            return
        file, line, _ = report.location
        line = line + 1 if isinstance(line, int) else None  # report lines are 0-based
        self.tests[report.nodeid] = _Test(record, report.outcome, str(file), line)

    def finish(self, session: pytest.Session) -> None:
        """Compare, write the files and decide the gate, after the test loop (controller only)."""
        if not self.controller or session.config.option.collectonly:
            return
        self.finished = True
        try:
            self._finish(session)
        except Exception as error:  # never an INTERNALERROR: say it and fail the run
            self.errors.append(messages.gate_error(error))
        if self.errors:
            session.testsfailed += 1

    def _finish(self, session: pytest.Session) -> None:
        if self.baseline is not None or self.settings.report is not None:
            self._compare_and_write(session)
        self._github_step_summary()

    def _compare_and_write(self, session: pytest.Session) -> None:
        from .counts import Entry, compare, dumps

        measured = {
            nodeid: self.compared(Entry(test.record["queries"], test.record["fingerprints"]))
            for nodeid, test in self.tests.items()
            if test.record.get("complete") and not test.record.get("benchmark")
        }
        if self.baseline is not None:
            self.changes = compare(self.baseline, measured)
        if self.comparing:
            # A regression fails its test; one that did not (an xfail, a plugin rewriting the
            # outcome) still fails the run.
            self.unreported = [
                change
                for change in self.changes
                if change.status == "regression" and self.tests[change.nodeid].outcome != "failed"
            ]
            if self.unreported:
                session.testsfailed += 1
        if self.settings.report is not None:
            self._write(self.settings.report, dumps(self.totals(), self._report_tests()))
        if self.settings.update_baseline and self.settings.baseline is not None:
            self._write_baseline(self.settings.baseline, measured)

    def _write(self, path: Path, text: str) -> None:
        from .counts import write_atomic

        try:
            write_atomic(path, text)
        except OSError as error:
            self.errors.append(messages.cannot_write(path, str(error)))

    def _write_baseline(self, path: Path, measured: Mapping[str, Entry]) -> None:
        # Tests that did not run (-k, a subset of files, a failed body) keep their entries.
        merged = dict(self.baseline or {})
        merged.update(measured)
        for nodeid in self.benchmarks():  # their counts vary: no entry at all
            merged.pop(nodeid, None)
        tests = {nodeid: entry.to_json() for nodeid, entry in merged.items()}
        totals = {
            "queries": sum(entry.queries for entry in merged.values()),
            "tests": len(merged),
        }
        from .counts import dumps

        text = dumps(totals, tests)
        with suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                self.unchanged = True
                return  # unchanged: leave the file (and its mtime) alone
        self._write(path, text)

    def benchmarks(self) -> list[str]:
        """The tests that used the benchmark fixture (left out of the baseline)."""
        return [nodeid for nodeid, test in self.tests.items() if test.record.get("benchmark")]

    def schema_work(self) -> tuple[int, int]:
        """The schema statements measured and the tests that ran them (needs the counts
        module: only asked with a report or a baseline)."""
        from .counts import schema_count

        per_test = [schema_count(test.record["fingerprints"]) for test in self.tests.values()]
        return sum(per_test), sum(1 for count in per_test if count)

    def count(self, status: str) -> int:
        """How many tests have this baseline status."""
        return sum(1 for change in self.changes if change.status == status)

    def totals(self) -> dict[str, Any]:
        """The numbers at the top of the report."""
        records = [test.record for test in self.tests.values()]
        totals: dict[str, Any] = {
            "queries": sum(record["queries"] for record in records),
            "tests": len(records),
            "budgets_exceeded": sum(1 for record in records if record.get("budget_exceeded")),
            "findings": sum(len(record["findings"]) for record in records),
        }
        if self.baseline is not None or self.settings.report is not None:
            totals["schema_queries"] = self.schema_work()[0]
        if self.baseline is not None:
            totals["baseline_regressions"] = self.count("regression")
            totals["baseline_improvements"] = self.count("improvement")
            totals["baseline_new"] = self.count("new")
        return totals

    def _report_tests(self) -> dict[str, Any]:
        from .counts import schema_count

        tests: dict[str, Any] = {}
        changes = {change.nodeid: change for change in self.changes}
        for nodeid, test in self.tests.items():
            record = dict(test.record)
            record["outcome"] = test.outcome
            record["schema_queries"] = schema_count(record["fingerprints"])
            change = changes.get(nodeid)
            if change is not None:
                record["baseline"] = {"queries": change.old, "status": change.status}
            tests[nodeid] = record
        return tests

    # --- output ----------------------------------------------------------------------------

    def top(self) -> list[tuple[str, int]]:
        """The tests that ran the most queries (at most ``LISTED``, none with zero)."""
        rows = [(nodeid, test.record["queries"]) for nodeid, test in self.tests.items()]
        rows = [row for row in rows if row[1] > 0]
        rows.sort(key=lambda row: (-row[1], row[0]))
        return rows[:LISTED]

    def _baseline_line(self) -> str | None:
        if self.baseline is None or self.settings.baseline is None:
            return None
        return messages.summary_baseline(
            _shown(self.settings.baseline),
            self.count("regression"),
            self.count("improvement"),
            self.count("new"),
            updated=self.settings.update_baseline,
            unchanged=self.unchanged,
        )

    def _change_lines(self, statuses: Sequence[str]) -> list[str]:
        lines = []
        for status in statuses:
            listed = [change for change in self.changes if change.status == status]
            for change in listed[:LISTED]:
                lines.append(messages.summary_change(status, change.nodeid, change.old, change.new))
            if len(listed) > LISTED:
                lines.append(f"  ... and {len(listed) - LISTED} more")
        return lines

    def quiet_lines(self) -> list[str]:
        """What ``-q`` and ``-qq`` still show: the baseline's verdict, its regressions and
        improvements (nothing without a baseline)."""
        baseline = self._baseline_line()
        if baseline is None:
            return []
        lines = [messages.quiet_baseline(baseline)]
        lines += self._change_lines(("regression", "improvement"))
        lines += [messages.unreported_regression(*change[:3]) for change in self.unreported]
        return lines

    def summary_lines(self) -> list[str]:
        """The terminal summary section (without its title)."""
        totals = self.totals()
        lines = [_totals_line(totals)]
        baseline = self._baseline_line()
        if baseline is not None:
            lines.append(baseline)
            lines += self._change_lines(("regression", "improvement", "new"))
            schema, tests = self.schema_work()
            if schema and not self.settings.compare_schema:
                lines.append(messages.summary_schema(schema, tests))
            benchmarks = self.benchmarks()
            if benchmarks:
                lines.append(messages.summary_benchmarks(len(benchmarks)))
        for change in self.unreported:
            lines.append(messages.unreported_regression(change.nodeid, change.old, change.new))
        top = self.top()
        if top:
            lines.append(f"top {len(top)} tests by queries:")
            width = len(str(top[0][1]))
            lines.extend(f"  {count:>{width}}  {nodeid}" for nodeid, count in top)
        if self.settings.report is not None and not self.errors:
            lines.append(f"report: {_shown(self.settings.report)}")
        return lines

    def terminal_summary(self, reporter: pytest.TerminalReporter) -> None:
        """Print the summary section, annotations and errors; never raises."""
        if not self.finished:
            return
        try:
            if reporter.config.get_verbosity() < 0:
                # Quiet runs still say what the gate decided (the exit code never depends on
                # the verbosity).
                for line in self.quiet_lines():
                    reporter.write_line(line)
            elif self.tests or self.baseline is not None:
                reporter.write_sep("=", "noplusone")
                for line in self.summary_lines():
                    reporter.write_line(line)
            for error in self.errors:
                reporter.write_line(error, red=True, bold=True)
            if _github():
                for line in self.annotations():
                    reporter.write_line(line)
        except Exception as error:  # pragma: no cover - the summary must never break the run
            reporter.write_line(messages.gate_error(error), red=True)

    def annotations(self) -> list[str]:
        """GitHub Actions ``::error`` commands for findings and baseline regressions."""
        level = "error" if self.settings.nplusone == "fail" else "warning"
        lines = []
        for nodeid in sorted(self.tests):
            for finding in self.tests[nodeid].record["findings"]:
                location = finding.get("location") or {}
                lines.append(
                    _command(
                        level,
                        self._workspace_path(location.get("path")),
                        location.get("line"),
                        "noplusone N+1",
                        messages.finding_annotation(
                            nodeid, finding["kind"], finding["label"], finding.get("count")
                        ),
                    )
                )
        if self.comparing and self.settings.baseline is not None:
            for change in self.changes:
                if change.status != "regression":
                    continue
                test = self.tests[change.nodeid]
                lines.append(
                    _command(
                        "error",
                        self._workspace_path(test.file),
                        test.line,
                        "noplusone baseline",
                        messages.regression_annotation(
                            change.nodeid,
                            change.old,
                            change.new,
                            change.grown,
                            _shown(self.settings.baseline),
                        ),
                    )
                )
        return lines

    def _workspace_path(self, path: object) -> str | None:
        """A rootdir-relative path made relative to the GitHub workspace (the repository)."""
        if not isinstance(path, str):
            return None
        workspace = os.environ.get("GITHUB_WORKSPACE")
        absolute = Path(path) if os.path.isabs(path) else self.rootpath / path
        if workspace:
            with suppress(ValueError):
                return absolute.relative_to(workspace).as_posix()
        return Path(path).as_posix()

    def step_summary(self) -> str:
        """The Markdown appended to ``$GITHUB_STEP_SUMMARY``."""
        totals = self.totals()
        lines = ["### noplusone", "", _totals_line(totals)]
        baseline = self._baseline_line()
        if baseline is not None:
            lines[-1] += "; " + baseline
        rows: list[tuple[str, str, str, str]] = []
        for status in ("regression", "improvement", "new"):
            listed = [change for change in self.changes if change.status == status]
            for change in listed[:LISTED]:
                old = "" if change.old is None else str(change.old)
                delta = "new" if change.old is None else f"{change.new - change.old:+d}"
                rows.append((change.nodeid, str(change.new), old, delta))
        shown = {row[0] for row in rows}
        for nodeid, count in self.top():
            if nodeid not in shown:
                entry = self.baseline.get(nodeid) if self.baseline is not None else None
                rows.append((nodeid, str(count), "" if entry is None else str(entry.queries), ""))
        if rows:
            lines += ["", "| Test | Queries | Baseline | Change |", "|---|---:|---:|---:|"]
            lines += [f"| {_cell(row[0])} | {row[1]} | {row[2]} | {row[3]} |" for row in rows]
        return "\n".join(lines) + "\n\n"

    def _github_step_summary(self) -> None:
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if not _github() or not target:
            return
        try:
            with open(target, "a", encoding="utf-8") as file:
                file.write(self.step_summary())
        except OSError as error:
            self.errors.append(messages.cannot_write(Path(target), str(error)))


def _totals_line(totals: Mapping[str, Any]) -> str:
    return messages.summary_totals(
        totals["queries"], totals["tests"], totals["budgets_exceeded"], totals["findings"]
    )


def _github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape(text: str, *, property_value: bool = False) -> str:
    # https://github.com/actions/toolkit/blob/main/packages/core/src/command.ts
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def _command(level: str, file: str | None, line: int | None, title: str, message: str) -> str:
    properties = []
    if file:
        properties.append(f"file={_escape(file, property_value=True)}")
        if line:
            properties.append(f"line={line}")
    properties.append(f"title={_escape(title, property_value=True)}")
    return f"::{level} {','.join(properties)}::{_escape(message)}"


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def _same(first: Path, second: Path) -> bool:
    return os.path.abspath(first) == os.path.abspath(second)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    with suppress(ValueError):
        return Path(os.path.abspath(path)).relative_to(os.getcwd()).as_posix()
    return str(path)


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written, checked before the run rather than after it."""
    if path.is_dir():
        return "it is a directory"
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"the directory {ancestor} is not writable"
    return None
