"""Tests of the LMS paths: the Gradescope autograder, the Canvas and Moodle imports, the feedback.

Left out of the student release. The fast tests work on grade reports written here (the shape
``tools/grade.py`` writes); the end-to-end checks (``slow``: CI runs them with ``--run-slow``) run
``run_autograder`` from a built zip on real uploads (the solution nested with the notebook, the
stubs, broken and hostile files) and ``tools/grade.py --canvas --moodle --roster --feedback`` on
real submissions. Every results.json is checked against Gradescope's schema.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest

from given.manifest import PROJECT_ROOT as ROOT  # tests/conftest.py puts the project root on sys.path
sys.path.insert(0, str(ROOT / "tools"))

import feedback  # noqa: E402
import gradescope  # noqa: E402
import lms_exports  # noqa: E402
from given.manifest import DELIVERABLES, EXERCISES, INSTRUCTOR_ONLY, is_build_output  # noqa: E402
from solution_markers import strip_python_solutions  # noqa: E402

pytestmark = pytest.mark.instructor

VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
GRADESCOPE_RESULTS_SCHEMA = {
    # https://gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format")
    "type": "object",
    "properties": {
        "score": {"type": "number"}, "execution_time": {"type": "number"},
        "output": {"type": "string"}, "visibility": VISIBILITY, "stdout_visibility": VISIBILITY,
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "properties": {"score": {"type": "number"}, "max_score": {"type": "number"},
                           "name": {"type": "string"}, "number": {"type": "string"},
                           "output": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                           "visibility": VISIBILITY, "extra_data": {"type": "object"}},
            "required": ["score", "name", "output", "visibility"], "additionalProperties": False}},
        "leaderboard": {"type": "array"},
    },
    "required": ["score", "execution_time", "output", "tests"], "additionalProperties": False,
}
SEED = 7279278667844446060
FLAG = "canary tests/hidden/test_canaries.py::test_x passed: test outcomes were changed in-process"


def check_results(results):
    """A results.json as Gradescope reads it: its schema, and scores that add up."""
    jsonschema.validate(results, GRADESCOPE_RESULTS_SCHEMA)
    for test in results["tests"]:
        assert 0 <= test["score"] <= test.get("max_score", test["score"]) + 1e-9, test
    if results["tests"] and all("max_score" in t for t in results["tests"]):
        assert abs(results["score"] - sum(t["score"] for t in results["tests"])) < 1e-3
    text = json.dumps(results)
    assert str(SEED) not in text and "canary" not in text and "integrity" not in text


def row(name, exercise, points, earned=None, outcome="passed", message=""):
    earned = points if earned is None else earned
    return {"name": name, "exercise": exercise, "points": points, "earned": earned,
            "outcome": outcome, "message": message}


def make_report(name="alice", rows=None, **extra):
    rows = rows if rows is not None else [
        row("tests/test_quantization.py::test_fp16_format", "ex1_quantization", 1.0),
        row("tests/test_pruning.py::test_nm_mask_on_a_hand_example", "ex2_pruning", 1.0, 0.0, "failed",
            f"AssertionError: keeps the 2 largest of every 4 (seed {SEED})"),
        row("tests/test_quantization.py::test_int8_dequantize_is_q_over_alpha", "ex1_quantization", 1.0, 0.0,
            "failed", "NotImplementedError: Exercise 1.2: absmax int8 dequantization (q / alpha, float32)"),
        row("tests/hidden/test_fresh_inputs.py::test_magnitude_mask_on_fresh_inputs", "ex2_pruning", 2.0, 0.0,
            "failed", f"AssertionError: assert 4 == 5\n +  where 4 = int(tensor(4)) (seed {SEED})"),
    ]
    exercises = sorted({r["exercise"] for r in rows})
    report = {"submission": name, "sandbox": "bwrap", "fresh_seeds": {e: [SEED] for e in exercises},
              "points": {e: sum(r["earned"] for r in rows if r["exercise"] == e) for e in exercises},
              "max_points": {e: sum(r["points"] for r in rows if r["exercise"] == e) for e in exercises},
              "total": sum(r["earned"] for r in rows), "max_total": sum(r["points"] for r in rows),
              "flags": [FLAG], "notes": {}, "tests": rows, "integrity": "f" * 64}
    report.update(extra)
    return report


# ---------------------------------------------------------------------------------------------
# Feedback: what a student may read
# ---------------------------------------------------------------------------------------------

def hidden_test_lines():
    lines = set()
    for path in (ROOT / "tests" / "hidden").glob("*.py"):
        lines |= {line.strip() for line in path.read_text().splitlines() if len(line.strip()) > 25}
    return lines


def test_feedback_names_every_lost_test_its_task_and_what_to_fix_first(tmp_path):
    report = make_report()
    [page] = feedback.write_feedback([report], tmp_path)
    text = page.read_text()
    assert page == tmp_path / "feedback" / "alice.md"
    assert "**Total: 1 / 5 points**" in text
    assert "Exercise 1.2: absmax int8 dequantization" in text
    assert "Exercise 2.4: keep the n largest |w| of every m" in text  # tasks_of via the test's calls
    assert "Exercise 2.1: mask the smallest-|w| fraction" in text     # the hidden test's task
    for lost in ("test_nm_mask_on_a_hand_example", "test_int8_dequantize_is_q_over_alpha",
                 "test_magnitude_mask_on_fresh_inputs"):
        assert lost in text
    assert "keeps the 2 largest of every 4" in text
    first = text.split("## What to fix first", 1)[1].split("##", 1)[0]
    assert "Exercise 1.2" in first, "the first task in lab order comes first"
    assert "test_fp16_format" not in text, "a passed test is not a lost test"


def test_feedback_shows_nothing_of_flags_seeds_or_hidden_code(tmp_path):
    text = feedback.feedback_markdown(make_report())
    assert str(SEED) not in text and "canary" not in text and "f" * 64 not in text
    assert "bwrap" not in text and "fresh_seeds" not in text
    assert "assert 4 == 5" not in text and "int(tensor(4))" not in text, "pytest's rewrite shows test code"
    assert not [line for line in hidden_test_lines() if line in text]
    hidden = row("tests/hidden/test_fresh_inputs.py::test_fp16_on_fresh_inputs", "ex1_quantization", 1.0, 0.0,
                 "failed", "AssertionError: assert torch.equal(fp16_quantize(v.clone()), v.to(torch.float16))")
    assert "torch.equal" not in feedback.safe_message(hidden)
    tampered = make_report(notes={"ex1_quantization": "the instructor tree was modified, the exercise scores 0: x"})
    assert "instructor tree" not in feedback.feedback_markdown(tampered)


def test_tasks_come_from_the_message_else_from_the_calls():
    unfinished = row("tests/test_pruning.py::test_biases_are_never_pruned", "ex2_pruning", 1, 0, "failed",
                     "NotImplementedError: Exercise 2.3: mask the rows of smallest L2 norm")
    assert feedback.tasks_of(unfinished) == ["Exercise 2.3: mask the rows of smallest L2 norm"]
    direct = row("tests/test_pruning.py::test_nm_mask_on_a_hand_example", "ex2_pruning", 1, 0, "failed", "x")
    assert [t.split(":")[0] for t in feedback.tasks_of(direct)] == ["Exercise 2.4"]
    unknown = row("tests/test_pruning.py::test_no_such_test", "ex2_pruning", 1, 0, "failed", "x")
    assert feedback.tasks_of(unknown) == []


def test_a_missing_file_is_one_line_and_comes_first():
    rows = [row(f"tests/test_pruning.py::test_{i}", "ex2_pruning", 1.0, 0.0, "missing",
                "pruning.py was not submitted") for i in range(5)]
    rows.append(row("tests/test_quantization.py::test_fp16_format", "ex1_quantization", 1.0, 0.0, "failed", "boom"))
    text = feedback.feedback_markdown(make_report(rows=rows))
    assert text.count("pruning.py was not submitted") == 1 + 1  # what to fix first + its exercise
    assert "(5 tests, 5 points)" in text


# ---------------------------------------------------------------------------------------------
# Canvas and Moodle
# ---------------------------------------------------------------------------------------------

GRADEBOOK = """Student,ID,SIS User ID,SIS Login ID,Section,Lab 4 (1233),Lab 5 (1234),Current Score
    Points Possible,,,,,10,50,
