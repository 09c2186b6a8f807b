"""Grades where courses keep them: Canvas and Moodle grade imports, and the students' feedback.

    python tools/grade.py SUBS --out grades/ --canvas GRADEBOOK.csv --assignment "Lab 5"
    python tools/grade.py SUBS --out grades/ --moodle --assignment "Lab 5" [--roster ROSTER.csv]
    python tools/grade.py SUBS --out grades/ --feedback

- ``--canvas GRADEBOOK.csv``: the gradebook exported from Canvas (Grades, Export): its ``Student``,
  ``ID``, ``SIS User ID``, ``SIS Login ID`` and ``Section`` columns, a ``Points Possible`` row, and
  one column per assignment (``Lab 5 (1234)``). Writes ``OUT/canvas_import.csv``: the identity
  columns and the ``--assignment`` column only (so an import cannot change any other grade with a
  stale value), every student's row, the graded ones filled; a student without a submission
  keeps the cell the export had.
- ``--moodle``: writes ``OUT/moodle_import.csv`` with two columns, ``identifier`` (the student:
  the roster's ``student``, else with ``--canvas`` the matched ``SIS Login ID`` or ``ID``, else the
  folder name) and the ``--assignment`` grade; in Moodle's
  "Import grades, CSV file" map ``identifier`` to the user field it holds (username, email
  address or ID number) and the grade column to the assignment.
- Matching: a submission folder's name is compared with each student's ``SIS Login ID``
  (case-insensitively: GitHub Classroom folders are user names), then with the ``ID``; or the
  ``--roster ROSTER.csv`` (columns ``submission,student``; ``student`` is a ``SIS Login ID``, an
  ``ID`` or a ``SIS User ID`` of the gradebook) says who wrote which. Students without a
  submission and submissions without a student are listed (``OUT/lms_unmatched.txt``), never
  guessed.
- The grade: the report's total in points, or with ``--scale 100`` as a percentage of its maximum.
- ``--feedback``: ``OUT/feedback/<submission>.md`` for each student (``tools/feedback.py``).

Bad input (a gradebook without the expected columns, a student twice, a roster naming a
submission that does not exist, a file that is not UTF-8 CSV) stops the run before any grading,
with what was wrong and its row. Every file is written to a temporary name, then renamed: nothing
already in ``OUT`` is lost.
"""
import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
POINTS_POSSIBLE = "Points Possible"
ROSTER_COLUMNS = ("submission", "student")
CANVAS_FILE, MOODLE_FILE, UNMATCHED_FILE = "canvas_import.csv", "moodle_import.csv", "lms_unmatched.txt"
CANVAS_ASSIGNMENT_ID = re.compile(r"^(?P<name>.*) \((?P<id>\d+)\)$")


class InputError(ValueError):
    """Bad input: what was wrong, where (file and row)."""


def add_arguments(parser):
    group = parser.add_argument_group("LMS exports and feedback (tools/lms_exports.py)")
    group.add_argument("--canvas", type=Path, metavar="GRADEBOOK.csv",
                       help="Canvas gradebook export: write OUT/canvas_import.csv with --assignment filled")
    group.add_argument("--moodle", action="store_true",
                       help="write OUT/moodle_import.csv (identifier, --assignment grade)")
    group.add_argument("--assignment", help='the assignment\'s column, e.g. "Lab 5" (Canvas: '
                                            '"Lab 5" or "Lab 5 (1234)")')
    group.add_argument("--roster", type=Path, metavar="ROSTER.csv",
                       help="columns submission,student: who wrote which submission folder")
    group.add_argument("--scale", type=float, metavar="N",
                       help="grades as a fraction of the maximum times N (--scale 100: percent); "
                            "default: points")
    group.add_argument("--feedback", action="store_true",
                       help="write OUT/feedback/<submission>.md, the student's feedback")


