"""docs/failures.md stays true: for each typical mistake, the student's run names the right task
first, and fails about as many tests, in about as many lines, as the table says.

The check of the table's rows is fast; re-measuring runs the student's whole public suite once per
mistake (two at a time) and is ``slow``: ``python -m pytest tests/instructor/test_failure_table.py
--run-slow -k 1.7``.
"""
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failure_table import MISTAKES, measure  # noqa: E402
from wrong_implementations import selected, two_at_a_time  # noqa: E402

pytestmark = pytest.mark.instructor

TABLE = Path(__file__).resolve().parents[2] / "docs" / "failures.md"
ROW = re.compile(r"^\| (?P<task>\d+\.\d+) \| (?P<what>.+?) \| (?P<failed>\d+) \| (?P<lines>\d+) \| (?P<named>yes|no) \|$",
                 re.MULTILINE)


def documented():
    """``{(task, mistake): (failing tests, lines, names the task)}`` of the table under "Now"."""
    now = TABLE.read_text().split("## Now", 1)[1].split("\n## ", 1)[0]
    return {(m["task"], m["what"].replace("\\|", "|")): (int(m["failed"]), int(m["lines"]), m["named"] == "yes")
            for m in ROW.finditer(now)}


def test_the_table_lists_every_measured_mistake_and_each_names_its_task():
    table = documented()
    assert list(table) == [(w.task, w.what) for w in MISTAKES], (
        "docs/failures.md lists other mistakes than failure_table.MISTAKES: regenerate it with "
        "python tests/instructor/failure_table.py")
    assert all(named for _, _, named in table.values()), "every mistake's first failure names its task"
    assert len({w.task.split(".")[0] for w in MISTAKES}) == 3 and len(MISTAKES) >= 12


@pytest.fixture(scope="module")
def measured_runs(request, tmp_path_factory):
    """``measure`` of every mistake this run selected, two at a time."""
    chosen = selected(request, "test_the_student_sees_what_the_table_says")
    return two_at_a_time(measure, chosen, tmp_path_factory.mktemp("failure-table"))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first case's set-up runs them all
@pytest.mark.parametrize("wrong", MISTAKES, ids=lambda w: f"{w.task}-{w.what[:30]}")
def test_the_student_sees_what_the_table_says(wrong, measured_runs):
    failed, lines, _ = documented()[(wrong.task, wrong.what)]
    measured = measured_runs[wrong]
    assert measured.names_task, (
        f"Exercise {wrong.task} written wrong ({wrong.what}): the first failure does not name "
        f"Exercise {wrong.task} first: {measured.first!r}")
    assert abs(measured.failed - failed) <= max(2, failed // 5), (
        f"{wrong.task} ({wrong.what}): {measured.failed} tests fail, the table says {failed}: "
        "regenerate docs/failures.md (python tests/instructor/failure_table.py) if that is right")
    assert measured.lines <= lines * 5 // 4 + 10, (
        f"{wrong.task} ({wrong.what}): the run prints {measured.lines} lines, the table says {lines}")


def test_a_failure_that_comes_from_an_earlier_task_names_that_task():
    from types import SimpleNamespace

    from tests.conftest import blame_earlier_tasks, summary_lines

    config = SimpleNamespace(getoption=lambda name, default=None: "auto")

    def failed(task, earlier):
        return SimpleNamespace(task=(task, earlier), longrepr="message", sections=[("captured", "x")])

    reports = {"tests/t.py::test_mixed": failed("1.8", ("1.1", "1.6", "1.7")),
               "tests/t.py::test_matmul": failed("1.7", ("1.1",)),
               "tests/t.py::test_loop[0]": failed(None, ("3.1", "3.2")),
               "tests/t.py::test_loop[1]": failed(None, ("3.1", "3.2")),
               "tests/t.py::test_step": failed("3.2", ("3.1",))}
    blame_earlier_tasks(list(reports.values()), config)
    mixed, matmul, loop, _, step = reports.values()
    assert mixed.blocked_by == "1.7" and mixed.sections == []
    assert mixed.longrepr.startswith("depends on Exercise 1.7 `int8_vectorwise_matmul`, which fails: fix it first")
    assert not hasattr(matmul, "blocked_by") and not hasattr(step, "blocked_by")
    assert loop.blocked_by == "3.2"
    lines = summary_lines({nodeid: r for nodeid, r in reports.items() if "test_loop" in nodeid})
    assert lines == [("tests/t.py (2 tests)", "depends on Exercise 3.2 `distillation_step`, which fails: "
                                              "fix it first\ntest_loop (2 cases)")]
