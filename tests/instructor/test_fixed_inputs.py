"""No graded point rests on fixed inputs (a submission that replays recorded answers earns none).

Every test with points draws its inputs from the run's seed (``run_seed()``) or hypothesis; a test
on fixed, hand-worked inputs is a ``worked_example`` worth points(0), whose twin on seeded inputs
carries the points (``tests/conftest.py`` checks the markers). This checks what the markers cannot:
the public graded tests run under two seeds with ``record_inputs.py``, and every test with points
must call the exercise functions with different arguments under the two.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from given.manifest import GRADED_MARKERS  # noqa: E402

pytestmark = pytest.mark.instructor


def recorded_calls(seed, tmp_path):
    """``{test id: [digest of each exercise call]}`` of the public tests with points, at ``seed``."""
    output = tmp_path / f"calls-{seed}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GRADER_"))}
    env.update(GRADER_FRESH_SEED=str(seed), RECORD_INPUTS_TO=str(output),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "instructor"), str(ROOT)]))
    test_files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "record_inputs",
                             "-m", f"({' or '.join(GRADED_MARKERS)}) and not worked_example", *test_files],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(output.read_text())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_no_test_with_points_calls_an_exercise_on_fixed_inputs(tmp_path):
    first, second = recorded_calls(1, tmp_path), recorded_calls(2, tmp_path)
    fixed = sorted(test for test, calls in first.items() if calls and second.get(test) == calls)
    assert not fixed, (
        "these tests with points call the exercise functions with the same arguments under two seeds, "
        "so answers recorded from them earn their points: draw the inputs from run_seed() (or "
        "hypothesis), or make them worked_example with points(0) and a seeded twin:\n" + "\n".join(fixed))
