"""The command line of ``tools/grade.py``: options, grading every submission in parallel, ``--self``.

Trusts the instructor who runs it (its options, the instructor tree); runs every submission
through ``submissions`` and writes only to ``--out`` (reports signed as they are done, the CSV
rebuilt from them). Checks at the end that grading left the instructor tree as it found it.
"""
import argparse
import base64
import json
import os
import resource
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import grading
from given.manifest import DELIVERABLE_OF, PROJECT_ROOT
from grading.limits import KILL_GRACE, GiB, MiB
from grading.pytest_run import collect_tests
from grading.reports import (_fmt, load_reports, make_report, print_summary, print_table, sign_report, write_csv,
                             write_json)
from grading.sandbox import sandbox_kind
from grading.scoring import Calibration, grade_tree
from grading.submissions import error_report, grade_submission, is_up_to_date, read_deliverables
from grading.trees import NOT_COPIED, copy_instructor_tree, escaped_name, file_digests, tampered_files

try:  # instructor-only (not in the student release): Canvas / Moodle imports, feedback pages
    import lms_exports
except ImportError:
    lms_exports = None


def available_memory():
    """Bytes of RAM available now (``MemAvailable``), or ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_jobs(memory_limit_gib):
    """One job per core, but no more than the available RAM holds at ``memory_limit_gib`` each."""
    cores = os.cpu_count() or 1
    memory = available_memory()
    if memory is None:
        return cores
    return max(1, min(cores, int(memory // (memory_limit_gib * GiB))))


def build_parser():
    parser = argparse.ArgumentParser(description="Grade lab submissions with the instructor tests.",
                                     epilog=grading.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="*", type=Path,
                        help="submission folders (each holding the student's deliverables)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "grades",
                        help="folder for the JSON reports and grades.csv (default: grades/)")
    parser.add_argument("--per-test-timeout", type=float, default=20.0,
                        help="seconds one test may run before it fails (default 20; the "
                             "reference solution's slowest test takes about 1 s); a test still "
                             f"running at 1.5 times it plus {KILL_GRACE:g} s is killed from outside")
    parser.add_argument("--total-timeout", type=float, default=300.0,
                        help="seconds one exercise's runs may take in all (default 300)")
    parser.add_argument("--memory-limit", type=float, default=8.0,
                        help="GiB of address space each test process may use (default 8)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="submissions graded in parallel (default: one per core, as many as "
                             "the available RAM holds at --memory-limit each)")
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                        help="auto (default): bubblewrap where it works, else none with a "
                             "warning; bwrap: refuse to grade without it; none: no sandbox")
    parser.add_argument("--regrade", action="store_true",
                        help="grade again submissions whose report is up to date")
    parser.add_argument("--run-slow", action="store_true", help="also grade tests marked slow")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--self", dest="self_mode", action="store_true",
                        help="grade this tree as it is (GitHub Classroom), without calibration")
    parser.add_argument("--exercise", choices=sorted(DELIVERABLE_OF),
                        help="with --self: the one exercise to grade")
    parser.add_argument("--max-score", type=float,
                        help="with --self: the exercise's maximum in the Classroom report")
    parser.add_argument("--classroom-output", type=Path,
                        help="with --self: append 'result=<base64 JSON>' for GitHub Classroom's "
                             "reporter to this file (the step's $GITHUB_OUTPUT)")
    if lms_exports is not None:
        lms_exports.add_arguments(parser)
    return parser


def default_options(**overrides):
    """The command line's defaults as an options object (for other tools, e.g. the release)."""
    options = build_parser().parse_args([])
    options.pytest_args = []
    options.jobs = default_jobs(options.memory_limit)
    vars(options).update(overrides)
    return options


