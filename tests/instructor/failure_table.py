"""What a student sees for a typical mistake: the table of docs/failures.md, measured.

For each mistake of ``MISTAKES`` (entries of the wrong-implementation catalogue), the reference
solution gets that one mistake, and the student's plain run (``python -m pytest``, the public
tests, no hidden or instructor ones) goes over it. Measured: how many tests fail, how many lines
pytest prints, and whether the first failure reported names the task that is wrong
("Exercise 1.7 ...").

    python tests/instructor/failure_table.py            # print the table (markdown)
"""
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wrong_implementations import ROOT, WRONG_IMPLEMENTATIONS, apply, one_thread_environment, two_at_a_time  # noqa: E402

CHOSEN = (
    ("1.1", "rounds with floor(x + 0.5)"),
    ("1.2", "dequantizes in float64"),
    ("1.5", "rounds halves up"),
    ("1.6", "uses > instead of >="),
    ("1.7", "multiplies int8 @ int8"),
    ("1.7", "one scale for the whole of x"),
    ("1.8", "quantizes a float weight with its outlier rows in"),
    ("2.1", "prunes every |w| <= the k-th smallest"),
    ("2.3", "ranks rows by their L1 norm"),
    ("2.4", "keeps every |w| >= the n-th largest"),
    ("2.5", "assumes the Linear has a bias"),
    ("2.6", "reads the hint's inclusive range"),
    ("3.1", "multiplies by T instead of T**2"),
    ("3.2", "forgets optimizer.zero_grad()"),
    ("3.3", "uses Python's round"),
    ("3.4", "copies the chosen layers and the head but leaves the embeddings"),
)
MISTAKES = tuple(next(w for w in WRONG_IMPLEMENTATIONS if w.task == task and w.what.startswith(what))
                 for task, what in CHOSEN)
"""The mistakes of the table: the issue's cases and a few more, at least one per exercise."""

FAILED_COUNT = re.compile(r"(\d+) failed")
FIRST_FAILURE = re.compile(r"^FAILED \S+\n    (.*)$", re.MULTILINE)
TASK_NAMED = re.compile(r"Exercise (\d+\.\d+)\b")


@dataclass(frozen=True)
class Measured:
    failed: int        # tests that fail (parametrized cases counted one by one)
    lines: int         # lines the run prints
    first: str         # the first line of the first failure's message
    names_task: bool   # whether that line names the task that is wrong first

    def row(self, wrong):
        what = wrong.what.replace("|", "\\|")
        return f"| {wrong.task} | {what} | {self.failed} | {self.lines} | {'yes' if self.names_task else 'no'} |"


def student_tree(workdir, wrong):
    """A copy of the lab as a student has it (no hidden or instructor tests), with ``wrong`` in."""
    tree = Path(workdir) / f"tree-{wrong.task}-{abs(hash(wrong.what))}"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", ".hypothesis", ".venv", "outputs", "release", "grades",
        "hidden", "instructor", "docs", "*.ipynb", "benchmarks"))
    (tree / wrong.exercise.deliverable).write_text(apply(wrong))
    return tree


def measure(wrong, workdir, timeout=900):
    """Run the student's ``python -m pytest`` on the reference with ``wrong`` in: ``Measured``."""
    tree = student_tree(workdir, wrong)
    env = one_thread_environment(COLUMNS="100")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    failed = FAILED_COUNT.findall(output)
    first = FIRST_FAILURE.search(output)
    first = first.group(1) if first else ""
    return Measured(int(failed[-1]) if failed else 0, len(output.splitlines()), first.strip(),
                    names_task(first, wrong.task))


def names_task(line, task):
    """Whether the first task ``line`` names ("Exercise 1.7 ...", anywhere in it) is ``task``."""
    named = TASK_NAMED.search(line)
    return bool(named) and named.group(1) == task


HEADER = ("| task | mistake | failing tests | lines printed | first failure names the task |\n"
          "|---|---|---|---|---|")


def main(tasks=()):
    chosen = [w for w in MISTAKES if not tasks or w.task in tasks]
    with tempfile.TemporaryDirectory(prefix="failure-table-") as workdir:
        measured_all = two_at_a_time(measure, chosen, workdir)
    print(HEADER)
    for wrong, measured in measured_all.items():
        print(measured.row(wrong))
        print(f"<!-- first: {measured.first[:150]} -->", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
