"""Submissions: the deliverables graded by their exact names, near misses named, one report each.

Trusts nothing in a submission folder: only the deliverables at its top, regular files up to
``DELIVERABLE_MAX_BYTES``, are read (as bytes, never imported here); anything else is ignored, and
a file that only looks like a deliverable is named with how to fix it. Grading one never raises:
whatever goes wrong becomes its error report.
"""
import hashlib
import re
import time
from pathlib import Path

from given.manifest import DELIVERABLE_OF, DELIVERABLES
from grading.limits import DELIVERABLE_MAX_BYTES, SUBMISSION_WALK_LIMITS, MiB
from grading.reports import make_report, read_report, report_is_intact
from grading.sandbox import sandbox_kind
from grading.scoring import fresh_input_flags, grade_tree
from grading.trees import digest_of, escaped_name, walk

NEAR_MISS_SUFFIX = re.compile(r"([\s_.-]*(\(\d+\)|copy|kopie|final|v?\d+))+$")


def _loose_stem(name):
    """``"Quantization (1).py"`` -> ``"quantization"``: a name compared loosely with a deliverable."""
    stem = name.lower().split(".")[0] if not name.startswith(".") else name.lower()
    return NEAR_MISS_SUFFIX.sub("", stem.strip())


def near_misses(submission, wanted):
    """``{deliverable: [relative path, ...]}`` of files in ``submission`` (any depth, within
    ``SUBMISSION_WALK_LIMITS``) that look like a deliverable of ``wanted`` but are not it,
    and the walk's limit note."""
    entries, note = walk(submission, **SUBMISSION_WALK_LIMITS)
    found = {name: [] for name in wanted}
    for relative, _, is_dir in entries:
        if is_dir is not False:
            continue
        base = relative.rsplit("/", 1)[-1]
        for name in wanted:
            if relative != name and _loose_stem(base) == _loose_stem(name):
                found[name].append(relative)
    return found, note


def read_deliverables(submission):
    """``(contents, problems)``: ``{name: bytes}`` of the deliverables found at the top of
    ``submission`` (regular files up to ``DELIVERABLE_MAX_BYTES``), and ``{name: why not}`` for
    the others, naming any near miss and how to fix it."""
    contents, problems = {}, {}
    for name in DELIVERABLES:
        path = submission / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            problems[name] = f"{name} was not submitted"
            continue
        except OSError as error:
            problems[name] = f"{name} could not be read: {error.strerror}"
            continue
        if not path.is_file() or path.is_symlink():
            problems[name] = f"{name} is not a regular file (a link or a folder): not graded"
        elif info.st_size > DELIVERABLE_MAX_BYTES:
            problems[name] = f"{name} is larger than {DELIVERABLE_MAX_BYTES // MiB} MiB: not graded"
        else:
            try:
                contents[name] = path.read_bytes()
            except OSError as error:
                problems[name] = f"{name} could not be read: {error.strerror}"
    _name_near_misses(submission, problems)
    return contents, problems


def _name_near_misses(submission, problems):
    missing = [name for name, why in problems.items() if why.endswith("was not submitted")]
    if not missing:
        return
    found, note = near_misses(submission, missing)
    for name in missing:
        if found[name]:
            candidates = ", ".join(repr(f) for f in found[name][:3])
            problems[name] += (f"; found {candidates}, which looks like it: only the exact name is "
                               f"graded, so rename it to {name} at the top of the submission folder")
        if note:
            problems[name] += f" (the folder was searched only partly: {note})"


def deliverables_hash(contents):
    return digest_of({name: hashlib.sha256(data).hexdigest() for name, data in contents.items()})


def grade_submission(submission, calibration, options):
    """Grade one submission folder; return its report (a JSON-able dict). Never raises: anything
    that goes wrong becomes the report's ``error``, with the reason."""
    name = escaped_name(Path(submission).name)
    start = time.monotonic()
    try:
        contents, problems = read_deliverables(Path(submission))
        missing = {e: problems[f] for e, f in DELIVERABLE_OF.items() if f in problems}
        rows, notes = grade_tree(calibration.stub_tree, contents, calibration.expected, options,
                                 missing, calibration.stub_digests, calibration.canaries,
                                 calibration.known)
    except Exception as error:  # noqa: BLE001 - one submission's problem must not end the run
        return error_report(name, f"{type(error).__name__}: {error}", calibration, options)
    flags = [f for info in notes.values() for f in info.get("flags", [])] + \
        fresh_input_flags(rows, calibration.expected)
    return make_report(name, rows, notes, calibration.exercises, {
        "deliverables_found": sorted(contents),
        "deliverables_hash": deliverables_hash(contents),
        "instructor_hash": calibration.tree_hash,
        "sandbox": sandbox_kind(options),
        "fresh_seeds": {e: info.get("seeds", []) for e, info in notes.items()},
        "wall_seconds": round(time.monotonic() - start, 2)}, flags=flags)


def error_report(name, reason, calibration, options):
    """The report of a submission that could not be graded: 0 everywhere, the reason named."""
    rows = [{"name": t["nodeid"], "exercise": t["exercise"], "points": t["points"], "earned": 0.0,
             "outcome": "error", "message": reason} for t in calibration.expected]
    notes = {e: {"note": f"not graded: {reason}", "seconds": 0.0} for e in calibration.exercises}
    return make_report(name, rows, notes, calibration.exercises, {
        "error": reason, "instructor_hash": calibration.tree_hash,
        "sandbox": sandbox_kind(options)}, flags=[f"error: {reason}"])


def is_up_to_date(report_path, contents, calibration, options):
    """Whether ``report_path`` is an intact report (signed with this tree's key) that graded
    exactly these deliverables against this instructor tree, with the same sandbox."""
    report, _ = read_report(report_path)
    return (report is not None and report_is_intact(report, calibration.key)
            and report.get("instructor_hash") == calibration.tree_hash
            and report.get("sandbox") == sandbox_kind(options)
            and report.get("deliverables_hash") == deliverables_hash(contents)
            and "error" not in report)
