"""What a student may read about their grade: per-test text, the task each test checks, feedback.

Used by ``tools/grade.py --feedback`` (``OUT/feedback/<submission>.md``) and by the Gradescope
autograder (``tools/gradescope.py``). Everything here is built from a grade report (see
``tools/grade.py``) through a whitelist: the points, each test's outcome and a *student-safe*
message. Never shown: the flags, the sandbox, the seeds of the fresh inputs (any long number is
masked), the report's integrity code, and anything of the hidden tests' code (a hidden test shows
only the first line of its message, and an assertion that pytest spelled out from the test's
source shows as "a check failed").

Tasks: a lost test is tied to the exercise task it checks (``Exercise 1.2: ...``, the labels of
the solution blocks) by the ``NotImplementedError`` of an unfinished task in its message, else by
the exercise functions its test function calls (directly, through helpers of its test file or
through functions of ``given/``), else to its exercise as a whole.
"""
import ast
import os
import re
from functools import lru_cache
from pathlib import Path

import sys
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
from given.manifest import EXERCISES, PROJECT_ROOT  # noqa: E402
from solution_markers import strip_python_solutions  # noqa: E402

HIDDEN_TESTS = "tests/hidden/"
MESSAGE_SHOWN = 500          # characters of a public test's message shown to the student
HIDDEN_MESSAGE_SHOWN = 200   # characters of the first line of a hidden test's message
LONG_NUMBER = re.compile(r"\d{10,}")          # a fresh seed is a 63-bit integer (up to 19 digits)
SEED_WORDS = re.compile(r"\(?\bseeds?\b[\s=:]*(\.\.\.|\d+)?\)?", re.IGNORECASE)
TASK_IN_MESSAGE = re.compile(r"NotImplementedError: (Exercise (\d+)\.(\d+)[^\n]*)")
TAMPER_WORDS = ("instructor tree", "tamper")
EXERCISE_OF_MARKER = {e.marker: e for e in EXERCISES}


def is_hidden(row):
    return str(row.get("name", "")).startswith(HIDDEN_TESTS)


def short_test_name(row):
    """``tests/test_quantization.py::test_x[1]`` -> ``test_x[1]``."""
    return str(row.get("name", "")).rsplit("::", 1)[-1]


def mask_numbers(text):
    """``text`` with every run of 10 or more digits (a fresh seed) replaced by ``...``."""
    return LONG_NUMBER.sub("...", text)


def safe_message(row):
    """The text a student may see about one test: empty for a pass; for a public test its
    message (seeds masked, capped); for a hidden test only the first line, without seeds, and
    never an assertion pytest rewrote from the test's source."""
    if row.get("outcome") == "passed":
        return ""
    message = mask_numbers(str(row.get("message", "")).strip())
    if row.get("outcome") == "missing":
        return message[:MESSAGE_SHOWN]
    if not is_hidden(row):
        return message[:MESSAGE_SHOWN] + (" [...]" if len(message) > MESSAGE_SHOWN else "")
    first = message.splitlines()[0] if message else ""
    kind, _, text = first.partition(": ")
    if not text or text.startswith("assert ") or "\n" in text or kind.startswith(("E ", "def ")):
        text = "a check on fresh inputs failed" if kind.endswith("Error") else ""
        first = f"{kind}: {text}" if text else "a check on fresh inputs failed"
    first = SEED_WORDS.sub("", first).strip(" ,;")
    outcome = row.get("outcome", "failed")
    prefix = "" if outcome == "failed" else f"{outcome}: "
    return (prefix + first)[:HIDDEN_MESSAGE_SHOWN]


def safe_note(note):
    """A per-exercise note of the report as a student may read it (tampering is for the
    instructor: it shows as a run that could not be graded)."""
    if any(word in note for word in TAMPER_WORDS):
        return "this exercise's run could not be graded as it was: ask your instructor"
    return mask_numbers(note)


# ----------------------------------------------------------------------------------------------
# Tasks: which exercise task a test checks
# ----------------------------------------------------------------------------------------------

def _task_sort_key(task):
    match = re.match(r"Exercise (\d+)\.(\d+)", task)
    return (int(match[1]), int(match[2])) if match else (99, 99)


def _stub_tasks(source, name):
    """``{function name: task label}`` of the solution blocks of one deliverable."""
    try:
        stubbed = strip_python_solutions(source, name)[0]
        tree = ast.parse(stubbed)
    except Exception:  # noqa: BLE001 - an unreadable file: no tasks, feedback by exercise
        return {}
    tasks = {}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args
                        and isinstance(node.exc.args[0], ast.Constant)
                        and str(node.exc.args[0].value).startswith("Exercise ")):
                    tasks.setdefault(function.name, node.exc.args[0].value)
    return tasks


