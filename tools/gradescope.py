"""The lab as a Gradescope autograder.

    python tools/gradescope.py build OUT.zip     # the zip to upload to Gradescope
    python tools/gradescope.py run [--root DIR]  # what run_autograder does for each submission

``build`` writes a zip with ``setup.sh`` (run once by Gradescope, as root, on its Ubuntu image:
Python, CPU-only torch, the lab's requirements, bubblewrap), ``run_autograder`` (run for every
submission) and this instructor tree, hidden tests and reference solution included (Gradescope
unpacks it in ``/autograder/source``; no student ever sees it).

``run`` (the root is ``$GRADESCOPE_ROOT``, default ``/autograder``):

1. takes the deliverables from ``ROOT/submission``: the student may upload the files, a folder or
   a zip, nested, with the notebook or anything else beside them; each deliverable is found by
   its exact name at any depth (several different copies, a near miss such as
   ``quantization (1).py``, a file that is not UTF-8 or does not parse: each is named, with the
   fix);
2. grades them with ``tools/grade.py`` (calibration, hidden tests, sandbox), never as root: the
   grader and so the student's code run as an unprivileged user (``lab5grader``, made by
   ``setup.sh``), inside bubblewrap where the container allows it; every process left by that
   user is killed before any result is written;
3. writes ``ROOT/results/results.json`` (Gradescope's format: ``score``, ``execution_time``,
   ``output``, ``tests`` with ``name``, ``score``, ``max_score``, ``output``, ``visibility``):
   public tests ``visible``, hidden tests ``after_published``, each with its student-safe message
   (``tools/feedback.py``); the top-level ``output`` shows the public tests' points per exercise
   and what to fix first. Flags and the grader's log go to stdout, which Gradescope shows to
   instructors only (``stdout_visibility: hidden``). Anything that goes wrong still ends in a
   results.json that says what to do, never in "autograder failed".

The results file is written last, by this process (root), with a fresh name renamed into place,
after the student's processes are gone; nothing of the student's code runs as root, so nothing it
does during the run or after it can change it.
"""
import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from feedback import exercise_title, fix_first, is_hidden, safe_message, safe_note, short_test_name  # noqa: E402
from given.manifest import DELIVERABLE_OF, DELIVERABLES, EXERCISES, PROJECT_ROOT, is_build_output  # noqa: E402
from grading.limits import DELIVERABLE_MAX_BYTES, MiB  # noqa: E402
from grading.submissions import near_misses  # noqa: E402
from grading.trees import walk  # noqa: E402

GRADER_USER = "lab5grader"
FALLBACK_UID = 64055            # the grader's uid where setup.sh's user does not exist
VENV = "/opt/lab5-venv"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
UPLOAD_WALK_LIMITS = {"max_depth": 8, "max_entries": 5000}
JUNK = ("__MACOSX", ".")        # folders and files of an upload that are never looked at
REPORT_MAX_BYTES = 16 * MiB
GRADE_TIMEOUT = 1500            # seconds for the whole grading run: below the 30 minutes docs/lms.md asks
                                # Gradescope for, so a hung run still ends in a results.json

SETUP_SH = f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
apt-get update -qq
apt-get install -y -qq python3 python3-venv python3-pip bubblewrap >/dev/null
python3 -m venv {VENV}
# CPU-only torch first (no GPU on Gradescope; the default wheel would pull GBs of CUDA)
{VENV}/bin/python -m pip install -q torch --index-url {CPU_TORCH_INDEX}
{VENV}/bin/python -m pip install -q -r /autograder/source/requirements.txt
# The student's code never runs as root: the grader runs as this user.
id -u {GRADER_USER} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {GRADER_USER}
chmod -R a+rX,go-w /autograder/source {VENV}
"""

RUN_AUTOGRADER = f"""#!/usr/bin/env bash
# Gradescope runs this for every submission (as root, in /autograder): grade the upload in
# $GRADESCOPE_ROOT/submission, write $GRADESCOPE_ROOT/results/results.json (tools/gradescope.py).
ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
PYTHON="${{LAB5_PYTHON:-{VENV}/bin/python}}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
exec "$PYTHON" "$ROOT/source/tools/gradescope.py" run --root "$ROOT"
"""


# ----------------------------------------------------------------------------------------------
# build: the autograder zip
# ----------------------------------------------------------------------------------------------

def tree_files(root=PROJECT_ROOT, skip=()):
    """Relative paths of the instructor tree's regular files (build outputs, Python environments,
    ``.git`` and links left out), sorted."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git" and not is_build_output(Path(folder) / d)
                         and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(names):
            path = Path(folder) / name
            if is_build_output(path) or path.is_symlink() or not path.is_file():
                continue
            if path.resolve() in skip:
                continue
            files.append(path.relative_to(root))
    return sorted(files)


