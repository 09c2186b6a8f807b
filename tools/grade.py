"""Grade student submissions with the instructor's tests.

    python tools/grade.py SUBMISSION [SUBMISSION ...] [--out grades/] [--jobs N]

A submission is a folder holding the student's deliverables (``DELIVERABLES``); anything else in
it (their tests, conftest.py, pytest.ini, ...) is ignored. For each submission the grader:

1. makes a fresh copy of the instructor tree (hidden tests included) in which the deliverables
   are the *stubs* of the student release, then copies the student's deliverables over them (so a
   missing file scores 0, and the reference solution can never leak into a grade);
2. runs pytest once per exercise, in its own subprocess, with a per-test timeout and a total
   timeout, so an import error, a hang or a crash in one exercise costs that exercise only;
3. takes the outcome of every expected test from records the plugin signs with a per-run secret
   and sends through a pipe this process opened (student code can neither find nor forge them),
   scores each test by its ``points`` marker (a test that never reported scores 0), and scores
   0 an exercise whose run changed any file of the instructor tree (reported as tampering).

Submissions are graded in parallel (``--jobs``, one per core by default); each report is written
as soon as it is done, the CSV is rebuilt from every report in OUT, and a submission whose
deliverables and instructor tree are unchanged since its report is skipped (``--regrade``).
``--self --exercise EX`` grades the tree it lives in, as is (the GitHub Classroom workflow).

The maximum for each exercise is what the reference solution earns on this machine (measured
first, once: "calibration"), so tests that skip here (e.g. missing offline data) count for nobody.

Output: a table of points per exercise on stdout, ``OUT/<submission>.json`` (per test: name,
exercise, points, outcome, short message) and ``OUT/grades.csv`` (one row per submission).
"""
import argparse
import base64
import csv
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
from given.manifest import BUILD_OUTPUTS, DELIVERABLE_OF, DELIVERABLES, PROJECT_ROOT  # noqa: E402
from solution_markers import strip_python_solutions  # noqa: E402

EXERCISES = DELIVERABLE_OF  # exercise marker -> the file it grades
NOT_COPIED = (".git", *BUILD_OUTPUTS)
GiB = 2 ** 30
OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}  # duplicates: the worse wins


# ----------------------------------------------------------------------------------------------
# Trees
# ----------------------------------------------------------------------------------------------

def copy_instructor_tree(destination, stub_deliverables, source=PROJECT_ROOT):
    """Copy the instructor tree to ``destination``; with ``stub_deliverables`` the deliverables
    become the student-release stubs."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*NOT_COPIED))
    if stub_deliverables:
        for name in DELIVERABLES:
            path = destination / name
            if path.exists():
                path.write_text(strip_python_solutions(path.read_text(), name)[0])


def file_digests(tree, skip=()):
    """``{relative path: sha256}`` of every file under ``tree`` except the names in ``skip``."""
    digests = {}
    for path in sorted(Path(tree).rglob("*")):
        relative = path.relative_to(tree).as_posix()
        if relative in skip or path.is_dir():
            continue
        digests[relative] = (hashlib.sha256(path.read_bytes()).hexdigest()
                             if path.is_file() and not path.is_symlink() else "not a file")
    return digests


def digest_of(digests, *extra):
    """One hash for a ``file_digests`` mapping (and any extra strings, e.g. options)."""
    return hashlib.sha256(json.dumps([digests, *extra], sort_keys=True).encode()).hexdigest()


def tampered_files(before, after):
    """Files of the instructor tree that a run added, changed or removed."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


# ----------------------------------------------------------------------------------------------
# One pytest run, in its own process group, reporting through a signed pipe
# ----------------------------------------------------------------------------------------------

def _pytest_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOGRADE_", "PYTEST_", "PYTHONPATH"))}
    env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1",
               CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""))
    return env


def _pytest_command(args, per_test_timeout):
    return [sys.executable, "-m", "pytest", "-p", "autograde_plugin", "-p", "no:cacheprovider",
            "-q", "--no-header", "-o", f"timeout={per_test_timeout}", "--timeout-method=signal",
            *args]


def _read_all(fd, chunks):
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        pass


def verified_records(data, secret):
    """The records of ``data`` (JSON lines) whose MAC checks out with ``secret``; others dropped."""
    records = []
    for line in data.decode(errors="replace").splitlines():
        try:
            envelope = json.loads(line)
            body, mac = envelope["body"], envelope["mac"]
            expected = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(mac, expected):
                records.append(json.loads(body))
        except (ValueError, KeyError, TypeError):  # a line cut short by a crash, or forged
            pass
    return records


