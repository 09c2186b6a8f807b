"""Shared pytest set-up for the tests and the autograder.

Conventions every test file follows (the grader relies on them):
- one marker per test, usually as a module-level ``pytestmark``: an exercise marker
  (``ex1_quantization``, ``ex2_pruning``, ``ex3_distillation``: graded) or ``given_code`` (tests of
  the given code: never graded); see ``given/manifest.py``;
- ``@pytest.mark.points(n)`` gives the test's weight (1 when absent; its parametrized cases share it);
- every test starts from the seeds of ``run_seed()`` (tests/helpers.py): 0 when you run them, so a
  submission gets the same result every run; a fresh seed for every grading run, so that graded
  points rest on inputs nobody has seen;
- a hand-worked example on fixed inputs carries ``@pytest.mark.worked_example`` and no points: a
  twin of the same contract on the run's seeded inputs carries them (answers recorded from the
  public tests earn nothing);
- property tests draw their inputs with hypothesis (``tests/properties.py``), seeded the same way;
- heavy tests carry ``@pytest.mark.slow`` and run only with ``--run-slow``;
- ``lessons`` tests (the lab's lessons on the trained offline model) run only with ``--run-lessons``
  (or ``-m lessons``).

What a run prints (the student's screenful):
- a test that fails only because it reached the ``NotImplementedError("Exercise N.M: ...")`` of an
  unfinished exercise is reported as ``UNFINISHED`` (letter ``u``; still a failure for the exit
  status and ``-x``), in one line, without the traceback;
- at the end, a table of points per exercise and the first unfinished task ("next: ...").
Any ``--tb`` option (``python -m pytest --tb=long``) turns this off: every failure is then
reported by pytest as usual, with its full traceback.
"""
import ast
import random
import re
import sys
import tempfile
from pathlib import Path

import hypothesis.configuration
import numpy as np
import pytest
import torch

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # tests import the modules flat: `from quantization import ...`, `import given...`
    sys.path.insert(0, _ROOT)

from given.manifest import EXERCISES, GIVEN_CODE_MARKER, GRADED_MARKERS, SHARED_DATA_DIR, TEST_MARKERS  # noqa: E402
from given.quiet import quiet_known_noise  # noqa: E402
from tests.helpers import UNFINISHED_RE, run_seed  # noqa: E402
from tests.tasks import TASKS, describe, runs_on, task_key  # noqa: E402

quiet_known_noise()
# hypothesis keeps a cache in .hypothesis/ where it runs: keep it out of the lab's folder (and out
# of the grader's read-only tree).
hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "lab5-hypothesis")



def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (real-size BERT, full wikitext, the notebook)")
    parser.addoption("--run-lessons", action="store_true", default=False,
                     help="also run tests marked lessons (the lab's lessons on the trained offline model)")


def pytest_configure(config):
    config.addinivalue_line("markers", "task(number, uses=(), param=None): the task a graded test checks "
                            "('1.7'; a dict by the value of the parameter `param`; None for given code that "
                            "runs on the tasks `uses`), and the earlier tasks it runs on besides tests/tasks.py's")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow")
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        found = [m for m in TEST_MARKERS if item.get_closest_marker(m)]
        if len(found) > 1:
            raise pytest.UsageError(f"{item.nodeid} carries several exercise markers: {found}")
        if found and found[0] in GRADED_MARKERS:
            item.stash[TASK_KEY] = checked_task(item)
        if not run_slow and item.get_closest_marker("slow"):
            item.add_marker(skip_slow)
        _check_worked_example(item)
    _skip_lessons_unless_asked(config, items)


TASK_KEY = pytest.StashKey[tuple]()
GIVEN_WAITS = "tests of the given code that run on exercises not written yet (they run once those are)"


def checked_task(item):
    """``(task, earlier tasks it runs on)`` of a graded test, from its ``task`` marker; a graded test
    without one is a usage error (every failure must name its task)."""
    marker = item.get_closest_marker("task")
    if marker is None:
        raise pytest.UsageError(f"{item.nodeid} is graded: it must name the task it checks with "
                                "@pytest.mark.task('N.M') (see tests/tasks.py)")
    own = marker.args[0] if marker.args else None
    if isinstance(own, dict):
        own = own[item.callspec.params[marker.kwargs["param"]]]
    uses = tuple(marker.kwargs.get("uses", ()))
    unknown = [n for n in (own, *uses) if n is not None and n not in TASKS]
    if unknown or (own is None and not uses):
        raise pytest.UsageError(f"{item.nodeid}: task marker names no task or unknown ones: {unknown}")
    earlier = [n for n in runs_on([n for n in (own, *uses) if n]) + list(uses) if n != own]
    return own, tuple(sorted(set(earlier), key=task_key))


