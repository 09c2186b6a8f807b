"""The tables the docs show, generated from the code, so that no page can disagree with it.

    python tools/docs_tables.py --write    # rewrite every generated block of the pages
    python tools/docs_tables.py --check    # exit 1, naming the page and block, if one is stale

A page holds a generated block between two lines::

    <!-- BEGIN GENERATED: exercises -->
    ...written by this tool: never edit by hand...
    <!-- END GENERATED -->

Blocks, by name:

- ``exercises``: every task of Exercises 1 to 3: its number, its function, and what to write, read
  from the solution markers (``# BEGIN SOLUTION Exercise N.M: what``, ``tools/solution_markers.py``)
  or, in the student release, from the ``NotImplementedError("Exercise N.M: what")`` stubs;
- ``first-run``: the points table that ``python -m pytest`` prints at the end of its first run on
  the untouched release (``tests/conftest.py`` prints it; ``tests/instructor/test_docs.py`` checks
  this copy against a real run);
- ``totals``: points per exercise of the public tests (a default run), of the hidden tests, and of
  the grade (both: what ``tools/grade.py`` calibrates on the reference solution).

Points are read as the tests' own code reads them: ``@pytest.mark.points(n)`` (1 when absent) is
shared by a test function's parametrized cases; tests marked ``slow`` or ``lessons`` and canaries
are skipped in a default run and count for nothing. Collecting the tests takes a few seconds (a
``pytest --collect-only`` in a subprocess); nothing is run.
"""
import argparse
import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
if str(TOOLS.parent) not in sys.path:
    sys.path.insert(0, str(TOOLS.parent))  # the project root: given.manifest
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
from given.manifest import EXERCISES, PROJECT_ROOT  # noqa: E402
from solution_markers import MarkerError, strip_python_solutions  # noqa: E402

PAGES = ("README.md", "tools/student_README.md", "docs/instructor.md", "docs/authoring.md")
"""The pages (relative to the project root) that may hold generated blocks."""

BEGIN_RE = re.compile(r"^<!-- BEGIN GENERATED: (?P<name>[a-z0-9-]+) -->\s*$")
END_LINE = "<!-- END GENERATED -->"
PUBLIC_TESTS_EXCLUDE = ("tests/hidden/", "tests/instructor/")
HIDDEN_TESTS = "tests/hidden/"
TASK_RE = re.compile(r"^Exercise (?P<number>\d+(\.\d+)+): (?P<what>.+)$")


class DocsTableError(ValueError):
    """Bad input to the generator: a page, a block or an exercise file it cannot read."""


@dataclass(frozen=True)
class Task:
    number: str      # "1.10"
    function: str    # "kmeans_quantize"
    what: str        # the label's text after "Exercise N.M: "
    line: int        # the line of its stub (the ``raise NotImplementedError``) in the release

    @property
    def key(self):
        return tuple(int(n) for n in self.number.split("."))


# ----------------------------------------------------------------------------------------------
# The exercises, from the exercise files
# ----------------------------------------------------------------------------------------------

def stub_tasks(stubbed_source, where):
    """The tasks of a stubbed module, in the order of the file: each ``raise
    NotImplementedError("Exercise N.M: what")`` and the innermost function that holds it."""
    try:
        tree = ast.parse(stubbed_source, where)
    except SyntaxError as error:
        raise DocsTableError(f"{where}:{error.lineno}: does not parse: {error.msg}") from None
    function_of = {}  # line of the raise -> (function name, label); inner functions come later and win
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            call = node.exc if isinstance(node, ast.Raise) else None
            if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "NotImplementedError"
                    and call.args and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str) and TASK_RE.match(call.args[0].value)):
                function_of[node.lineno] = (function.name, call.args[0].value)
    tasks = []
    for line, (function, label) in sorted(function_of.items()):
        match = TASK_RE.match(label)
        tasks.append(Task(match["number"], function, match["what"], line))
    return tasks


def exercise_tasks(root=PROJECT_ROOT):
    """``[(exercise, [Task, ...]), ...]`` for Exercises 1 to 3, from the files of ``root`` (the
    instructor tree with its solution blocks, or a student release with its stubs)."""
    result = []
    for exercise in EXERCISES:
        path = Path(root) / exercise.deliverable
        try:
            source = path.read_text()
        except OSError as error:
            raise DocsTableError(f"cannot read {exercise.deliverable} of {root}: {error.strerror}") from None
        try:
            stubbed, _ = strip_python_solutions(source, exercise.deliverable)
        except MarkerError as error:
            raise DocsTableError(f"malformed solution block: {error}") from None
        tasks = stub_tasks(stubbed, exercise.deliverable)
        if not tasks:
            raise DocsTableError(f"{exercise.deliverable}: no task found (no '# BEGIN SOLUTION "
                                 "Exercise N.M: ...' block and no NotImplementedError stub)")
        wrong = [t.number for t in tasks if t.key[0] != exercise.number]
        if wrong:
            raise DocsTableError(f"{exercise.deliverable} holds tasks of another exercise: {wrong} "
                                 f"(it is Exercise {exercise.number})")
        result.append((exercise, tasks))
    return result