def cpu_seconds_limit(total_timeout):
    """CPU seconds after which the kernel ends a test process: a backstop for one that outlives
    its grader or escapes its process group. All cores busy for the whole total timeout, plus a
    minute, so that it never cuts a run the total timeout would have allowed."""
    return int(total_timeout * (os.cpu_count() or 1) + 60)


def run_pytest(args, tree, options, mode="run"):
    """Run pytest with the plugin in ``tree``, in a new process group killed after the total
    timeout. The plugin reports through a pipe this process opened, signing each record with a
    secret it reads from a second pipe at start-up (before any student code is imported).

    Returns ``(return code or None if it timed out, seconds, output tail, verified records)``.
    """
    secret = secrets.token_bytes(32)
    report_read, report_write = os.pipe()
    secret_read, secret_write = os.pipe()
    os.write(secret_write, secret)
    os.close(secret_write)
    env = _pytest_env()
    env.update(PYTHONPATH=str(tree / "tools"), AUTOGRADE_MODE=mode,
               AUTOGRADE_REPORT_FD=str(report_write), AUTOGRADE_SECRET_FD=str(secret_read),
               AUTOGRADE_MEMORY_LIMIT=str(int(options.memory_limit * GiB)),
               AUTOGRADE_CPU_LIMIT=str(cpu_seconds_limit(options.total_timeout)),
               AUTOGRADE_DIE_WITH_PARENT="1")
    chunks = []
    start = time.monotonic()
    try:
        process = subprocess.Popen(_pytest_command(args, options.per_test_timeout), cwd=tree, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   pass_fds=(report_write, secret_read))
    finally:
        os.close(report_write)
        os.close(secret_read)
    reader = threading.Thread(target=_read_all, args=(report_read, chunks), daemon=True)
    reader.start()
    code, output = _wait(process, options.total_timeout)
    reader.join(timeout=10)
    os.close(report_read)
    seconds = time.monotonic() - start
    return code, seconds, output.decode(errors="replace")[-2000:], verified_records(b"".join(chunks), secret)


def _wait(process, timeout):
    """Wait for ``process``; then kill its whole group (stragglers included). ``None`` = timed out."""
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        output, code = b"", None
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if code is None:
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process that left the group still holds stdout
            process.kill()
            output = b""
    return code, output or b""


def collect_tests(tree, options):
    """The graded tests of ``tree``: a list of ``{nodeid, exercise, points, file}``."""
    code, _, output, records = run_pytest(["--collect-only", *options.pytest_args], tree, options,
                                          mode="collect")
    tests = [t for t in records if t.get("exercise") in EXERCISES]
    if code not in (0, 5) or not tests:
        raise SystemExit(f"could not collect the instructor tests in {tree}:\n{output}")
    return tests


def results_from_records(records):
    """``{nodeid: (outcome, message)}``; a test reported twice keeps its worse outcome."""
    results = {}
    for record in records:
        if "nodeid" in record and record.get("outcome") in OUTCOME_RANK:
            previous = results.get(record["nodeid"])
            if previous is None or OUTCOME_RANK[record["outcome"]] > OUTCOME_RANK[previous[0]]:
                results[record["nodeid"]] = (record["outcome"], str(record.get("message", "")))
    return results


def run_exercise(tree, exercise, tests, options):
    """Run one exercise's tests in ``tree``; return ``{nodeid: (outcome, message)}`` and notes."""
    files = sorted({t["file"] for t in tests})
    code, seconds, output, records = run_pytest(
        [*files, "-m", exercise, "--continue-on-collection-errors", *options.pytest_args], tree, options)
    results = results_from_records(records)
    collect_errors = [r["message"] for r in records if "collect_error" in r]
    if code is None:
        note = f"stopped after the total timeout of {options.total_timeout:g} s"
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

def grade_exercise(base_tree, deliverables, exercise, tests, options):
    """Grade one exercise in a fresh copy of ``base_tree`` with ``deliverables`` copied over it.

    Any file of the instructor tree that the run adds, changes or removes is tampering: it is
    reported and the exercise scores 0 (student code could have rewritten a test collected later).
    """
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(base_tree, tree)
        for name, source in deliverables.items():
            shutil.copyfile(source, tree / name)
        before = file_digests(tree, skip=DELIVERABLES)
        results, info = run_exercise(tree, exercise, tests, options)
        info["tampered"] = tampered_files(before, file_digests(tree, skip=DELIVERABLES))
    if info["tampered"]:
        info["note"] = "the instructor tree was modified, the exercise scores 0: " + \
            ", ".join(info["tampered"][:5])
    rows = []
    for test in tests:
        outcome, message = results.get(test["nodeid"], ("not run", info["fallback"]))
        if outcome == "not run" and info["note"]:
            outcome = "timeout" if "timeout" in info["note"] else "crashed"
        earned = test["points"] if outcome == "passed" and not info["tampered"] else 0.0
        rows.append({"name": test["nodeid"], "exercise": exercise, "points": test["points"],
                     "earned": earned, "outcome": outcome, "message": message})
    missing = sum(row["outcome"] in ("not run", "crashed", "timeout") for row in rows)
    if missing and not info["note"]:
        info["note"] = f"{missing} tests never reported a result (the test process ended early)"
    return rows, info


