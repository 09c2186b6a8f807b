"""pytest plugin used by ``tools/grade.py`` (loaded with ``-p autograde_plugin``).

The grader runs untrusted student code in the same interpreter as this plugin, so the plugin
sets everything up at *import time*, before any student module can be imported (student
modules are imported while test files are collected, long after ``-p`` plugins load):

- it applies the memory limit ``$AUTOGRADE_MEMORY_LIMIT`` (bytes of address space, RLIMIT_AS),
  and where given ``$AUTOGRADE_FILE_SIZE_LIMIT`` (RLIMIT_FSIZE) and ``$AUTOGRADE_PROCESS_LIMIT``
  (RLIMIT_NPROC);
- it makes sure no test process outlives the grader: the kernel kills it when the grader dies
  (Linux ``PR_SET_PDEATHSIG``), and ``$AUTOGRADE_CPU_LIMIT`` seconds of CPU time (RLIMIT_CPU,
  inherited by anything it forks) end it even if it escaped its process group;
- it reads a per-run secret from the inherited file descriptor ``$AUTOGRADE_SECRET_FD`` and
  closes it, takes the report descriptor ``$AUTOGRADE_REPORT_FD``, and removes the variables
  from the environment;
- it keeps its own references to the functions it needs (``hmac``, ``os.write``, ``json``).

Outcomes are decided here, not read from pytest's reports: a hook wrapper around the setup,
call and teardown of each test sees the test's exception itself, so a submission that patches
``TestReport``, ``CallInfo`` or the reporting hooks cannot turn a failure into a pass. Every
record is one JSON line with an HMAC of its content, written to the pipe as soon as the test
finishes (a crash later keeps what was graded before); the parent drops any line without a
valid MAC. A ``start`` record goes out when each test's setup begins: the grader kills a run
whose running test outlives the per-test timeout, from outside, and charges that test alone.
With ``collect`` mode (``$AUTOGRADE_MODE=collect``) it reports the collected tests (name,
exercise, points, file, whether it is a ``canary``: a test that must fail) instead of running
them.

Nothing here can stop code in the same interpreter from patching this module (e.g. reading the
secret from ``_send``'s closure): the grader makes such cheating *visible* with canary tests and
hidden tests on fresh inputs, and confines it to the run's own sandbox.
"""
import functools
import hashlib
import hmac
import json
import os
import resource
import signal

import pytest
from _pytest.outcomes import Skipped

_Function = pytest.Function

EXERCISE_PREFIX = "ex"
MESSAGE_LIMIT = 600


def _take_env(name):
    return os.environ.pop(name, None)


def _apply_limit(which, soft, hard=None):
    """Set rlimit ``which`` (never above the hard limit inherited); a no-op without a value."""
    if not soft:
        return
    soft = int(soft)
    hard = soft if hard is None else int(hard)
    _, inherited = resource.getrlimit(which)
    if inherited != resource.RLIM_INFINITY:
        soft, hard = min(soft, inherited), min(hard, inherited)
    resource.setrlimit(which, (soft, hard))


def _apply_memory_limit(limit):
    _apply_limit(resource.RLIMIT_AS, limit)


def _apply_cpu_limit(seconds):
    if seconds:
        _apply_limit(resource.RLIMIT_CPU, seconds, int(seconds) + 5)


