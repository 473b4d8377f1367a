"""The pytest hooks of pytest-noplusone: settings, markers, per-test capture and budgets."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass

import pytest

from . import assertions, capture, detection, diagnosis, enforcement, gate, messages, settings
from .capture import QueryLog

#: The statements kept per test for messages; counts and per-shape aggregates stay exact.
KEPT_PER_TEST = 1000

settings_key = pytest.StashKey[settings.Settings]()
log_key = pytest.StashKey[QueryLog]()
budget_key = pytest.StashKey["Budget | None"]()
gate_key = pytest.StashKey[gate.Gate]()
#: The N+1 findings of a test (not allowed ones), set after a passing body.
findings_key = pytest.StashKey["list[detection.Finding]"]()
allow_key = pytest.StashKey["detection.Allowance | None"]()
enforcer_key = pytest.StashKey["enforcement.Enforcer | None"]()
_REPORT_LISTENER = "noplusone-report-listener"


@dataclass(frozen=True)
class Budget:
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
        "allow_lazy(*names): let these relationships (Model.attr, Model.* or *.attr) lazy load "
        "in this test; no names: every relationship.",
    )
    resolved = settings.resolve(config)
    allow_lazy = enforcement.patterns_from_ini(resolved.allow_lazy)
    detection.threshold = resolved.threshold
    config.stash[gate_key] = gate.Gate.configure(config, resolved)
    listener = _ReportListener(config.stash[gate_key])
    config.pluginmanager.register(listener, _REPORT_LISTENER)
    config.stash[settings_key] = resolved
    capture.set_root(config.rootpath)
    capture.set_ignore(resolved.ignore)
    assertions.show_params = resolved.show_params
    capture.acquire()
    diagnosis.install()
    config.stash[enforcer_key] = (
        enforcement.start(resolved.enforce, allow_lazy, resolved.awaitable_attrs)
        if resolved.enforce != "off"
        else None
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin(_REPORT_LISTENER):
        config.pluginmanager.unregister(name=_REPORT_LISTENER)
    if settings_key in config.stash:
        del config.stash[settings_key]
        enforcer = config.stash.get(enforcer_key, None)
        if enforcer is not None:
            enforcement.stop(enforcer)  # exactly as mapped, for the next in-process run
        diagnosis.uninstall()
        capture.release()
        capture.set_ignore(())
        assertions.show_params = True
        detection.threshold = 2


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[settings_key].header()


def _call(name: str, args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    shown = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"


def _budget(item: pytest.Item, default: int | None) -> Budget | None:
    for marker in item.iter_markers():
        kind = _BUDGET_MARKERS.get(marker.name)
        if kind is None:
            continue
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
        return Budget(kind, value, f"@pytest.mark.{marker.name}")
    if default is not None:
        return Budget("at most", default, "noplusone_max_queries")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[log_key] = QueryLog(keep=KEPT_PER_TEST)
    diagnosis.begin_test()
    _allow_lazy(item)
    item.stash[budget_key] = None
    item.stash[budget_key] = _budget(item, item.config.stash[settings_key].max_queries)
    item.stash[findings_key] = []
    item.stash[allow_key] = None
    item.stash[allow_key] = _allow(item)


def _allow_lazy(item: pytest.Item) -> None:
    allowed = enforcement.marker_allowance(item)
    for pattern in enforcement.unmatched(allowed or ()):
        entry = ".".join(pattern)
        item.warn(
            enforcement.AllowLazyWarning(
                messages.allow_lazy_unmatched("@pytest.mark.allow_lazy", entry)
            )
        )
    enforcement.start_test_allowance(allowed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        enforcement.end_test_allowance()
        # The report has what it needs: the statements (and their parameters) need not live
        # until the session ends, where every garbage collection would walk them again.
        if log_key in item.stash:
            del item.stash[log_key]


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    resolved = config.stash.get(settings_key, None)
    if resolved is None or not resolved.allow_lazy or resolved.enforce == "off":
        return
    for pattern in enforcement.unmatched(enforcement.patterns_from_ini(resolved.allow_lazy)):
        text = messages.allow_lazy_unmatched("noplusone_allow_lazy", ".".join(pattern))
        try:
            config.issue_config_time_warning(enforcement.AllowLazyWarning(text), stacklevel=2)
        except enforcement.AllowLazyWarning:  # warnings are errors here: one clear line
            raise pytest.UsageError(text) from None


def _swallowed_lazy_loads(item: pytest.Item) -> list[str]:
    """Lazy loads that failed during a passing test because something caught their error."""
    hidden = diagnosis.swallowed(item.config.getini("python_files"))
    diagnosis.begin_test()  # reported here or never: makereport must not report them again
    if not hidden or item.config.stash[settings_key].enforce == "off":
        return []
    return [messages.lazy_load_report(hidden, swallowed=True)]


def _allow(item: pytest.Item) -> detection.Allowance | None:
    marks = [(mark, node is item) for node, mark in item.iter_markers_with_node("allow_nplusone")]
    try:
        return detection.allowance(marks)
    except TypeError as error:
        call = str(error)
    signature = "Model.attr names or fingerprint substrings (non-empty strings)"
    pytest.fail(messages.bad_marker_argument("allow_nplusone", signature, call), pytrace=False)


def _nplusone(item: pytest.Item, log: QueryLog) -> list[str]:
    """Apply the N+1 rules: failure texts in fail mode, warnings in warn mode."""
    config = item.config.stash[settings_key]
    if config.nplusone == "off":
        return []
    outcome = detection.check(log, config.threshold, item.stash.get(allow_key, None))
    item.stash[findings_key] = outcome.findings
    for entry in outcome.unused:
        item.warn(detection.UnusedAllowWarning(messages.unused_allow(item.nodeid, entry)))
    if config.nplusone == "warn":
        for finding in outcome.findings:
            item.warn(detection.NPlusOneWarning(messages.nplusone_finding(finding)))
        return []
    return [messages.nplusone_failure(outcome.findings)] if outcome.findings else []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    log = item.stash.get(log_key, None)
    if log is None:  # setup did not run through this plugin
        return (yield)
    item.stash[gate.complete_key] = False
    capture.open_window(log)
    try:
        result = yield
    finally:
        capture.close_window(log)
    item.stash[gate.complete_key] = True
    # Only reached when the body passed: a budget can never hide the test's own exception.
    problems: list[str] = []
    budget = item.stash.get(budget_key, None)
    if budget is not None and budget.exceeded(log.count):
        problems.append(
            messages.budget_failure(
                budget.kind,
                budget.limit,
                log,
                raise_with=budget.raise_with(),
                show_params=item.config.stash[settings_key].show_params,
            )
        )
    problems.extend(_nplusone(item, log))
    problems.extend(_swallowed_lazy_loads(item))
    regression = item.config.stash[gate_key].regression(item.nodeid, log)
    if regression is not None:
        problems.append(regression)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and call.excinfo is not None:
        python_files = item.config.getini("python_files")
        explanation = diagnosis.explain_failure(call.excinfo.value, python_files)
        if explanation is not None:
            report.longrepr = diagnosis.explained(report.longrepr, explanation)
    log = item.stash.get(log_key, None)
    if call.when == "call" and log is not None:
        budget, findings = item.stash.get(budget_key, None), item.stash.get(findings_key, [])
        gate.attach(item, report, log, budget, findings)
    return report


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
    session.config.stash[gate_key].finish(session)
    return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    resolved = terminalreporter.config.stash.get(settings_key, None)
    if resolved is not None and resolved.audit:
        enforcer = terminalreporter.config.stash.get(enforcer_key, None)
        terminalreporter.write_sep("=", "noplusone audit")
        for line in messages.audit_report(enforcement.audit(enforcer)):
            terminalreporter.write_line(line)
    gate_state = terminalreporter.config.stash.get(gate_key, None)
    if gate_state is not None:
        gate_state.terminal_summary(terminalreporter)


@pytest.fixture
def noplusone_queries(request: pytest.FixtureRequest) -> QueryLog:
    """The live QueryLog of the current test body (fixture setup and teardown never count)."""
    log: QueryLog = request.node.stash[log_key]
    return log