def not_submitted(exercise, tests):
    """Rows and note of an exercise whose file is missing from the submission: 0, without a run."""
    message = f"{EXERCISES[exercise]} was not submitted"
    rows = [{"name": t["nodeid"], "exercise": exercise, "points": t["points"], "earned": 0.0,
             "outcome": "missing", "message": message} for t in tests]
    return rows, {"seconds": 0.0, "note": message, "tampered": []}


def grade_tree(base_tree, deliverables, expected, options, skip_missing=False):
    """Grade every exercise of ``expected``; return the per-test rows and per-exercise notes.

    With ``skip_missing``, an exercise whose file is not among ``deliverables`` scores 0 without
    running its tests (they could only fail on the stub in ``base_tree``).
    """
    rows, notes = [], {}
    for exercise in sorted({t["exercise"] for t in expected}):
        tests = [t for t in expected if t["exercise"] == exercise]
        if skip_missing and EXERCISES[exercise] not in deliverables:
            exercise_rows, notes[exercise] = not_submitted(exercise, tests)
        else:
            exercise_rows, notes[exercise] = grade_exercise(base_tree, deliverables, exercise,
                                                            tests, options)
        rows += exercise_rows
    return rows, notes


class Calibration:
    """What every submission is graded against, measured once per run.

    ``stub_tree``: the instructor tree with the deliverables stubbed (each submission's copies
    start from it); ``expected``: the tests the reference solution passes here, with points;
    ``tree_hash``: a hash of the stub tree (tests and given code) and of the grading options, so
    a re-run can tell whether an old report is still valid.
    """

    def __init__(self, options, workdir, source=PROJECT_ROOT):
        reference = workdir / "reference"
        copy_instructor_tree(reference, stub_deliverables=False, source=source)
        all_tests = collect_tests(reference, options)
        reference_files = {name: reference / name for name in DELIVERABLES if (reference / name).exists()}
        self.stub_tree = workdir / "stubs"
        copy_instructor_tree(self.stub_tree, stub_deliverables=True, source=reference)
        rows, _ = grade_tree(self.stub_tree, reference_files, all_tests, options)
        self.expected = _passed_by_reference(all_tests, rows)
        self.exercises = sorted({t["exercise"] for t in self.expected})
        self.tree_hash = digest_of(file_digests(self.stub_tree), options.pytest_args)

    def points(self):
        """Maximum points per exercise."""
        return {e: sum(t["points"] for t in self.expected if t["exercise"] == e) for e in self.exercises}


def _passed_by_reference(tests, rows):
    failing = [r for r in rows if r["outcome"] not in ("passed", "skipped")]
    if failing:
        names = "\n  ".join(f'{r["name"]}: {r["outcome"]} {r["message"][:200]}' for r in failing)
        raise SystemExit(f"the reference solution fails {len(failing)} tests; fix the instructor "
                         f"tree before grading:\n  {names}")
    skipped = [r["name"] for r in rows if r["outcome"] == "skipped"]
    if skipped:
        print(f"note: {len(skipped)} tests skip on this machine and are not graded "
              f"(e.g. {skipped[0]})", file=sys.stderr)
    passed = {r["name"] for r in rows if r["outcome"] == "passed"}
    return [t for t in tests if t["nodeid"] in passed]


def deliverables_of(submission):
    """``{name: path}`` of the deliverables a submission folder holds (regular files only)."""
    return {name: submission / name for name in DELIVERABLES
            if (submission / name).is_file() and not (submission / name).is_symlink()}


def deliverables_hash(deliverables):
    return digest_of({name: hashlib.sha256(path.read_bytes()).hexdigest()
                      for name, path in deliverables.items()})


def grade_submission(submission, calibration, options):
    """Grade one submission folder; return its report (a JSON-able dict)."""
    submission = Path(submission).resolve()
    deliverables = deliverables_of(submission)
    start = time.monotonic()
    rows, notes = grade_tree(calibration.stub_tree, deliverables, calibration.expected, options,
                             skip_missing=True)
    return make_report(submission.name, rows, notes, calibration.exercises, {
        "deliverables_found": sorted(deliverables),
        "deliverables_hash": deliverables_hash(deliverables),
        "instructor_hash": calibration.tree_hash,
        "wall_seconds": round(time.monotonic() - start, 2)})


