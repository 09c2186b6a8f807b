"""Every wrong implementation of ``wrong_implementations.py`` loses points (a graded test fails).

The catalogue check is fast (each mistake still applies to today's solution); running the
mistakes is slow (one pytest run each, two at a time) and runs in CI with ``--run-slow``.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wrong_implementations import (KINDS, WRONG_IMPLEMENTATIONS, apply, first_failure, selected,  # noqa: E402
                                   two_at_a_time)

pytestmark = pytest.mark.instructor


def test_every_wrong_implementation_applies_to_the_solution():
    for wrong in WRONG_IMPLEMENTATIONS:
        assert wrong.kind in KINDS, f"{wrong.task}: unknown kind {wrong.kind!r}"
        assert apply(wrong) != (Path(__file__).resolve().parents[2] / wrong.exercise.deliverable).read_text()
    kinds = {wrong.kind for wrong in WRONG_IMPLEMENTATIONS}
    assert kinds == set(KINDS), f"every kind of edge has a wrong implementation; missing {set(KINDS) - kinds}"


@pytest.fixture(scope="module")
def first_failures(request, tmp_path_factory):
    """``first_failure`` of every wrong implementation this run selected, two at a time."""
    chosen = selected(request, "test_wrong_implementation_loses_points")
    return two_at_a_time(first_failure, chosen, tmp_path_factory.mktemp("wrong"))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first case's set-up runs them all
@pytest.mark.parametrize("wrong", WRONG_IMPLEMENTATIONS, ids=lambda w: f"{w.task}-{w.kind}-{w.what[:40]}")
def test_wrong_implementation_loses_points(wrong, first_failures):
    code, failed, output = first_failures[wrong]
    assert code == 1 and failed, (
        f"Exercise {wrong.task} written wrong ({wrong.what}) passed every public graded test "
        f"(exit code {code}):\n{output[-2000:]}")