def _die_with_parent():
    """Linux: SIGKILL this process when the grader that started it dies (a no-op elsewhere)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the grader died before prctl: stop now
        os._exit(1)


def _read_secret(fd):
    if fd is None:
        return None
    fd = int(fd)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _make_sender(fd, secret, write=os.write, dumps=json.dumps, new_mac=hmac.new,
                 sha256=hashlib.sha256):
    """A function that sends one MAC-signed JSON record to the parent (a no-op without a pipe)."""
    if fd is None or secret is None:
        return lambda record: None
    fd = int(fd)

    def send(record):
        body = dumps(record, sort_keys=True)
        mac = new_mac(secret, body.encode(), sha256).hexdigest()
        # The leading newline ends any junk student code wrote to the pipe, so it cannot spoil this record.
        line = ("\n" + dumps({"mac": mac, "body": body}) + "\n").encode()
        try:
            while line:  # a pipe write may be partial
                line = line[write(fd, line):]
        except OSError:  # the pipe was closed (by student code): nothing more can be reported
            pass
    return send


_apply_memory_limit(_take_env("AUTOGRADE_MEMORY_LIMIT"))
_apply_cpu_limit(_take_env("AUTOGRADE_CPU_LIMIT"))
_apply_limit(resource.RLIMIT_FSIZE, _take_env("AUTOGRADE_FILE_SIZE_LIMIT"))
_apply_limit(resource.RLIMIT_NPROC, _take_env("AUTOGRADE_PROCESS_LIMIT"))
if _take_env("AUTOGRADE_DIE_WITH_PARENT"):
    _die_with_parent()
_MODE = _take_env("AUTOGRADE_MODE") or "run"
_send = _make_sender(_take_env("AUTOGRADE_REPORT_FD"), _read_secret(_take_env("AUTOGRADE_SECRET_FD")))
_outcomes = {}  # nodeid -> (outcome, message) of the phases seen so far


# ----------------------------------------------------------------------------------------------
# Collection: the expected tests and their points
# ----------------------------------------------------------------------------------------------

def _exercise_of(item):
    names = [m.name for m in item.iter_markers() if m.name.startswith(EXERCISE_PREFIX)
             and m.name[2:3].isdigit()]
    return names[0] if names else None


def _function_of(item):
    return (item.location[0], getattr(item, "originalname", item.name))


def _points_of(item, cases):
    """``points(n)`` is worth n for the whole test function: its parametrized cases share it."""
    marker = item.get_closest_marker("points")
    points = float(marker.args[0]) if marker and marker.args else 1.0
    return points / cases[_function_of(item)]


def _report_collected(items):
    cases = {}
    for item in items:
        cases[_function_of(item)] = cases.get(_function_of(item), 0) + 1
    for item in items:
        worked = item.get_closest_marker("worked_example")
        _send({"nodeid": item.nodeid, "exercise": _exercise_of(item),
               "points": _points_of(item, cases), "file": item.location[0],
               "canary": item.get_closest_marker("canary") is not None,
               "twin": f"{item.location[0]}::{worked.kwargs.get('twin')}" if worked else None})


def pytest_collection_finish(session):
    if _MODE == "collect":
        _report_collected(session.items)


def pytest_collectreport(report):
    if _MODE == "run" and report.failed:
        _send({"collect_error": report.nodeid, "message": str(report.longrepr)[-MESSAGE_LIMIT:]})


# ----------------------------------------------------------------------------------------------
# Running: outcomes decided from the exceptions themselves
# ----------------------------------------------------------------------------------------------

def _describe(error):
    return f"{type(error).__name__}: {error}"[:MESSAGE_LIMIT]


def _phase_outcome(phase, error):
    if error is None:
        return "passed", ""
    if isinstance(error, Skipped):
        return "skipped", str(error)[:MESSAGE_LIMIT]
    if phase == "call":
        return "failed", _describe(error)
    return "error", f"{phase}: {_describe(error)}"


def _record(item, phase, error):
    """Keep the first failing phase of ``item``; after teardown, send its outcome to the parent."""
    if _MODE != "run":
        return
    outcome = _phase_outcome(phase, error)
    if outcome[0] != "passed" or phase == "call":
        _outcomes.setdefault(item.nodeid, outcome)
    if phase == "teardown":
        outcome, message = _outcomes.pop(item.nodeid, ("error", "the test never ran"))
        _send({"nodeid": item.nodeid, "outcome": outcome, "message": message})


def _observe(item, phase):
    """Body of the three wrappers: the phase's exception is raised at the ``yield``.

    The call phase itself is recorded by ``_call_test_function``, below every hook.
    """
    try:
        result = yield
    except BaseException as error:  # SystemExit and timeouts count as failures too
        _record(item, phase, error)
        raise
    _record(item, phase, None)
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    if _MODE == "run":
        _send({"start": item.nodeid})  # the grader's watchdog times the test from here
    return (yield from _observe(item, "setup"))


def _call_test_function(item):
    """Call the test function as pytest's own ``pytest_pyfunc_call`` does, with no hook in
    between that student code could replace, and record how it ended."""
    try:
        item.obj(**{name: item.funcargs[name] for name in item._fixtureinfo.argnames})
    except BaseException as error:  # SystemExit and timeouts count as failures too
        _record(item, "call", error)
        raise
    _record(item, "call", None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Outermost wrapper, so it runs after every other plugin (student ones too) has modified
    the items: each test function's ``runtest`` becomes a direct, recorded call."""
    result = yield
    if _MODE == "run":
        for item in items:
            if isinstance(item, _Function):
                item.runtest = functools.partial(_call_test_function, item)
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _observe(item, "teardown"))