def make_report(name, rows, notes, exercises, extra=None):
    return {
        "submission": name,
        **(extra or {}),
        "points": {e: sum(r["earned"] for r in rows if r["exercise"] == e) for e in exercises},
        "max_points": {e: sum(r["points"] for r in rows if r["exercise"] == e) for e in exercises},
        "total": sum(r["earned"] for r in rows),
        "max_total": sum(r["points"] for r in rows),
        "notes": {e: n["note"] for e, n in notes.items() if n["note"]},
        "tampered": {e: n["tampered"] for e, n in notes.items() if n.get("tampered")},
        "seconds": {e: n["seconds"] for e, n in notes.items()},
        "tests": rows,
    }


def is_up_to_date(report_path, submission, calibration):
    """Whether ``report_path`` graded exactly these deliverables against this instructor tree."""
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return False
    return (report.get("instructor_hash") == calibration.tree_hash
            and report.get("deliverables_hash") == deliverables_hash(deliverables_of(submission.resolve())))


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
        cells = [f'{_fmt(report["points"].get(e, 0))}/{_fmt(report["max_points"].get(e, 0))}'
                 for e in exercises]
        cells.append(f'{_fmt(report["total"])}/{_fmt(report["max_total"])}')
        print(f'{report["submission"]:<{width}}  ' + "  ".join(f"{c:>16}" for c in cells), file=stream)
        for exercise, note in report["notes"].items():
            print(f"{'':<{width}}  ! {exercise}: {note}", file=stream)


def print_summary(reports, exercises, stream=sys.stdout, slowest=5):
    """Count, mean and distribution (min, quartiles, max) of points per exercise; slowest runs."""
    print(f"\n{len(reports)} submissions", file=stream)
    for exercise in [*exercises, "total"]:
        scores = sorted(r["total"] if exercise == "total" else r["points"].get(exercise, 0)
                        for r in reports)
        if not scores:
            continue
        quartiles = statistics.quantiles(scores, n=4, method="inclusive") if len(scores) > 1 else scores * 3
        print(f"  {exercise:<18} mean {statistics.mean(scores):6.2f}   min {_fmt(scores[0])}  "
              f"q1 {_fmt(quartiles[0])}  median {_fmt(quartiles[1])}  q3 {_fmt(quartiles[2])}  "
              f"max {_fmt(scores[-1])}", file=stream)
    timed = sorted(reports, key=lambda r: -r.get("wall_seconds", sum(r["seconds"].values())))
    print("  slowest: " + ", ".join(f'{r["submission"]} ({r.get("wall_seconds", 0):.0f} s)'
                                    for r in timed[:slowest]), file=stream)


def load_reports(out):
    """Every submission report in ``out`` (the CSV is rebuilt from these, so nothing is lost)."""
    reports = []
    for path in sorted(out.glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(report, dict) and "submission" in report:
            reports.append(report)
    return sorted(reports, key=lambda r: r["submission"])


def write_csv(reports, exercises, path):
    """One row per submission, sorted by name; written to a temporary file, then renamed."""
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["submission", *exercises, "total", "max_total"])
        for report in sorted(reports, key=lambda r: r["submission"]):
            writer.writerow([report["submission"],
                             *(_fmt(report["points"].get(e, 0)) for e in exercises),
                             _fmt(report["total"]), _fmt(report["max_total"])])
    partial.replace(path)


def write_json(report, path):
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(path)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description="Grade lab submissions with the instructor tests.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="*", type=Path,
                        help="submission folders (each holding the student's deliverables)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "grades",
                        help="folder for the JSON reports and grades.csv (default: grades/)")
    parser.add_argument("--per-test-timeout", type=float, default=20.0,
                        help="seconds one test may run before it fails (default 20; the "
                             "reference solution's slowest test takes about 1 s)")
    parser.add_argument("--total-timeout", type=float, default=300.0,
                        help="seconds one exercise's whole run may take (default 300)")
    parser.add_argument("--memory-limit", type=float, default=8.0,
                        help="GiB of address space each test process may use (default 8)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="submissions graded in parallel (default: one per core)")
    parser.add_argument("--regrade", action="store_true",
                        help="grade again submissions whose report is up to date")
    parser.add_argument("--run-slow", action="store_true", help="also grade tests marked slow")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--self", dest="self_mode", action="store_true",
                        help="grade this tree as it is (GitHub Classroom), without calibration")
    parser.add_argument("--exercise", choices=sorted(EXERCISES),
                        help="with --self: the one exercise to grade")
    parser.add_argument("--max-score", type=float,
                        help="with --self: the exercise's maximum in the Classroom report")
    parser.add_argument("--classroom-output", type=Path,
                        help="with --self: append 'result=<base64 JSON>' for GitHub Classroom's "
                             "reporter to this file (the step's $GITHUB_OUTPUT)")
    return parser