def _zip_entry(archive, name, data, executable=False):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
    archive.writestr(info, data)


def build(out_zip, root=PROJECT_ROOT):
    """Write the autograder zip: ``setup.sh`` and ``run_autograder`` at its top, beside the
    instructor tree. Written to a temporary file, then renamed. Returns the files' count."""
    out_zip = Path(out_zip).resolve()
    if out_zip.suffix != ".zip":
        raise SystemExit(f"{out_zip}: the autograder must be a .zip file")
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    partial = out_zip.with_name(out_zip.name + ".partial")
    files = tree_files(root, skip={out_zip, partial})
    clashes = [f for f in files if f.as_posix() in ("setup.sh", "run_autograder")]
    if clashes:
        raise SystemExit(f"the tree already has {clashes}: they would clash with the autograder's own")
    with zipfile.ZipFile(partial, "w") as archive:
        _zip_entry(archive, "setup.sh", SETUP_SH, executable=True)
        _zip_entry(archive, "run_autograder", RUN_AUTOGRADER, executable=True)
        for relative in files:
            path = root / relative
            _zip_entry(archive, relative.as_posix(), path.read_bytes(),
                       executable=bool(path.stat().st_mode & stat.S_IXUSR))
    partial.replace(out_zip)
    return len(files) + 2


# ----------------------------------------------------------------------------------------------
# run: the upload, the grading, results.json
# ----------------------------------------------------------------------------------------------

def _is_junk(relative):
    return any(part.startswith(JUNK) for part in relative.split("/"))


