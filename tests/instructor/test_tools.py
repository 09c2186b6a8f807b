"""Tests of the instructor tools (release and grading). Left out of the student release.

The end-to-end checks (``slow``) grade real trees in subprocesses; CI runs them with
``python -m pytest tests/instructor --run-slow``.
"""
import base64
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import grade as grader  # noqa: E402
from release import INSTRUCTOR_ONLY, write_release  # noqa: E402
from solution_markers import (ANSWER_PLACEHOLDER, MarkerError, strip_markdown_answers,  # noqa: E402
                              strip_notebook, strip_python_solutions)

pytestmark = pytest.mark.instructor
DELIVERABLES = [name for name in ("quantization.py", "pruning.py", "distillation.py")
                if (ROOT / name).exists()]

EXERCISE_OF = {"quantization.py": "ex1_quantization", "pruning.py": "ex2_pruning",
               "distillation.py": "ex3_distillation"}
POINTS = {EXERCISE_OF[name]: 10.0 + i for i, name in enumerate(DELIVERABLES)}  # fast tests' stand-in

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
    tasks = write_release(out, points=POINTS)
    in_modules = [line.split("# BEGIN SOLUTION ", 1)[1].strip()
                  for name in DELIVERABLES for line in (ROOT / name).read_text().splitlines()
                  if line.lstrip().startswith("# BEGIN SOLUTION ")]
    assert sorted(tasks) == sorted(in_modules), "only the exercise modules' blocks become stubs"
    assert (out / "tools" / "solution_markers.py").read_text() == \
        (ROOT / "tools" / "solution_markers.py").read_text(), "shipped tools are copied unchanged"
    for name in DELIVERABLES:
        text = (out / name).read_text()
        assert "BEGIN SOLUTION" not in text and "NotImplementedError(" in text
    assert "torch.round(v * alpha)" not in (out / "quantization.py").read_text()
    for excluded in INSTRUCTOR_ONLY:
        assert not (out / excluded).exists(), f"{excluded} must not be in the student release"
    assert (out / "tests" / "conftest.py").exists() and (out / "pytest.ini").exists()


