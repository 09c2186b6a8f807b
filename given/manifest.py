"""The lab's manifest: exercises, deliverables, test markers and paths, in one place.

The grader (``tools/grading/``), ``tools/release.py``, ``tests/conftest.py`` and the tests read these names;
change the lab's shape here and nowhere else.
"""
import fnmatch
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
SHARED_WIKITEXT_DIR = SHARED_DATA_DIR / "wikitext-2-raw-v1"
"""The offline WikiText-2 (``wiki.{test,valid,train}.raw``), read when the hub is not used."""
NOTEBOOK = PROJECT_ROOT / "model compression and pruning.ipynb"


@dataclass(frozen=True)
class Exercise:
    number: int
    marker: str        # the pytest marker of its tests, e.g. "ex1_quantization"
    deliverable: str   # the file the student writes and submits, e.g. "quantization.py"
    title: str


EXERCISES = (
    Exercise(1, "ex1_quantization", "quantization.py", 'Exercise 1 "Honey, I shrunk the model!": quantization'),
    Exercise(2, "ex2_pruning", "pruning.py", 'Exercise 2 "Thanos was Right": pruning'),
    Exercise(3, "ex3_distillation", "distillation.py", 'Exercise 3 "Wax On, Wax Off.": distillation'),
)
GRADED_MARKERS = tuple(exercise.marker for exercise in EXERCISES)
DELIVERABLES = tuple(exercise.deliverable for exercise in EXERCISES)
DELIVERABLE_OF = {exercise.marker: exercise.deliverable for exercise in EXERCISES}

GIVEN_CODE_MARKER = "given_code"
"""Marker of the tests of given code (the notebook's measuring code, the checks): never graded."""
TEST_MARKERS = GRADED_MARKERS + (GIVEN_CODE_MARKER,)

BUILD_OUTPUTS = ("__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints", ".venv",
                 "outputs", "release", "grades", "*.egg-info")
"""Names of files and folders that are made by running things, never copied or shipped."""


def is_python_environment(path):
    """Whether ``path`` is a folder holding a Python environment, whatever its name (``.venv``,
    ``venv``, ``env``, ...): every virtual environment has a ``pyvenv.cfg`` at its top."""
    return (Path(path) / "pyvenv.cfg").is_file()


def is_build_output(path):
    """Whether the file or folder ``path`` is made by running things, never copied or shipped:
    its name matches ``BUILD_OUTPUTS``, or it is a Python environment."""
    path = Path(path)
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in BUILD_OUTPUTS) or is_python_environment(path)


INSTRUCTOR_ONLY = (".git", ".ci", "docs", "tests/hidden", "tests/instructor",
                   "tools/release.py", "tools/classroom_workflow.py", "tools/make_offline_bert.py",
                   "tools/gradescope.py", "tools/lms_exports.py", "tools/feedback.py", "tools/docs_tables.py",
                   "benchmarks/onednn_int8_packing.cpp")
"""Paths (relative to the project root) that the student release leaves out (the C++ benchmark is
evidence for docs/benchmarks.md, which students do not get either)."""
