"""Tests of the instructor tools (release and grading). Left out of the student release.

The end-to-end checks (``slow``) grade real trees in subprocesses; CI runs them with
``python -m pytest tests/instructor --run-slow``.
"""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from release import INSTRUCTOR_ONLY, write_release  # noqa: E402
from solution_markers import (ANSWER_PLACEHOLDER, MarkerError, strip_markdown_answers,  # noqa: E402
                              strip_notebook, strip_python_solutions)

pytestmark = pytest.mark.instructor
DELIVERABLES = [name for name in ("quantization.py", "pruning.py", "distillation.py")
                if (ROOT / name).exists()]

SOURCE = '''def f(x):
    """Docstring stays."""
    # Hint: stays too.
    # BEGIN SOLUTION Exercise 9.1: double x
    y = 2 * x
    return y
    # END SOLUTION
'''


def test_solution_block_becomes_a_named_stub():
    stubbed, tasks = strip_python_solutions(SOURCE)
    assert tasks == ["Exercise 9.1: double x"]
    assert "2 * x" not in stubbed and "SOLUTION" not in stubbed
    assert "Docstring stays." in stubbed and "# Hint: stays too." in stubbed
    namespace = {}
    exec(stubbed, namespace)
    with pytest.raises(NotImplementedError, match=r"^Exercise 9\.1: double x$"):
        namespace["f"](1)


@pytest.mark.parametrize("broken, words", [
    (SOURCE.replace(" Exercise 9.1: double x", ""), "must name its task"),
    (SOURCE.replace("    # END SOLUTION\n", ""), "never closed"),
    (SOURCE.replace("    y = 2 * x\n", "    # BEGIN SOLUTION Exercise 9.2: x\n"), "inside the block"),
    ("    # END SOLUTION\n", "without BEGIN"),
])
def test_malformed_blocks_are_refused(broken, words):
    with pytest.raises(MarkerError, match=words):
        strip_python_solutions(broken)


def test_notebook_answers_and_outputs_are_cleared():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("**Q1.** Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell("x = 1\n# BEGIN SOLUTION Exercise 4.1: compute y\ny = x + 1\n# END SOLUTION"),
    ])
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="2")]
    notebook.cells[1].execution_count = 3
    strip_notebook(notebook)
    assert "Because" not in notebook.cells[0].source and ANSWER_PLACEHOLDER in notebook.cells[0].source
    assert "y = x + 1" not in notebook.cells[1].source
    assert notebook.cells[1].outputs == [] and notebook.cells[1].execution_count is None
    assert strip_markdown_answers("no answers here") == "no answers here"


def test_release_leaves_out_solutions_and_instructor_files(tmp_path):
    out = tmp_path / "release"
    tasks = write_release(out)
    assert tasks and all(t.startswith("Exercise ") for t in tasks)
    for name in DELIVERABLES:
        text = (out / name).read_text()
        assert "BEGIN SOLUTION" not in text and "NotImplementedError(" in text
    assert "torch.round(v * alpha)" not in (out / "quantization.py").read_text()
    for excluded in INSTRUCTOR_ONLY:
        assert not (out / excluded).exists(), f"{excluded} must not be in the student release"
    assert (out / "tests" / "conftest.py").exists() and (out / "pytest.ini").exists()


def test_release_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "student_work.py").write_text("precious = True\n")
    with pytest.raises(SystemExit, match="not empty"):
        write_release(tmp_path)
    assert (tmp_path / "student_work.py").read_text() == "precious = True\n"
    write_release(tmp_path, force=True)
    assert (tmp_path / "student_work.py").read_text() == "precious = True\n"
    with pytest.raises(SystemExit, match="overlaps"):
        write_release(ROOT, force=True)


# ---------------------------------------------------------------------------------------------
# End to end: the release scores 0, the solution full marks, a broken submission what it earned
# ---------------------------------------------------------------------------------------------

def grade(submissions, out, *extra):
    command = [sys.executable, str(ROOT / "tools" / "grade.py"), *map(str, submissions),
               "--out", str(out), "--jobs", "2", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}, result.stdout