def _read_regular_file(path, limit):
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) of at most
    ``limit`` bytes, else the reason it is not read."""
    try:
        info = os.lstat(path)
    except OSError as error:
        return None, f"could not be read ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return None, "is not a regular file (a link or a special file)"
    if info.st_size > limit:
        return None, f"is larger than {limit // MiB} MiB"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as stream:
            return stream.read(limit + 1)[:limit], ""
    except OSError as error:
        return None, f"could not be read ({error.strerror})"


def collect_upload(submission):
    """``(found, problems, notebook)``: ``found`` maps each deliverable found in the upload (at any
    depth, exact name) to its bytes; ``problems`` maps the others to what to fix; ``notebook``
    says whether a notebook came with it."""
    found, problems = {}, {}
    submission = Path(submission)
    if not submission.is_dir():
        return found, {name: f"{name} was not found: the upload is empty" for name in DELIVERABLES}, False
    entries, note = walk(submission, **UPLOAD_WALK_LIMITS)
    files = [(rel, path) for rel, path, is_dir in entries if is_dir is False and not _is_junk(rel)]
    notebook = any(rel.endswith(".ipynb") for rel, _ in files)
    for name in DELIVERABLES:
        candidates = [(rel, path) for rel, path in files if rel.rsplit("/", 1)[-1] == name]
        contents, reasons = {}, []
        for rel, path in candidates:
            data, why = _read_regular_file(path, DELIVERABLE_MAX_BYTES)
            if data is None:
                reasons.append(f"{rel} {why}")
            else:
                contents.setdefault(data, []).append(rel)
        if len(contents) == 1:
            found[name] = next(iter(contents))
        elif len(contents) > 1:
            copies = ", ".join(repr(r) for rels in contents.values() for r in rels[:1])
            problems[name] = (f"{name}: your upload has {len(contents)} different copies ({copies}); "
                              "upload only the one to grade")
        elif reasons:
            problems[name] = f"{name}: " + "; ".join(reasons) + ": not graded, upload a plain file"
        else:
            problems[name] = _not_found(submission, name, note)
    return found, problems, notebook


def _not_found(submission, name, walk_note):
    near, _ = near_misses(submission, [name])
    near = [n for n in near[name] if not _is_junk(n)]
    message = f"{name} was not found in your upload (the name must be exactly {name})"
    if near:
        message += (f"; found {', '.join(repr(n) for n in near[:3])}, which looks like it: rename "
                    f"it to {name} and upload again")
    if walk_note:
        message += f" (the upload was searched only partly: {walk_note})"
    return message


def precheck(name, data):
    """What to fix before ``name`` can even be imported (not UTF-8, a syntax error), or ``""``.
    The code is only parsed here, never run."""
    head = data.split(b"\n", 2)[:2]
    if not any(b"coding" in line for line in head):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[:error.start].count(b"\n") + 1
            column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
            return (f"{name} is not UTF-8 text (byte 0x{data[error.start]:02x} at line {line}, "
                    f"column {column}): save it as UTF-8 in your editor and upload it again")
    try:
        compile(data, name, "exec", dont_inherit=True)
    except SyntaxError as error:
        where = f"line {error.lineno}" if error.lineno else "somewhere"
        return (f"{name} has a syntax error at {where}: {error.msg}; Python cannot import the file, "
                "so every test of its exercise fails: fix it (run `python -m pytest` on your "
                "machine) and upload again")
    except (ValueError, RecursionError, MemoryError, OverflowError) as error:
        return f"{name} cannot be parsed ({type(error).__name__}: {str(error)[:200]}): fix it and upload again"
    return ""


def grader_identity():
    """``(uid, gid)`` the grader runs as when this process is root (``lab5grader`` of setup.sh,
    else a fixed unused uid), or ``None`` to run it as this process's user: when that is not
    root, or when ``$LAB5_GRADER_UID`` is ``same`` (a machine where that uid cannot reach the
    Python, e.g. this lab's tests; the grader must then have bubblewrap, see ``run_grader``)."""
    if os.geteuid() != 0 or os.environ.get("LAB5_GRADER_UID") == "same":
        return None
    try:
        import pwd
        entry = pwd.getpwnam(GRADER_USER)
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return FALLBACK_UID, FALLBACK_UID


def processes_of(uid):
    """Pids of the living processes (zombies left out) whose real or effective uid is ``uid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in Path(entry.path, "status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if not fields.get("State", "").strip().startswith(("Z", "X")) and \
                str(uid) in fields.get("Uid", "").split()[:2]:
            pids.append(int(entry.name))
    return pids


def kill_processes_of(uid, gid, wait=10.0):
    """Kill every process of ``uid``: a child that becomes ``uid`` sends SIGKILL to all it may
    signal (``kill(-1)``, one pass under the kernel's task-list lock, so a fork cannot race it),
    repeated until ``/proc`` shows none (for at most ``wait`` seconds). Returns how many were
    found the first time."""
    first = len(processes_of(uid))
    deadline = time.monotonic() + wait
    while processes_of(uid) and time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.1)
    return first


def run_grader(staged, out, scratch, identity):
    """Run ``tools/grade.py`` on the staged submission, as ``identity`` (uid, gid) when given;
    its log goes to stdout (instructors only). Returns its exit code."""
    command = [sys.executable, str(PROJECT_ROOT / "tools" / "grade.py"), str(staged), "--out", str(out),
               "--jobs", "1", "--no-progress"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "TMPDIR": str(scratch),
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    kwargs = {}
    if identity is None and os.geteuid() == 0:
        command.append("--sandbox=bwrap")  # never the student's code as root without a sandbox
    if identity is not None:
        uid, gid = identity
        for path in (out, scratch):
            os.chown(path, uid, gid)
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    print(f"grading as uid {identity[0] if identity else os.geteuid()}: {' '.join(command)}", flush=True)
    try:
        result = subprocess.run(command, env=env, cwd=str(scratch), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=GRADE_TIMEOUT,
                                start_new_session=True, **kwargs)
        code, log = result.returncode, result.stdout
    except subprocess.TimeoutExpired as error:
        code, log = None, error.stdout or b""
    finally:
        if identity is not None:
            left = kill_processes_of(*identity)
            if left:
                print(f"killed {left} processes the grading run left behind (uid {identity[0]})")
    print(log.decode("utf-8", "replace")[-200000:], flush=True)
    return code


def read_grader_report(path):
    data, why = _read_regular_file(path, REPORT_MAX_BYTES)
    if data is None:
        return None, f"no report ({why})"
    try:
        report = json.loads(data)
    except ValueError as error:
        return None, f"the report is not JSON ({error})"
    if not (isinstance(report, dict) and isinstance(report.get("tests"), list)
            and isinstance(report.get("points"), dict)):
        return None, "the report is not a grade report"
    return report, ""


def _number(x):
    return round(float(x), 4)


def _exercise_short(marker):
    exercise = next((e for e in EXERCISES if e.marker == marker), None)
    return f"Exercise {exercise.number}" if exercise else marker


def results_from_report(report, problems, prechecks, notebook):
    """Gradescope's results (a dict) for a grade report, the upload's problems and prechecks."""
    tests, precheck_of = [], {}
    for exercise in EXERCISES:
        if exercise.deliverable in prechecks:
            precheck_of[exercise.marker] = prechecks[exercise.deliverable]
        if exercise.deliverable in problems:
            precheck_of[exercise.marker] = problems[exercise.deliverable]
    rows = sorted(report["tests"], key=lambda r: ([e.marker for e in EXERCISES].index(r["exercise"])
                                                 if r["exercise"] in [e.marker for e in EXERCISES] else 99,
                                                 is_hidden(r)))
    for row in rows:
        hidden = is_hidden(row)
        output = safe_message(row)
        if row.get("outcome") == "missing" and row.get("exercise") in precheck_of:
            output = precheck_of[row["exercise"]]  # the upload's own words: copies, near misses
        elif row.get("outcome") != "passed" and row.get("exercise") in precheck_of:
            output = f"{precheck_of[row['exercise']]}\n{output}".strip()
        tests.append({"name": f"{_exercise_short(row['exercise'])}{' (hidden, fresh inputs)' if hidden else ''}: "
                              f"{short_test_name(row)}",
                      "score": _number(row.get("earned", 0)), "max_score": _number(row.get("points", 0)),
                      "output": output, "visibility": "after_published" if hidden else "visible"})
    public = {**report, "tests": [r for r in report["tests"] if not is_hidden(r)]}
    lines = ["Lab 5 autograder. Points of the public tests (hidden tests on fresh inputs count too; "
             "they are shown when grades are published):"]
    for exercise in EXERCISES:
        rows_of = [r for r in public["tests"] if r.get("exercise") == exercise.marker]
        if rows_of:
            earned = sum(float(r.get("earned", 0)) for r in rows_of)
            maximum = sum(float(r.get("points", 0)) for r in rows_of)
            lines.append(f"  {exercise_title(exercise.marker)}: {earned:g} / {maximum:g}")
    fixes = [problems[n] for n in DELIVERABLES if n in problems] + \
        [prechecks[n] for n in DELIVERABLES if n in prechecks]
    if fixes:
        lines += ["", "To fix in your upload:"] + [f"  - {fix}" for fix in fixes]
    notes = {e: safe_note(str(n)) for e, n in (report.get("notes") or {}).items()
             if DELIVERABLE_OF.get(e) not in problems}  # a missing file: said under "To fix"
    if notes:
        lines += ["", "Notes:"] + [f"  - {_exercise_short(e)}: {n}" for e, n in notes.items()]
    first = fix_first(public)
    if first and not fixes:
        lines += ["", "What to fix first: " + first]
    if notebook:
        lines += ["", "The notebook you uploaded is not graded by this autograder."]
    return {"score": _number(report.get("total", 0)), "output": "\n".join(lines),
            "stdout_visibility": "hidden", "tests": tests}


def nothing_to_grade(problems, notebook):
    lines = ["Nothing to grade: none of the lab's files was found in your upload.",
             f"Upload {', '.join(DELIVERABLES)} (exact names; files, a folder or a zip).", ""]
    lines += [f"  - {problems[name]}" for name in DELIVERABLES if name in problems]
    if notebook:
        lines += ["", "The notebook alone is not graded by this autograder."]
    tests = [{"name": f"{_exercise_short(e.marker)}: {e.deliverable}", "score": 0.0,
              "output": problems.get(e.deliverable, ""), "visibility": "visible"} for e in EXERCISES]
    return {"score": 0.0, "output": "\n".join(lines), "stdout_visibility": "hidden", "tests": tests}


def could_not_grade(reason):
    return {"score": 0.0, "stdout_visibility": "hidden", "tests": [],
            "output": "The autograder could not grade this submission (a problem on our side, not "
                      f"in your files: {reason}). Your instructor can see the details; submit again "
                      "later or ask them."}


def write_results(path, results):
    """Write ``results.json`` under a fresh name in its folder, then rename it into place (a
    link or file planted there is replaced, never followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # the folder is root's alone (the grader's user cannot plant anything)
        os.chown(path.parent, 0, 0, follow_symlinks=False)
        os.chmod(path.parent, 0o755)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    fd, partial = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=2)
    os.chmod(partial, 0o644)
    os.replace(partial, path)


def grade_upload(root):
    """The results for the upload in ``root/submission``."""
    found, problems, notebook = collect_upload(root / "submission")
    prechecks = {name: why for name, data in found.items() if (why := precheck(name, data))}
    print(f"found: {sorted(found)}; problems: {problems}; prechecks: {prechecks}", flush=True)
    if not found:
        return nothing_to_grade(problems, notebook)
    identity = grader_identity()
    with tempfile.TemporaryDirectory(prefix="lab5-gradescope-") as tmp:
        os.chmod(tmp, 0o755)
        staged, out, scratch = Path(tmp) / "submission", Path(tmp) / "grades", Path(tmp) / "scratch"
        for folder in (staged, out, scratch):
            folder.mkdir()
        for name, data in found.items():
            (staged / name).write_bytes(data)
        code = run_grader(staged, out, scratch, identity)
        report, why = read_grader_report(out / "submission.json")
    if report is None:
        return could_not_grade(f"the grader ended with exit code {code}: {why}")
    flags = report.get("flags") or []
    print(f"FLAGS (instructor only): {flags}" if flags else "flags: none", flush=True)
    print(f"sandbox: {report.get('sandbox')}; total {report.get('total')} / {report.get('max_total')}", flush=True)
    results = results_from_report(report, problems, prechecks, notebook)
    if report.get("error"):
        results["output"] = ("The autograder could not grade your files: "
                             f"{safe_note(str(report['error']))[:300]}\n\n" + results["output"])
    return results


def run(root):
    """Grade ``root/submission`` and write ``root/results/results.json``; always returns 0."""
    start = time.monotonic()
    root = Path(root)
    try:
        results = grade_upload(root)
    except Exception as error:  # noqa: BLE001 - the student must still get a results.json
        traceback.print_exc(file=sys.stdout)
        results = could_not_grade(type(error).__name__)
    results["execution_time"] = int(round(time.monotonic() - start))
    write_results(root / "results" / "results.json", results)
    print(f"results: {root / 'results' / 'results.json'} (score {results['score']})")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="write the autograder zip")
    build_command.add_argument("out_zip", type=Path)
    run_command = commands.add_parser("run", help="grade one submission (what run_autograder does)")
    run_command.add_argument("--root", type=Path,
                             default=Path(os.environ.get("GRADESCOPE_ROOT", "/autograder")))
    args = parser.parse_args(argv)
    if args.command == "build":
        count = build(args.out_zip)
        print(f"Gradescope autograder written to {args.out_zip} ({count} files): upload it in the "
              "assignment's Configure Autograder page (see docs/lms.md)")
        return 0
    return run(args.root)


if __name__ == "__main__":
    sys.exit(main())