def _check_worked_example(item):
    """A worked example (fixed inputs anyone can record) must be worth no points."""
    worked = item.get_closest_marker("worked_example")
    if worked is None:
        return
    points = item.get_closest_marker("points")
    twin = worked.kwargs.get("twin")
    if not (points and points.args and points.args[0] == 0) or not hasattr(item.module, str(twin)):
        raise pytest.UsageError(f"{item.nodeid} is a worked_example: it must carry "
                                "@pytest.mark.points(0) and name its twin in the same file, a test "
                                "of the same contract on seeded inputs that carries the points "
                                f"(worked_example(twin='test_...')); twin={twin!r}")


def _skip_lessons_unless_asked(config, items):
    """Lesson tests (minutes) run only with ``--run-lessons`` or a ``-m`` naming ``lessons``."""
    if config.getoption("--run-lessons") or "lessons" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="lesson test (minutes, on the trained offline model): run with --run-lessons")
    for item in items:
        if item.get_closest_marker("lessons"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    """The run's seeds before every test (``run_seed()``): 0 when you run the tests, so the same
    submission gets the same result every run; fresh for every grading run."""
    seed = run_seed()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    yield


@pytest.fixture
def one_thread():
    """torch on one thread for this test: a tiny model's hundreds of small operations run ~100x
    slower when two threads wait for cores another process holds (as when the grader grades two
    submissions at once). The thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data_dir():
    """``../shared/data`` beside the project (offline wikitext-2 and BERT vocabulary); skip when absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"offline assets not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture
def tiny_bert():
    """A seeded, randomly initialised BertForMaskedLM of Google's BERT-tiny shape, in eval mode.

    Function-scoped: every test gets its own fresh copy, so no test can leak changes into another.
    """
    from given.models import random_bert
    return random_bert(seed=run_seed())


# ---------------------------------------------------------------------------------------------
# The student's screenful: unfinished exercises in one line each, then the points and what next
# ---------------------------------------------------------------------------------------------

def short_reports(config):
    """Whether unfinished exercises get the short report (no ``--tb`` option was given)."""
    return config.getoption("tbstyle", "auto") == "auto"


def unfinished_task(excinfo):
    """``(number, task, function, "file:line")`` when ``excinfo`` is a stub's NotImplementedError
    ("Exercise N.M: ..."), else None. ``number`` is a tuple of ints, for sorting."""
    if excinfo is None or not excinfo.errisinstance(NotImplementedError):
        return None
    message = str(excinfo.value)
    match = UNFINISHED_RE.match(message)
    if not match:
        return None
    stub = excinfo.traceback[-1]
    where = f"{Path(str(stub.path)).name}:{stub.lineno + 1}"
    return tuple(int(n) for n in match["number"].split(".")), message, stub.name, where


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    task = unfinished_task(call.excinfo) if report.failed else None
    if task is not None and item.get_closest_marker(GIVEN_CODE_MARKER) and short_reports(item.config):
        # a test of the given code waiting for an unwritten exercise: nothing to do in its file;
        # all such tests fold into one line of the summary
        report.outcome = "skipped"
        report.longrepr = ("given", None, GIVEN_WAITS)
        return
    if task is not None:
        report.unfinished = task
        if short_reports(item.config):
            report.longrepr = f"{task[3]}: NotImplementedError: {task[1]} ({task[2]} is not written yet)"
    elif report.failed and call.when == "call" and TASK_KEY in item.stash:
        report.task = item.stash[TASK_KEY]
        if short_reports(item.config):
            report.longrepr = Headed(headline(report, item.originalname or item.name), report.longrepr)
    elif report.failed and call.when == "call" and item.get_closest_marker(GIVEN_CODE_MARKER):
        report.task, report.given_code = (None, ()), True  # runs on any of your tasks


def headline(report, test_name):
    """The failure in one line, before any traceback or tensor: the task, then what is wrong."""
    own, earlier = report.task
    message = failure_message(report, max_lines=1).removeprefix("AssertionError: ").removeprefix("Failed: ")
    if own is not None and message.startswith(f"Exercise {own} "):
        return message
    checks = test_name.removeprefix("test_").replace("_", " ")
    where = describe(own) if own else f"the given code on {', '.join(map(describe, earlier))}"
    return f"{where} ({checks}): {message}"


class Headed:
    """A failure's report with its headline printed first (everything else as pytest has it)."""

    def __init__(self, headline, longrepr):
        self.headline, self.longrepr = headline, longrepr

    def toterminal(self, out):
        out.line(self.headline, red=True, bold=True)
        if hasattr(self.longrepr, "toterminal"):
            self.longrepr.toterminal(out)
        else:
            out.line(str(self.longrepr))

    def __getattr__(self, name):
        return getattr(self.longrepr, name)

    def __str__(self):
        return f"{self.headline}\n{self.longrepr}"


def blame_earlier_tasks(reports, config):
    """A failing test whose task runs on an earlier task that fails its own tests (or is not written)
    is reported as depending on it, in one line: one mistake shows up under its own task."""
    failing = {".".join(map(str, n)) for n in stubbed_tasks()}
    for report in sorted(reports, key=lambda r: task_key(r.task[0]) if r.task[0] else (99,)):
        own, earlier = report.task
        blockers = [n for n in earlier if n in failing]
        if getattr(report, "given_code", False):  # the given code runs on your functions: yours first
            blockers = sorted(failing, key=task_key)
        if not blockers:
            if own is not None:
                failing.add(own)
            continue
        report.blocked_by = blockers[0]
        if short_reports(config):
            report.longrepr = (f"depends on {describe(blockers[0])}, which fails: fix it first "
                               f"(this test checks {describe(own) if own else 'the given code that runs on it'})")
            report.sections = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """No hypothesis patch files: a failing property prints its smallest example, and that is all."""
    try:
        return (yield)
    finally:
        item.__dict__.pop("_hypothesis_failing_examples", None)


def pytest_report_teststatus(report, config):
    if getattr(report, "unfinished", None) and short_reports(config):
        return "unfinished", "u", ("UNFINISHED", {"yellow": True})
    return None


def stubbed_tasks(root=_ROOT):
    """``{number: (task, function, "file:line")}`` of the stubs still in the exercise files: each
    ``raise NotImplementedError("Exercise N.M: ...")`` there, found without running anything."""
    tasks = {}
    for exercise in EXERCISES:
        path = Path(root) / exercise.deliverable
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (OSError, SyntaxError, ValueError):  # pytest reports a file that does not parse
            continue
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):  # nested functions come later and win: the innermost
                call = node.exc if isinstance(node, ast.Raise) else None
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "NotImplementedError"
                        and call.args and isinstance(call.args[0], ast.Constant)
                        and isinstance(call.args[0].value, str)):
                    match = UNFINISHED_RE.match(call.args[0].value)
                    if match:
                        number = tuple(int(n) for n in match["number"].split("."))
                        tasks[number] = (call.args[0].value, function.name,
                                         f"{exercise.deliverable}:{node.lineno}")
    return tasks


