"""Hidden tests (instructor only, never released): inputs drawn fresh for every grading run.

The grader draws a new seed for every pytest run and passes it as ``GRADER_FRESH_SEED`` (it is
recorded in the report's ``fresh_seeds``); without it a random seed is drawn, so a hidden test
never sees the inputs of the public tests or of an earlier run, and answers recorded from those
fail here. ``canary`` marks a test that must fail for every submission: the grader flags a
submission whose run reports a canary as passed (its test outcomes were changed in-process).
"""
import os
import random
import secrets
import types

import numpy as np
import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "canary: must fail for every submission; a pass flags "
                                       "in-process tampering with the test outcomes")


def pytest_collection_modifyitems(config, items):
    """Canaries fail by design: outside the grader (no ``autograde_plugin``) they are skipped."""
    if config.pluginmanager.has_plugin("autograde_plugin"):
        return
    skip = pytest.mark.skip(reason="canary: must fail, runs only under tools/grade.py")
    for item in items:
        if item.get_closest_marker("canary"):
            item.add_marker(skip)


def fresh_seed():
    """The run's seed: ``GRADER_FRESH_SEED`` when the grader set it, else a new random one."""
    value = os.environ.get("GRADER_FRESH_SEED", "")
    return int(value) if value.isdigit() else secrets.randbits(63)


@pytest.fixture
def fresh():
    """``fresh.generator``: a ``torch.Generator`` seeded with the run's fresh seed
    (``fresh.seed``, to name in failure messages). Requested explicitly, so it runs
    after the autouse seeding of ``tests/conftest.py``: the global generators are reseeded too
    (code that recognises the public tests by their seed is not fooled into answering)."""
    seed = fresh_seed()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    return types.SimpleNamespace(generator=torch.Generator().manual_seed(seed), seed=seed)
