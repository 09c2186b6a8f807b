"""Grade student submissions with the instructor's tests (the command line; the grader itself is
the package ``tools/grading/``, whose docstring says what it does and how).

    python tools/grade.py SUBMISSION [SUBMISSION ...] [--out grades/] [--jobs N] [--sandbox auto]
    python tools/grade.py --self --exercise EX     # grade this tree as it is (GitHub Classroom)
    python tools/grade.py --help                   # every option
"""
import sys

from grading.cli import main

if __name__ == "__main__":
    sys.exit(main())
