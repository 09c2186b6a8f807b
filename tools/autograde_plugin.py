"""pytest plugin used by ``tools/grade.py`` (loaded with ``-p autograde_plugin``).

It appends one JSON line per test outcome to the file named by ``$AUTOGRADE_REPORT`` *as each
test finishes*, so a run that crashes or is killed half-way keeps everything graded before.
With ``$AUTOGRADE_COLLECT`` set instead, it writes the collected tests (name, exercise, points).
"""
import json
import os

EXERCISE_PREFIX = "ex"
MESSAGE_LIMIT = 600


def _append(path, record):
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")
        stream.flush()


def _exercise_of(item):
    names = [m.name for m in item.iter_markers() if m.name.startswith(EXERCISE_PREFIX)
             and m.name[2:3].isdigit()]
    return names[0] if names else None


def _points_of(item, cases):
    """``points(n)`` is worth n for the whole test function: its parametrized cases share it."""
    marker = item.get_closest_marker("points")
    points = float(marker.args[0]) if marker and marker.args else 1.0
    return points / cases[_function_of(item)]


def _function_of(item):
    return (item.location[0], getattr(item, "originalname", item.name))


def pytest_collection_modifyitems(config, items):
    path = os.environ.get("AUTOGRADE_COLLECT")
    if not path:
        return
    cases = {}
    for item in items:
        cases[_function_of(item)] = cases.get(_function_of(item), 0) + 1
    for item in items:
        _append(path, {"nodeid": item.nodeid, "exercise": _exercise_of(item),
                       "points": _points_of(item, cases), "file": item.location[0]})


def _short_message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        message = crash.message
    elif isinstance(report.longrepr, tuple):  # skips: (file, line, reason)
        message = str(report.longrepr[-1])
    else:
        message = str(report.longrepr or "")
    return message[:MESSAGE_LIMIT]


def pytest_runtest_logreport(report):
    path = os.environ.get("AUTOGRADE_REPORT")
    if not path:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = report.outcome if report.when == "call" else (
            "skipped" if report.skipped else "error")
        _append(path, {"nodeid": report.nodeid, "outcome": outcome,
                       "message": "" if report.passed else _short_message(report)})
    elif report.when == "teardown" and report.failed:
        _append(path, {"nodeid": report.nodeid, "outcome": "error",
                       "message": "teardown: " + _short_message(report)})


def pytest_collectreport(report):
    path = os.environ.get("AUTOGRADE_REPORT")
    if path and report.failed:
        _append(path, {"collect_error": report.nodeid, "message": _short_message(report)})
