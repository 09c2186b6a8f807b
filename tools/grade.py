"""Grade student submissions with the instructor's tests.

    python tools/grade.py SUBMISSION [SUBMISSION ...] [--out grades/] [--jobs N]

A submission is a folder holding the student's deliverables (``DELIVERABLES``); anything else in
it (their tests, conftest.py, pytest.ini, ...) is ignored. For each submission the grader:

1. makes a fresh copy of the instructor tree (hidden tests included) in which the deliverables
   are the *stubs* of the student release, then copies the student's deliverables over them (so a
   missing file scores 0, and the reference solution can never leak into a grade);
2. runs pytest once per exercise, in its own subprocess, with a per-test timeout and a total
   timeout, so an import error, a hang or a crash in one exercise costs that exercise only;
3. reads the outcome of every expected test from a report the plugin writes as tests finish, and
   scores each test by its ``points`` marker: a test that never reported scores 0.

The maximum for each exercise is what the reference solution earns on this machine (measured
first, once: "calibration"), so tests that skip here (e.g. missing offline data) count for nobody.

Output: a table of points per exercise on stdout, ``OUT/<submission>.json`` (per test: name,
exercise, points, outcome, short message) and ``OUT/grades.csv`` (one row per submission).
"""
import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from solution_markers import strip_python_solutions

TOOLS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TOOLS_DIR.parent
EXERCISES = {"ex1_quantization": "quantization.py",
             "ex2_pruning": "pruning.py",
             "ex3_distillation": "distillation.py"}
DELIVERABLES = tuple(EXERCISES.values())
NOT_COPIED = (".git", "outputs", "grades", "release", "__pycache__", ".pytest_cache",
              ".ipynb_checkpoints", ".venv")


# ----------------------------------------------------------------------------------------------
# Trees and pytest runs
# ----------------------------------------------------------------------------------------------

def copy_instructor_tree(destination, stub_deliverables):
    """Copy the instructor tree to ``destination``; with ``stub_deliverables`` the deliverables
    become the student-release stubs."""
    shutil.copytree(PROJECT_ROOT, destination, ignore=shutil.ignore_patterns(*NOT_COPIED))
    if stub_deliverables:
        for name in DELIVERABLES:
            path = destination / name
            if path.exists():
                path.write_text(strip_python_solutions(path.read_text(), name)[0])


def _pytest_env(report_path=None, collect_path=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOGRADE_", "PYTEST_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(TOOLS_DIR), PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1",
               CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""))
    if report_path:
        env["AUTOGRADE_REPORT"] = str(report_path)
    if collect_path:
        env["AUTOGRADE_COLLECT"] = str(collect_path)
    return env


def _run(command, cwd, env, timeout):
    """Run ``command`` in its own process group; kill the whole group after ``timeout`` seconds.
    Returns ``(return_code or None if it timed out, seconds, output tail)``."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    return code, time.monotonic() - start, output.decode(errors="replace")[-2000:]


def _pytest_command(args, per_test_timeout):
    return [sys.executable, "-m", "pytest", "-p", "autograde_plugin", "-p", "no:cacheprovider",
            "-q", "--no-header", "-o", f"timeout={per_test_timeout}", "--timeout-method=signal",
            *args]


def _read_jsonl(path):
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            pass
    return records


def collect_tests(tree, extra_args=()):
    """The graded tests of ``tree``: a list of ``{nodeid, exercise, points, file}``."""
    with tempfile.TemporaryDirectory() as tmp:
        collect_path = Path(tmp) / "collected.jsonl"
        code, _, output = _run(_pytest_command(["--collect-only", *extra_args], 60), tree,
                               _pytest_env(collect_path=collect_path), timeout=300)
        tests = [t for t in _read_jsonl(collect_path) if t["exercise"] in EXERCISES]
    if code not in (0, 5) or not tests:
        raise SystemExit(f"could not collect the instructor tests in {tree}:\n{output}")
    return tests


def run_exercise(tree, exercise, tests, per_test_timeout, total_timeout, extra_args=()):
    """Run one exercise's tests in ``tree``; return ``{nodeid: (outcome, message)}`` and notes."""
    files = sorted({t["file"] for t in tests})
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.jsonl"
        code, seconds, output = _run(
            _pytest_command([*files, "-m", exercise, "--continue-on-collection-errors", *extra_args],
                            per_test_timeout),
            tree, _pytest_env(report_path=report_path), total_timeout)
        records = _read_jsonl(report_path)
    results = {r["nodeid"]: (r["outcome"], r["message"]) for r in records if "nodeid" in r}
    collect_errors = [r["message"] for r in records if "collect_error" in r]
    if code is None:
        note = f"stopped after the total timeout of {total_timeout:.0f} s"
    elif code not in (0, 1, 5) and not results:
        note = f"pytest ended with exit code {code} before reporting any test"
    elif code not in (0, 1, 5):
        note = f"the test process died (exit code {code})"
    else:
        note = ""
    fallback = collect_errors[0] if collect_errors else (note or output.strip()[-300:])
    return results, {"seconds": round(seconds, 2), "note": note, "fallback": fallback}


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------

