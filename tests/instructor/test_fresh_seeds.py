"""The reference solution earns full marks under fresh seeds: no graded test flakes.

Every graded point rests on inputs drawn from the run's seed (``run_seed()``: 0 for a student, a
fresh one for each grading run), so a tolerance that holds on seed 0 only would cost honest
students points at random. CI runs the graded tests, public and hidden, of the reference under
20 seeds drawn anew for every CI run (printed, so a failing one can be replayed with
``GRADER_FRESH_SEED=SEED python -m pytest -m ex1_quantization``).
"""
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from given.manifest import GRADED_MARKERS
from given.manifest import PROJECT_ROOT as ROOT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wrong_implementations import one_thread_environment  # noqa: E402

pytestmark = pytest.mark.instructor
SEEDS = 20


def graded_run(seed):
    env = one_thread_environment(GRADER_FRESH_SEED=str(seed))  # two runs at once, on two cores
    test_files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                             " or ".join(GRADED_MARKERS), *test_files, "tests/hidden"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    return seed, result.returncode, result.stdout


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reference_passes_every_graded_test_under_fresh_seeds():
    seeds = [secrets.randbits(63) for _ in range(SEEDS)]
    print(f"seeds: {seeds}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(graded_run, seeds))
    failed = [(seed, stdout) for seed, code, stdout in runs if code != 0]
    assert not failed, "\n\n".join(f"GRADER_FRESH_SEED={seed}:\n{stdout[-3000:]}" for seed, stdout in failed)