class Scoreboard:
    """Points per exercise of this run (each test's ``points`` shared by its parametrized cases),
    the unfinished tasks met, and the other failures."""

    def __init__(self):
        self.tests = {}       # nodeid -> (exercise marker, points)
        self.outcomes = {}    # nodeid -> "passed" / "failed" / "skipped" (the worst phase)
        self.unfinished = {}  # task number -> (task, function, file:line)
        self.failures = {}    # nodeid -> report, of the failures that are not an unwritten stub

    def collected(self, items):
        cases = {}
        for item in items:
            key = (item.location[0], getattr(item, "originalname", item.name))
            cases[key] = cases.get(key, 0) + 1
        for item in items:
            exercise = next((e.marker for e in EXERCISES if item.get_closest_marker(e.marker)), None)
            if exercise is None:
                continue
            marker = item.get_closest_marker("points")
            points = float(marker.args[0]) if marker and marker.args else 1.0
            key = (item.location[0], getattr(item, "originalname", item.name))
            self.tests[item.nodeid] = (exercise, points / cases[key])

    def reported(self, report):
        task = getattr(report, "unfinished", None)
        if report.failed and task is None:
            self.failures.setdefault(f"{report.nodeid}" + ("" if report.when == "call" else f" ({report.when})"),
                                     report)
        if report.nodeid not in self.tests:
            return
        if report.failed or report.skipped or report.when == "call":
            previous = self.outcomes.get(report.nodeid)
            if previous in (None, "passed"):
                self.outcomes[report.nodeid] = report.outcome
        if task is not None:
            self.unfinished.setdefault(task[0], task[1:])

    def rows(self):
        """``(exercise, earned, maximum, passed, run)`` per exercise with tests in this run."""
        rows = []
        for exercise in EXERCISES:
            ran = [(n, p) for n, (e, p) in self.tests.items()
                   if e == exercise.marker and self.outcomes.get(n) in ("passed", "failed")]
            if ran:
                earned = sum(p for n, p in ran if self.outcomes[n] == "passed")
                passed = sum(self.outcomes[n] == "passed" for n, _ in ran)
                rows.append((exercise, earned, sum(p for _, p in ran), passed, len(ran)))
        return rows