def _cell(text):
    """Text for a markdown table cell: a ``|`` would end the cell."""
    return text.replace("|", "\\|")


def exercises_block(tasks):
    lines = ["| Exercise | Function | What you write |", "|---|---|---|"]
    for exercise, file_tasks in tasks:
        title = exercise.title.split(":")[0]
        lines.append(f"| **{_cell(title)}** | in `{exercise.deliverable}` | "
                     f"its tests: `python -m pytest -m {exercise.marker}` |")
        for task in file_tasks:
            lines.append(f"| {task.number} | `{task.function}` | {_cell(task.what)} |")
    return lines


# ----------------------------------------------------------------------------------------------
# Points, from the tests' markers
# ----------------------------------------------------------------------------------------------

class _Collector:
    """A pytest plugin: after collection (and every ``pytest_collection_modifyitems``, which adds
    the ``skip`` marks of ``slow``, ``lessons`` and canaries), what each test is worth."""

    def __init__(self):
        self.tests = []

    def pytest_collection_finish(self, session):
        graded = {exercise.marker for exercise in EXERCISES}
        cases = {}
        for item in session.items:
            key = (item.location[0], getattr(item, "originalname", item.name))
            cases[key] = cases.get(key, 0) + 1
        for item in session.items:
            exercise = next((m.name for m in item.iter_markers() if m.name in graded), None)
            if exercise is None:
                continue
            marker = item.get_closest_marker("points")
            points = float(marker.args[0]) if marker and marker.args else 1.0
            key = (item.location[0], getattr(item, "originalname", item.name))
            skipped = (any(True for _ in item.iter_markers("skip"))
                       or any(m.args and all(a is True for a in m.args) for m in item.iter_markers("skipif")))
            self.tests.append({"nodeid": item.nodeid, "file": item.location[0], "exercise": exercise,
                               "points": points / cases[key], "skipped": skipped,
                               "canary": item.get_closest_marker("canary") is not None})


def _collect_here():
    """Run in a subprocess, in the tree to collect: print the collected tests as JSON."""
    import pytest
    collector = _Collector()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"], plugins=[collector])
    if code not in (0, 5):
        raise SystemExit(f"collecting the tests failed (pytest exit code {code})")
    print("\n" + json.dumps(collector.tests))


def collect_tests(root=PROJECT_ROOT):
    """The graded tests of ``root`` (``tests/`` in full: public, hidden, instructor), as a list of
    ``{nodeid, file, exercise, points, skipped, canary}``."""
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--collect-json"],
                            cwd=root, capture_output=True, text=True, timeout=600)
    last = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
    if result.returncode != 0 or not last or not last[0].startswith("["):
        raise DocsTableError(f"could not collect the tests of {root} (exit code {result.returncode}):\n"
                             f"{(result.stdout + result.stderr)[-3000:]}")
    return json.loads(last[0])


