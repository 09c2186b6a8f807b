"""Scoring: points per test, tampering and canaries, the flags of recorded answers; the calibration.

Trusts the instructor tree (copied before any run) and the results of ``pytest_run`` (signed); not
the graded copy after a run: any file of it that a run added, changed or removed scores the
exercise 0. The maximum is what the reference solution earns here (``Calibration``).
"""
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from given.manifest import DELIVERABLES, PROJECT_ROOT
from grading.pytest_run import collect_tests, run_exercise
from grading.reports import points_sum
from grading.trees import copy_instructor_tree, digest_of, file_digests, tampered_files

HIDDEN_TESTS = "tests/hidden/"


def grade_exercise(base_tree, deliverables, exercise, tests, options, base_digests=None,
                   canaries=(), known=frozenset()):
    """Grade one exercise in a fresh copy of ``base_tree`` with ``deliverables`` (name -> bytes)
    written over it; ``canaries`` run last and must fail.

    Any file of the instructor tree that the run adds, changes or removes is tampering: it is
    reported and the exercise scores 0. ``base_digests`` (the stub tree's digests taken at
    calibration) also catches a change made to the shared stub tree by an earlier run.
    """
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(base_tree, tree)
        for name, content in deliverables.items():
            (tree / name).write_bytes(content)
        before = file_digests(tree, skip=DELIVERABLES)
        if base_digests is not None and tampered_files(base_digests, before):
            raise RuntimeError("the shared copy of the instructor tree was changed by an earlier "
                               f"run ({', '.join(tampered_files(base_digests, before)[:3])}): "
                               "grading without a sandbox is not trustworthy")
        results, info = run_exercise(tree, exercise, [*tests, *canaries], options, known)
        info["tampered"] = tampered_files(before, file_digests(tree, skip=DELIVERABLES))
    if info["tampered"]:
        info["note"] = "the instructor tree was modified, the exercise scores 0: " + \
            ", ".join(info["tampered"][:5])
        info["flags"].append(f"{exercise}: modified the instructor tree")
    info["canaries"] = {c["nodeid"]: results.get(c["nodeid"], ("not run", ""))[0] for c in canaries}
    info["flags"] += [f"canary {name} passed: test outcomes were changed in-process"
                      for name, outcome in info["canaries"].items() if outcome == "passed"]
    rows = [_score_row(test, exercise, results, info) for test in tests]
    missing = sum(row["outcome"] in ("not run", "crashed", "timeout") for row in rows)
    if missing and not info["note"]:
        info["note"] = f"{missing} tests never reported a result (the test process ended early)"
    return rows, info


def _score_row(test, exercise, results, info):
    outcome, message = results.get(test["nodeid"], ("not run", info["fallback"]))
    if outcome == "not run" and info["note"]:
        outcome = "timeout" if "timeout" in info["note"] else "crashed"
    earned = test["points"] if outcome == "passed" and not info["tampered"] else 0.0
    return {"name": test["nodeid"], "exercise": exercise, "points": test["points"],
            "earned": earned, "outcome": outcome, "message": message}


WORKED_EXAMPLE_GAP = 0.5
"""A worked example passing this much more often than its twin is flagged (see ``fresh_input_flags``)."""


def _rows_of(rows, nodeid):
    """The rows of test ``nodeid``: itself, or its parametrized cases (``nodeid[...]``)."""
    return [r for r in rows if r["name"] == nodeid or r["name"].startswith(nodeid + "[")]


def fresh_input_flags(rows, tests=()):
    """What answers recorded from earlier runs look like, per exercise (a flag, never a penalty):

    - worked examples (fixed inputs anyone can record; no points) pass clearly more often than
      their twins (the same contracts on this run's fresh inputs): the pass rates differ by at
      least ``WORKED_EXAMPLE_GAP``, with at least two worked examples passed;
    - every public test passed but hidden tests on fresh inputs failed.
    """
    twins = {t["nodeid"]: t["twin"] for t in tests if t.get("twin")}
    flags = []
    for exercise in sorted({r["exercise"] for r in rows}):
        mine = [r for r in rows if r["exercise"] == exercise]
        worked = [r for r in mine if r["name"] in twins]
        twin_rows = [r for name in dict.fromkeys(twins[w["name"]] for w in worked) for r in _rows_of(mine, name)]
        if worked and twin_rows:
            worked_rate = sum(r["outcome"] == "passed" for r in worked) / len(worked)
            twin_rate = sum(r["outcome"] == "passed" for r in twin_rows) / len(twin_rows)
            if sum(r["outcome"] == "passed" for r in worked) >= 2 and worked_rate - twin_rate >= WORKED_EXAMPLE_GAP:
                flags.append(f"{exercise}: {worked_rate:.0%} of the worked examples (fixed inputs) "
                             f"passed but only {twin_rate:.0%} of their twins on this run's fresh "
                             f"inputs: recorded answers?")
        public = [r for r in mine if not r["name"].startswith(HIDDEN_TESTS)]
        hidden = [r for r in mine if r["name"].startswith(HIDDEN_TESTS)]
        failed = [r for r in hidden if r["outcome"] != "passed"]
        if public and hidden and failed and all(r["outcome"] == "passed" for r in public):
            flags.append(f"{exercise}: every public test passed but {len(failed)} hidden tests on "
                         f"fresh inputs failed (e.g. {failed[0]['name']}): recorded answers?")
    return flags