def check_arguments(parser, options, submission_names):
    """Read and check the gradebook and roster now, before grading (``parser.error`` on bad
    input); keep them on ``options.lms``. ``submission_names``: the submissions graded now (the
    reports already in OUT count too)."""
    options.lms = None
    known_submissions = set(submission_names) | (
        {p.stem for p in Path(options.out).glob("*.json")} if Path(options.out).is_dir() else set())
    if options.scale is not None and not (math.isfinite(options.scale) and options.scale > 0):
        parser.error(f"--scale must be a positive number, not {options.scale:g}")
    if not (options.canvas or options.moodle):
        if options.roster:
            parser.error("--roster goes with --canvas or --moodle")
        return
    if not options.assignment:
        parser.error("--canvas and --moodle need --assignment (the grade column's name)")
    try:
        gradebook = read_canvas_gradebook(options.canvas, options.assignment) if options.canvas else None
        roster = read_roster(options.roster, known_submissions, gradebook) if options.roster else None
    except InputError as error:
        parser.error(str(error))
    options.lms = Exports(gradebook, roster)


# ----------------------------------------------------------------------------------------------
# Reading: the gradebook and the roster, checked row by row
# ----------------------------------------------------------------------------------------------

def read_csv_rows(path, what):
    """The rows of a UTF-8 CSV file (a byte-order mark allowed), or an ``InputError`` naming the
    file, and the line, that is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"{what} {path}: cannot be read ({error.strerror})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise InputError(f"{what} {path}: line {line} is not UTF-8 (byte 0x{data[error.start]:02x}); "
                         "export it again as CSV (UTF-8)")
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise InputError(f"{what} {path}: not a CSV file ({error})")


@dataclass
class Gradebook:
    path: Path
    header: list
    rows: list                 # the student rows (lists of cells), in the file's order
    keep: list                 # rows kept as they are (Points Possible, Manual Posting)
    column: int                # index of the assignment's column
    points_possible: str = ""
    line_of: dict = field(default_factory=dict)   # id(row) -> line number in the file

    def cell(self, row, name):
        return row[self.header.index(name)].strip() if self.header.index(name) < len(row) else ""


def read_canvas_gradebook(path, assignment):
    rows = read_csv_rows(path, "Canvas gradebook")
    if not rows:
        raise InputError(f"Canvas gradebook {path}: the file is empty")
    header = [cell.strip() for cell in rows[0]]
    missing = [c for c in CANVAS_IDENTITY if c not in header]
    if missing:
        raise InputError(f"Canvas gradebook {path}: row 1 (the header) has no {', '.join(map(repr, missing))} "
                         f"column; a Canvas export has {', '.join(CANVAS_IDENTITY)} (Grades > Export "
                         f"> Export Entire Gradebook); its header: {header[:8]}")
    column = _assignment_column(path, header, assignment)
    book = Gradebook(Path(path), header, [], [], column)
    seen = {"SIS Login ID": {}, "ID": {}}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        student = row[0].strip() if row else ""
        if student == POINTS_POSSIBLE or (not book.rows and not book.cell(row, "ID")):
            if student == POINTS_POSSIBLE and column < len(row):
                book.points_possible = row[column].strip()
            book.keep.append(row)  # "Points Possible", "Manual Posting": kept as they are
            continue
        if len(row) != len(header):
            raise InputError(f"Canvas gradebook {path}: row {line} has {len(row)} cells, the header "
                             f"{len(header)}")
        for key in seen:
            value = book.cell(row, key)
            lookup = value.lower() if key == "SIS Login ID" else value
            if key == "ID" and not value:
                raise InputError(f"Canvas gradebook {path}: row {line} ({student!r}) has no ID")
            if value and lookup in seen[key]:
                raise InputError(f"Canvas gradebook {path}: rows {seen[key][lookup]} and {line} are the "
                                 f"same student ({key} {value!r}); remove the duplicate row")
            if value:
                seen[key][lookup] = line
        book.line_of[id(row)] = line
        book.rows.append(row)
    if not book.rows:
        raise InputError(f"Canvas gradebook {path}: no student rows")
    return book


def _assignment_column(path, header, assignment):
    exact = [i for i, name in enumerate(header) if name == assignment]
    by_name = [i for i, name in enumerate(header)
               if (m := CANVAS_ASSIGNMENT_ID.match(name)) and m["name"] == assignment]
    found = exact or by_name
    if len(found) == 1 and header[found[0]] not in CANVAS_IDENTITY:
        return found[0]
    assignments = [name for name in header if CANVAS_ASSIGNMENT_ID.match(name)]
    if len(found) > 1:
        raise InputError(f"Canvas gradebook {path}: several columns are assignment {assignment!r}: "
                         f"{[header[i] for i in found]}; give the one to fill with its id, e.g. "
                         f"--assignment {header[found[0]]!r}")
    raise InputError(f"Canvas gradebook {path}: row 1 has no column for assignment {assignment!r}; "
                     f"its assignments: {assignments[:20]} (create the assignment in Canvas and "
                     "export the gradebook again)")


@dataclass
class Roster:
    student_of: dict   # submission -> student (as written)
    without_submission: list


def read_roster(path, known_submissions, gradebook=None):
    """The roster ``submission,student``; every submission must exist (a report in OUT or a
    folder graded now) and, with a gradebook, every student must be in it; no name twice. A row
    with an empty ``submission`` is a student who submitted nothing."""
    rows = read_csv_rows(path, "roster")
    if not rows or [c.strip().lower() for c in rows[0][:2]] != list(ROSTER_COLUMNS):
        raise InputError(f"roster {path}: row 1 must be the header 'submission,student', not "
                         f"{rows[0] if rows else 'an empty file'}")
    student_of, line_of_student, line_of_submission, without = {}, {}, {}, []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[1].strip():
            raise InputError(f"roster {path}: row {line} has no student")
        submission, student = row[0].strip(), row[1].strip()
        if student.lower() in line_of_student:
            raise InputError(f"roster {path}: rows {line_of_student[student.lower()]} and {line} name the "
                             f"same student {student!r}")
        line_of_student[student.lower()] = line
        if gradebook is not None and _find_student(gradebook, student) is None:
            raise InputError(f"roster {path}: row {line} names student {student!r}, who is not in the "
                             f"gradebook {gradebook.path} (by SIS Login ID, ID or SIS User ID)")
        if not submission:
            without.append(student)
            continue
        if submission in line_of_submission:
            raise InputError(f"roster {path}: rows {line_of_submission[submission]} and {line} name the "
                             f"same submission {submission!r}")
        if submission not in known_submissions:
            raise InputError(f"roster {path}: row {line} names submission {submission!r}, which is not a "
                             f"submission folder given nor a report in --out")
        line_of_submission[submission] = line
        student_of[submission] = student
    return Roster(student_of, without)


def _find_student(gradebook, key):
    """The gradebook row of the student ``key`` names (SIS Login ID, case-insensitive; then ID;
    then SIS User ID), or ``None``."""
    for column, fold in (("SIS Login ID", True), ("ID", False), ("SIS User ID", False)):
        for row in gradebook.rows:
            value = gradebook.cell(row, column)
            if value and (value.lower() == key.lower() if fold else value == key):
                return row
    return None


# ----------------------------------------------------------------------------------------------
# Writing: the import files, the unmatched lists, the feedback
# ----------------------------------------------------------------------------------------------

def grade_value(report, scale):
    """The grade as written in an import file: points, or a fraction of the maximum times
    ``scale``; at most 2 decimals."""
    total, maximum = float(report["total"]), float(report["max_total"])
    value = total if scale is None else (scale * total / maximum if maximum > 0 else 0.0)
    return f"{round(value, 2):g}"


def _write_atomically(path, text):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _csv_text(rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


@dataclass
class Exports:
    gradebook: object = None
    roster: object = None

    def match(self, reports):
        """``(pairs, students_without, submissions_without)``: ``pairs`` is a list of
        ``(report, student key, gradebook row or None)``."""
        pairs, without_student = [], []
        used = set()
        for report in reports:
            name = report["submission"]
            if self.roster is not None:
                key = self.roster.student_of.get(name)
                row = _find_student(self.gradebook, key) if key and self.gradebook else None
            elif self.gradebook is not None:
                row = self._by_folder(name)
                key = self._key(row) if row else None
            else:
                key, row = name, None
            if key is None or (self.gradebook is not None and row is None):
                without_student.append(name)
                continue
            if row is not None and id(row) in used:
                without_student.append(f"{name} (its student already has a submission: not guessed)")
                continue
            used.add(id(row) if row is not None else key)
            pairs.append((report, key, row))
        if self.gradebook is not None:
            without_submission = [f'{self.gradebook.cell(r, "Student")} ({self._key(r)})'
                                  for r in self.gradebook.rows if id(r) not in used]
        else:
            without_submission = list(self.roster.without_submission) if self.roster else []
        return pairs, without_submission, without_student

    def _key(self, row):
        return self.gradebook.cell(row, "SIS Login ID") or self.gradebook.cell(row, "ID")

    def _by_folder(self, name):
        for column, fold in (("SIS Login ID", True), ("ID", False)):
            for row in self.gradebook.rows:
                value = self.gradebook.cell(row, column)
                if value and (value.lower() == name.lower() if fold else value == name):
                    return row
        return None

    def write(self, options, reports):
        """Write the import files and the unmatched lists; return the lines to print."""
        printed = []
        usable = [r for r in reports if not _not_exported(r)]
        stale = [f'{r["submission"]}: {_not_exported(r)}' for r in reports if _not_exported(r)]
        pairs, no_submission, no_student = self.match(usable)
        if options.canvas:
            printed.append(self._write_canvas(options, pairs))
        if options.moodle:
            rows = [["identifier", options.assignment]] + \
                [[key, grade_value(report, options.scale)] for report, key, _ in pairs]
            _write_atomically(options.out / MOODLE_FILE, _csv_text(rows))
            printed.append(f"Moodle import: {options.out / MOODLE_FILE} ({len(pairs)} grades)")
        lines = [f"students without a submission ({len(no_submission)}):", *("  " + s for s in no_submission),
                 f"submissions without a student ({len(no_student)}):", *("  " + s for s in no_student)]
        if stale:
            lines += [f"reports not exported (grade them again) ({len(stale)}):", *("  " + s for s in stale)]
        _write_atomically(options.out / UNMATCHED_FILE, "\n".join(lines) + "\n")
        printed += [line for line in lines if not line.endswith("(0):")] + \
            [f"(these lists: {options.out / UNMATCHED_FILE})"]
        return printed

    def _write_canvas(self, options, pairs):
        book = self.gradebook
        keep = [book.header.index(c) for c in CANVAS_IDENTITY] + [book.column]
        grade_of = {id(row): grade_value(report, options.scale) for report, _, row in pairs}
        out = [[book.header[i] for i in keep]]
        for row in book.keep:
            out.append([row[i] if i < len(row) else "" for i in keep])
        for row in book.rows:
            cells = [row[i] for i in keep]
            if id(row) in grade_of:
                cells[-1] = grade_of[id(row)]
            out.append(cells)
        _write_atomically(options.out / CANVAS_FILE, _csv_text(out))
        message = f"Canvas import: {options.out / CANVAS_FILE} ({len(pairs)} grades in {book.header[book.column]!r})"
        maximum = options.scale if options.scale is not None else (
            float(pairs[0][0]["max_total"]) if pairs else None)
        try:
            possible = float(book.points_possible)
        except ValueError:
            possible = None
        if possible is not None and maximum is not None and not math.isclose(possible, maximum):
            message += (f"\n  note: the assignment is worth {book.points_possible} points in Canvas, the "
                        f"grades here go up to {maximum:g}" + ("" if options.scale else
                                                             f" (--scale {book.points_possible} rescales them)"))
        return message


def _not_exported(report):
    """Why a report's grade must not go to an LMS (``""`` when it may): it fails its integrity
    check (edited, or graded against another tree), or the submission could not be graded."""
    if any("integrity check" in str(flag) for flag in report.get("flags") or []):
        return "fails its integrity check"
    if report.get("error"):
        return f"could not be graded ({str(report['error'])[:200]})"
    return ""


def write_outputs(options, reports):
    """The end of a grading run: the LMS import files and the feedback pages, from every report
    in OUT (as ``grades.csv``)."""
    lines = []
    if getattr(options, "lms", None) is not None:
        lines += options.lms.write(options, reports)
    if getattr(options, "feedback", False):
        from feedback import write_feedback
        written = write_feedback(reports, options.out, options.assignment or "Lab 5")
        lines.append(f"feedback: {len(written)} pages in {options.out / 'feedback'}")
    for line in lines:
        print(line)
