"""Tests of the instructor tools (release and grading). Left out of the student release.

The end-to-end checks (``slow``) grade real trees in subprocesses; CI runs them with
``python -m pytest tests/instructor --run-slow``.
"""
import base64
import csv
import json
import os
import shutil
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
                           "--per-test-timeout", "30", "--total-timeout", "150")
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
# Grading at scale: honest, partial and hostile submissions graded together, in parallel
# ---------------------------------------------------------------------------------------------

def copy_of_instructor_tree(destination):
    """A copy of this tree (what ``tools/grade.py`` grades against), its offline data beside it:
    hostile submissions that escape their sandbox would change this copy, never the real tree."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(*grader.NOT_COPIED))
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (destination.parent / "shared").symlink_to(shared)
    return destination


def make_deep_tree(root, depth):
    """``root/d/d/.../d`` (``depth`` levels), made without recursion; returns the deepest path."""
    path = str(root)
    for _ in range(depth):
        path += "/d"
        os.mkdir(path)
    return path


def remove_deep_tree(root, depth):
    """Remove what ``make_deep_tree(root, depth)`` made, without recursion (pytest's own clean-up
    of old temporary folders is recursive and would fail on it)."""
    path = str(root) + "/d" * depth
    for _ in range(depth):
        try:
            for name in os.listdir(path):
                os.remove(os.path.join(path, name))
            os.rmdir(path)
        except FileNotFoundError:
            pass
        path = path[:-2]


def living_processes(names):
    """Pids of processes whose ``/proc/<pid>/comm`` is one of ``names`` (zombies excluded)."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_bytes().strip() in names and \
                    (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(comm.parent.name))
        except (OSError, IndexError):
            pass
    return pids


def sandbox_required():
    """Fail where the grader's sandbox should work but does not (Linux: CI installs bubblewrap
    with tools/install.sh); skip only where it cannot exist."""
    if sys.platform != "linux":
        pytest.skip(f"no bubblewrap sandbox on {sys.platform}: the grader runs without one")
    if grader.bwrap_problem():
        pytest.fail(f"these tests need the grader's sandbox: {grader.bwrap_problem()} "
                    "(bash tools/install.sh installs bubblewrap)")