def classroom_steps(release):
    workflow = yaml.safe_load((release / ".github" / "workflows" / "classroom.yml").read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    return {s["id"]: s for s in steps if "id" in s}, steps


def test_release_has_a_classroom_workflow_with_one_step_per_exercise(tmp_path):
    write_release(tmp_path / "release", points=POINTS)
    graded, steps = classroom_steps(tmp_path / "release")
    assert {e: float(s["env"]["MAX_SCORE"]) for e, s in graded.items()} == POINTS
    for exercise, step in graded.items():
        assert f"tools/grade.py --self --exercise {exercise}" in step["run"]
    install = next(s["run"] for s in steps if "pip install torch" in s.get("run", ""))
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    reporter = steps[-1]
    assert reporter["with"]["runners"].split(",") == sorted(POINTS)
    assert all((tmp_path / "release" / "tools" / f).exists()
               for f in ("grade.py", "autograde_plugin.py", "solution_markers.py"))


def test_release_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "student_work.py").write_text("precious = True\n")
    with pytest.raises(SystemExit, match="not empty"):
        write_release(tmp_path, points=POINTS)
    assert (tmp_path / "student_work.py").read_text() == "precious = True\n"
    write_release(tmp_path, force=True, points=POINTS)
    assert (tmp_path / "student_work.py").read_text() == "precious = True\n"
    with pytest.raises(SystemExit, match="overlaps"):
        write_release(ROOT, force=True, points=POINTS)


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
@pytest.mark.timeout(900)
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
@pytest.mark.timeout(1200)
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

    def ex1(name):  # the submissions hold quantization.py only
        return reports[name]["points"]["ex1_quantization"]

    full = reports["good_1"]["max_points"]["ex1_quantization"]
    partial = ex1("partial")
    assert full > 0 and 0 < partial < full
    for name in ("good_1", "good_2", "good_3"):
        assert ex1(name) == full, name
        assert reports[name]["total"] == full, "missing files score 0 for their exercise"
        for exercise, seconds in reports[name]["seconds"].items():
            if exercise != "ex1_quantization":  # not run at all: no file, no pytest start-up
                assert seconds == 0 and "not submitted" in reports[name]["notes"][exercise]
    assert ex1("stub") == 0
    for name in SCORES_PARTIAL + ("partial_2", "partial_3"):
        assert ex1(name) == partial, (name, reports[name]["notes"])
    for name in SCORES_ZERO:
        assert ex1(name) == 0, (name, reports[name]["notes"])
    for name in ("tamper_rewrite", "tamper_delete"):
        assert "tests/test_quantization.py" in reports[name]["tampered"]["ex1_quantization"]
    assert "timeout" in reports["sleep_at_import"]["notes"]["ex1_quantization"]
    assert "slowest" in table

    # Re-running grades nothing unchanged; an edited submission is graded again.
    (tmp_path / "submissions" / "stub" / "quantization.py").write_text(reference)
    reports, table = grade([tmp_path / "submissions" / n for n in ("good_1", "stub")], out,
                           "--no-progress")
    assert ex1("stub") == full and ex1("good_1") == full
    assert "stub" in (out / "grades.csv").read_text() and len(reports) == 20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_classroom_steps_grade_with_the_instructor_points(tmp_path):
    """The release's workflow has the instructor grader's points, and its command grades."""
    release = tmp_path / "release"
    write_release(release)
    calibration = grader.Calibration(grader.default_options(), tmp_path)  # no hidden tests here
    graded, _ = classroom_steps(release)
    assert {e: float(s["env"]["MAX_SCORE"]) for e, s in graded.items()} == calibration.points()
    for name in DELIVERABLES:
        (release / name).write_text((ROOT / name).read_text())
    exercise = "ex1_quantization"
    output = tmp_path / "github_output"
    result = subprocess.run([sys.executable, "tools/grade.py", "--self", "--exercise", exercise,
                             "--max-score", graded[exercise]["env"]["MAX_SCORE"],
                             "--classroom-output", str(output)],
                            cwd=release, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    maximum = calibration.points()[exercise]
    assert f"Points {maximum:g}/{maximum:g}" in result.stdout
    encoded = output.read_text().strip().removeprefix("result=")
    report = json.loads(base64.b64decode(encoded))
    assert report["max_score"] == maximum and report["tests"][0]["score"] == maximum


def test_only_records_signed_with_the_run_secret_count():
    import hashlib
    import hmac
    secret = b"s" * 32
    body = json.dumps({"nodeid": "t::a", "outcome": "passed"}, sort_keys=True)
    good = json.dumps({"mac": hmac.new(secret, body.encode(), hashlib.sha256).hexdigest(), "body": body})
    forged = json.dumps({"mac": "0" * 64, "body": body.replace("a", "b")})
    data = "\n".join([good, forged, body, '{"mac": "cut sho']).encode()
    assert grader.verified_records(data, secret) == [{"nodeid": "t::a", "outcome": "passed"}]
    assert grader.verified_records(data, b"t" * 32) == []


def test_tampering_is_any_added_changed_or_removed_file(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test(): assert False\n")
    (tmp_path / "quantization.py").write_text("x = 1\n")
    before = grader.file_digests(tmp_path, skip=("quantization.py",))
    (tmp_path / "quantization.py").write_text("x = 2\n")  # the deliverable itself: allowed
    assert grader.tampered_files(before, grader.file_digests(tmp_path, skip=("quantization.py",))) == []
    (tmp_path / "tests" / "test_a.py").write_text("def test(): assert True\n")
    (tmp_path / "conftest.py").write_text("")
    assert grader.tampered_files(before, grader.file_digests(tmp_path, skip=("quantization.py",))) \
        == ["conftest.py", "tests/test_a.py"]


def test_csv_is_rebuilt_sorted_from_every_report(tmp_path):
    for name, points in (("zed", 3.0), ("amy", 1.5)):
        grader.write_json(grader.make_report(name, [{"exercise": "ex1_quantization", "earned": points,
                                                     "points": 3.0}], {}, ["ex1_quantization"]),
                          tmp_path / f"{name}.json")
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a report: ignored
    grader.write_csv(grader.load_reports(tmp_path), ["ex1_quantization"], tmp_path / "grades.csv")
    assert (tmp_path / "grades.csv").read_text().splitlines() == [
        "submission,ex1_quantization,total,max_total", "amy,1.5,1.5,3", "zed,3,3,3"]


def test_a_test_reported_twice_keeps_its_worse_outcome():
    records = [{"nodeid": "a", "outcome": "failed", "message": "boom"},
               {"nodeid": "a", "outcome": "passed", "message": ""},
               {"nodeid": "b", "outcome": "passed", "message": ""},
               {"nodeid": "c", "outcome": "excellent", "message": ""}]
    assert grader.results_from_records(records) == {"a": ("failed", "boom"), "b": ("passed", "")}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_test_process_outlives_a_killed_grader(tmp_path):
    """An interrupted grader (killed, Ctrl-C, CI cancelled) must not leave a looping student
    process behind: the kernel ends it with its parent (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import time

    pid_file = tmp_path / "looping.pid"
    submission = tmp_path / "looping"
    submission.mkdir()
    (submission / "quantization.py").write_text(
        f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True:\n    pass\n")
    grader = subprocess.Popen([sys.executable, str(ROOT / "tools" / "grade.py"), str(submission),
                               "--out", str(tmp_path / "grades"), "--total-timeout", "500",
                               "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while not pid_file.exists() or not pid_file.read_text():
            assert grader.poll() is None and time.monotonic() < deadline, "the submission never ran"
            time.sleep(0.5)
        looping_pid = int(pid_file.read_text())
        grader.send_signal(signal.SIGKILL)
        grader.wait()
        for _ in range(20):
            if not os.path.exists(f"/proc/{looping_pid}") or \
                    open(f"/proc/{looping_pid}/stat").read().split()[2] == "Z":
                break
            time.sleep(0.5)
        else:
            os.kill(looping_pid, signal.SIGKILL)
            pytest.fail("the looping test process outlived its killed grader")
    finally:
        grader.kill()


def test_cpu_limit_ends_a_test_process_on_its_own(tmp_path):
    """The backstop behind the timeouts: the kernel ends a test process after its CPU budget,
    even with no grader left to kill it."""
    (tmp_path / "test_spin.py").write_text("def test_spin():\n    while True:\n        pass\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYTEST")}
    env.update(PYTHONPATH=str(ROOT / "tools"), AUTOGRADE_CPU_LIMIT="2")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "autograde_plugin", "-q",
                             "-p", "no:cacheprovider", "-o", "timeout=0", "test_spin.py"],
                            cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert result.returncode < 0, f"expected the kernel to end it (SIGXCPU/SIGKILL), got {result.returncode}"
