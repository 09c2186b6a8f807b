"""Turn the reference solution into the student release: the solution-marker format, in one place.

In Python (modules, and notebook code cells), a solution block sits inside a function body,
from a line ``# BEGIN SOLUTION Exercise 2.1: <what to implement>`` to a line ``# END SOLUTION``
(see ``docs/authoring.md``), and becomes
``raise NotImplementedError("Exercise 2.1: <what to implement>")`` at the same indentation.
(This docstring never starts a line with the marker: the release would stub it.)
In a notebook's markdown cells, the lines between a line containing ``BEGIN SOLUTION`` and one
containing ``END SOLUTION`` (e.g. ``<!-- BEGIN SOLUTION -->``) become ``ANSWER_PLACEHOLDER``.
"""
import re

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?P<label>.*)$")
END_RE = re.compile(r"^[ \t]*# END SOLUTION\s*$")
TASK_RE = re.compile(r"^\s*(?P<task>Exercise \d+(\.\d+)*: .+?)\s*$")
ANSWER_PLACEHOLDER = "*Your answer here.*"


class MarkerError(ValueError):
    """A malformed solution block (unclosed, nested, or without its ``Exercise N.M: task`` label)."""


def strip_python_solutions(source, where="<source>"):
    """Replace every solution block of Python ``source`` by a ``NotImplementedError`` stub.

    Returns ``(stubbed_source, tasks)`` where ``tasks`` lists the blocks' labels in order.
    Raises ``MarkerError`` (naming ``where`` and the line) for an unclosed, nested or unlabelled block.
    """
    output, tasks = [], []
    block_start = None
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        begin = BEGIN_RE.match(line.rstrip("\n"))
        if begin:
            if block_start is not None:
                raise MarkerError(f"{where}:{number}: BEGIN SOLUTION inside the block opened at "
                                  f"line {block_start}")
            task = TASK_RE.match(begin["label"])
            if not task:
                raise MarkerError(f"{where}:{number}: a solution block must name its task: "
                                  "'# BEGIN SOLUTION Exercise N.M: what to implement'")
            block_start = number
            tasks.append(task["task"])
            output.append(f'{begin["indent"]}raise NotImplementedError({task["task"]!r})\n')
        elif END_RE.match(line):
            if block_start is None:
                raise MarkerError(f"{where}:{number}: END SOLUTION without BEGIN SOLUTION")
            block_start = None
        elif block_start is None:
            output.append(line)
    if block_start is not None:
        raise MarkerError(f"{where}:{block_start}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "".join(output), tasks


def strip_markdown_answers(text, where="<markdown>"):
    """Replace the lines between ``BEGIN SOLUTION`` / ``END SOLUTION`` lines by the placeholder."""
    output, inside = [], False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if "BEGIN SOLUTION" in line:
            if inside:
                raise MarkerError(f"{where}:{number}: nested BEGIN SOLUTION")
            inside = True
            output.append(ANSWER_PLACEHOLDER + "\n")
        elif "END SOLUTION" in line:
            if not inside:
                raise MarkerError(f"{where}:{number}: END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            output.append(line)
    if inside:
        raise MarkerError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "".join(output)


def strip_notebook(notebook, where="<notebook>"):
    """Student version of an ``nbformat`` notebook (modified in place and returned).

    Code cells: solution blocks become stubs; outputs and execution counts are cleared.
    Markdown cells: written answers become the placeholder.
    """
    for index, cell in enumerate(notebook.cells):
        cell_where = f"{where} cell {index}"
        if cell.cell_type == "code":
            cell.source, _ = strip_python_solutions(cell.source, cell_where)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = strip_markdown_answers(cell.source, cell_where)
        cell.get("metadata", {}).pop("execution", None)
    return notebook
