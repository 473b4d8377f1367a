"""The pytest hooks of pytest-noplusone: settings, markers, per-test capture and budgets."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from . import allow_lazy, assertions, capture, detection, frames, gate, messages, settings
from .capture import QueryLog

if TYPE_CHECKING:  # at run time imported with the ORM (_orm): a Core-only suite never pays
    from . import enforcement  # noqa: F401 (named in a StashKey's string type)

#: The statements a test's ``noplusone_queries`` keeps in ``.queries``; counts and per-shape
#: aggregates stay exact. Tests that do not ask for the fixture keep none: messages and
#: reports are written from the per-shape aggregates.
KEPT_PER_TEST = 1000

settings_key = pytest.StashKey[settings.Settings]()
#: What the plugin keeps for a test from its setup to its teardown (one entry: a stash read is
#: a call, and a test made about thirty of them when each part had its own key).
test_key = pytest.StashKey["_TestState"]()
gate_key = pytest.StashKey[gate.Gate]()
enforcer_key = pytest.StashKey["enforcement.Enforcer | None"]()
#: Set once enforcement and diagnosis run (the ORM is imported): see ``_orm``.
orm_key = pytest.StashKey[bool]()
#: The ``noplusone_allow_lazy`` entries, parsed once at configure.
ini_allow_lazy_key = pytest.StashKey[frozenset[allow_lazy.Pattern]]()
#: What the xdist workers' audits found (on the controller).
worker_audit_key = pytest.StashKey[list[tuple[str, str, str, int]]]()
_AUDIT_OUTPUT = "noplusone_audit"
_REPORT_LISTENER = "noplusone-report-listener"


class Budget(NamedTuple):
    """A test's query budget: ``kind`` is "at most" or "exactly"."""

    kind: str
    limit: int
    source: str  # "@pytest.mark.max_queries", "noplusone_max_queries", ...

    def exceeded(self, count: int) -> bool:
        """Whether ``count`` queries break this budget."""
        return count > self.limit if self.kind == "at most" else count != self.limit

    def raise_with(self) -> str:
        """How to write a bigger budget, with a ``{}`` for the number."""
        if self.source == "noplusone_max_queries":
            return "@pytest.mark.max_queries({})"
        return self.source + "({})"


_BUDGET_MARKERS = {"max_queries": "at most", "num_queries": "exactly"}


class _TestState:
    """One test's log, budget, allowance and findings, kept in ``item.stash[test_key]``."""

    __slots__ = ("allow", "allow_lazy", "budget", "complete", "findings", "log")

    def __init__(self, log: QueryLog) -> None:
        self.log = log
        #: The test's allow_lazy entries (judged after its teardown).
        self.allow_lazy: frozenset[allow_lazy.Pattern] = frozenset()
        self.budget: Budget | None = None
        self.allow: detection.Allowance | None = None
        #: The N+1 findings of the test (not allowed ones), set after a passing body.
        self.findings: list[detection.Finding] = []
        #: Whether the body ran to its end (a baseline records only complete counts).
        self.complete = False


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "max_queries(n): fail if the test body runs more than n SQL statements."
    )
    config.addinivalue_line(
        "markers", "num_queries(n): fail unless the test body runs exactly n SQL statements."
    )
    config.addinivalue_line(
        "markers",
        "allow_nplusone(*entries): allow N+1 findings in this test; entries (Model.attr names "
        "or fingerprint substrings) limit it to matching ones.",
    )
    config.addinivalue_line(
        "markers",
        "allow_lazy(*names): let these relationships (Model.attr, Model.*, *.attr, "
        "package.module.Model.attr or package.module.*) lazy load "
        "in this test; no names: every relationship.",
    )
    resolved = settings.resolve(config)
    if not resolved.enabled:
        # Switched off: the markers above stay known (--strict-markers suites still run) and
        # the noplusone_queries fixture still counts; nothing is enforced or checked.
        config.stash[settings_key] = resolved
        capture.set_root(config.rootpath)
        capture.acquire()
        return
    # A bad entry stops the run here.
    config.stash[ini_allow_lazy_key] = allow_lazy.patterns_from_ini(resolved.allow_lazy)
    detection.threshold = resolved.threshold
    config.stash[gate_key] = gate.Gate.configure(config, resolved)
    listener = _ReportListener(config.stash[gate_key])
    config.pluginmanager.register(listener, _REPORT_LISTENER)
    config.stash[settings_key] = resolved
    capture.set_root(config.rootpath)
    frames.set_test_patterns(config.getini("python_files"))
    capture.set_ignore(resolved.ignore)
    assertions.show_params = resolved.show_params
    capture.acquire()
    config.stash[enforcer_key] = None
    _orm(config)
    if resolved.audit and config.pluginmanager.hasplugin("xdist"):
        config.stash[worker_audit_key] = []
        config.pluginmanager.register(_WorkerAudits(config), "noplusone-worker-audits")


