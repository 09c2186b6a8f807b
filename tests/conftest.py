"""Shared pytest set-up for the autograder.

Conventions every test file follows (the grader relies on them):
- one marker per test, usually as a module-level ``pytestmark``: an exercise marker
  (``ex1_quantization``, ``ex2_pruning``, ``ex3_distillation``: graded) or ``given_code`` (tests of
  the given measuring code: never graded); see ``given/manifest.py``;
- ``@pytest.mark.points(n)`` gives the test's weight (1 when absent);
- every test starts from the same seeds, so a submission gets the same score every run;
- heavy tests carry ``@pytest.mark.slow`` and run only with ``--run-slow``;
- ``lessons`` tests (the lab's lessons on the trained offline model) run only with ``--run-lessons``
  (or ``-m lessons``).
"""
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # tests import the modules flat: `from quantization import ...`, `import given...`
    sys.path.insert(0, _ROOT)

from given.manifest import SHARED_DATA_DIR, TEST_MARKERS  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (real-size BERT, full wikitext, the notebook)")
    parser.addoption("--run-lessons", action="store_true", default=False,
                     help="also run tests marked lessons (the lab's lessons on the trained offline model)")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow")
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        found = [m for m in TEST_MARKERS if item.get_closest_marker(m)]
        if len(found) > 1:
            raise pytest.UsageError(f"{item.nodeid} carries several exercise markers: {found}")
        if not run_slow and item.get_closest_marker("slow"):
            item.add_marker(skip_slow)
    _skip_lessons_unless_asked(config, items)


def _skip_lessons_unless_asked(config, items):
    """Lesson tests (minutes) run only with ``--run-lessons`` or a ``-m`` naming ``lessons``."""
    if config.getoption("--run-lessons") or "lessons" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="lesson test (minutes, on the trained offline model): run with --run-lessons")
    for item in items:
        if item.get_closest_marker("lessons"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Same seeds before every test: same submission, same score, every run."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data_dir():
    """``../shared/data`` beside the project (offline wikitext-2 and BERT vocabulary); skip when absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"offline assets not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture
def tiny_bert():
    """A seeded, randomly initialised BertForMaskedLM of Google's BERT-tiny shape, in eval mode.

    Function-scoped: every test gets its own fresh copy, so no test can leak changes into another.
    """
    from given.models import random_bert
    return random_bert(seed=0)