def _names_used(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _functions_of(path):
    """``{function name: names it uses}`` of the module-level functions (and methods) of a file."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return {}
    uses = {node.name: _names_used(node) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in tree.body:  # module-level tables, e.g. {"int8": absmax_quantize, ...}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    uses.setdefault(target.id, set()).update(_names_used(node.value or target))
    return uses


@lru_cache(maxsize=4)
def task_index(root=PROJECT_ROOT):
    """``(tasks, rings, tests)``: ``tasks`` maps an exercise function to its task label; ``rings``
    are the name graphs searched after the test's own file (``given/``, then the deliverables'
    own helpers, as the reference writes them); ``tests`` maps each test file to its graph."""
    root = Path(root)
    tasks = {}
    for exercise in EXERCISES:
        path = root / exercise.deliverable
        if path.exists():
            tasks.update(_stub_tasks(path.read_text(encoding="utf-8"), exercise.deliverable))
    rings = []
    for paths in (sorted((root / "given").rglob("*.py")), [root / e.deliverable for e in EXERCISES]):
        graph = {}
        for path in paths:
            for name, used in _functions_of(path).items():
                graph.setdefault(name, set()).update(used)
        rings.append(graph)
    tests = {path.relative_to(root).as_posix(): _functions_of(path)
             for path in sorted((root / "tests").rglob("test_*.py"))}
    return tasks, rings, tests


def _reached_tasks(start, graph, tasks):
    seen, todo, found = set(), [start], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in tasks:
            found.add(tasks[name])
        else:
            todo.extend(n for n in graph.get(name, ()) if n in tasks or n in graph)
    return found


def tasks_of(row, root=PROJECT_ROOT):
    """The task labels one test checks (a list, in lab order; empty when none is known): the
    unfinished task its message names, else the tasks its test file reaches (the test function
    and that file's helpers), else those it reaches through ``given/``, else through the
    deliverables' own helpers (a dispatch table reaches many: the nearest ring wins)."""
    match = TASK_IN_MESSAGE.search(str(row.get("message", "")))
    if match:
        return [match[1].strip()]
    tasks, rings, tests = task_index(root)
    file, _, function = str(row.get("name", "")).partition("::")
    function = function.split("[", 1)[0].split("::")[-1]
    prefix = f"Exercise {EXERCISE_OF_MARKER[row['exercise']].number}." \
        if row.get("exercise") in EXERCISE_OF_MARKER else "Exercise "
    graph = dict(tests.get(file, {}))
    for ring in [{}, *rings]:
        for name, used in ring.items():
            graph.setdefault(name, used)
        found = [t for t in _reached_tasks(function, graph, tasks) if t.startswith(prefix)]
        if found:
            return sorted(found, key=_task_sort_key)
    return []


def task_label(tasks, marker):
    """How a test's tasks read: one label, or ``Exercises 1.6, 1.7`` for several."""
    if len(tasks) == 1:
        return tasks[0]
    if tasks:
        return "Exercises " + ", ".join(t.split(":")[0].removeprefix("Exercise ") for t in tasks)
    return exercise_title(marker)


def exercise_title(marker):
    exercise = EXERCISE_OF_MARKER.get(marker)
    return f"{exercise.title} (`{exercise.deliverable}`)" if exercise else marker


def _fmt(x):
    try:
        return f"{round(float(x), 2):g}"
    except (TypeError, ValueError):
        return "?"


# ----------------------------------------------------------------------------------------------
# Feedback: one Markdown page per submission
# ----------------------------------------------------------------------------------------------

def lost_tests(report):
    """The rows that lost points, in lab order (exercise, task, public before hidden)."""
    rows = [r for r in report.get("tests", []) if float(r.get("earned", 0)) < float(r.get("points", 0))]
    order = {e.marker: e.number for e in EXERCISES}

    def key(row):
        tasks = tasks_of(row)
        return (order.get(row.get("exercise"), 99), _task_sort_key(tasks[0]) if tasks else (99, 99),
                is_hidden(row), row.get("name", ""))
    return sorted(rows, key=key)


def fix_first(report):
    """One sentence: what to fix first (the first missing file, else the first task in lab order
    that lost points), or ``""`` when nothing was lost."""
    if report.get("error"):
        return ("Your submission could not be graded: " + mask_numbers(str(report["error"]))[:300]
                + ". Fix this first, then submit again.")
    lost = lost_tests(report)
    if not lost:
        return ""
    missing = [r for r in lost if r.get("outcome") == "missing"]
    if missing:  # a file to submit (or rename) comes before any task
        return safe_message(missing[0]).rstrip(".") + "."
    first = lost[0]
    tasks = tasks_of(first)
    what = task_label(tasks, first.get("exercise"))
    same = [r for r in lost if r.get("exercise") == first.get("exercise")
            and task_label(tasks_of(r), r.get("exercise")) == what]
    points = sum(float(r["points"]) - float(r["earned"]) for r in (same or [first]))
    return (f"Start with {what}: {len(same) or 1} test(s), {_fmt(points)} points. "
            f"The first one, `{short_test_name(first)}`, says: {safe_message(first)[:200] or first['outcome']}")


def _code_block(text, indent="  "):
    body = text.replace("```", "'''").splitlines()
    return ["", indent + "```", *(indent + line for line in body), indent + "```", ""]


def _lost_section(rows, marker):
    """The lines of one exercise's lost tests: a missing file in one line; else grouped by task,
    every test named, a message shared by the whole group shown once."""
    if all(r.get("outcome") == "missing" for r in rows):
        lost = sum(float(r["points"]) for r in rows)
        return [f"- **Not graded**: {safe_message(rows[0])} ({len(rows)} tests, {_fmt(lost)} points)", ""]
    lines, groups = [], {}
    for row in rows:
        groups.setdefault(task_label(tasks_of(row), marker), []).append(row)
    for task, group in groups.items():
        lost = sum(float(r["points"]) - float(r["earned"]) for r in group)
        messages = {safe_message(r) for r in group}
        lines.append(f"- **{task}**: {len(group)} test(s), {_fmt(lost)} points")
        for row in group:
            kind = "hidden test on fresh inputs" if is_hidden(row) else "test"
            lines.append(f"  - {kind} `{short_test_name(row)}`: {row.get('outcome')}")
            if len(messages) > 1 and safe_message(row):
                lines += _code_block(safe_message(row), "    ")
        if len(messages) == 1 and next(iter(messages)):
            lines += ["", "  It says:" if len(group) == 1 else "  All of them say:"]
            lines += _code_block(next(iter(messages)))
        else:
            lines.append("")
    return lines


def feedback_markdown(report, assignment="Lab 5"):
    """The student's feedback page for ``report`` (Markdown): points per exercise, what to fix
    first, then every test that lost points, by exercise and task, with its message."""
    name = str(report.get("submission", "?"))
    lines = [f"# {assignment}: feedback for {name}", "",
             f"**Total: {_fmt(report.get('total'))} / {_fmt(report.get('max_total'))} points**", "",
             "| Exercise | Points |", "|---|---|"]
    for marker, maximum in (report.get("max_points") or {}).items():
        lines.append(f"| {exercise_title(marker)} | {_fmt(report['points'].get(marker, 0))} / {_fmt(maximum)} |")
    lines.append("")
    first = fix_first(report)
    if first:
        lines += ["## What to fix first", "", first, ""]
    lost = lost_tests(report)
    missing = {r.get("exercise") for r in lost if r.get("outcome") == "missing"}
    notes = {e: n for e, n in (report.get("notes") or {}).items() if e not in missing}
    if notes:
        lines += ["## Notes", ""] + [f"- {exercise_title(e)}: {safe_note(str(n))}" for e, n in notes.items()] + [""]
    if lost:
        lines += ["## Tests that lost points", ""]
        for marker in dict.fromkeys(r.get("exercise") for r in lost):
            rows = [r for r in lost if r.get("exercise") == marker]
            lines += [f"### {exercise_title(marker)}", ""] + _lost_section(rows, marker)
    else:
        lines += ["Every test passed.", ""]
    lines += ["Hidden tests check the same contracts as the public ones, on inputs drawn fresh for "
              "every grading run: `python -m pytest -m <exercise marker>` runs the public ones.", ""]
    return "\n".join(lines)


def write_feedback(reports, out, assignment="Lab 5"):
    """Write ``out/feedback/<submission>.md`` for each report; return the paths written. Each page
    is written to a temporary file, then renamed (a page already there is replaced whole)."""
    folder = Path(out) / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for report in reports:
        name = str(report["submission"]).replace(os.sep, "_")
        path = folder / f"{name}.md"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(feedback_markdown(report, assignment), encoding="utf-8", errors="backslashreplace")
        partial.replace(path)
        written.append(path)
    return written
