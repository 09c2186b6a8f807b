"""Write the student release of the lab into a folder.

    python tools/release.py OUT_DIR [--force]

- Every ``# BEGIN SOLUTION Exercise N.M: task`` ... ``# END SOLUTION`` block of the Python files
  becomes ``raise NotImplementedError("Exercise N.M: task")``; docstrings and hints stay.
- The notebook loses its outputs and the instructor's written answers.
- Instructor-only files (``INSTRUCTOR_ONLY``: hidden tests, grading tools, CI) are left out.
- The README is the student's own (``tools/student_README.md``, its exercises table generated again
  from the release's stubs by ``tools/docs_tables.py``): set-up, the exercises in order, running and
  scoring them, the notebook.
- It refuses to write into a non-empty folder unless ``--force`` is given, so no student or
  instructor work is ever overwritten by accident.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
from classroom_workflow import WORKFLOW_PATH, render_workflow  # noqa: E402
from given.manifest import INSTRUCTOR_ONLY, PROJECT_ROOT, is_build_output  # noqa: E402
from docs_tables import DocsTableError, Generated, is_marker_line, render  # noqa: E402
from solution_markers import MarkerError, strip_notebook, strip_python_solutions  # noqa: E402

STUDENT_README = Path(__file__).resolve().parent / "student_README.md"
"""The release's README.md; its ``exercises`` block is generated again from the release's stubs."""

# tools/grade.py, the package tools/grading/, tools/autograde_plugin.py and tools/solution_markers.py
# do ship: the Classroom workflow grades with them (they hold no solution and no hidden test).


def release_files(root=PROJECT_ROOT):
    """Paths (relative to ``root``) that go into the student release, sorted. Build outputs
    (``is_build_output``: Python environments of any name too) are not even walked into."""
    files = []
    for folder, folders, names in os.walk(root):
        folders[:] = [name for name in folders if not is_build_output(Path(folder) / name)]
        for name in names:
            path = Path(folder) / name
            relative = path.relative_to(root)
            if not path.is_file() or is_build_output(path):
                continue
            if any(relative.as_posix() == x or relative.as_posix().startswith(x + "/")
                   for x in INSTRUCTOR_ONLY) or path == STUDENT_README:
                continue
            files.append(relative)
    return sorted(files)


def student_readme(release_dir):
    """The student README: the template, its ``exercises`` table generated from the stubs of
    ``release_dir`` (what ships); its points tables are kept as written (``tools/docs_tables.py
    --check`` and ``tests/instructor/test_docs.py`` keep them true)."""
    where = str(STUDENT_README.relative_to(PROJECT_ROOT))
    text = render(STUDENT_README.read_text(), Generated(release_dir), where, only=("exercises",))
    return "".join(line for line in text.splitlines(keepends=True) if not is_marker_line(line))


def classroom_points(release_dir, root=PROJECT_ROOT):
    """Maximum points per exercise of the public tests: what the reference solution earns with
    the release's tests, graded by the instructor grader (about 20 s per exercise)."""
    from given.manifest import DELIVERABLES
    from grading.cli import default_options
    from grading.scoring import Calibration
    with tempfile.TemporaryDirectory(prefix="release-points-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(release_dir, tree)
        for name in DELIVERABLES:
            if (root / name).exists():
                shutil.copyfile(root / name, tree / name)
        return Calibration(default_options(), Path(tmp), source=tree).points()


def write_release(out_dir, root=PROJECT_ROOT, force=False, points=None):
    """Write the student release of ``root`` into ``out_dir``; return the list of stubbed tasks.

    The release gets the GitHub Classroom workflow, with ``points`` (exercise -> maximum) or,
    when not given, the points measured by ``classroom_points``.
    """
    out_dir = Path(out_dir).resolve()
    root = root.resolve()
    if out_dir == root or out_dir in root.parents or (
            root in out_dir.parents and not is_build_output(out_dir.relative_to(root).parts[0])):
        raise SystemExit(f"refusing to write the release to {out_dir}: it overlaps the instructor "
                         f"tree {root} (use a folder outside it, or {root / 'release'})")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise SystemExit(f"{out_dir} is not empty; refusing to overwrite it (use --force to write "
                         "into it anyway: files of the release are replaced, others are kept)")
    tasks = []
    for relative in release_files(root):
        source, target = root / relative, out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.suffix == ".py":
            stubbed, file_tasks = strip_python_solutions(source.read_text(), str(relative))
            compile(stubbed, str(relative), "exec")  # a stub that does not parse is a bug here
            target.write_text(stubbed)
            tasks += file_tasks
        elif relative.suffix == ".ipynb":
            notebook = strip_notebook(nbformat.read(source, as_version=4), str(relative))
            nbformat.write(notebook, target)
        else:
            shutil.copy2(source, target)
    (out_dir / "README.md").write_text(student_readme(out_dir))
    workflow = out_dir / WORKFLOW_PATH
    workflow.parent.mkdir(parents=True, exist_ok=True)
    workflow.write_text(render_workflow(points if points is not None else classroom_points(out_dir, root)))
    return tasks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder to write the student release into")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty folder (replacing the release's files)")
    args = parser.parse_args(argv)
    try:
        tasks = write_release(args.out_dir, force=args.force)
    except MarkerError as error:
        raise SystemExit(f"malformed solution block: {error}")
    except DocsTableError as error:
        raise SystemExit(f"the student README: {error}")
    print(f"Student release written to {args.out_dir}: {len(tasks)} stubbed tasks")
    for task in tasks:
        print(f"  {task}")


if __name__ == "__main__":
    sys.exit(main())
