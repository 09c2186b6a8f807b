"""The second hint of a task: what to reach for, where the trap is (never the solution).

    python tools/hints.py 2.4        # the second hint of Exercise 2.4
    python tools/hints.py --list     # every task that has one

The first hint of each task is a comment in the exercise file, above the task; the contracts
(shapes, dtypes, conventions) are in the docstrings. The hints live in tools/hints.toml.
"""
import argparse
import re
import sys
import textwrap
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: read the file's own simple layout
    tomllib = None

HINTS_FILE = Path(__file__).resolve().with_name("hints.toml")


ENTRY = re.compile(r'^\["(?P<task>[\d.]+)"\]\nfunction = "(?P<function>\w+)"\nhint = """(?P<hint>.*?)"""$',
                   re.MULTILINE | re.DOTALL)


def read_table(text):
    """tools/hints.toml's tables, without tomllib (Python 3.10): ``["N.M"]``, ``function = "..."``,
    ``hint = \"\"\"...\"\"\"``, one after the other."""
    return {m["task"]: {"function": m["function"], "hint": m["hint"].removeprefix("\n")}
            for m in ENTRY.finditer(text)}


def load_hints(path=HINTS_FILE):
    """``{task: (function, hint text)}`` in the lab's order."""
    text = Path(path).read_text(encoding="utf-8")
    table = tomllib.loads(text) if tomllib else read_table(text)
    order = sorted(table, key=lambda task: tuple(int(part) for part in task.split(".")))
    return {task: (table[task]["function"], textwrap.dedent(table[task]["hint"]).strip()) for task in order}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print the second hint of a task (the first is in "
                                                 "the exercise file, above the task).")
    parser.add_argument("task", nargs="?", help="the task's number, e.g. 2.4")
    parser.add_argument("--list", action="store_true", help="list the tasks that have a hint")
    args = parser.parse_args(argv)
    hints = load_hints()
    if args.list or args.task is None:
        for task, (function, _) in hints.items():
            print(f"{task:>5}  {function}")
        return 0
    task = args.task.removeprefix("Exercise ").strip()
    if task not in hints:
        print(f"no task {args.task!r}: the tasks are {', '.join(hints)} (python tools/hints.py --list)",
              file=sys.stderr)
        return 2
    function, hint = hints[task]
    print(f"Exercise {task} {function}, hint 2:\n")
    print(hint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
