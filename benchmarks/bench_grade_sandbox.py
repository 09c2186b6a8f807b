"""What the grader's sandbox costs: grading N submissions with and without bubblewrap, interleaved.

    python benchmarks/bench_grade_sandbox.py [--submissions 20] [--exercise ex1_quantization]

Calibrates once (as ``tools/grade.py`` does), then grades each of N copies of the reference
deliverable twice, once in the sandbox and once without, alternating which goes first, in one
process, so that both see the same machine load. Prints the total time of each mode, their
ratio, and the spread of the per-submission ratios (min, quartiles, max).
"""
import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))  # the grader: grading
from given.manifest import DELIVERABLE_OF, PROJECT_ROOT  # noqa: E402
from grading.cli import default_options  # noqa: E402
from grading.sandbox import bwrap_problem  # noqa: E402
from grading.scoring import Calibration  # noqa: E402
from grading.submissions import grade_submission  # noqa: E402


def grading_seconds(submission, calibration, options, kind):
    """Seconds to grade ``submission`` with sandbox ``kind`` (``"bwrap"`` or ``"none"``)."""
    options = copy.copy(options)
    options._sandbox_kind = kind  # chosen here, without the warning a real run prints
    start = time.perf_counter()
    report = grade_submission(submission, calibration, options)
    seconds = time.perf_counter() - start
    if report["total"] != report["max_total"]:
        raise SystemExit(f"{kind}: the reference scored {report['total']}/{report['max_total']}: "
                         f"{report['notes']}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--exercise", default="ex1_quantization", choices=sorted(DELIVERABLE_OF))
    parser.add_argument("--per-test-timeout", type=float, default=120.0,
                        help="generous: a timeout on a busy machine would end the benchmark")
    args = parser.parse_args(argv)
    problem = bwrap_problem()
    if problem:
        raise SystemExit(f"no sandbox to measure: {problem}")
    options = default_options(jobs=1, per_test_timeout=args.per_test_timeout,
                              total_timeout=20 * args.per_test_timeout)
    options._sandbox_kind = "bwrap"
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmp:
        calibration = Calibration(options, Path(tmp))
        calibration.expected = [t for t in calibration.expected if t["exercise"] == args.exercise]
        calibration.exercises = [args.exercise]
        deliverable = DELIVERABLE_OF[args.exercise]
        seconds = {"bwrap": [], "none": []}
        for i in range(args.submissions):
            submission = Path(tmp) / f"submission_{i:02d}"
            submission.mkdir()
            (submission / deliverable).write_bytes((PROJECT_ROOT / deliverable).read_bytes())
            order = ("bwrap", "none") if i % 2 == 0 else ("none", "bwrap")
            for kind in order:
                seconds[kind].append(grading_seconds(submission, calibration, options, kind))
            print(f"{i + 1:2d}/{args.submissions}  bwrap {seconds['bwrap'][-1]:6.2f} s   "
                  f"none {seconds['none'][-1]:6.2f} s", flush=True)
    ratios = sorted(b / n for b, n in zip(seconds["bwrap"], seconds["none"]))
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
    total_bwrap, total_none = sum(seconds["bwrap"]), sum(seconds["none"])
    print(f"\n{args.submissions} submissions ({args.exercise}), interleaved, one at a time:")
    print(f"  with the sandbox    {total_bwrap:8.1f} s")
    print(f"  without the sandbox {total_none:8.1f} s")
    print(f"  ratio of totals     {total_bwrap / total_none:8.3f}  (overhead "
          f"{100 * (total_bwrap / total_none - 1):+.1f}%)")
    print(f"  per-submission ratio: min {ratios[0]:.3f}  q1 {quartiles[0]:.3f}  median "
          f"{quartiles[1]:.3f}  q3 {quartiles[2]:.3f}  max {ratios[-1]:.3f}")


if __name__ == "__main__":
    sys.exit(main())