def make_hostile_submissions(folder, release):
    """The submissions of ``test_grading_honest_and_hostile_submissions_together``: two honest
    copies, a stub-only copy, every hostile kind, and odd folders (a deep tree, a name that is not
    UTF-8, near misses). Each holds ``quantization.py`` only, plus a conftest that is never copied.
    Returns ``{report name: kind}``."""
    from hostile_submissions import KINDS, hostile_source
    reference, stub = (ROOT / "quantization.py").read_text(), (release / "quantization.py").read_text()
    kinds = {"good_1": None, "good_2": None, "stub": "stub", **{kind: kind for kind in KINDS}}
    for name, kind in kinds.items():
        (folder / name).mkdir(parents=True)
        source = (reference if kind is None else stub if kind == "stub"
                  else hostile_source(reference, kind, stub=stub))
        (folder / name / "quantization.py").write_text(source)
        (folder / name / "conftest.py").write_text("import sys; sys.exit(0)\n")  # never copied
    deep = folder / "deep_tree"
    deep.mkdir()
    (deep / "quantization.py").write_text(hostile_source(reference, "partial"))
    nested = make_deep_tree(deep, 1200)  # deeper than any recursive walk survives
    (Path(nested) / "pruning.py").write_text("")
    latin1 = os.fsencode(str(folder)) + b"/Jos\xe9"  # a Latin-1 name from an LMS zip
    os.mkdir(latin1)
    with open(latin1 + b"/quantization.py", "w") as stream:
        stream.write(reference)
    near = folder / "near_miss"
    (near / "sub").mkdir(parents=True)
    (near / "quantization (1).py").write_text(reference)
    (near / "Pruning.py").write_text("")
    (near / "sub" / "distillation.py").write_text("")
    return {**kinds, "deep_tree": "partial", "Jos\\xe9": None, "near_miss": "near_miss"}


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_grading_honest_and_hostile_submissions_together(tmp_path):
    """Issue 11: every hostile kind, graded with two honest copies and a stub-only copy (--jobs 2):
    honest copies keep full marks, the stub scores 0, every attack scores at most what it earned
    or is flagged, nothing a submission started outlives the grader, the CSV has every row (a
    poisoned JSON in --out named, not fatal), a re-run changes nothing, the instructor tree is
    byte-for-byte unchanged."""
    from hostile_submissions import (FLAGGED, HANGING_TEST, LOSES_ONE_TEST, PROCESS_NAMES,
                                     SCORES_PARTIAL, SCORES_ZERO)
    sandbox_required()
    instructor = copy_of_instructor_tree(tmp_path / "lab" / "instructor")
    release = tmp_path / "release"
    write_release(release, points=POINTS)
    kinds = make_hostile_submissions(tmp_path / "submissions", release)
    out = tmp_path / "grades"
    out.mkdir()
    (out / "0-poison.json").write_bytes(b'{"submission": [\xff\xfe')
    before = grader.file_digests(instructor, ignore=grader.NOT_COPIED)
    command = [sys.executable, str(instructor / "tools" / "grade.py"),
               *sorted(map(str, (tmp_path / "submissions").iterdir())), "--out", str(out),
               "--jobs", "2", "--per-test-timeout", "30", "--total-timeout", "200",
               "--memory-limit", "3", "--no-progress", "--sandbox", "bwrap"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=2000)
    finally:
        remove_deep_tree(tmp_path / "submissions" / "deep_tree", 1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not living_processes(PROCESS_NAMES), "a process started by a submission outlived the grader"
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json") if p.stem != "0-poison"}
    csv_rows = (out / "grades.csv").read_text().splitlines()
    assert len(reports) == len(kinds) and len(csv_rows) == len(kinds) + 1, sorted(reports)
    assert "0-poison.json" in result.stderr and "Jos\\xe9," in "\n".join(csv_rows)
    assert all(r["sandbox"] == "bwrap" for r in reports.values())

    def ex1(name):
        return reports[name]["points"]["ex1_quantization"]

    full, partial = reports["good_1"]["max_points"]["ex1_quantization"], ex1("partial")
    assert full > 0 and 0 < partial < full
    for name in ("good_1", "good_2", "Jos\\xe9"):
        assert ex1(name) == full and not reports[name]["flags"], (name, reports[name]["flags"])
    assert ex1("stub") == 0
    for name in (*SCORES_PARTIAL, "deep_tree"):
        assert ex1(name) == partial, (name, reports[name]["notes"])
    for name in SCORES_ZERO:
        assert ex1(name) == 0, (name, reports[name]["notes"])
    for name in ("tamper_rewrite", "tamper_delete"):
        assert "tests/test_quantization.py" in reports[name]["tampered"]["ex1_quantization"]
    assert "timeout" in reports["sleep_at_import"]["notes"]["ex1_quantization"]
    for name in LOSES_ONE_TEST:  # one hang costs one test, whatever it does with signals
        outcomes = {t["name"]: t["outcome"] for t in reports[name]["tests"]}
        lost = next(t["points"] for t in reports[name]["tests"] if t["name"] == HANGING_TEST)
        assert outcomes.pop(HANGING_TEST) == "timeout" and ex1(name) == full - lost, \
            (name, reports[name]["notes"])
    for name in FLAGGED:
        assert reports[name]["flags"], f"{name} was not flagged"
    assert any("canary" in f for f in reports["patch_phase_outcome"]["flags"])
    assert any("canary" in f for f in reports["forge_with_secret"]["flags"])
    assert any("fresh inputs" in f for f in reports["answer_cache"]["flags"])
    assert ex1("answer_cache") < full
    note = reports["near_miss"]["notes"]["ex1_quantization"]
    assert "quantization (1).py" in note and "rename it to quantization.py" in note
    assert "Pruning.py" in reports["near_miss"]["notes"]["ex2_pruning"]
    assert "sub/distillation.py" in reports["near_miss"]["notes"]["ex3_distillation"]
    assert "flagged:" in result.stdout and "patch_phase_outcome" in result.stdout
    peak = int(result.stdout.split("grader peak memory: ")[1].split()[0])
    assert peak < 500, f"the grader itself used {peak} MiB"

    # A re-run without --regrade grades nothing again and changes no byte, except a report edited
    # in --out: it fails its integrity check, so that submission is graded again; a forged report
    # of a submission not in the run stays in the CSV, flagged. The instructor tree (tests, tools,
    # the calibration's source) is byte-for-byte what it was.
    forged = reports["good_2"]
    (out / "good_2.json").write_text(json.dumps(dict(forged, total=0.0, points={"ex1_quantization": 0.0})))
    (out / "intruder.json").write_text(json.dumps(dict(forged, submission="intruder")))
    reports_bytes = {p.name: p.read_bytes() for p in out.iterdir() if p.name not in
                     ("good_2.json", "grades.csv")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(kinds) - 1} submissions unchanged" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in reports_bytes} == reports_bytes
    assert json.loads((out / "good_2.json").read_text())["points"]["ex1_quantization"] == full
    rows = {r[0]: r for r in csv.reader((out / "grades.csv").read_text().splitlines())}
    assert len(rows) == len(kinds) + 2 and rows["good_2"][-1] == "", rows["good_2"]
    assert "integrity" in rows["intruder"][-1]
    assert grader.file_digests(instructor, ignore=grader.NOT_COPIED) == before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_classroom_steps_grade_with_the_instructor_points(tmp_path):
    """The release's workflow has the instructor grader's points, and its command grades."""
    release = tmp_path / "release"
    write_release(release)
    calibration = grader.Calibration(grader.default_options(), tmp_path)
    graded, _ = classroom_steps(release)
    assert {e: float(s["env"]["MAX_SCORE"]) for e, s in graded.items()} == \
        calibration.points(public_only=True)
    for name in DELIVERABLES:
        (release / name).write_text((ROOT / name).read_text())
    exercise = "ex1_quantization"
    output = tmp_path / "github_output"
    result = subprocess.run([sys.executable, "tools/grade.py", "--self", "--exercise", exercise,
                             "--max-score", graded[exercise]["env"]["MAX_SCORE"],
                             "--classroom-output", str(output)],
                            cwd=release, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    maximum = calibration.points(public_only=True)[exercise]
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
    (tmp_path / "0-poison.json").write_bytes(b'{"submission": [\\xff')  # named, skipped
    reports, problems = grader.load_reports(tmp_path)
    assert [p.split(":")[0] for p in problems] == ["0-poison.json", "notes.json"]
    grader.write_csv(reports, ["ex1_quantization"], tmp_path / "grades.csv")
    assert (tmp_path / "grades.csv").read_text().splitlines() == [
        "submission,ex1_quantization,total,max_total,sandbox,flags", "amy,1.5,1.5,3,,", "zed,3,3,3,,"]


def test_a_test_reported_twice_keeps_its_worse_outcome():
    records = [{"nodeid": "a", "outcome": "failed", "message": "boom"},
               {"nodeid": "a", "outcome": "passed", "message": ""},
               {"nodeid": "b", "outcome": "passed", "message": ""},
               {"nodeid": "c", "outcome": "excellent", "message": ""}]
    assert grader.results_from_records(records) == {"a": ("failed", "boom"), "b": ("passed", "")}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_no_test_process_outlives_a_killed_grader(tmp_path, sandbox):
    """An interrupted grader (killed, Ctrl-C, CI cancelled) must not leave a looping student
    process behind: the sandbox's PID namespace dies with it (bwrap --die-with-parent), and
    without a sandbox the kernel ends it with its parent (PR_SET_PDEATHSIG)."""
    import signal
    import time

    if sandbox == "bwrap":
        sandbox_required()
    name = b"lab5-looper-" + sandbox.encode()[:3]
    submission = tmp_path / "looping"
    submission.mkdir()
    (submission / "quantization.py").write_text(
        f"import ctypes\nctypes.CDLL(None).prctl(15, {name!r}, 0, 0, 0)\nwhile True:\n    pass\n")
    grader_process = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "grade.py"), str(submission), "--out",
         str(tmp_path / "grades"), "--total-timeout", "500", "--no-progress", "--sandbox", sandbox],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while not living_processes((name,)):
            assert grader_process.poll() is None and time.monotonic() < deadline, "the submission never ran"
            time.sleep(0.5)
        grader_process.send_signal(signal.SIGKILL)
        grader_process.wait()
        for _ in range(20):
            if not living_processes((name,)):
                break
            time.sleep(0.5)
        else:
            for pid in living_processes((name,)):
                os.kill(pid, signal.SIGKILL)
            pytest.fail("the looping test process outlived its killed grader")
    finally:
        grader_process.kill()