def format_points(x):
    """Points as ``tests/conftest.py`` prints them: ``69``, ``2.5``."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def points_table(tests):
    """``{exercise marker: {"public": (points, tests), "hidden": (points, tests)}}`` of a default
    run: tests skipped by their markers (``slow``, ``lessons``) and canaries count for nothing."""
    table = {}
    for exercise in EXERCISES:
        row = {}
        for kind in ("public", "hidden"):
            mine = [t for t in tests if t["exercise"] == exercise.marker and not t["skipped"]
                    and not t["canary"] and t["file"].startswith(HIDDEN_TESTS) == (kind == "hidden")
                    and not t["file"].startswith("tests/instructor/")]
            row[kind] = (round(sum(t["points"] for t in mine), 6), len(mine))
        table[exercise.marker] = row
    return table


def first_run_block(table, tasks):
    """The end of the first run of the untouched release, as ``tests/conftest.py`` prints it."""
    lines = ["==================== your points (public tests of this run) ===================="]
    for exercise, _ in tasks:
        points, count = table[exercise.marker]["public"]
        name = exercise.title.split(":")[0]
        lines.append(f"{name:<45} {exercise.deliverable:<16} {format_points(0):>5} / "
                     f"{format_points(points):<5} (0 of {count} tests pass)")
    total = sum(table[e.marker]["public"][0] for e, _ in tasks)
    lines.append(f"{'total':<62} {format_points(0):>5} / {format_points(total)}")
    numbers = [t.number for _, file_tasks in tasks for t in file_tasks]
    lines.append(f"still to write: {', '.join(dict.fromkeys(numbers))}")
    exercise, file_tasks = tasks[0]
    first = file_tasks[0]
    lines.append(f"next: Exercise {first.number} {first.function} ({exercise.deliverable}:{first.line}): "
                 f"{first.what}")
    return ["```", *lines, "```"]


def totals_block(table, tasks):
    lines = ["| Exercise | public tests (a default run) | hidden tests | the grade (both) |",
             "|---|---:|---:|---:|"]
    sums = [0.0, 0.0]
    for exercise, _ in tasks:
        (public, public_count), (hidden, hidden_count) = table[exercise.marker]["public"], table[exercise.marker]["hidden"]
        sums = [sums[0] + public, sums[1] + hidden]
        lines.append(f"| {_cell(exercise.title.split(':')[0])} | {format_points(public)} "
                     f"({public_count} tests) | {format_points(hidden)} ({hidden_count} tests) | "
                     f"{format_points(public + hidden)} |")
    lines.append(f"| total | {format_points(sums[0])} | {format_points(sums[1])} | "
                 f"{format_points(sums[0] + sums[1])} |")
    return lines


# ----------------------------------------------------------------------------------------------
# The pages
# ----------------------------------------------------------------------------------------------

class Generated:
    """The blocks of one tree, computed once, lazily (points need a collection)."""

    NAMES = ("exercises", "first-run", "totals")

    def __init__(self, root=PROJECT_ROOT, tests=None):
        self.root = Path(root)
        self._tests = tests
        self._tasks = None

    @property
    def tasks(self):
        if self._tasks is None:
            self._tasks = exercise_tasks(self.root)
        return self._tasks

    @property
    def table(self):
        if self._tests is None:
            self._tests = collect_tests(self.root)
        return points_table(self._tests)

    def block(self, name):
        if name == "exercises":
            return exercises_block(self.tasks)
        if name == "first-run":
            return first_run_block(self.table, self.tasks)
        if name == "totals":
            return totals_block(self.table, self.tasks)
        raise DocsTableError(f"unknown generated block {name!r} (known: {', '.join(self.NAMES)})")


def is_marker_line(line):
    """Whether ``line`` opens or closes a generated block (the release drops these lines)."""
    return bool(BEGIN_RE.match(line)) or line.strip() == END_LINE


def blocks_of(text, where="<page>"):
    """``[(name, first line index inside, end line index), ...]`` of the generated blocks of
    ``text``; a block opened and never closed, nested, or closed without opening is an error."""
    lines = text.splitlines()
    blocks, opened = [], None
    for index, line in enumerate(lines):
        begin = BEGIN_RE.match(line)
        if line.startswith("<!-- BEGIN GENERATED") and not begin:
            raise DocsTableError(f"{where}:{index + 1}: write a block's first line as "
                                 "'<!-- BEGIN GENERATED: name -->' (lower-case name)")
        if begin:
            if opened is not None:
                raise DocsTableError(f"{where}:{index + 1}: BEGIN GENERATED inside the block opened "
                                     f"at line {opened[1]}")
            opened = (begin["name"], index + 1)
        elif line.strip() == END_LINE:
            if opened is None:
                raise DocsTableError(f"{where}:{index + 1}: END GENERATED without BEGIN GENERATED")
            blocks.append((opened[0], opened[1], index))
            opened = None
    if opened is not None:
        raise DocsTableError(f"{where}:{opened[1]}: BEGIN GENERATED: {opened[0]} is never closed "
                             f"by '{END_LINE}'")
    return blocks


def render(text, generated, where="<page>", only=None):
    """``text`` with every generated block (or those named in ``only``) rewritten from ``generated``."""
    lines = text.splitlines()
    output, start = [], 0
    for name, inside, end in blocks_of(text, where):
        if only is None or name in only:
            output += lines[start:inside] + generated.block(name)
        else:
            output += lines[start:end]
        start = end
    output += lines[start:]
    return "\n".join(output) + ("\n" if text.endswith("\n") else "")


def stale_pages(root=PROJECT_ROOT, pages=PAGES, generated=None):
    """``[(page, [names of the stale blocks]), ...]`` of the pages whose blocks disagree with the code."""
    generated = generated or Generated(root)
    stale = []
    for page in pages:
        text = _read_page(root, page)
        wrong = [name for name, inside, end in blocks_of(text, page)
                 if text.splitlines()[inside:end] != generated.block(name)]
        if wrong:
            stale.append((page, wrong))
    return stale


def _read_page(root, page):
    try:
        return (Path(root) / page).read_text()
    except OSError as error:
        raise DocsTableError(f"cannot read the page {page}: {error.strerror}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the generated blocks of the pages")
    action.add_argument("--check", action="store_true", help="exit 1 if a page's block is stale")
    action.add_argument("--collect-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("pages", nargs="*", default=list(PAGES),
                        help=f"pages relative to the project root (default: {' '.join(PAGES)})")
    args = parser.parse_args(argv)
    if args.collect_json:
        return _collect_here()
    try:
        generated = Generated(PROJECT_ROOT)
        if args.check:
            stale = stale_pages(PROJECT_ROOT, args.pages, generated)
            for page, names in stale:
                print(f"{page}: stale generated blocks: {', '.join(names)} "
                      "(run: python tools/docs_tables.py --write)", file=sys.stderr)
            return 1 if stale else 0
        for page in args.pages:
            text = _read_page(PROJECT_ROOT, page)
            new = render(text, generated, page)
            if new != text:
                (PROJECT_ROOT / page).write_text(new)
                print(f"rewrote {page}")
    except DocsTableError as error:
        print(f"docs_tables: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
