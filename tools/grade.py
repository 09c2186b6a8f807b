"""Grade student submissions with the instructor's tests (the command line; the grader itself is
the package ``tools/grading/``, whose docstring says what it does and how).

    python tools/grade.py SUBMISSION [SUBMISSION ...] [--out grades/] [--jobs N] [--sandbox auto]
    python tools/grade.py --self --exercise EX     # grade this tree as it is (GitHub Classroom)
    python tools/grade.py --help                   # every option
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
from grading.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