def parse_args(argv):
    parser = build_parser()
    options = parser.parse_args(argv)
    options.pytest_args = ["--run-slow"] if options.run_slow else []
    if options.jobs is None:
        options.jobs = default_jobs(options.memory_limit)
    elif options.jobs < 1:
        parser.error("--jobs must be at least 1")
    if options.self_mode:
        if not options.exercise:
            parser.error("--self needs --exercise")
        return options
    if not options.submissions:
        parser.error("give at least one submission folder (or --self)")
    for submission in options.submissions:
        if not submission.is_dir():
            parser.error(f"{escaped_name(str(submission))} is not a folder")
    names = [escaped_name(s.resolve().name) for s in options.submissions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        parser.error(f"several submissions share a name (reports would collide): {duplicates}")
    if lms_exports is not None:
        lms_exports.check_arguments(parser, options, names)
    memory = available_memory()
    if memory and options.jobs * options.memory_limit * GiB > memory:
        print(f"warning: --jobs {options.jobs} x --memory-limit {options.memory_limit:g} GiB is more "
              f"than the {memory / GiB:.1f} GiB available: the machine may run out of memory",
              file=sys.stderr)
    return options


def grade_all(options, calibration):
    """Grade the submissions in parallel; each report is signed and written as soon as it is done."""
    from tqdm import tqdm
    to_grade = [s for s in options.submissions if options.regrade or not _up_to_date(s, calibration, options)]
    skipped = len(options.submissions) - len(to_grade)
    if skipped:
        print(f"{skipped} submissions unchanged since their report: not graded again "
              "(--regrade to force)", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool, \
            tqdm(total=len(to_grade), unit="submission", disable=options.no_progress) as progress:
        futures = {pool.submit(grade_submission, s, calibration, options): s for s in to_grade}
        for future in as_completed(futures):
            try:
                report = future.result()
            except Exception as error:  # noqa: BLE001 - grade_submission should not raise; if it does
                report = error_report(escaped_name(futures[future].resolve().name),
                                      f"{type(error).__name__}: {error}", calibration, options)
            write_json(sign_report(report, calibration.key), options.out / f'{report["submission"]}.json')
            progress.set_postfix_str(f'{report["submission"]}: {_fmt(report["total"])}')
            progress.update()


def _up_to_date(submission, calibration, options):
    try:
        contents, _ = read_deliverables(submission.resolve())
    except Exception:  # noqa: BLE001 - unreadable now: grade it (and get its error row)
        return False
    return is_up_to_date(options.out / f"{escaped_name(submission.resolve().name)}.json", contents,
                         calibration, options)


def grade_self(options):
    """Grade this tree as it is, one exercise, for GitHub Classroom; always exits 0."""
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        base = Path(tmp) / "base"
        copy_instructor_tree(base, stub_deliverables=False)
        collected = [t for t in collect_tests(base, options) if t["exercise"] == options.exercise]
        tests = [t for t in collected if not t.get("canary")]
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


def instructor_tree_digests(out):
    """Digests of the instructor tree (build outputs and ``out`` left out), to check that no
    run changed it."""
    ignore = list(NOT_COPIED)
    digests = file_digests(PROJECT_ROOT, ignore=ignore, skip_environments=True)
    try:
        inside = out.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return digests
    return {k: v for k, v in digests.items() if k != inside and not k.startswith(inside + "/")}


def peak_memory_mib():
    """The grader's own peak resident memory in MiB: ``VmHWM``, the high-water mark of this
    process's address space (Linux).

    Not ``ru_maxrss``: Linux carries it over ``exec``, so a grader started from a pytest process
    that had imported torch reported that process's ~900 MiB before grading anything. Elsewhere
    (no ``/proc``) ``ru_maxrss`` is the best there is (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (MiB if sys.platform == "darwin" else 1024)


def main(argv=None):
    options = parse_args(argv)
    if options.self_mode:
        return grade_self(options)
    options.out.mkdir(parents=True, exist_ok=True)
    instructor_before = instructor_tree_digests(options.out)
    print(f"sandbox: {sandbox_kind(options)}; jobs: {options.jobs}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="autograde-calibration-") as workdir:
        calibration = Calibration(options, Path(workdir))
        grade_all(options, calibration)
    reports, problems = load_reports(options.out, calibration.key)
    for problem in problems:
        print(f"warning: skipped a file in {options.out} that is not a grade report: {problem}",
              file=sys.stderr)
    names = {escaped_name(s.resolve().name) for s in options.submissions}
    print_table([r for r in reports if r["submission"] in names], calibration.exercises)
    print_summary([r for r in reports if r["submission"] in names], calibration.exercises)
    write_csv(reports, calibration.exercises, options.out / "grades.csv")
    print(f"\nreports: {options.out}/<submission>.json, {options.out / 'grades.csv'}")
    if lms_exports is not None:
        lms_exports.write_outputs(options, reports)
    print(f"grader peak memory: {peak_memory_mib()} MiB")
    changed = tampered_files(instructor_before, instructor_tree_digests(options.out))
    if changed:
        print(f"*** WARNING: the instructor tree changed while grading: {changed[:10]} ***",
              file=sys.stderr)
        return 3
    return 0
