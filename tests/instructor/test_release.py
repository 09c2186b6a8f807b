"""The student release as a product: its README, its notebook, a fair suite, zero for zero.

Left out of the release. The end-to-end checks (``slow``) build a release and run its own pytest
untouched (every failure an unfinished exercise), then with the reference solution copied in (all
green), and grade lazy submissions (zeros, input unchanged) with ``tools/grade.py`` (all 0).
CI runs them: ``python -m pytest tests/instructor --run-slow``.
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from given.manifest import PROJECT_ROOT as ROOT  # tests/conftest.py puts the project root on sys.path
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_tables import Generated  # noqa: E402
from given.manifest import DELIVERABLES, GRADED_MARKERS, NOTEBOOK  # noqa: E402
from lazy_submissions import KINDS, write_lazy_submissions  # noqa: E402
from release import write_release  # noqa: E402

pytestmark = pytest.mark.instructor
POINTS = {marker: 10.0 for marker in GRADED_MARKERS}  # Classroom points: a stand-in, not graded here

INSTRUCTOR_WORDS = ("tools/release.py", "grade.py submissions", "Threat model", "threat model",
                    "tests/hidden", "tests/instructor", "For instructors", "hostile")


def test_notebook_has_the_parameters_and_the_sections():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "MODEL_NAME_OR_PATH" in tagged[0].source and "EVAL_TOKENS" in tagged[0].source
    headings = [line for cell in notebook.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("## ")]
    assert [h.split(".")[0] for h in headings if h[3].isdigit()] == [f"## {n}" for n in range(1, 8)]
    answers = [cell.source for cell in notebook.cells if "BEGIN SOLUTION" in cell.source]
    assert answers and all(a.count("BEGIN SOLUTION") == a.count("END SOLUTION") == 1 for a in answers)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it unexecuted"


def test_student_readme_lists_the_exercises_and_nothing_of_the_instructor(tmp_path):
    tasks = write_release(tmp_path / "release", points=POINTS)
    readme = (tmp_path / "release" / "README.md").read_text()
    assert readme != (ROOT / "README.md").read_text()
    for word in INSTRUCTOR_WORDS:
        assert word not in readme, f"the student README mentions {word!r}"
    for task in tasks:
        number, what = task.removeprefix("Exercise ").split(": ", 1)
        row = f"| {number} | `"  # a row of the exercises table, where a | in the text is written \|
        assert row in readme and what.replace("|", "\\|") in readme, f"{task} is missing from the README"
    for command in ("bash tools/install.sh", "python -m pytest -m ex1_quantization", "--tb=long",
                    "python tools/grade.py --self --exercise", "python tools/run_notebook.py", "Colab"):
        assert command in readme
    assert not (tmp_path / "release" / "tools" / "student_README.md").exists()


# ---------------------------------------------------------------------------------------------
# End to end: the release's own pytest, untouched and with the solution; lazy submissions
# ---------------------------------------------------------------------------------------------

def run_release_pytest(release, *args):
    """The release's ``python -m pytest`` as a student runs it; returns (exit code, output, junit)."""
    junit = release / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CI"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             f"--junitxml={junit}", *args], cwd=release, env=env,
                            capture_output=True, text=True, timeout=1500)
    cases = ET.parse(junit).getroot().iter("testcase")
    problems = {f'{case.get("classname")}::{case.get("name")}': child.get("message", "")
                for case in cases for child in case if child.tag in ("failure", "error")}
    return result.returncode, result.stdout + result.stderr, problems


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_release_suite_fails_only_on_unfinished_exercises_and_is_green_when_done(tmp_path):
    release = tmp_path / "release"
    write_release(release, points=POINTS)

    code, output, problems = run_release_pytest(release)
    assert code == 1 and problems, output[-3000:]
    unfair = {name: message for name, message in problems.items()
              if "NotImplementedError: Exercise" not in message}
    assert not unfair, f"release tests that fail for another reason than an unwritten exercise: {unfair}"
    last_lines = output.strip().splitlines()[-15:]
    assert any(line.startswith("next: Exercise 1.1 absmax_quantize") for line in last_lines), last_lines
    assert " failed" not in last_lines[-1] and "unfinished" in last_lines[-1], last_lines[-1]
    assert len(output.splitlines()) < 80, f"not a screenful: {len(output.splitlines())} lines"
    sample = "\n".join(line for line in Generated(ROOT).block("first-run") if line != "```")
    assert sample in "\n".join(line.rstrip() for line in output.splitlines()), (
        "the student README's first-run sample (python tools/docs_tables.py --write) is not what "
        "the release prints:\n" + "\n".join(last_lines))

    for name in DELIVERABLES:
        (release / name).write_text((ROOT / name).read_text())
    code, output, problems = run_release_pytest(release)
    assert code == 0 and not problems, (problems, output[-3000:])
    assert "next:" not in output


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_lazy_submissions_score_zero_in_every_exercise(tmp_path):
    """Zero for zero: stubs returning zeros, or their input unchanged, earn no point anywhere."""
    submissions = write_lazy_submissions(tmp_path / "submissions")
    out = tmp_path / "grades"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "grade.py"), *map(str, submissions),
                             "--out", str(out), "--jobs", "2", "--per-test-timeout", "120",
                             "--no-progress"], capture_output=True, text=True, timeout=2900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for kind in KINDS:
        report = json.loads((out / f"lazy_{kind}.json").read_text())
        earned = [t for t in report["tests"] if t["earned"] > 0]
        assert report["total"] == 0, f"lazy_{kind} earns points in: {[t['name'] for t in earned]}"