def grade_tree(tree, expected, options):
    """Run every exercise of ``expected`` in ``tree``; return the per-test rows and per-exercise notes."""
    rows, notes = [], {}
    for exercise in sorted({t["exercise"] for t in expected}):
        tests = [t for t in expected if t["exercise"] == exercise]
        results, info = run_exercise(tree, exercise, tests, options.per_test_timeout,
                                     options.total_timeout, options.pytest_args)
        notes[exercise] = info
        for test in tests:
            outcome, message = results.get(test["nodeid"], ("not run", info["fallback"]))
            if outcome == "not run" and info["note"]:
                outcome = "timeout" if "timeout" in info["note"] else "crashed"
            earned = test["points"] if outcome == "passed" else 0.0
            rows.append({"name": test["nodeid"], "exercise": exercise, "points": test["points"],
                         "earned": earned, "outcome": outcome, "message": message})
    return rows, notes


def calibrate(options):
    """Grade the reference solution: the tests it passes here, with their points, are the maxima."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "reference"
        copy_instructor_tree(tree, stub_deliverables=False)
        expected = collect_tests(tree, options.pytest_args)
        rows, _ = grade_tree(tree, expected, options)
    failing = [r for r in rows if r["outcome"] not in ("passed", "skipped")]
    if failing:
        names = "\n  ".join(f'{r["name"]}: {r["outcome"]} {r["message"][:200]}' for r in failing)
        raise SystemExit(f"the reference solution fails {len(failing)} tests; fix the instructor "
                         f"tree before grading:\n  {names}")
    passed = {r["name"] for r in rows if r["outcome"] == "passed"}
    skipped = [r["name"] for r in rows if r["outcome"] == "skipped"]
    if skipped:
        print(f"note: {len(skipped)} tests skip on this machine and are not graded "
              f"(e.g. {skipped[0]})", file=sys.stderr)
    return [t for t in expected if t["nodeid"] in passed]


def grade_submission(submission, expected, options):
    """Grade one submission folder; return its report (a JSON-able dict)."""
    submission = Path(submission).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        copy_instructor_tree(tree, stub_deliverables=True)
        found = []
        for name in DELIVERABLES:
            source = submission / name
            if source.is_file() and not source.is_symlink():
                shutil.copyfile(source, tree / name)
                found.append(name)
        rows, notes = grade_tree(tree, expected, options)
    exercises = sorted({t["exercise"] for t in expected})
    return {
        "submission": submission.name,
        "deliverables_found": found,
        "points": {e: sum(r["earned"] for r in rows if r["exercise"] == e) for e in exercises},
        "max_points": {e: sum(r["points"] for r in rows if r["exercise"] == e) for e in exercises},
        "total": sum(r["earned"] for r in rows),
        "max_total": sum(r["points"] for r in rows),
        "notes": {e: n["note"] for e, n in notes.items() if n["note"]},
        "seconds": {e: n["seconds"] for e, n in notes.items()},
        "tests": rows,
    }


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------

def _fmt(x):
    return f"{round(x, 2):g}"


def print_table(reports, exercises, stream=sys.stdout):
    width = max([10] + [len(r["submission"]) for r in reports])
    columns = [*exercises, "total"]
    print(f'{"submission":<{width}}  ' + "  ".join(f"{c:>16}" for c in columns), file=stream)
    for report in reports:
        cells = [f'{_fmt(report["points"][e])}/{_fmt(report["max_points"][e])}' for e in exercises]
        cells.append(f'{_fmt(report["total"])}/{_fmt(report["max_total"])}')
        print(f'{report["submission"]:<{width}}  ' + "  ".join(f"{c:>16}" for c in cells), file=stream)
        for exercise, note in report["notes"].items():
            print(f"{'':<{width}}  ! {exercise}: {note}", file=stream)


def write_csv(reports, exercises, path):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["submission", *exercises, "total", "max_total"])
        for report in sorted(reports, key=lambda r: r["submission"]):
            writer.writerow([report["submission"], *(_fmt(report["points"][e]) for e in exercises),
                             _fmt(report["total"]), _fmt(report["max_total"])])


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Grade lab submissions with the instructor tests.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="+", type=Path,
                        help="submission folders (each holding the student's deliverables)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "grades",
                        help="folder for the JSON reports and grades.csv (default: grades/)")
    parser.add_argument("--per-test-timeout", type=float, default=20.0,
                        help="seconds one test may run before it fails (default 20; the "
                             "reference solution's slowest test takes about 1 s)")
    parser.add_argument("--total-timeout", type=float, default=300.0,
                        help="seconds one exercise's whole run may take (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    parser.add_argument("--run-slow", action="store_true", help="also grade tests marked slow")
    options = parser.parse_args(argv)
    options.pytest_args = ["--run-slow"] if options.run_slow else []
    for submission in options.submissions:
        if not submission.is_dir():
            parser.error(f"{submission} is not a folder")
    return options


def main(argv=None):
    options = parse_args(argv)
    expected = calibrate(options)
    exercises = sorted({t["exercise"] for t in expected})
    options.out.mkdir(parents=True, exist_ok=True)

    def grade_and_save(submission):
        report = grade_submission(submission, expected, options)
        (options.out / f'{report["submission"]}.json').write_text(json.dumps(report, indent=2))
        return report

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        reports = list(pool.map(grade_and_save, options.submissions))
    print_table(reports, exercises)
    write_csv(reports, exercises, options.out / "grades.csv")
    print(f"\nreports: {options.out}/<submission>.json, {options.out / 'grades.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
