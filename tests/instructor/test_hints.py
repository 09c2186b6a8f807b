"""The hints: a first one in the exercise file above every task, a second one from
``python tools/hints.py N.M`` (tools/hints.toml), shipped in the release, never the solution."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from given.manifest import EXERCISES, GRADED_MARKERS  # noqa: E402
from hints import HINTS_FILE, load_hints, read_table  # noqa: E402
from release import release_files, write_release  # noqa: E402
from tests.tasks import TASKS  # noqa: E402

pytestmark = pytest.mark.instructor

BEGIN = re.compile(r"^ *# BEGIN SOLUTION Exercise (?P<task>[\d.]+): .*?\n(?P<body>.*?)^ *# END SOLUTION", re.M | re.S)


def solution_blocks():
    """``[(task, body)]`` of the reference's solution blocks, and the exercise files' text."""
    blocks, texts = [], {}
    for exercise in EXERCISES:
        texts[exercise.deliverable] = text = (ROOT / exercise.deliverable).read_text()
        blocks += [(m["task"], m["body"]) for m in BEGIN.finditer(text)]
    return blocks, texts


def run_hints(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "tools/hints.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_every_task_has_a_second_hint_for_its_function():
    blocks, _ = solution_blocks()
    assert list(load_hints()) == list(TASKS) == list(dict.fromkeys(task for task, _ in blocks)), \
        "tools/hints.toml, tests/tasks.py and the solution blocks must name the same tasks, in order"
    assert {task: function for task, (function, _) in load_hints().items()} == TASKS
    assert all(len(hint.split()) >= 15 for _, hint in load_hints().values()), "a second hint says more"


def test_without_tomllib_the_hints_read_the_same():
    import tomllib
    text = HINTS_FILE.read_text()
    assert read_table(text) == tomllib.loads(text), "tools/hints.toml must keep the layout read_table reads"


def test_every_task_has_its_first_hint_in_the_file_pointing_at_the_second():
    _, texts = solution_blocks()
    for task in TASKS:
        text = texts[next(e.deliverable for e in EXERCISES if str(e.number) == task.split(".")[0])]
        above = text[:text.index(f"# BEGIN SOLUTION Exercise {task}:")].rstrip().splitlines()[-6:]
        assert above[-1].strip() == f"# Hint 2, when you want it: python tools/hints.py {task}", (task, above)
        assert any(line.strip().startswith("# Hint: ") for line in above), f"{task}: no first hint above it"


def test_no_hint_holds_a_line_of_the_solution():
    blocks, _ = solution_blocks()
    code = {re.sub(r"\s+", "", line) for _, body in blocks for line in body.splitlines()
            if len(line.strip()) >= 20 and not line.strip().startswith("#")}
    for task, (_, hint) in load_hints().items():
        flat = re.sub(r"\s+", "", hint)
        leaked = [line for line in code if line in flat]
        assert not leaked, f"the second hint of {task} holds solution code: {leaked}"


def test_hints_command_prints_one_hint_lists_all_and_refuses_unknown_tasks():
    shown = run_hints("2.4")
    assert shown.returncode == 0 and shown.stdout.startswith("Exercise 2.4 nm_sparsity_mask, hint 2:")
    assert load_hints()["2.4"][1] in shown.stdout and load_hints()["2.1"][1] not in shown.stdout
    listed = run_hints("--list")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == list(TASKS)
    unknown = run_hints("2.9")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "no task '2.9'" in unknown.stderr and ", ".join(TASKS) in unknown.stderr


def test_the_release_ships_the_hints_and_they_run_there(tmp_path):
    assert {Path("tools/hints.py"), Path("tools/hints.toml")} <= set(release_files())
    release = tmp_path / "release"
    write_release(release, points={marker: 10.0 for marker in GRADED_MARKERS})
    shown = run_hints("3.3", cwd=release)
    assert shown.returncode == 0 and load_hints()["3.3"][1] in shown.stdout, shown.stderr
    for exercise in EXERCISES:  # the first hints survive the stubbing
        assert "# Hint 2, when you want it: python tools/hints.py" in (release / exercise.deliverable).read_text()