class _WorkerAudits:
    """Collects the audits of the xdist workers, which import the test modules (and so the
    models that only they import); registered only when xdist is present."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        entries = getattr(node, "workeroutput", {}).get(_AUDIT_OUTPUT, [])
        self.config.stash[worker_audit_key].extend(tuple(entry) for entry in entries)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    resolved = config.stash.get(settings_key, None)
    if resolved is not None and resolved.audit and hasattr(config, "workeroutput"):
        from . import enforcement

        entries = enforcement.audit(config.stash.get(enforcer_key, None))
        config.workeroutput[_AUDIT_OUTPUT] = [list(entry) for entry in entries]


def _orm(config: pytest.Config) -> bool:
    """Start enforcement and lazy-load diagnosis once ``sqlalchemy.orm`` is imported.

    Both need the ORM, whose import costs a Core-only suite about 0.1 s. Without the ORM there
    is no relationship to force or lazy load to explain, so they start when it appears: checked
    at configure (conftest files), at collection finish (test modules) and at each test's setup
    and call (a fixture importing the models). Returns whether they run.
    """
    if orm_key in config.stash:
        return True
    if "sqlalchemy.orm" not in sys.modules or settings_key not in config.stash:
        return False
    if not config.stash[settings_key].enabled:
        return False
    from . import diagnosis, enforcement

    resolved = config.stash[settings_key]
    config.stash[orm_key] = True
    diagnosis.install()
    if resolved.enforce != "off":
        config.stash[enforcer_key] = enforcement.start(
            resolved.enforce,
            config.stash[ini_allow_lazy_key],
            resolved.awaitable_attrs,
            run_sync=resolved.run_sync,
            sync_lazy=resolved.sync_lazy,
        )
    return True


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin(_REPORT_LISTENER):
        config.pluginmanager.unregister(name=_REPORT_LISTENER)
    if settings_key in config.stash:
        del config.stash[settings_key]
        if orm_key in config.stash:
            from . import diagnosis, enforcement

            del config.stash[orm_key]
            enforcer = config.stash.get(enforcer_key, None)
            if enforcer is not None:
                enforcement.stop(enforcer)  # exactly as mapped, for the next in-process run
            diagnosis.uninstall()
        capture.release()  # acquired also when switched off
        capture.set_ignore(())
        assertions.show_params = True
        detection.threshold = 2


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[settings_key].header()


def _call(name: str, args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    shown = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"


def _budget(marker: pytest.Mark | None, default: int | None) -> Budget | None:
    """The budget of ``marker`` (the closest budget marker), else the ini's default."""
    if marker is not None:
        args, kwargs = marker.args, marker.kwargs
        value = args[0] if len(args) == 1 and not kwargs else None
        if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            pytest.fail(
                messages.bad_marker_argument(
                    marker.name,
                    "one non-negative int",
                    _call(marker.name, args, kwargs),
                ),
                pytrace=False,
            )
        return Budget(_BUDGET_MARKERS[marker.name], value, f"@pytest.mark.{marker.name}")
    if default is not None:
        return Budget("at most", default, "noplusone_max_queries")
    return None


class _Marks:
    """The item's markers this plugin reads, from one walk over them (closest first)."""

    __slots__ = ("allow_lazy", "allow_nplusone", "budget")

    def __init__(self, item: pytest.Item) -> None:
        self.budget: pytest.Mark | None = None
        self.allow_lazy: list[pytest.Mark] = []
        self.allow_nplusone: list[tuple[pytest.Mark, bool]] = []
        for node, mark in item.iter_markers_with_node():
            name = mark.name
            if name == "allow_nplusone":
                self.allow_nplusone.append((mark, node is item))
            elif name == "allow_lazy":
                self.allow_lazy.append(mark)
            elif self.budget is None and name in _BUDGET_MARKERS:
                self.budget = mark


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # The fixture keeps statements (noplusone_queries); a test's log keeps none.
    state = item.stash[test_key] = _TestState(QueryLog(keep=0))
    if not item.config.stash[settings_key].enabled:
        return
    if _orm(item.config):
        from . import diagnosis

        diagnosis.begin_test()
    marks = _Marks(item)
    _allow_lazy(item, marks.allow_lazy)
    state.budget = _budget(marks.budget, item.config.stash[settings_key].max_queries)
    state.allow = _allow(marks.allow_nplusone)


