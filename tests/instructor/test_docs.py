"""The pages agree with the code: generated tables, links and paths, the README's commands.

Left out of the student release. The tables between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED -->`` lines come from ``tools/docs_tables.py`` (the exercises from the
solution markers, the points from the tests' markers); after a change, rewrite them with
``python tools/docs_tables.py --write``. The sample of a first run is checked against a real first
run of the release by ``test_release.py``'s end-to-end test (``slow``).
"""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import docs_tables  # noqa: E402
from docs_tables import DocsTableError, Generated, blocks_of, render, stale_pages  # noqa: E402
from given.manifest import DELIVERABLES  # noqa: E402
from release import STUDENT_README, release_files, write_release  # noqa: E402
from test_release import POINTS  # noqa: E402

pytestmark = pytest.mark.instructor

ROOT_PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_RE = re.compile(r"`([^`\n]+)`")
TOP_LEVEL = ("given/", "tests/", "tools/", "docs/", "benchmarks/", ".ci/", "../shared/")


# ---------------------------------------------------------------------------------------------
# Generated tables
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def collected():
    """The tests of this tree and their points (a ``pytest --collect-only``: a few seconds)."""
    return docs_tables.collect_tests(ROOT)


def test_generated_tables_agree_with_the_code(collected):
    stale = stale_pages(ROOT, generated=Generated(ROOT, tests=collected))
    assert not stale, (f"pages whose generated tables disagree with the code: {stale}; "
                       "run: python tools/docs_tables.py --write")
    for page in ("README.md", "tools/student_README.md"):
        names = [name for name, *_ in blocks_of((ROOT / page).read_text(), page)]
        assert "exercises" in names, f"{page} lost its generated exercises table"
    student = [name for name, *_ in blocks_of(STUDENT_README.read_text())]
    assert {"first-run", "totals"} <= set(student), student


def _tree_with(tmp_path, old, new):
    """A copy of the exercise files where one task's label ``old`` reads ``new``."""
    for name in DELIVERABLES:
        text = (ROOT / name).read_text()
        (tmp_path / name).write_text(text.replace(old, new))
    return tmp_path


def test_a_changed_label_makes_the_pages_stale(tmp_path, collected):
    """The check reads the code, not a copy: rename a task and the README is stale."""
    label = "Exercise 2.1: mask the smallest-|w| fraction of one weight tensor"
    assert label in (ROOT / "pruning.py").read_text()
    tree = _tree_with(tmp_path, label, "Exercise 2.1: something else entirely")
    generated = Generated(tree, tests=collected)
    assert any("something else entirely" in line for line in generated.block("exercises"))
    stale = dict(stale_pages(ROOT, ["README.md", "tools/student_README.md"], generated))
    assert stale == {"README.md": ["exercises"], "tools/student_README.md": ["exercises"]}


def test_points_are_shared_by_parametrized_cases_and_skipped_tests_count_nothing():
    tests = [{"file": "tests/test_a.py", "exercise": "ex1_quantization", "points": 1.5,
              "skipped": False, "canary": False}] * 2 + [
        {"file": "tests/test_a.py", "exercise": "ex1_quantization", "points": 4.0, "skipped": True, "canary": False},
        {"file": "tests/hidden/test_b.py", "exercise": "ex1_quantization", "points": 2.0, "skipped": False, "canary": False},
        {"file": "tests/hidden/test_c.py", "exercise": "ex1_quantization", "points": 1.0, "skipped": True, "canary": True},
        {"file": "tests/instructor/test_d.py", "exercise": "ex1_quantization", "points": 9.0, "skipped": False, "canary": False}]
    table = docs_tables.points_table(tests)
    assert table["ex1_quantization"] == {"public": (3.0, 2), "hidden": (2.0, 1)}
    assert table["ex2_pruning"] == {"public": (0, 0), "hidden": (0, 0)}
    assert docs_tables.format_points(2.5) == "2.5" and docs_tables.format_points(69.0) == "69"