# ---------------------------------------------------------------------------------------------
# The sandbox, the channel, walks and names (fast)
# ---------------------------------------------------------------------------------------------

SANDBOX_PROBE = r"""
import json, os, socket
facts = {"uid": os.getuid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
         "root": sorted(os.listdir("/")), "tree": sorted(os.listdir("."))}
for place in (".", "/tmp"):
    try:
        open(os.path.join(place, "written"), "w").write("x")
        facts[place] = "writable"
    except OSError:
        facts[place] = "read-only"
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    facts["network"] = "reachable"
except OSError:
    facts["network"] = "none"
print(json.dumps(facts))
"""


def test_sandbox_shows_only_the_tree_read_only_and_no_network(tmp_path):
    sandbox_required()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "quantization.py").write_text("x = 1\n")
    command = grader.sandbox_command([sys.executable, "-c", SANDBOX_PROBE], tree)
    assert not [arg for arg in command if str(ROOT) in arg or str(tmp_path.parent) in arg
                and arg != str(tree)], "nothing of the instructor tree or of other runs is mounted"
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env=grader._base_env(sandboxed=True))
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["uid"] == grader.SANDBOX_UID and len(facts["pids"]) <= 3, facts
    assert facts["tree"] == ["quantization.py"] and facts["."] == "read-only" and facts["/tmp"] == "writable"
    assert facts["network"] == "none" and "work" not in facts["root"] and "home" not in facts["root"]
    assert not (tree / "written").exists()