def _unmatched(config: pytest.Config, patterns: frozenset[allow_lazy.Pattern]) -> list[str]:
    """The entries among ``patterns`` that name no mapped relationship (without the ORM: all).

    Callers have just given ``_orm`` its chance to start.
    """
    if not patterns:
        return []
    if orm_key not in config.stash:
        return sorted(".".join(pattern) for pattern in patterns)
    from . import enforcement

    return [".".join(pattern) for pattern in enforcement.unmatched(patterns)]


def _allow_lazy(item: pytest.Item, markers: list[pytest.Mark]) -> None:
    allowed = allow_lazy.marker_allowance(markers)
    item.stash[test_key].allow_lazy = allowed or frozenset()
    allow_lazy.start_test_allowance(allowed)


def _judge_allow_lazy(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Warn about allow_lazy entries that match no mapped relationship, once the test is over:
    a model defined in a test module or function exists by then. The ini entries are judged
    after the last test of the run (of each xdist worker)."""
    state = item.stash.get(test_key, None)
    if nextitem is not None and (state is None or not state.allow_lazy):
        return  # every test but the last, without a marker: nothing to judge
    config = item.config
    texts = []
    if state is not None:
        texts += [
            messages.allow_lazy_unmatched("@pytest.mark.allow_lazy", entry)
            for entry in _unmatched(config, state.allow_lazy)
        ]
    resolved = config.stash.get(settings_key, None)
    if (
        nextitem is None
        and resolved is not None
        and resolved.enabled
        and resolved.enforce != "off"
    ):
        texts += [
            messages.allow_lazy_unmatched("noplusone_allow_lazy", entry)
            for entry in _unmatched(config, config.stash[ini_allow_lazy_key])
        ]
    for text in texts:
        item.warn(allow_lazy.AllowLazyWarning(text))


def pytest_collection_finish(session: pytest.Session) -> None:
    resolved = session.config.stash.get(settings_key, None)
    if resolved is not None and resolved.enabled:
        _orm(session.config)  # the test modules may have imported the ORM


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    result = yield
    _judge_allow_lazy(item, nextitem)
    return result


def _swallowed_lazy_loads(item: pytest.Item, config: settings.Settings) -> list[str]:
    """Lazy loads that failed during a passing test because something caught their error."""
    if orm_key not in item.config.stash:
        return []
    from . import diagnosis

    if not diagnosis.violations():
        return []
    hidden = diagnosis.swallowed(item.config.getini("python_files"))
    diagnosis.begin_test()  # reported here or never: makereport must not report them again
    # A test that allows the relationship expects its failure (an HTTP 500 in async code,
    # where allow_lazy cannot make the load work).
    hidden = [
        violation
        for violation in hidden
        if not allow_lazy.permits(functools.partial(diagnosis.allow_names, violation.load))
    ]
    if not hidden or config.enforce == "off":
        return []
    return [messages.lazy_load_report(hidden, swallowed=True)]


def _allow(marks: list[tuple[pytest.Mark, bool]]) -> detection.Allowance | None:
    if not marks:
        return None
    try:
        return detection.allowance(marks)
    except TypeError as error:
        call = str(error)
    signature = "Model.attr names or fingerprint substrings (non-empty strings)"
    pytest.fail(messages.bad_marker_argument("allow_nplusone", signature, call), pytrace=False)


def _nplusone(item: pytest.Item, state: _TestState, config: settings.Settings) -> list[str]:
    """Apply the N+1 rules: failure texts in fail mode, warnings in warn mode."""
    if config.nplusone == "off":
        return []
    outcome = detection.check(state.log, config.threshold, state.allow)
    state.findings = outcome.findings
    for entry in outcome.unused:
        item.warn(detection.UnusedAllowWarning(messages.unused_allow(item.nodeid, entry)))
    if config.nplusone == "warn":
        for finding in outcome.findings:
            item.warn(detection.NPlusOneWarning(messages.nplusone_finding(finding)))
        return []
    return [messages.nplusone_failure(outcome.findings)] if outcome.findings else []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    state = item.stash.get(test_key, None)
    if state is None:  # setup did not run through this plugin
        return (yield)
    log, config = state.log, item.config.stash[settings_key]
    state.complete = False
    if orm_key not in item.config.stash and _orm(item.config):
        # A fixture imported the ORM: this test's allowance is in place (allow_lazy), and its
        # violations start now (setup did not reset them: diagnosis was not running for it).
        from . import diagnosis

        diagnosis.begin_test()
    capture.open_window(log)
    try:
        result = yield
    finally:
        capture.close_window(log)
    state.complete = True
    if not config.enabled:
        return result
    # Only reached when the body passed: a budget can never hide the test's own exception.
    problems: list[str] = []
    budget = state.budget
    if budget is not None and budget.exceeded(log.count):
        problems.append(
            messages.budget_failure(
                budget.kind,
                budget.limit,
                log,
                raise_with=budget.raise_with(),
                show_params=config.show_params,
            )
        )
    problems.extend(_nplusone(item, state, config))
    problems.extend(_swallowed_lazy_loads(item, config))
    regression = item.config.stash[gate_key].regression(item, log)
    if regression is not None:
        problems.append(regression)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    try:
        report = yield
    finally:
        if call.when == "teardown":
            # The last phase: the teardown ran inside the test's allowance, and the report
            # has what it needs, so the statements (and their parameters) need not live until
            # the session ends, where every garbage collection would walk them again.
            allow_lazy.end_test_allowance()
            if test_key in item.stash:
                del item.stash[test_key]
    if report.failed and call.excinfo is not None and orm_key in item.config.stash:
        from . import diagnosis

        python_files = item.config.getini("python_files")
        explanation = diagnosis.explain_failure(call.excinfo.value, python_files)
        if explanation is not None:
            report.longrepr = diagnosis.explained(report.longrepr, explanation)
            # Travels to an xdist controller with the report (a report's extra attributes do).
            report.noplusone_explained = True  # type: ignore[attr-defined]
    if report.failed and call.when == "call":
        _crash_at_the_test(item, report)
    state = item.stash.get(test_key, None) if call.when == "call" else None
    if state is not None and gate_key in item.config.stash:
        gate.attach(item, report, state.log, state.budget, state.findings, state.complete)
        state.log.release()  # the frames that told invocations apart: findings are made
    return report


def _crash_at_the_test(item: pytest.Item, report: pytest.TestReport) -> None:
    """Put the one-line crash of the plugin's own failures (``pytest.fail`` in
    ``pytest_runtest_call``) at the test, not at this file: ``--tb=line`` shows it."""
    crash = getattr(report.longrepr, "reprcrash", None)
    path = getattr(crash, "path", None)
    if not isinstance(path, str) or os.path.abspath(path) != os.path.abspath(__file__):
        return
    filename, lineno, _ = item.location
    crash.path = filename  # type: ignore[union-attr]
    crash.lineno = (lineno or 0) + 1  # type: ignore[union-attr]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # On an xdist controller an explained failure arrives as text: give it back its one-line
    # crash, so that the summary line and --tb=line read as they do without xdist.
    if getattr(report, "noplusone_explained", False) and isinstance(report.longrepr, str):
        from . import diagnosis

        report.longrepr = diagnosis.explained_text(report.longrepr)


class _ReportListener:
    """Feeds every test report to the gate (pytest_runtest_logreport gets no config)."""

    def __init__(self, gate_state: gate.Gate) -> None:
        self.gate = gate_state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the xdist controller the reports come from the workers, data included.
        self.gate.record(report)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    result = yield
    gate_state = session.config.stash.get(gate_key, None)
    if gate_state is not None:  # None when switched off
        gate_state.finish(session)
    return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    resolved = terminalreporter.config.stash.get(settings_key, None)
    if resolved is not None and resolved.audit:
        from . import enforcement  # the audit reads the mappers: the ORM is imported anyway

        enforcer = terminalreporter.config.stash.get(enforcer_key, None)
        entries = set(enforcement.audit(enforcer))
        workers = terminalreporter.config.stash.get(worker_audit_key, [])
        entries.update(enforcement.AuditEntry(*entry) for entry in workers)
        terminalreporter.write_sep("=", "noplusone audit")
        ordered = sorted(entries, key=lambda entry: (entry.filename, entry.lineno, entry.name))
        for line in messages.audit_report(ordered):
            terminalreporter.write_line(line)
    gate_state = terminalreporter.config.stash.get(gate_key, None)
    if gate_state is not None:
        gate_state.terminal_summary(terminalreporter)


@pytest.fixture
def noplusone_queries(request: pytest.FixtureRequest) -> QueryLog:
    """The live QueryLog of the current test body (fixture setup and teardown never count)."""
    log: QueryLog = request.node.stash[test_key].log
    log._retain(KEPT_PER_TEST)  # before the body: the window has not opened yet
    return log