def default_options(**overrides):
    """The command line's defaults as an options object (for other tools, e.g. the release)."""
    options = build_parser().parse_args([])
    options.pytest_args = []
    vars(options).update(overrides)
    return options


def parse_args(argv):
    parser = build_parser()
    options = parser.parse_args(argv)
    options.pytest_args = ["--run-slow"] if options.run_slow else []
    if options.self_mode:
        if not options.exercise:
            parser.error("--self needs --exercise")
        return options
    if not options.submissions:
        parser.error("give at least one submission folder (or --self)")
    names = [s.resolve().name for s in options.submissions]
    for submission in options.submissions:
        if not submission.is_dir():
            parser.error(f"{submission} is not a folder")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        parser.error(f"several submissions share a name (reports would collide): {duplicates}")
    return options


def grade_all(options, calibration):
    """Grade the submissions in parallel; each report is written as soon as it is done."""
    from tqdm import tqdm
    to_grade = [s for s in options.submissions if options.regrade or not is_up_to_date(
        options.out / f"{s.resolve().name}.json", s, calibration)]
    skipped = len(options.submissions) - len(to_grade)
    if skipped:
        print(f"{skipped} submissions unchanged since their report: not graded again "
              "(--regrade to force)", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool, \
            tqdm(total=len(to_grade), unit="submission", disable=options.no_progress) as progress:
        futures = {pool.submit(grade_submission, s, calibration, options): s for s in to_grade}
        for future in as_completed(futures):
            report = future.result()
            write_json(report, options.out / f'{report["submission"]}.json')
            progress.set_postfix_str(f'{report["submission"]}: {_fmt(report["total"])}')
            progress.update()


def grade_self(options):
    """Grade this tree as it is, one exercise, for GitHub Classroom; always exits 0."""
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        base = Path(tmp) / "base"
        copy_instructor_tree(base, stub_deliverables=False)
        tests = [t for t in collect_tests(base, options) if t["exercise"] == options.exercise]
        rows, notes = grade_tree(base, {}, tests, options) if tests else ([], {})
    report = make_report(PROJECT_ROOT.name, rows, notes, [options.exercise])
    maximum = options.max_score if options.max_score is not None else report["max_total"]
    score = min(report["total"], maximum)
    print_table([report], [options.exercise])
    for row in rows:
        if row["outcome"] != "passed":
            print(f'  {row["outcome"]:>8}  {row["name"]}: {row["message"][:300]}')
    print(f"Points {_fmt(score)}/{_fmt(maximum)}")
    if options.classroom_output:
        write_classroom_result(options.classroom_output, options.exercise, score, maximum, rows)
    return 0


def write_classroom_result(path, exercise, score, maximum, rows):
    """Append the step output that classroom-resources/autograding-grading-reporter reads:
    ``result`` = base64 of ``{version, status, max_score, tests: [{name, status, score, ...}]}``."""
    failed = [r for r in rows if r["outcome"] != "passed"]
    result = {"version": 1, "status": "fail" if failed or not rows else "pass", "max_score": maximum,
              "tests": [{"name": exercise, "status": "fail" if failed or not rows else "pass",
                         "score": score, "message": "; ".join(
                             f'{r["name"]}: {r["outcome"]}' for r in failed)[:2000],
                         "test_code": "", "filename": "", "line_no": 0, "duration": 0}]}
    encoded = base64.b64encode(json.dumps(result).encode()).decode()
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(f"result={encoded}\n")


def main(argv=None):
    options = parse_args(argv)
    if options.self_mode:
        return grade_self(options)
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autograde-calibration-") as workdir:
        calibration = Calibration(options, Path(workdir))
        grade_all(options, calibration)
    reports = load_reports(options.out)
    names = {s.resolve().name for s in options.submissions}
    print_table([r for r in reports if r["submission"] in names], calibration.exercises)
    print_summary([r for r in reports if r["submission"] in names], calibration.exercises)
    write_csv(reports, calibration.exercises, options.out / "grades.csv")
    print(f"\nreports: {options.out}/<submission>.json, {options.out / 'grades.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