@pytest.mark.parametrize("text, message", [
    ("a\n<!-- BEGIN GENERATED: exercises -->\nold\n", "never closed"),
    ("<!-- END GENERATED -->\n", "without BEGIN"),
    ("<!-- BEGIN GENERATED: exercises -->\n<!-- BEGIN GENERATED: totals -->\n<!-- END GENERATED -->\n",
     "inside the block opened at line 1"),
    ("<!-- BEGIN GENERATED exercises -->\n<!-- END GENERATED -->\n", "'<!-- BEGIN GENERATED: name -->'"),
    ("<!-- BEGIN GENERATED: tasks -->\n<!-- END GENERATED -->\n", "unknown generated block 'tasks'"),
])
def test_a_malformed_page_gets_a_clear_error(text, message):
    with pytest.raises(DocsTableError, match=re.escape(message)):
        render(text, Generated(ROOT, tests=[]), "page.md")


def test_unreadable_exercise_files_get_a_clear_error(tmp_path):
    with pytest.raises(DocsTableError, match="cannot read quantization.py"):
        docs_tables.exercise_tasks(tmp_path)
    for name in DELIVERABLES:
        (tmp_path / name).write_text("def f():\n    return 1\n")
    with pytest.raises(DocsTableError, match="quantization.py: no task found"):
        docs_tables.exercise_tasks(tmp_path)
    (tmp_path / "quantization.py").write_text("def f(:\n")
    with pytest.raises(DocsTableError, match=r"quantization.py:1: does not parse"):
        docs_tables.exercise_tasks(tmp_path)
    (tmp_path / "quantization.py").write_text("def f():\n    # BEGIN SOLUTION Exercise 1.1: x\n")
    with pytest.raises(DocsTableError, match="never closed"):
        docs_tables.exercise_tasks(tmp_path)


def test_the_command_line_names_a_bad_page(tmp_path, capsys):
    assert docs_tables.main(["--check", "no/such/page.md"]) == 2
    assert "cannot read the page no/such/page.md" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The pages themselves
# ---------------------------------------------------------------------------------------------

def test_the_readme_is_a_first_page_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150, f"README.md has {len(readme.splitlines())} lines: keep it a first page"
    commands = [line.split(" #")[0].strip() for line in readme.splitlines()]
    for command in ("bash tools/install.sh && python tools/run_notebook.py", "python -m pytest"):
        assert command in commands, f"README.md lost the command line {command!r} (.ci/run runs it)"
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "python -m pytest"


def _anchors(page):
    """GitHub's anchors of a page's headings."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in page.read_text().splitlines() if line.startswith("#")}


def _written_paths(text):
    """The repository paths a page names in code, spans and blocks (``given/x.py``,
    ``../shared/data``, ``given.models``: ``given/models.py``)."""
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    for span in CODE_RE.findall(text) + fenced:
        for word in span.split():
            word = word.strip("\"'").rstrip(".,;:)")
            module = re.match(r"given\.(\w+)", word)
            if module:
                yield f"given/{module[1]}" + ("" if (ROOT / "given" / module[1]).is_dir() else ".py")
            elif word.startswith(TOP_LEVEL) and not re.search(r"[<>*$]|\.\.\.", word):
                yield word


def _check_page(page, exists):
    text = page.read_text()
    missing = []
    for target in LINK_RE.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            missing.append(target)
    missing += [path for path in _written_paths(text) if not exists(path)]
    return missing


@pytest.mark.parametrize("page", ROOT_PAGES)
def test_every_link_and_path_of_a_page_exists(page):
    missing = _check_page(ROOT / page, lambda path: (ROOT / path).exists())
    assert not missing, f"{page} links or names what does not exist: {missing}"


def test_the_student_readme_names_only_what_the_release_ships():
    shipped = {p.as_posix() for p in release_files()}
    folders = {parent.as_posix() for p in release_files() for parent in p.parents}

    def exists(path):
        path = path.rstrip("/")
        return path in shipped or path in folders or path.startswith("../shared")
    missing = _check_page(STUDENT_README, exists)
    assert not missing, f"tools/student_README.md names what the release does not ship: {missing}"


def test_docs_and_the_generator_stay_out_of_the_release(tmp_path):
    shipped = [p.as_posix() for p in release_files()]
    assert not [p for p in shipped if p.startswith("docs/") or p == "tools/docs_tables.py"]
    write_release(tmp_path / "release", points=POINTS)
    readme = (tmp_path / "release" / "README.md").read_text()
    assert "GENERATED" not in readme
    assert "| 1.1 | `absmax_quantize` |" in readme and "| total | " in readme and "next: Exercise 1.1" in readme
    assert not (tmp_path / "release" / "docs").exists()