def test_pipe_reader_keeps_a_capped_amount_and_is_never_left_blocked():
    import threading
    import time
    read_end, write_end = os.pipe()
    reader = grader.PipeReader(read_end, limit=1000)
    reader.start()
    writer = threading.Thread(target=lambda: [os.write(write_end, b"x" * 65536) for _ in range(40)])
    writer.start()
    writer.join(timeout=60)
    time.sleep(0.5)
    reader.stop()  # the write end is still open (a process kept it): the reader must end anyway
    reader.join(timeout=10)
    assert not reader.is_alive() and reader.data() == b"x" * 1000 and reader.overflow == 40 * 65536 - 1000
    with pytest.raises(OSError):
        os.fstat(read_end)  # the reader closed its own descriptor
    os.close(write_end)




def test_walks_are_iterative_capped_and_keep_odd_names(tmp_path):
    make_deep_tree(tmp_path, 1200)
    try:
        os.mkdir(os.fsencode(str(tmp_path)) + b"/Jos\xe9")
        entries, note = grader.walk(tmp_path, max_depth=16, max_entries=1000)
        assert "deeper than 16" in note and "Jos\\xe9" in [e[0] for e in entries]
        assert "<walk>" in grader.file_digests(tmp_path)
    finally:
        remove_deep_tree(tmp_path, 1200)
    assert grader.escaped_name(os.fsdecode(b"Jos\xe9")) == "Jos\\xe9"


def test_near_misses_are_named_with_the_fix(tmp_path):
    (tmp_path / "quantization (1).py").write_text("x = 1\n")
    (tmp_path / "Pruning.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "distillation.py").write_text("x = 1\n")
    contents, problems = grader.read_deliverables(tmp_path)
    assert contents == {}
    assert "'quantization (1).py'" in problems["quantization.py"]
    assert "rename it to quantization.py" in problems["quantization.py"]
    assert "'Pruning.py'" in problems["pruning.py"]
    assert "'sub/distillation.py'" in problems["distillation.py"]


def test_a_report_is_intact_only_as_the_grader_signed_it():
    key = b"k" * 32
    report = grader.sign_report({"submission": "amy", "points": {"ex1": 3.0}, "total": 3.0,
                                 "max_total": 3.0}, key)
    assert grader.report_is_intact(report, key)
    assert not grader.report_is_intact(dict(report, total=0.0), key)
    assert not grader.report_is_intact(report, b"j" * 32)


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