def not_submitted(exercise, tests, message):
    """Rows and note of an exercise whose file is missing from the submission: 0, without a run."""
    rows = [{"name": t["nodeid"], "exercise": exercise, "points": t["points"], "earned": 0.0,
             "outcome": "missing", "message": message} for t in tests]
    return rows, {"seconds": 0.0, "note": message, "tampered": [], "flags": []}


def grade_tree(base_tree, deliverables, expected, options, missing=None, base_digests=None,
               canaries=(), known=frozenset()):
    """Grade every exercise of ``expected``; return the per-test rows and per-exercise notes.

    ``missing`` (exercise -> note): exercises whose file was not submitted score 0 without
    running their tests (they could only fail on the stub in ``base_tree``).
    """
    rows, notes = [], {}
    for exercise in sorted({t["exercise"] for t in expected}):
        tests = [t for t in expected if t["exercise"] == exercise]
        if missing and exercise in missing:
            exercise_rows, notes[exercise] = not_submitted(exercise, tests, missing[exercise])
        else:
            exercise_rows, notes[exercise] = grade_exercise(
                base_tree, deliverables, exercise, tests, options, base_digests,
                [c for c in canaries if c["exercise"] == exercise], known)
        rows += exercise_rows
    return rows, notes


class Calibration:
    """What every submission is graded against, measured once per run.

    ``stub_tree``: the instructor tree with the deliverables stubbed (each submission's copies
    start from it; ``stub_digests`` are its files' hashes, checked before every copy is used);
    ``expected``: the tests the reference solution passes here, with points; ``canaries``: the
    tests that must fail (the reference fails them all, or calibration stops); ``tree_hash``: a
    hash of the stub tree and of the grading options, so a re-run can tell whether an old report
    is still valid; ``key``: the key reports are signed with, derived from the whole instructor
    tree (reference solution included: nothing inside a sandbox can compute it).
    """

    def __init__(self, options, workdir, source=PROJECT_ROOT):
        reference = workdir / "reference"
        copy_instructor_tree(reference, stub_deliverables=False, source=source)
        all_tests = collect_tests(reference, options)
        self.known = frozenset(t["nodeid"] for t in all_tests)
        self.canaries = [t for t in all_tests if t.get("canary")]
        reference_files = {name: (reference / name).read_bytes() for name in DELIVERABLES
                           if (reference / name).exists()}
        self.stub_tree = workdir / "stubs"
        copy_instructor_tree(self.stub_tree, stub_deliverables=True, source=reference)
        graded = [t for t in all_tests if not t.get("canary")]
        rows, notes = grade_tree(self.stub_tree, reference_files, graded, options,
                                 canaries=self.canaries, known=self.known)
        self.expected = _passed_by_reference(graded, rows)
        _check_canaries_fail(notes)
        self.exercises = sorted({t["exercise"] for t in self.expected})
        self.stub_digests = file_digests(self.stub_tree, skip=DELIVERABLES)
        self.tree_hash = digest_of(file_digests(self.stub_tree), options.pytest_args)
        self.key = hashlib.sha256(b"lab5 grade report\0" + digest_of(
            file_digests(reference), options.pytest_args, self.tree_hash).encode()).digest()

    def points(self, public_only=False):
        """Maximum points per exercise (of the public tests only, with ``public_only``)."""
        tests = [t for t in self.expected if not (public_only and t["file"].startswith(HIDDEN_TESTS))]
        return {e: points_sum(t["points"] for t in tests if t["exercise"] == e) for e in self.exercises}


def _check_canaries_fail(notes):
    wrong = {name: outcome for info in notes.values()
             for name, outcome in info.get("canaries", {}).items() if outcome != "failed"}
    if wrong:
        raise SystemExit("canary tests must fail with the reference solution, these did not "
                         f"(fix them or the grader; 'not run': see the run's notes): {wrong}\n"
                         f"{[info['note'] for info in notes.values() if info['note']]}")


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