@pytest.mark.slow
def test_grading_release_solution_and_broken_submission(tmp_path):
    release = tmp_path / "student_release"
    write_release(release)
    solution = tmp_path / "solution"
    solution.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in DELIVERABLES:
        (solution / name).write_text((ROOT / name).read_text())
        (broken / name).write_text((ROOT / name).read_text())
    # The broken submission: a syntax error in pruning.py, an infinite loop in distillation.py,
    # and a student test file and conftest that would pass everything if they counted.
    if (broken / "pruning.py").exists():
        (broken / "pruning.py").write_text((ROOT / "pruning.py").read_text() + "\ndef oops(:\n")
    if (broken / "distillation.py").exists():
        (broken / "distillation.py").write_text("while True:\n    pass\n")
    (broken / "tests").mkdir()
    (broken / "tests" / "test_quantization.py").write_text("def test_fake():\n    assert True\n")
    (broken / "conftest.py").write_text("import sys; sys.exit(0)\n")

    reports, table = grade([release, solution, broken], tmp_path / "grades",
                           "--per-test-timeout", "30", "--total-timeout", "45")
    assert (tmp_path / "grades" / "grades.csv").read_text().count("\n") == 4

    assert reports["student_release"]["total"] == 0
    graded = [t for t in reports["student_release"]["tests"] if t["points"] > 0]
    assert graded and all("NotImplementedError: Exercise" in t["message"] for t in graded), \
        [t["message"] for t in graded if "NotImplementedError" not in t["message"]][:3]

    assert reports["solution"]["total"] == reports["solution"]["max_total"] > 0

    points = reports["broken"]["points"]
    assert points["ex1_quantization"] == reports["solution"]["points"]["ex1_quantization"]
    for exercise in ("ex2_pruning", "ex3_distillation"):
        if exercise in points:
            assert points[exercise] == 0, f"{exercise}: {points[exercise]}"
    assert "broken" in table


# ---------------------------------------------------------------------------------------------
# Grading at scale: 20 submissions, good, partial and hostile, graded in parallel
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_grading_twenty_good_partial_and_hostile_submissions(tmp_path):
    from hostile_submissions import KINDS, SCORES_PARTIAL, SCORES_ZERO, hostile_source
    reference = (ROOT / "quantization.py").read_text()
    names = {"good_1": None, "good_2": None, "good_3": None, "partial_2": "partial",
             "partial_3": "partial", "stub": "stub", **{kind: kind for kind in KINDS}}
    assert len(names) == 20
    release = tmp_path / "release"
    write_release(release)
    for name, kind in names.items():
        folder = tmp_path / "submissions" / name
        folder.mkdir(parents=True)
        source = (reference if kind is None else (release / "quantization.py").read_text()
                  if kind == "stub" else hostile_source(reference, kind))
        (folder / "quantization.py").write_text(source)
        (folder / "conftest.py").write_text("import sys; sys.exit(0)\n")  # never copied

    out = tmp_path / "grades"
    reports, table = grade(sorted((tmp_path / "submissions").iterdir()), out,
                           "--per-test-timeout", "15", "--total-timeout", "100",
                           "--memory-limit", "3", "--no-progress")
    assert len(reports) == 20 and (out / "grades.csv").read_text().count("\n") == 21
    full = reports["good_1"]["max_total"]
    partial = reports["partial"]["total"]
    assert full > 0 and 0 < partial < full
    for name in ("good_1", "good_2", "good_3"):
        assert reports[name]["total"] == full, name
    assert reports["stub"]["total"] == 0
    for name in SCORES_PARTIAL + ("partial_2", "partial_3"):
        assert reports[name]["total"] == partial, (name, reports[name]["notes"])
    for name in SCORES_ZERO:
        assert reports[name]["total"] == 0, (name, reports[name]["notes"])
    for name in ("tamper_rewrite", "tamper_delete"):
        assert "tests/test_quantization.py" in reports[name]["tampered"]["ex1_quantization"]
    assert "timeout" in reports["sleep_at_import"]["notes"]["ex1_quantization"]
    assert "slowest" in table

    # Re-running grades nothing unchanged; an edited submission is graded again.
    (tmp_path / "submissions" / "stub" / "quantization.py").write_text(reference)
    reports, table = grade([tmp_path / "submissions" / n for n in ("good_1", "stub")], out,
                           "--no-progress")
    assert reports["stub"]["total"] == full and reports["good_1"]["total"] == full
    assert "stub" in (out / "grades.csv").read_text() and len(reports) == 20