"Liddell, Alice",101,S101,Alice,Sec 1,9,,50
"Builder, Bob",102,S102,bob,Sec 1,8,,40
"Nobody, Carol",103,S103,carol,Sec 2,7,5,30
"""


def parser_and_options(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    lms_exports.add_arguments(parser)
    options = parser.parse_args(list(argv))
    options.out = tmp_path / "grades"
    options.out.mkdir(exist_ok=True)
    return parser, options


def check(tmp_path, names, *argv):
    parser, options = parser_and_options(tmp_path, *argv)
    lms_exports.check_arguments(parser, options, names)
    return options


def refused(tmp_path, capsys, names, *argv):
    with pytest.raises(SystemExit):
        check(tmp_path, names, *argv)
    return capsys.readouterr().err


def read_csv(path):
    return list(csv.reader(path.open(encoding="utf-8")))


def test_canvas_import_fills_the_assignment_by_login_then_id(tmp_path, capsys):
    book = tmp_path / "gradebook.csv"
    book.write_text(GRADEBOOK)
    options = check(tmp_path, ["alice", "102", "zed"], "--canvas", str(book), "--assignment", "Lab 5")
    reports = [make_report("alice"), make_report("102", total=3.0), make_report("zed", total=1.0)]
    lms_exports.write_outputs(options, reports)
    rows = read_csv(options.out / "canvas_import.csv")
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 5 (1234)"]
    assert rows[1][0].strip() == "Points Possible" and rows[1][-1] == "50"
    assert rows[2] == ["Liddell, Alice", "101", "S101", "Alice", "Sec 1", "1"], "login, case-insensitively"
    assert rows[3][-1] == "3", "bob by his Canvas ID"
    assert rows[4][-1] == "5", "a student without a submission keeps the exported cell"
    printed = capsys.readouterr().out
    assert "Nobody, Carol (carol)" in printed and "zed" in printed
    unmatched = (options.out / "lms_unmatched.txt").read_text()
    assert "students without a submission (1)" in unmatched and "submissions without a student (1)" in unmatched


def test_scale_gives_a_percentage_and_moodle_gets_identifier_and_grade(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("submission,student\nlab5-octocat,alice@example.edu\n,bob@example.edu\n")
    options = check(tmp_path, ["lab5-octocat"], "--moodle", "--assignment", "Lab 5", "--roster", str(roster),
                    "--scale", "100")
    lms_exports.write_outputs(options, [make_report("lab5-octocat")])
    assert read_csv(options.out / "moodle_import.csv") == [["identifier", "Lab 5"], ["alice@example.edu", "20"]]
    assert "bob@example.edu" in (options.out / "lms_unmatched.txt").read_text()


def test_a_report_failing_its_integrity_check_or_not_graded_is_not_exported(tmp_path):
    options = check(tmp_path, ["alice"], "--moodle", "--assignment", "Lab 5")
    stale = make_report("alice", flags=["report fails its integrity check (edited, ...)"])
    lms_exports.write_outputs(options, [stale])
    assert read_csv(options.out / "moodle_import.csv") == [["identifier", "Lab 5"]]
    assert "alice: fails its integrity check" in (options.out / "lms_unmatched.txt").read_text()
    lms_exports.write_outputs(options, [make_report("alice", error="OSError: unreadable")])
    assert read_csv(options.out / "moodle_import.csv") == [["identifier", "Lab 5"]], "an error is no grade"


@pytest.mark.parametrize("content, words", [
    ("Name,ID,SIS Login ID,Section,Lab 5 (1)\nA,1,a,s,\n", ["row 1", "'Student'", "'SIS User ID'"]),
    (GRADEBOOK + '"Again, Alice",104,S104,alice,Sec 1,1,,1\n', ["rows 3 and 6", "same student", "'alice'"]),
    (GRADEBOOK + '"Twin, Bob",102,S999,bobby,Sec 1,1,,1\n', ["rows 4 and 6", "ID '102'"]),
    (GRADEBOOK.replace("Lab 5 (1234)", "Lab 6 (1234)"), ["no column for assignment 'Lab 5'", "Lab 6 (1234)"]),
])
def test_a_bad_gradebook_says_what_and_which_row(tmp_path, capsys, content, words):
    book = tmp_path / "gradebook.csv"
    book.write_text(content)
    error = refused(tmp_path, capsys, ["alice"], "--canvas", str(book), "--assignment", "Lab 5")
    for word in words:
        assert word in error, error


def test_a_gradebook_that_is_not_utf8_names_its_line(tmp_path, capsys):
    book = tmp_path / "gradebook.csv"
    book.write_bytes(GRADEBOOK.encode() + "\"Jos\xe9, Ana\",105,S105,ana,Sec 1,1,,1\n".encode("latin-1"))
    error = refused(tmp_path, capsys, ["alice"], "--canvas", str(book), "--assignment", "Lab 5")
    assert "line 6 is not UTF-8 (byte 0xe9)" in error


@pytest.mark.parametrize("roster, words", [
    ("submission,student\nalice,alice\nghost,bob\n", ["row 3", "submission 'ghost'", "not a submission folder"]),
    ("submission,student\nalice,alice\nalice2,Alice\n", ["rows 2 and 3", "same student"]),
    ("submission,student\nalice,dave\n", ["row 2", "student 'dave'", "not in the gradebook"]),
    ("folder,login\nalice,alice\n", ["row 1", "submission,student"]),
])
def test_a_bad_roster_says_what_and_which_row(tmp_path, capsys, roster, words):
    (tmp_path / "gradebook.csv").write_text(GRADEBOOK)
    (tmp_path / "roster.csv").write_text(roster)
    error = refused(tmp_path, capsys, ["alice", "alice2"], "--canvas", str(tmp_path / "gradebook.csv"),
                    "--assignment", "Lab 5", "--roster", str(tmp_path / "roster.csv"))
    for word in words:
        assert word in error, error


def test_grade_py_refuses_bad_input_before_grading_and_keeps_out(tmp_path):
    """Through tools/grade.py itself: the error comes before any grading (seconds, no calibration)
    and every file already in --out is as it was."""
    out = tmp_path / "grades"
    out.mkdir()
    (out / "alice.json").write_text('{"kept": 1}')
    (out / "canvas_import.csv").write_text("earlier import\n")
    (tmp_path / "alice").mkdir()
    (tmp_path / "gradebook.csv").write_text("Student,ID\nA,1\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "grade.py"), str(tmp_path / "alice"),
                             "--out", str(out), "--canvas", str(tmp_path / "gradebook.csv"),
                             "--assignment", "Lab 5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "'SIS Login ID'" in result.stderr, result.stderr
    assert (out / "alice.json").read_text() == '{"kept": 1}'
    assert (out / "canvas_import.csv").read_text() == "earlier import\n"
    assert sorted(p.name for p in out.iterdir()) == ["alice.json", "canvas_import.csv"]


# ---------------------------------------------------------------------------------------------
# Gradescope: the zip, the upload, results.json
# ---------------------------------------------------------------------------------------------

def test_results_follow_gradescope_schema_and_hide_hidden_tests():
    results = gradescope.results_from_report(make_report(), {}, {}, notebook=True)
    results["execution_time"] = 3
    check_results(results)
    assert results["score"] == 1.0 and results["stdout_visibility"] == "hidden"
    visibility = {t["name"]: t["visibility"] for t in results["tests"]}
    assert visibility == {"Exercise 1: test_fp16_format": "visible",
                          "Exercise 1: test_int8_dequantize_is_q_over_alpha": "visible",
                          "Exercise 2: test_nm_mask_on_a_hand_example": "visible",
                          "Exercise 2 (hidden, fresh inputs): test_magnitude_mask_on_fresh_inputs": "after_published"}
    assert "0 / 1" in results["output"] and "2 / 2" not in results["output"], "public points only"
    assert "magnitude_mask" not in results["output"], "no hidden test before grades are published"
    assert "notebook" in results["output"]


def test_a_missing_file_says_what_the_upload_had_instead():
    rows = [row("tests/test_pruning.py::test_a", "ex2_pruning", 1.0, 0.0, "missing", "pruning.py was not submitted")]
    problem = "pruning.py was not found in your upload; found 'Pruning.py', which looks like it: rename it"
    results = gradescope.results_from_report(make_report(rows=rows), {"pruning.py": problem}, {}, False)
    assert results["tests"][0]["output"] == problem and problem in results["output"]


def test_nothing_to_grade_and_internal_errors_still_make_results():
    for results in (gradescope.nothing_to_grade({"pruning.py": "pruning.py was not found"}, False),
                    gradescope.could_not_grade("TimeoutExpired")):
        results["execution_time"] = 0
        check_results(results)
        assert results["score"] == 0


def test_upload_is_searched_nested_and_near_misses_are_named(tmp_path):
    upload = tmp_path / "submission"
    (upload / "lab5" / "src").mkdir(parents=True)
    (upload / "__MACOSX" / "lab5").mkdir(parents=True)
    (upload / "lab5" / "src" / "pruning.py").write_text("x = 1\n")
    (upload / "__MACOSX" / "lab5" / "pruning.py").write_text("junk\n")
    (upload / "lab5" / "Quantization (1).py").write_text("x = 2\n")
    (upload / "distillation.py").write_text("a = 1\n")
    (upload / "old").mkdir()
    (upload / "old" / "distillation.py").write_text("a = 2\n")
    (upload / "lab5" / "model compression and pruning.ipynb").write_text("{}")
    os.mkfifo(upload / "lab5" / "src" / "fifo.py")
    found, problems, notebook = gradescope.collect_upload(upload)
    assert found == {"pruning.py": b"x = 1\n"} and notebook
    assert "rename it to quantization.py" in problems["quantization.py"]
    assert "'lab5/Quantization (1).py'" in problems["quantization.py"]
    assert "2 different copies" in problems["distillation.py"] and "'old/distillation.py'" in problems["distillation.py"]


def test_links_and_special_files_are_not_read(tmp_path):
    upload = tmp_path / "submission"
    upload.mkdir()
    (upload / "quantization.py").symlink_to("/etc/passwd")
    os.mkfifo(upload / "pruning.py")
    found, problems, _ = gradescope.collect_upload(upload)
    assert found == {}
    assert "not a regular file" in problems["quantization.py"] and "not a regular file" in problems["pruning.py"]


def test_precheck_names_encoding_and_syntax_errors_with_their_place():
    assert gradescope.precheck("pruning.py", b"x = 1\n") == ""
    latin = gradescope.precheck("pruning.py", "x = 1\ny = 'Jos\xe9'\n".encode("latin-1"))
    assert "not UTF-8" in latin and "line 2, column 9" in latin and "0xe9" in latin
    syntax = gradescope.precheck("pruning.py", b"x = 1\ndef oops(:\n")
    assert "syntax error at line 2" in syntax and "upload again" in syntax
    assert gradescope.precheck("pruning.py", "# -*- coding: latin-1 -*-\ns = 'Jos\xe9'\n".encode("latin-1")) == ""


def test_results_file_replaces_a_planted_link_without_following_it(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.json").symlink_to(target)
    gradescope.write_results(tmp_path / "results" / "results.json", {"score": 1.0})
    assert target.read_text() == "precious"
    assert json.loads((tmp_path / "results" / "results.json").read_text()) == {"score": 1.0}
    assert not (tmp_path / "results" / "results.json").is_symlink()


def git_and_build_outputs(folder, names):
    """``shutil.copytree``'s ``ignore``: ``.git`` and what running things made, such as the
    virtual environment inside a clone (a gigabyte of torch), whatever its name."""
    return [name for name in names if name == ".git" or is_build_output(Path(folder) / name)]


def test_autograder_zip_holds_the_scripts_and_the_instructor_tree(tmp_path):
    zip_path = tmp_path / "autograder.zip"
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=git_and_build_outputs)
    (tree / "tests" / "lms-test-env").mkdir()  # a virtual environment of any name stays out
    (tree / "tests" / "lms-test-env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tree / "grades").mkdir(exist_ok=True)
    (tree / "grades" / "alice.json").write_text("{}")
    gradescope.build(zip_path, root=tree)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert archive.read("quantization.py") == (ROOT / "quantization.py").read_bytes()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        setup = archive.read("setup.sh").decode()
        run = archive.read("run_autograder").decode()
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    for name in ("tests/hidden/test_fresh_inputs.py", "tools/grade.py", "tools/gradescope.py",
                 "tools/autograde_plugin.py", "requirements.txt", *DELIVERABLES):
        assert name in names, name
    assert "BEGIN SOLUTION" in (ROOT / "quantization.py").read_text(), "the reference, for calibration"
    assert not [n for n in names if n.startswith((".git/", "grades/", "tests/lms-test-env")) or "__pycache__" in n]
    assert "download.pytorch.org/whl/cpu" in setup and "requirements.txt" in setup
    assert "bubblewrap" in setup and "useradd" in setup and gradescope.GRADER_USER in setup
    assert "GRADESCOPE_ROOT" in run and "gradescope.py\" run" in run
    for script in (setup, run):
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_new_tools_parse_on_gradescopes_python_3_10():
    import ast
    grader = [path.relative_to(ROOT / "tools") for path in (ROOT / "tools" / "grading").glob("*.py")]
    for name in ("gradescope.py", "lms_exports.py", "feedback.py", "grade.py", *grader):
        ast.parse((ROOT / "tools" / name).read_text(), feature_version=(3, 10))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (as on Gradescope) to run as the grader's uid")
def test_every_process_the_grader_uid_left_is_killed():
    uid = gradescope.FALLBACK_UID
    assert gradescope.processes_of(uid) == [], "another run of this test is going on"
    subprocess.run(["sh", "-c", "(sleep 300 &) ; (setsid sleep 300 &) ; sleep 300 &"], user=uid, group=uid,
                   extra_groups=[], timeout=30, cwd="/")
    assert len(gradescope.processes_of(uid)) >= 3
    assert gradescope.kill_processes_of(uid, uid) >= 3
    assert gradescope.processes_of(uid) == []


def test_release_leaves_out_docs_and_the_lms_tools(tmp_path):
    from release import write_release
    assert {"docs", "tools/gradescope.py", "tools/lms_exports.py", "tools/feedback.py"} <= set(INSTRUCTOR_ONLY)
    out = tmp_path / "release"
    write_release(out, points={e.marker: 10.0 for e in EXERCISES})
    assert (ROOT / "docs" / "lms.md").exists()
    assert not (out / "docs").exists()
    for name in ("gradescope.py", "lms_exports.py", "feedback.py"):
        assert not (out / "tools" / name).exists()
    result = subprocess.run([sys.executable, "tools/grade.py", "--help"], cwd=out, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--self" in result.stdout and "--canvas" not in result.stdout


# ---------------------------------------------------------------------------------------------
# End to end (slow): run_autograder from the zip; grade.py with every LMS option
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    """The zip built and unpacked as Gradescope does (``ROOT/source``); returns a function that
    grades one upload in a fresh root and returns ``(results, root, stdout)``."""
    zip_path = tmp_path_factory.mktemp("zip") / "autograder.zip"
    gradescope.build(zip_path)
    source = tmp_path_factory.mktemp("gradescope") / "source"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(source)
    for script in ("run_autograder", "setup.sh"):
        (source / script).chmod(0o755)

    def run(upload, seconds=900, root=None):
        root = root or Path(tempfile.mkdtemp(prefix="gs-root-", dir=tmp_path_factory.getbasetemp()))
        (root / "source").symlink_to(source)
        shutil.copytree(upload, root / "submission")
        env = {**os.environ, "GRADESCOPE_ROOT": str(root), "LAB5_PYTHON": sys.executable,
               # the grader's own uid cannot reach this machine's Python under /root: grade as
               # this user, which run_grader allows only with bubblewrap
               "LAB5_GRADER_UID": "same"}
        result = subprocess.run([str(source / "run_autograder")], env=env, capture_output=True, text=True,
                                timeout=seconds)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        results = json.loads((root / "results" / "results.json").read_text())
        check_results(results)
        return results, root, result.stdout
    return run


def test_run_autograder_with_nothing_to_grade(autograder, tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "model compression and pruning.ipynb").write_text("{}")
    (upload / "pruning (2).py").write_text("x = 1\n")
    results, _, stdout = autograder(upload, seconds=120)
    assert results["score"] == 0 and "Nothing to grade" in results["output"]
    assert "rename it to pruning.py" in results["output"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_autograder_gives_a_nested_solution_full_marks(autograder, tmp_path):
    upload = tmp_path / "upload" / "Lab5 final" / "src"
    upload.mkdir(parents=True)
    for name in DELIVERABLES:
        shutil.copyfile(ROOT / name, upload / name)
    shutil.copyfile(ROOT / "model compression and pruning.ipynb", upload.parent / "model compression and pruning.ipynb")
    results, _, stdout = autograder(tmp_path / "upload")
    maximum = sum(t["max_score"] for t in results["tests"])
    assert maximum > 0 and results["score"] == pytest.approx(maximum, abs=1e-3)
    assert {t["visibility"] for t in results["tests"] if "(hidden" in t["name"]} == {"after_published"}
    assert {t["visibility"] for t in results["tests"] if "(hidden" not in t["name"]} == {"visible"}
    assert "sandbox: bwrap" in stdout and "flags: none" in stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_autograder_gives_the_stubs_zero_with_the_task_to_write(autograder, tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    for name in DELIVERABLES:
        (upload / name).write_text(strip_python_solutions((ROOT / name).read_text(), name)[0])
    results, _, _ = autograder(upload)
    assert results["score"] == 0 and results["tests"]
    graded = [t for t in results["tests"] if t["visibility"] == "visible" and t["max_score"] > 0]
    assert graded and all(t["output"] for t in graded)
    # Each names the task to write, but for a few that crash before reaching the stub (a CPython 3.11
    # "SystemError: AST constructor recursion depth mismatch" in some property tests, seen here).
    other = [f'{t["name"]}: {t["output"][:80]}' for t in graded if "NotImplementedError: Exercise" not in t["output"]]
    assert len(other) <= 0.1 * len(graded), other
    assert "What to fix first: Start with Exercise 1.1" in results["output"]


HOSTILE_PREFIX = '''
import os as _os, time as _time
def _forge(path):
    try:
        with open(path, "w") as stream:
            stream.write('{"score": 1000, "tests": []}')
    except OSError:
        pass
_forge(RESULTS_PATH)
if _os.fork() == 0:  # a daemon that keeps trying after the run
    _os.setsid()
    for _ in range(60):
        _forge(RESULTS_PATH)
        _time.sleep(0.5)
    _os._exit(0)
'''


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_autograder_on_broken_and_hostile_files(autograder, tmp_path):
    """A syntax error, a file that is not UTF-8, and a quantization.py that tries to write
    results.json (now and from a daemon, later): results.json says what to fix, and stays as
    the grader wrote it."""
    upload = tmp_path / "upload"
    upload.mkdir()
    root = Path(tempfile.mkdtemp(prefix="gs-root-hostile-", dir=tmp_path))
    hostile = HOSTILE_PREFIX.replace("RESULTS_PATH", repr(str(root / "results" / "results.json")))
    (upload / "quantization.py").write_text(hostile + (ROOT / "quantization.py").read_text())
    (upload / "pruning.py").write_text((ROOT / "pruning.py").read_text() + "\ndef oops(:\n")
    (upload / "distillation.py").write_bytes("AUTHOR = 'Jos\xe9'\n".encode("latin-1") + (ROOT / "distillation.py").read_bytes())
    results, _, _ = autograder(upload, root=root)
    written = (root / "results" / "results.json").read_bytes()
    assert "pruning.py has a syntax error at line" in results["output"]
    assert "distillation.py is not UTF-8 text (byte 0xe9 at line 1" in results["output"]
    by_exercise = {}
    for test in results["tests"]:
        by_exercise.setdefault(test["name"].split(":")[0].split(" (")[0], []).append(test)
    assert sum(t["score"] for t in by_exercise["Exercise 1"]) == sum(t["max_score"] for t in by_exercise["Exercise 1"])
    assert sum(t["score"] for t in by_exercise["Exercise 2"] + by_exercise["Exercise 3"]) == 0
    assert all("syntax error" in t["output"] for t in by_exercise["Exercise 2"])
    time.sleep(5)
    assert (root / "results" / "results.json").read_bytes() == written
    assert b'"score": 1000' not in written


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grade_py_writes_canvas_moodle_and_feedback(tmp_path):
    subs = tmp_path / "subs"
    for name, stubbed in (("alice", False), ("lab5-bob", True)):
        (subs / name).mkdir(parents=True)
        for deliverable in DELIVERABLES:
            source = (ROOT / deliverable).read_text()
            (subs / name / deliverable).write_text(strip_python_solutions(source, deliverable)[0] if stubbed else source)
    (tmp_path / "gradebook.csv").write_text(GRADEBOOK)
    (tmp_path / "roster.csv").write_text("submission,student\nalice,Alice\nlab5-bob,102\n")
    out = tmp_path / "grades"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "grade.py"), str(subs / "alice"),
                             str(subs / "lab5-bob"), "--out", str(out), "--jobs", "1", "--no-progress",
                             "--canvas", str(tmp_path / "gradebook.csv"), "--assignment", "Lab 5",
                             "--roster", str(tmp_path / "roster.csv"), "--moodle", "--scale", "50",
                             "--feedback"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_csv(out / "canvas_import.csv")
    assert [r[-1] for r in rows[2:]] == ["50", "0", "5"]
    assert read_csv(out / "moodle_import.csv") == [["identifier", "Lab 5"], ["Alice", "50"], ["102", "0"]]
    bob = (out / "feedback" / "lab5-bob.md").read_text()
    assert "Start with Exercise 1.1" in bob and "NotImplementedError: Exercise 2.1" in bob
    assert "Every test passed." in (out / "feedback" / "alice.md").read_text()
    report = json.loads((out / "lab5-bob.json").read_text())
    for seeds in report["fresh_seeds"].values():
        assert not [s for s in seeds if str(s) in bob]
    assert not [line for line in hidden_test_lines() if line in bob]