_scoreboard = Scoreboard()  # one per pytest run (a conftest is imported once per run)


def pytest_collection_finish(session):
    _scoreboard.collected(session.items)


def pytest_runtest_logreport(report):
    _scoreboard.reported(report)


def pytest_sessionfinish(session):
    """Before pytest prints the failures: those that come from an earlier task are told so."""
    blame_earlier_tasks([r for r in _scoreboard.failures.values() if getattr(r, "task", None)], session.config)


PYTEST_EXPLANATION = re.compile(r"^(assert |where |[ +]+where )")


def failure_message(report, max_lines=4):
    """The exception's message (``AssertionError: ...``), whole up to ``max_lines`` lines: never cut
    to the terminal's width, as pytest's own summary line is. After a message of the test's own,
    pytest's explanation of the assert (``assert False`` / ``+ where False = torch.equal(...)``) is
    left out: it says nothing the message does not."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1:][0]
    lines = text.splitlines()
    explained = next((i for i, line in enumerate(lines) if i and PYTEST_EXPLANATION.match(line)), None)
    if explained is not None and not lines[0].startswith("AssertionError: assert "):
        lines = lines[:explained]
    return "\n".join(lines[:max_lines] + (["..."] if len(lines) > max_lines else []))


def summary_lines(failures, details=3):
    """``(nodeid, lines)`` of the failures section: each failure that is its own task's, headline
    first and up to ``details`` more lines of its message (no tensor dump: the traceback above has
    it), then those waiting for an earlier task, one entry per test file and task."""
    own, waiting = [], {}
    for nodeid, report in failures.items():
        blocked = getattr(report, "blocked_by", None)
        if blocked is not None:
            path, _, name = nodeid.partition("::")
            waiting.setdefault((blocked, path), {}).setdefault(name.split("[")[0], []).append(name)
            continue
        lines = failure_message(report, max_lines=12).splitlines()
        head = report.longrepr.headline if isinstance(report.longrepr, Headed) else lines[0]
        more = []
        for line in lines[1:]:
            if line.startswith("Falsifying example") or "tensor(" in line or len(more) == details:
                break
            if line != "..." and line.removeprefix("AssertionError: ") not in head:
                more.append(line)
        own.append((nodeid, "\n".join([head] + more)))
    for (blocked, path), tests in sorted(waiting.items(), key=lambda x: (task_key(x[0][0]), x[0][1])):
        count = sum(map(len, tests.values()))
        names = ", ".join(name if len(cases) == 1 else f"{name} ({len(cases)} cases)"
                          for name, cases in tests.items())
        own.append((f"{path} ({count} {'test' if count == 1 else 'tests'})",
                    f"depends on {describe(blocked)}, which fails: fix it first\n{names}"))
    return own


def _points(x):
    return f"{x:.1f}".rstrip("0").rstrip(".")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    board = _scoreboard
    rows = board.rows()
    write = terminalreporter.write_line
    terminalreporter.ensure_newline()
    if board.failures:
        terminalreporter.section("failures (whole messages; tracebacks above)", sep="=", red=True)
        for nodeid, message in summary_lines(board.failures):
            write(f"FAILED {nodeid}", red=True)
            for line in message.splitlines():
                write(f"    {line}")
    if not rows:
        return
    terminalreporter.section("your points (public tests of this run)", sep="=", bold=True)
    for exercise, earned, maximum, passed, run in rows:
        name = exercise.title.split(":")[0]
        write(f"{name:<45} {exercise.deliverable:<16} {_points(earned):>5} / {_points(maximum):<5} "
              f"({passed} of {run} tests pass)")
    earned, maximum = sum(r[1] for r in rows), sum(r[2] for r in rows)
    write(f"{'total':<62} {_points(earned):>5} / {_points(maximum)}")
    unfinished = {**board.unfinished, **stubbed_tasks()}
    exercises_run = {exercise.number for exercise, *_ in rows}
    unfinished = {n: task for n, task in unfinished.items() if n[0] in exercises_run}
    focus = next((exercise for exercise, earned, maximum, *_ in rows if earned < maximum), None)
    if unfinished:
        number = min(unfinished)
        focus = next(e for e in EXERCISES if e.number == number[0])
        task, function, where = unfinished[number]
        write(f"still to write: {', '.join('.'.join(map(str, n)) for n in sorted(unfinished))}")
        terminalreporter.write_line(f"next: Exercise {'.'.join(map(str, number))} {function} "
                                    f"({where}): {task.split(': ', 1)[1]}", bold=True)
    if short_reports(config):
        one = f"one exercise: python -m pytest -m {focus.marker}; " if focus and len(rows) > 1 else ""
        write(f"({one}full tracebacks: add --tb=long)")
