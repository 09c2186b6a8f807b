"""Grade student submissions with the instructor's tests.

    python tools/grade.py SUBMISSION [SUBMISSION ...] [--out grades/] [--jobs N] [--sandbox auto]

A submission is a folder holding the student's deliverables (``DELIVERABLES``, exact names at its
top); anything else in it (their tests, conftest.py, pytest.ini, ...) is ignored, and a file that
only looks like a deliverable ("quantization (1).py", "Pruning.py", one in a subfolder) is named
in the report with how to fix it. For each submission the grader:

1. makes a fresh copy of the instructor tree (hidden tests included) in which the deliverables
   are the *stubs* of the student release, then copies the student's deliverables over them (so a
   missing file scores 0, and the reference solution can never leak into a grade);
2. runs pytest once per exercise, in its own sandbox (bubblewrap: own PID, network, IPC and user
   namespaces, the tree read-only, a private /tmp, rlimits; see ``sandbox_command``), with a
   per-test timeout enforced from outside: a test that outlives it is killed with its sandbox,
   and the tests that never reported run again without it, so one hang costs one test;
3. takes the outcome of every expected test from records the plugin signs with a per-run secret
   and sends through a pipe this process opened and alone reads (a capped read, never abandoned),
   scores each test by its ``points`` marker (a test that never reported scores 0), and scores
   0 an exercise whose run changed any file of the instructor tree (reported as tampering);
4. flags what in-process cheating would look like: a canary test (``canary`` marker, in
   ``tests/hidden``) that passed, signed records for tests that do not exist, unsigned lines on the
   report channel, answers that look recorded (``fresh_input_flags``).

Every run draws a fresh seed (``GRADER_FRESH_SEED``, in the report's ``fresh_seeds``) from which
every test, public or hidden, draws its inputs: no graded point rests on inputs seen before.

Submissions are graded in parallel (``--jobs``: by default as many as cores and RAM allow); each
report is written as soon as it is done, signed with a key derived from the instructor tree, and
the CSV is rebuilt from every report in OUT. A submission whose deliverables and instructor tree
are unchanged since its (intact) report is skipped (``--regrade``). Anything that goes wrong with
one submission becomes its error row, named; the run always ends with a complete CSV.
``--self --exercise EX`` grades the tree it lives in, as is (the GitHub Classroom workflow).

The maximum for each exercise is what the reference solution earns on this machine (measured
first, once: "calibration"), so tests that skip here (e.g. missing offline data) count for nobody.

Output: a table of points per exercise on stdout, ``OUT/<submission>.json`` (per test: name,
exercise, points, outcome, short message; ``flags``; ``sandbox``) and ``OUT/grades.csv`` (one row
per submission, with a ``flags`` column).

The modules, in the order the data flows (each says what it owns and whom it trusts):

- ``limits``: every cap a run works under, in one table.
- ``trees``: file names, capped walks, digests of a tree, the instructor tree's copies.
- ``sandbox``: bubblewrap around a run (or, loudly, none).
- ``channel``: the pipe a run reports through, its records verified.
- ``pytest_run``: one pytest run, supervised from outside; one exercise's runs.
- ``scoring``: points per test, tampering, canaries, the flags; the calibration.
- ``reports``: a report's shape, its signature, the CSV, the table and the summary.
- ``submissions``: what a submission holds (exact names, near misses) and its report.
- ``cli``: the command line, grading in parallel, ``--self`` for GitHub Classroom.

Whoever imports it puts the project root (for ``given.manifest``) and ``tools/`` on ``sys.path``
first, as ``tools/grade.py`` does.
"""
