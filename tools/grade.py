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
"""
import argparse
import base64
import csv
import fnmatch
import functools
import hashlib
import hmac
import json
import os
import re
import resource
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
from given.manifest import (BUILD_OUTPUTS, DELIVERABLE_OF, DELIVERABLES, PROJECT_ROOT,  # noqa: E402
                            SHARED_DATA_DIR, is_python_environment)
from solution_markers import strip_python_solutions  # noqa: E402

try:  # instructor-only (not in the student release): Canvas / Moodle imports, feedback pages
    import lms_exports
except ImportError:
    lms_exports = None

NOT_COPIED = (".git", *BUILD_OUTPUTS)
HIDDEN_TESTS = "tests/hidden/"
GiB, MiB = 2 ** 30, 2 ** 20
OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}  # duplicates: the worse wins

REPORT_CHANNEL_LIMIT = 8 * MiB   # bytes of records kept per run (a run sends a few KiB)
OUTPUT_TAIL_LIMIT = 64 * 1024    # bytes of pytest's output kept per run (its tail)
LINE_LIMIT = 64 * 1024           # a longer record line is dropped (and counted as unsigned)
DELIVERABLE_MAX_BYTES = 5 * MiB  # a bigger deliverable is not graded
WALK_LIMITS = {"max_depth": 16, "max_entries": 20000}      # the graded tree (about 60 files)
SUBMISSION_WALK_LIMITS = {"max_depth": 6, "max_entries": 2000}  # looking for near misses
KILL_GRACE = 5.0                 # a test still running at 1.5 x its timeout + this is killed from outside
EXIT_GRACE = 10.0                # seconds a run may take to exit after its last expected result
PROCESS_LIMIT = 512              # RLIMIT_NPROC in the sandbox (threads count too)
FILE_SIZE_LIMIT = 1 * GiB        # RLIMIT_FSIZE: the largest file a test process may write
TMPFS_BYTES = 2 * GiB            # size of the sandbox's private /tmp (its scratch folder)

SANDBOX_TREE = "/grading/lab"    # where the graded tree appears inside the sandbox
SANDBOX_SHARED_DATA = "/grading/shared/data"  # = SANDBOX_TREE/../shared/data, as given.manifest expects
SANDBOX_UID = 65534              # "nobody"


# ----------------------------------------------------------------------------------------------
# Names and walks: iterative, capped, never dropping a name
# ----------------------------------------------------------------------------------------------

def escaped_name(name):
    """A file name as reports show it: bytes that are not UTF-8 (e.g. Latin-1 ``Jos\\xe9`` from an
    LMS zip) are escaped as ``\\xNN``, so every name is printable, writable and kept."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def printable(text):
    """``text`` with any unencodable character (a lone surrogate) escaped: safe to write as UTF-8."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def is_ignored(name, patterns):
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def walk(root, max_depth, max_entries, ignore=(), skip_environments=False):
    """Every file and folder under ``root``, without recursion: ``(entries, limit_note)``.

    ``entries`` is a sorted list of ``(relative name, path, is_dir)`` (names escaped); names
    matching ``ignore`` are skipped with what is below them, and so are Python environments of
    any name with ``skip_environments`` (the instructor's own tree, never a graded copy). The walk stops descending below
    ``max_depth`` and stops after ``max_entries``; ``limit_note`` then says so (else ``""``).
    An unreadable folder is an entry with ``is_dir=None``.
    """
    entries, stack, note = [], [(Path(root), "", 0)], ""
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            children = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
        except OSError as error:
            entries.append((prefix.rstrip("/") or ".", folder, None))
            note = note or f"could not read {prefix or '.'}: {error.strerror}"
            continue
        for child in children:
            if is_ignored(child.name, ignore) or (
                    skip_environments and child.is_dir(follow_symlinks=False) and is_python_environment(child.path)):
                continue
            if len(entries) >= max_entries:
                return sorted(entries), f"more than {max_entries} files and folders"
            relative = prefix + escaped_name(child.name)
            is_dir = child.is_dir(follow_symlinks=False)
            entries.append((relative, Path(child.path), is_dir))
            if is_dir and depth + 1 >= max_depth:
                note = note or f"folders nested deeper than {max_depth} levels ({relative}/...)"
            elif is_dir:
                stack.append((Path(child.path), relative + "/", depth + 1))
    return sorted(entries), note


def file_digests(tree, skip=(), ignore=(), skip_environments=False):
    """``{relative path: sha256}`` of every file under ``tree`` except the names in ``skip``;
    a symlink or special file is ``"not a file"``; a walk cut short by its caps is the entry
    ``"<walk>"`` (so a run that makes the tree huge or deep shows as tampering)."""
    entries, note = walk(tree, ignore=ignore, skip_environments=skip_environments, **WALK_LIMITS)
    digests = {"<walk>": note} if note else {}
    for relative, path, is_dir in entries:
        if relative in skip or is_dir:
            continue
        try:
            digests[relative] = (_sha256_of_file(path) if is_dir is False and path.is_file()
                                 and not path.is_symlink() else "not a file")
        except OSError as error:
            digests[relative] = f"unreadable: {error.strerror}"
    return digests


def _sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_of(digests, *extra):
    """One hash for a ``file_digests`` mapping (and any extra strings, e.g. options)."""
    return hashlib.sha256(json.dumps([digests, *extra], sort_keys=True).encode()).hexdigest()


def tampered_files(before, after):
    """Files of the instructor tree that a run added, changed or removed."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def not_copied(folder, names):
    """``shutil.copytree``'s ignore: ``NOT_COPIED`` names, and Python environments of any name
    (a ``venv/`` inside the instructor tree is neither copied into each run nor hashed)."""
    return {name for name in names
            if is_ignored(name, NOT_COPIED) or is_python_environment(os.path.join(folder, name))}


def copy_instructor_tree(destination, stub_deliverables, source=PROJECT_ROOT):
    """Copy the instructor tree to ``destination``; with ``stub_deliverables`` the deliverables
    become the student-release stubs."""
    shutil.copytree(source, destination, ignore=not_copied)
    if stub_deliverables:
        for name in DELIVERABLES:
            path = destination / name
            if path.exists():
                path.write_text(strip_python_solutions(path.read_text(), name)[0])


# ----------------------------------------------------------------------------------------------
# The sandbox: bubblewrap, or loudly none
# ----------------------------------------------------------------------------------------------

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
             "/etc/localtime", "/etc/nsswitch.conf", "/etc/hosts", "/etc/passwd", "/etc/group")
NO_SANDBOX_WARNING = """
*** WARNING: grading WITHOUT a sandbox ({reason}). ***
Student code runs as your user, can read and write every file you can (other submissions'
reports, this tree), can leave processes behind and can use the network. Every report says
"sandbox": "none". On Linux install bubblewrap (bash tools/install.sh, or apt-get install
bubblewrap); elsewhere grade inside a throw-away container (see the README's threat model).
"""


def _is_under(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def python_mounts():
    """Folders the interpreter needs (prefixes, standard library, site-packages), outermost
    first. Nothing of the instructor tree is among them (a virtual environment inside it
    excepted), and no folder that holds the instructor tree."""
    prefixes = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                             sys.base_exec_prefix)}
    candidates = prefixes | {os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)}
    root = str(PROJECT_ROOT)
    environments_in_root = [p for p in prefixes if _is_under(p, root) and p != root]
    kept = []
    for path in sorted(candidates):
        if _is_under(root, path):
            continue  # e.g. PYTHONPATH=/home/me: it would show the reference solution
        if _is_under(path, root) and not any(_is_under(path, env) for env in environments_in_root):
            continue
        if not any(_is_under(path, k) for k in kept):
            kept.append(path)
    return kept


def _system_mount_args():
    args = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    args += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    for path in python_mounts():
        args += ["--ro-bind", os.path.realpath(path), path]
    return args


def sandbox_command(command, tree, shared_data=SHARED_DATA_DIR):
    """``command`` wrapped in bubblewrap: new user (uid ``nobody``, no capabilities, no nested
    user namespaces), PID (everything the run starts dies with it), network (none), IPC and UTS
    namespaces; only the system's and Python's folders, read-only; ``tree`` read-only at
    ``SANDBOX_TREE`` and the offline data read-only beside it; a private, size-capped ``/tmp``
    (the only writable place: the scratch folder); a fresh ``/proc`` that shows only this run.
    Nothing else of the machine is there: no reference solution, no other run, no ``--out``."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID), "--disable-userns", "--hostname", "grading",
            "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
    args += _system_mount_args()
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
             "--ro-bind", str(tree), SANDBOX_TREE]
    if shared_data is not None and Path(shared_data).is_dir():
        args += ["--ro-bind", str(shared_data), SANDBOX_SHARED_DATA]
    return [*args, "--chdir", SANDBOX_TREE, "--", *command]


@functools.lru_cache(maxsize=None)
def bwrap_problem():
    """Why no bubblewrap sandbox can be made here (``""`` when one can): tried once per process."""
    if sys.platform != "linux":
        return f"no bubblewrap on {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bwrap (bubblewrap) is not installed"
    with tempfile.TemporaryDirectory(prefix="autograde-probe-") as tmp:
        command = sandbox_command([sys.executable, "-c", "import os; print(os.getpid())"], tmp)
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                    stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bwrap could not start: {error}"
    if result.returncode != 0:
        return f"bwrap failed here: {result.stderr.strip()[-300:]}"
    return ""


def sandbox_kind(options):
    """``"bwrap"`` or ``"none"`` for this run (decided once; ``--sandbox bwrap`` refuses to go on
    without one; without one, a loud warning)."""
    if getattr(options, "_sandbox_kind", None) is None:
        requested = getattr(options, "sandbox", "auto")
        problem = "--sandbox none was given" if requested == "none" else bwrap_problem()
        if problem and requested == "bwrap":
            raise SystemExit(f"--sandbox bwrap: no sandbox can be made here: {problem}")
        if problem:
            print(NO_SANDBOX_WARNING.format(reason=problem), file=sys.stderr)
        options._sandbox_kind = "none" if problem else "bwrap"
    return options._sandbox_kind


# ----------------------------------------------------------------------------------------------
# The result channel: one pipe per run, read by its own thread, capped, never abandoned
# ----------------------------------------------------------------------------------------------

class PipeReader(threading.Thread):
    """Reads the read end ``fd`` of a pipe until end of file, or until ``stop()`` and nothing more
    comes; it owns ``fd`` and closes it itself, so no other run can ever get that number while
    this one reads. At most ``limit`` bytes are kept (the head, or the tail with ``keep_tail``);
    the rest is read and dropped (``overflow`` counts it). ``on_data(chunk)`` sees kept bytes."""

    POLL_SECONDS = 0.2
    DRAIN_SECONDS = 2.0  # after stop(): a writer that never stops cannot keep the thread alive

    def __init__(self, fd, limit, keep_tail=False, on_data=None):
        super().__init__(daemon=True)
        self.fd, self.limit, self.keep_tail, self.on_data = fd, limit, keep_tail, on_data
        self.kept, self.size, self.overflow = [], 0, 0
        self._stopped_at = None

    def stop(self):
        """The writers are gone (the run and its sandbox were killed): read what is buffered, end."""
        self._stopped_at = time.monotonic()

    def data(self):
        return b"".join(self.kept)

    def run(self):
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        try:
            while True:
                if self._stopped_at is not None and time.monotonic() - self._stopped_at > self.DRAIN_SECONDS:
                    break
                if not poller.poll(self.POLL_SECONDS * 1000):
                    if self._stopped_at is not None:
                        break
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self._keep(chunk)
        except OSError:
            pass
        finally:
            os.close(self.fd)

    def _keep(self, chunk):
        if self.keep_tail:
            self.kept.append(chunk)
            self.size += len(chunk)
            while self.size - len(self.kept[0]) >= self.limit:
                self.size -= len(self.kept.pop(0))
                self.overflow += 1
            return
        room = self.limit - self.size
        if room <= 0:
            self.overflow += len(chunk)
            return
        self.overflow += max(0, len(chunk) - room)
        chunk = chunk[:room]
        self.kept.append(chunk)
        self.size += len(chunk)
        if self.on_data:
            self.on_data(chunk)


class ReportChannel:
    """The records of one run, verified as they arrive (each line: ``{"mac", "body"}``, the MAC an
    HMAC-SHA256 of the body with the run's secret). Tracks the test now running (its ``start``
    record came, its result did not) and when the last record came, for the watchdog."""

    def __init__(self, secret):
        self.secret, self.buffer = secret, b""
        self.records, self.unsigned_lines = [], 0
        self.running, self.finished = None, set()
        self.last_record = time.monotonic()

    def feed(self, chunk):
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > LINE_LIMIT:
            self.buffer, self.unsigned_lines = b"", self.unsigned_lines + 1
        for line in lines:
            record = verify_line(line, self.secret)
            if record is None:
                self.unsigned_lines += bool(line.strip())
                continue
            self.records.append(record)
            self.last_record = time.monotonic()
            if "start" in record:
                self.running = record["start"]
            elif "outcome" in record:
                self.finished.add(record.get("nodeid"))
                if record.get("nodeid") == self.running:
                    self.running = None


def verify_line(line, secret):
    """The record of one line if its MAC checks out with ``secret``, else ``None``."""
    try:
        envelope = json.loads(line)
        body, mac = envelope["body"], envelope["mac"]
        expected = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        if isinstance(mac, str) and hmac.compare_digest(mac, expected):
            record = json.loads(body)
            return record if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    return None


def verified_records(data, secret):
    """The records of ``data`` (JSON lines) whose MAC checks out with ``secret``; others dropped."""
    channel = ReportChannel(secret)
    channel.feed(data + b"\n")
    return channel.records


# ----------------------------------------------------------------------------------------------
# One pytest run: sandboxed, supervised from outside, reporting through a signed pipe
# ----------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What one pytest run left: ``ended`` is ``"exited"``, ``"total timeout"``, ``"hung test"``
    (killed by the per-test watchdog) or ``"finished"`` (killed after its last result);
    ``culprit`` is the test that was running when it ended early (``None`` if none was)."""
    code: object
    seconds: float
    output: str
    records: list
    ended: str = "exited"
    culprit: object = None
    unsigned_lines: int = 0
    overflow: int = 0
    seed: int = 0


def _pytest_command(args, per_test_timeout):
    return [sys.executable, "-m", "pytest", "-p", "autograde_plugin", "-p", "no:cacheprovider",
            "-q", "--no-header", "-o", f"timeout={per_test_timeout}", "--timeout-method=signal",
            *args]


def _base_env(sandboxed):
    """The test process's environment: inside the sandbox a minimal one (nothing of the
    instructor's environment leaks in); without it the grader's, less pytest's and ours."""
    if sandboxed:
        path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
        return {"PATH": path, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOGRADE_", "PYTEST_", "PYTHONPATH", "GRADER_"))}
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def run_env(options, tree, mode, report_fd, secret_fd, seed):
    sandboxed = sandbox_kind(options) == "bwrap"
    env = _base_env(sandboxed)
    env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=f"{SANDBOX_TREE if sandboxed else tree}/tools",
               AUTOGRADE_MODE=mode, AUTOGRADE_REPORT_FD=str(report_fd),
               AUTOGRADE_SECRET_FD=str(secret_fd),
               AUTOGRADE_MEMORY_LIMIT=str(int(options.memory_limit * GiB)),
               AUTOGRADE_CPU_LIMIT=str(cpu_seconds_limit(options.total_timeout)),
               AUTOGRADE_FILE_SIZE_LIMIT=str(FILE_SIZE_LIMIT), GRADER_FRESH_SEED=str(seed))
    if sandboxed:  # bwrap --die-with-parent and the PID namespace end everything with the grader
        env["AUTOGRADE_PROCESS_LIMIT"] = str(PROCESS_LIMIT)
    else:  # (inside the namespace the test process's parent is pid 1: no PR_SET_PDEATHSIG check)
        env["AUTOGRADE_DIE_WITH_PARENT"] = "1"
    return env


def cpu_seconds_limit(total_timeout):
    """CPU seconds after which the kernel ends a test process: a backstop for one that outlives
    its grader or escapes its process group. All cores busy for the whole total timeout, plus a
    minute, so that it never cuts a run the total timeout would have allowed."""
    return int(total_timeout * (os.cpu_count() or 1) + 60)


def run_pytest(args, tree, options, mode="run", expected=(), deadline=None):
    """Run pytest with the plugin on ``tree``, sandboxed (``sandbox_kind``), in a new process
    group, and supervise it from outside: killed at ``deadline`` (default: the total timeout),
    when one test runs longer than ``kill_after(per-test timeout)`` (whatever the test does with
    signals), or ``EXIT_GRACE`` after every test of ``expected`` reported.

    The plugin reports through a pipe this process opened, signing each record with a secret it
    reads from a second pipe at start-up (before any student code is imported). A fresh seed is
    drawn for the hidden tests (``GRADER_FRESH_SEED``). Returns a ``Run``.
    """
    secret, seed = secrets.token_bytes(32), secrets.randbits(63)
    report_read, report_write = os.pipe()
    output_read, output_write = os.pipe()
    secret_read, secret_write = os.pipe()
    os.write(secret_write, secret)
    os.close(secret_write)
    command = _pytest_command(args, options.per_test_timeout)
    sandboxed = sandbox_kind(options) == "bwrap"
    if sandboxed:
        command = sandbox_command(command, tree)
    channel = ReportChannel(secret)
    readers = [PipeReader(report_read, REPORT_CHANNEL_LIMIT, on_data=channel.feed),
               PipeReader(output_read, OUTPUT_TAIL_LIMIT, keep_tail=True)]
    start = time.monotonic()
    deadline = deadline or start + options.total_timeout
    try:
        process = subprocess.Popen(
            command, cwd=None if sandboxed else tree, stdin=subprocess.DEVNULL, stdout=output_write,
            stderr=output_write, start_new_session=True, pass_fds=(report_write, secret_read),
            env=run_env(options, tree, mode, report_write, secret_read, seed))
    except BaseException:
        for fd in (report_read, output_read):
            os.close(fd)
        raise
    finally:
        for fd in (report_write, output_write, secret_read):
            os.close(fd)
    for reader in readers:
        reader.start()
    try:
        ended, culprit = _supervise(process, channel, set(expected), deadline,
                                    kill_after(options.per_test_timeout))
    finally:
        _kill_group(process)
        for reader in readers:
            reader.stop()
        for reader in readers:
            reader.join()
    return Run(code=process.returncode if ended == "exited" else None,
               seconds=time.monotonic() - start,
               output=readers[1].data().decode(errors="replace")[-2000:], records=channel.records,
               ended=ended, culprit=culprit, unsigned_lines=channel.unsigned_lines,
               overflow=readers[0].overflow, seed=seed)


def kill_after(per_test_timeout):
    """Seconds after which a test that has not reported is killed from outside: half its own
    timeout more (its in-process timeout and report come first on a busy machine), plus 5 s."""
    return 1.5 * per_test_timeout + KILL_GRACE


def _supervise(process, channel, expected, deadline, per_test_limit):
    """Wait for ``process`` while watching the clock and the channel; ``(ended, culprit)``."""
    while process.poll() is None:
        now = time.monotonic()
        if now > deadline:
            return "total timeout", channel.running
        if channel.running is not None and now - channel.last_record > per_test_limit:
            return "hung test", channel.running
        if expected and expected <= channel.finished and now - channel.last_record > EXIT_GRACE:
            return "finished", None
        time.sleep(0.1)
    return "exited", channel.running


def _kill_group(process):
    """Kill the run's process group (with bubblewrap: its PID namespace dies with it) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def collect_tests(tree, options):
    """The tests of ``tree`` with an exercise marker: a list of ``{nodeid, exercise, points,
    file, canary, twin}``, in pytest's order."""
    run = run_pytest(["--collect-only", *options.pytest_args], tree, options, mode="collect")
    tests = [t for t in run.records if t.get("exercise") in DELIVERABLE_OF]
    if run.code not in (0, 5) or not tests:
        raise SystemExit(f"could not collect the instructor tests in {tree} ({run.ended}, exit code "
                         f"{run.code}):\n{run.output}")
    return tests


def results_from_records(records):
    """``{nodeid: (outcome, message)}``; a test reported twice keeps its worse outcome."""
    results = {}
    for record in records:
        if "nodeid" in record and record.get("outcome") in OUTCOME_RANK:
            previous = results.get(record["nodeid"])
            if previous is None or OUTCOME_RANK[record["outcome"]] > OUTCOME_RANK[previous[0]]:
                results[record["nodeid"]] = (record["outcome"], str(record.get("message", "")))
    return results


def channel_flags(runs, known):
    """What the runs of one exercise show on their channels of in-process cheating: unsigned
    lines, signed results for tests that do not exist (the secret was read), a test reported
    twice in one run, a flood."""
    flags = []
    unsigned = sum(run.unsigned_lines for run in runs)
    if unsigned:
        flags.append(f"{unsigned} lines on the report channel were not signed by the run (forged "
                     "records?)")
    reported = [[r["nodeid"] for r in run.records if "outcome" in r and "nodeid" in r] for run in runs]
    unknown = sorted({str(n) for names in reported for n in names} - known)
    if unknown:
        flags.append(f"signed results for {len(unknown)} tests that do not exist (e.g. "
                     f"{unknown[0][:80]!r}): the run's secret was read")
    twice = sorted({str(n) for names in reported for n in names if names.count(n) > 1})
    if twice:
        flags.append(f"{len(twice)} tests reported more than once (e.g. {twice[0][:80]!r})")
    overflow = sum(run.overflow for run in runs)
    if overflow:
        flags.append(f"flooded its report channel ({overflow} bytes over the cap, dropped)")
    return flags


def ordered_files(tests):
    """The test files of ``tests``, canary files last (so a patch made while tests run is caught)."""
    files = list(dict.fromkeys(t["file"] for t in tests))
    canary_files = {t["file"] for t in tests if t.get("canary")}
    return [f for f in files if f not in canary_files] + [f for f in files if f in canary_files]


def run_exercise(tree, exercise, tests, options, known=frozenset()):
    """Run one exercise's tests in ``tree``; return ``{nodeid: (outcome, message)}`` and notes.

    A test that hangs or kills its process is charged to that test alone: the tests that never
    reported run again, without it, until every test reported or the total timeout is spent.
    """
    deadline = time.monotonic() + options.total_timeout
    args = [*ordered_files(tests), "-m", exercise, "--continue-on-collection-errors"]
    pending = [t["nodeid"] for t in tests]
    results, records, runs, charged = {}, [], [], []
    while pending:
        run = run_pytest([*args, *options.pytest_args], tree, options, expected=pending,
                         deadline=deadline)
        runs.append(run)
        records += run.records
        results.update(results_from_records(run.records))
        if run.culprit in pending and run.culprit not in results and run.ended in ("hung test", "exited"):
            results[run.culprit] = _charged_outcome(run, options)
            charged.append(run.culprit)
        remaining = [n for n in pending if n not in results]
        if not remaining or len(remaining) == len(pending) or run.ended == "total timeout":
            break
        pending = remaining
        args = [*ordered_node_ids(tests, remaining), "-m", exercise, "--continue-on-collection-errors"]
    flags = channel_flags(runs, set(known) | {t["nodeid"] for t in tests})
    return results, _exercise_info(runs, records, charged, flags, options)


def ordered_node_ids(tests, nodeids):
    """``nodeids`` in the order of ``tests``, canaries last."""
    wanted = set(nodeids)
    chosen = [t for t in tests if t["nodeid"] in wanted]
    return [t["nodeid"] for t in chosen if not t.get("canary")] + \
        [t["nodeid"] for t in chosen if t.get("canary")]


def _charged_outcome(run, options):
    if run.ended == "hung test":
        return ("timeout", f"killed from outside after {kill_after(options.per_test_timeout):g} s "
                           "without a result (the test did not stop at its timeout)")
    return ("crashed", f"the test process died during this test (exit code {run.code})")


def _exercise_info(runs, records, charged, flags, options):
    last = runs[-1]
    collect_errors = [r["message"] for r in records if "collect_error" in r]
    if any(run.ended == "total timeout" for run in runs):
        note = f"stopped after the total timeout of {options.total_timeout:g} s"
    elif last.code not in (0, 1, 5, None) and not results_from_records(records):
        note = f"pytest ended with exit code {last.code} before reporting any test"
    elif last.code not in (0, 1, 5, None):
        note = f"the test process died (exit code {last.code})"
    else:
        note = ""
    if charged:
        note = (note + "; " if note else "") + (
            f"{len(charged)} tests hung or crashed and were charged alone ({charged[0]}"
            f"{', ...' if len(charged) > 1 else ''}); the tests after them ran again")
    fallback = collect_errors[0] if collect_errors else (note or last.output.strip()[-300:])
    return {"seconds": round(sum(run.seconds for run in runs), 2), "note": note,
            "fallback": fallback, "runs": len(runs), "seeds": [run.seed for run in runs],
            "flags": list(dict.fromkeys(flags))}


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------

def grade_exercise(base_tree, deliverables, exercise, tests, options, base_digests=None,
                   canaries=(), known=frozenset()):
    """Grade one exercise in a fresh copy of ``base_tree`` with ``deliverables`` (name -> bytes)
    written over it; ``canaries`` run last and must fail.

    Any file of the instructor tree that the run adds, changes or removes is tampering: it is
    reported and the exercise scores 0. ``base_digests`` (the stub tree's digests taken at
    calibration) also catches a change made to the shared stub tree by an earlier run.
    """
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(base_tree, tree)
        for name, content in deliverables.items():
            (tree / name).write_bytes(content)
        before = file_digests(tree, skip=DELIVERABLES)
        if base_digests is not None and tampered_files(base_digests, before):
            raise RuntimeError("the shared copy of the instructor tree was changed by an earlier "
                               f"run ({', '.join(tampered_files(base_digests, before)[:3])}): "
                               "grading without a sandbox is not trustworthy")
        results, info = run_exercise(tree, exercise, [*tests, *canaries], options, known)
        info["tampered"] = tampered_files(before, file_digests(tree, skip=DELIVERABLES))
    if info["tampered"]:
        info["note"] = "the instructor tree was modified, the exercise scores 0: " + \
            ", ".join(info["tampered"][:5])
        info["flags"].append(f"{exercise}: modified the instructor tree")
    info["canaries"] = {c["nodeid"]: results.get(c["nodeid"], ("not run", ""))[0] for c in canaries}
    info["flags"] += [f"canary {name} passed: test outcomes were changed in-process"
                      for name, outcome in info["canaries"].items() if outcome == "passed"]
    rows = [_score_row(test, exercise, results, info) for test in tests]
    missing = sum(row["outcome"] in ("not run", "crashed", "timeout") for row in rows)
    if missing and not info["note"]:
        info["note"] = f"{missing} tests never reported a result (the test process ended early)"
    return rows, info


def _score_row(test, exercise, results, info):
    outcome, message = results.get(test["nodeid"], ("not run", info["fallback"]))
    if outcome == "not run" and info["note"]:
        outcome = "timeout" if "timeout" in info["note"] else "crashed"
    earned = test["points"] if outcome == "passed" and not info["tampered"] else 0.0
    return {"name": test["nodeid"], "exercise": exercise, "points": test["points"],
            "earned": earned, "outcome": outcome, "message": message}


WORKED_EXAMPLE_GAP = 0.5
"""A worked example passing this much more often than its twin is flagged (see ``fresh_input_flags``)."""


def _rows_of(rows, nodeid):
    """The rows of test ``nodeid``: itself, or its parametrized cases (``nodeid[...]``)."""
    return [r for r in rows if r["name"] == nodeid or r["name"].startswith(nodeid + "[")]


def fresh_input_flags(rows, tests=()):
    """What answers recorded from earlier runs look like, per exercise (a flag, never a penalty):

    - worked examples (fixed inputs anyone can record; no points) pass clearly more often than
      their twins (the same contracts on this run's fresh inputs): the pass rates differ by at
      least ``WORKED_EXAMPLE_GAP``, with at least two worked examples passed;
    - every public test passed but hidden tests on fresh inputs failed.
    """
    twins = {t["nodeid"]: t["twin"] for t in tests if t.get("twin")}
    flags = []
    for exercise in sorted({r["exercise"] for r in rows}):
        mine = [r for r in rows if r["exercise"] == exercise]
        worked = [r for r in mine if r["name"] in twins]
        twin_rows = [r for name in dict.fromkeys(twins[w["name"]] for w in worked) for r in _rows_of(mine, name)]
        if worked and twin_rows:
            worked_rate = sum(r["outcome"] == "passed" for r in worked) / len(worked)
            twin_rate = sum(r["outcome"] == "passed" for r in twin_rows) / len(twin_rows)
            if sum(r["outcome"] == "passed" for r in worked) >= 2 and worked_rate - twin_rate >= WORKED_EXAMPLE_GAP:
                flags.append(f"{exercise}: {worked_rate:.0%} of the worked examples (fixed inputs) "
                             f"passed but only {twin_rate:.0%} of their twins on this run's fresh "
                             f"inputs: recorded answers?")
        public = [r for r in mine if not r["name"].startswith(HIDDEN_TESTS)]
        hidden = [r for r in mine if r["name"].startswith(HIDDEN_TESTS)]
        failed = [r for r in hidden if r["outcome"] != "passed"]
        if public and hidden and failed and all(r["outcome"] == "passed" for r in public):
            flags.append(f"{exercise}: every public test passed but {len(failed)} hidden tests on "
                         f"fresh inputs failed (e.g. {failed[0]['name']}): recorded answers?")
    return flags


def not_submitted(exercise, tests, message):
    """Rows and note of an exercise whose file is missing from the submission: 0, without a run."""
    rows = [{"name": t["nodeid"], "exercise": exercise, "points": t["points"], "earned": 0.0,
             "outcome": "missing", "message": message} for t in tests]
    return rows, {"seconds": 0.0, "note": message, "tampered": [], "flags": []}


def grade_tree(base_tree, deliverables, expected, options, missing=None, base_digests=None,
               canaries=(), known=frozenset()):
    """Grade every exercise of ``expected``; return the per-test rows and per-exercise notes.

    ``missing`` (exercise -> note): exercises whose file was not submitted score 0 without
    running their tests (they could only fail on the stub in ``base_tree``).
    """
    rows, notes = [], {}
    for exercise in sorted({t["exercise"] for t in expected}):
        tests = [t for t in expected if t["exercise"] == exercise]
        if missing and exercise in missing:
            exercise_rows, notes[exercise] = not_submitted(exercise, tests, missing[exercise])
        else:
            exercise_rows, notes[exercise] = grade_exercise(
                base_tree, deliverables, exercise, tests, options, base_digests,
                [c for c in canaries if c["exercise"] == exercise], known)
        rows += exercise_rows
    return rows, notes


class Calibration:
    """What every submission is graded against, measured once per run.

    ``stub_tree``: the instructor tree with the deliverables stubbed (each submission's copies
    start from it; ``stub_digests`` are its files' hashes, checked before every copy is used);
    ``expected``: the tests the reference solution passes here, with points; ``canaries``: the
    tests that must fail (the reference fails them all, or calibration stops); ``tree_hash``: a
    hash of the stub tree and of the grading options, so a re-run can tell whether an old report
    is still valid; ``key``: the key reports are signed with, derived from the whole instructor
    tree (reference solution included: nothing inside a sandbox can compute it).
    """

    def __init__(self, options, workdir, source=PROJECT_ROOT):
        reference = workdir / "reference"
        copy_instructor_tree(reference, stub_deliverables=False, source=source)
        all_tests = collect_tests(reference, options)
        self.known = frozenset(t["nodeid"] for t in all_tests)
        self.canaries = [t for t in all_tests if t.get("canary")]
        reference_files = {name: (reference / name).read_bytes() for name in DELIVERABLES
                           if (reference / name).exists()}
        self.stub_tree = workdir / "stubs"
        copy_instructor_tree(self.stub_tree, stub_deliverables=True, source=reference)
        graded = [t for t in all_tests if not t.get("canary")]
        rows, notes = grade_tree(self.stub_tree, reference_files, graded, options,
                                 canaries=self.canaries, known=self.known)
        self.expected = _passed_by_reference(graded, rows)
        _check_canaries_fail(notes)
        self.exercises = sorted({t["exercise"] for t in self.expected})
        self.stub_digests = file_digests(self.stub_tree, skip=DELIVERABLES)
        self.tree_hash = digest_of(file_digests(self.stub_tree), options.pytest_args)
        self.key = hashlib.sha256(b"lab5 grade report\0" + digest_of(
            file_digests(reference), options.pytest_args, self.tree_hash).encode()).digest()

    def points(self, public_only=False):
        """Maximum points per exercise (of the public tests only, with ``public_only``)."""
        tests = [t for t in self.expected if not (public_only and t["file"].startswith(HIDDEN_TESTS))]
        return {e: points_sum(t["points"] for t in tests if t["exercise"] == e) for e in self.exercises}


def _check_canaries_fail(notes):
    wrong = {name: outcome for info in notes.values()
             for name, outcome in info.get("canaries", {}).items() if outcome != "failed"}
    if wrong:
        raise SystemExit("canary tests must fail with the reference solution, these did not "
                         f"(fix them or the grader; 'not run': see the run's notes): {wrong}\n"
                         f"{[info['note'] for info in notes.values() if info['note']]}")


def _passed_by_reference(tests, rows):
    failing = [r for r in rows if r["outcome"] not in ("passed", "skipped")]
    if failing:
        names = "\n  ".join(f'{r["name"]}: {r["outcome"]} {r["message"][:200]}' for r in failing)
        raise SystemExit(f"the reference solution fails {len(failing)} tests; fix the instructor "
                         f"tree before grading:\n  {names}")
    skipped = [r["name"] for r in rows if r["outcome"] == "skipped"]
    if skipped:
        print(f"note: {len(skipped)} tests skip on this machine and are not graded "
              f"(e.g. {skipped[0]})", file=sys.stderr)
    passed = {r["name"] for r in rows if r["outcome"] == "passed"}
    return [t for t in tests if t["nodeid"] in passed]


# ----------------------------------------------------------------------------------------------
# Submissions: exact names graded, near misses named
# ----------------------------------------------------------------------------------------------

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


def points_sum(points):
    """A sum of points, rounded to 6 decimals: a parametrized test's points are shared by its
    cases (1/3 each, say), and their float sum must still read 38, not 37.99999999999999."""
    return round(sum(points), 6)


def make_report(name, rows, notes, exercises, extra=None, flags=()):
    return {
        "submission": name,
        **(extra or {}),
        "points": {e: points_sum(r["earned"] for r in rows if r["exercise"] == e) for e in exercises},
        "max_points": {e: points_sum(r["points"] for r in rows if r["exercise"] == e) for e in exercises},
        "total": points_sum(r["earned"] for r in rows),
        "max_total": points_sum(r["points"] for r in rows),
        "flags": list(dict.fromkeys(flags)),
        "notes": {e: n["note"] for e, n in notes.items() if n["note"]},
        "tampered": {e: n["tampered"] for e, n in notes.items() if n.get("tampered")},
        "seconds": {e: n["seconds"] for e, n in notes.items()},
        "tests": rows,
    }


# ----------------------------------------------------------------------------------------------
# Reports: signed, checked, and the CSV rebuilt from them
# ----------------------------------------------------------------------------------------------

def _report_mac(report, key):
    body = {k: v for k, v in report.items() if k != "integrity"}
    return hmac.new(key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def sign_report(report, key):
    """Add ``integrity``: an HMAC of the whole report keyed by the instructor tree."""
    report["integrity"] = _report_mac(report, key)
    return report


def report_is_intact(report, key):
    mac = report.get("integrity")
    return isinstance(mac, str) and hmac.compare_digest(mac, _report_mac(report, key))


def read_report(path):
    """The report in ``path`` if it is one (a dict with a name, points and totals), else the
    reason it is not: ``(report or None, problem)``."""
    try:
        report = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        return None, f"{type(error).__name__}: {str(error)[:100]}"
    if not (isinstance(report, dict) and isinstance(report.get("submission"), str)
            and isinstance(report.get("points"), dict)
            and all(isinstance(report.get(k), (int, float)) for k in ("total", "max_total"))):
        return None, "not a grade report"
    return report, ""


def is_up_to_date(report_path, contents, calibration, options):
    """Whether ``report_path`` is an intact report (signed with this tree's key) that graded
    exactly these deliverables against this instructor tree, with the same sandbox."""
    report, _ = read_report(report_path)
    return (report is not None and report_is_intact(report, calibration.key)
            and report.get("instructor_hash") == calibration.tree_hash
            and report.get("sandbox") == sandbox_kind(options)
            and report.get("deliverables_hash") == deliverables_hash(contents)
            and "error" not in report)


def load_reports(out, key=None):
    """Every report in ``out`` (the CSV is rebuilt from these, so nothing is lost), and the
    problems met: ``(reports, problems)``. A file that is not a report is named and skipped; a
    report whose integrity check fails (edited, or graded against another instructor tree)
    is kept with a flag saying so."""
    reports, problems = [], []
    for path in sorted(out.glob("*.json")):
        report, problem = read_report(path)
        if report is None:
            problems.append(f"{escaped_name(path.name)}: {problem}")
            continue
        if key is not None and not report_is_intact(report, key):
            report = {**report, "flags": [*_as_list(report.get("flags")),
                                          "report fails its integrity check (edited, or graded "
                                          "against another instructor tree): grade it again"]}
        reports.append(report)
    return sorted(reports, key=lambda r: r["submission"]), problems


def _as_list(value):
    return [str(v) for v in value] if isinstance(value, list) else []


def _fmt(x):
    try:
        return f"{round(float(x), 2):g}"
    except (TypeError, ValueError):
        return "?"


def write_csv(reports, exercises, path):
    """One row per submission, sorted by name, with its sandbox and flags; written to a
    temporary file, then renamed."""
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["submission", *exercises, "total", "max_total", "sandbox", "flags"])
        for report in sorted(reports, key=lambda r: r["submission"]):
            writer.writerow([printable(report["submission"]),
                             *(_fmt(report["points"].get(e, 0)) for e in exercises),
                             _fmt(report["total"]), _fmt(report["max_total"]),
                             printable(report.get("sandbox", "")),
                             printable("; ".join(_as_list(report.get("flags")))[:2000])])
    partial.replace(path)


def write_json(report, path):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(path)


def print_table(reports, exercises, stream=sys.stdout):
    width = max([10] + [len(printable(r["submission"])) for r in reports])
    columns = [*exercises, "total"]
    print(f'{"submission":<{width}}  ' + "  ".join(f"{c:>16}" for c in columns), file=stream)
    for report in reports:
        cells = [f'{_fmt(report["points"].get(e, 0))}/{_fmt(report.get("max_points", {}).get(e, 0))}'
                 for e in exercises]
        cells.append(f'{_fmt(report["total"])}/{_fmt(report["max_total"])}')
        print(f'{printable(report["submission"]):<{width}}  ' + "  ".join(f"{c:>16}" for c in cells),
              file=stream)
        for exercise, note in (report.get("notes") or {}).items():
            print(f"{'':<{width}}  ! {exercise}: {printable(note)}", file=stream)
        for flag in _as_list(report.get("flags")):
            print(f"{'':<{width}}  FLAG {printable(flag)}", file=stream)


def print_summary(reports, exercises, stream=sys.stdout, slowest=5):
    """Count, mean and distribution (min, quartiles, max) of points per exercise; slowest runs;
    flagged submissions."""
    print(f"\n{len(reports)} submissions", file=stream)
    for exercise in [*exercises, "total"]:
        scores = sorted(float(r["total"] if exercise == "total" else r["points"].get(exercise, 0))
                        for r in reports)
        if not scores:
            continue
        quartiles = statistics.quantiles(scores, n=4, method="inclusive") if len(scores) > 1 else scores * 3
        print(f"  {exercise:<18} mean {statistics.mean(scores):6.2f}   min {_fmt(scores[0])}  "
              f"q1 {_fmt(quartiles[0])}  median {_fmt(quartiles[1])}  q3 {_fmt(quartiles[2])}  "
              f"max {_fmt(scores[-1])}", file=stream)
    timed = sorted(reports, key=lambda r: -float(r.get("wall_seconds", 0) or 0))
    print("  slowest: " + ", ".join(f'{printable(r["submission"])} ({_fmt(r.get("wall_seconds", 0))} s)'
                                    for r in timed[:slowest]), file=stream)
    flagged = [r for r in reports if _as_list(r.get("flags"))]
    print(f"  flagged: {len(flagged)}" + "".join(
        f"\n    {printable(r['submission'])}: {printable(_as_list(r['flags'])[0])}"
        + (f" (+{len(_as_list(r['flags'])) - 1} more)" if len(_as_list(r["flags"])) > 1 else "")
        for r in flagged), file=stream)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def available_memory():
    """Bytes of RAM available now (``MemAvailable``), or ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_jobs(memory_limit_gib):
    """One job per core, but no more than the available RAM holds at ``memory_limit_gib`` each."""
    cores = os.cpu_count() or 1
    memory = available_memory()
    if memory is None:
        return cores
    return max(1, min(cores, int(memory // (memory_limit_gib * GiB))))


def build_parser():
    parser = argparse.ArgumentParser(description="Grade lab submissions with the instructor tests.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="*", type=Path,
                        help="submission folders (each holding the student's deliverables)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "grades",
                        help="folder for the JSON reports and grades.csv (default: grades/)")
    parser.add_argument("--per-test-timeout", type=float, default=20.0,
                        help="seconds one test may run before it fails (default 20; the "
                             "reference solution's slowest test takes about 1 s); a test still "
                             f"running at 1.5 times it plus {KILL_GRACE:g} s is killed from outside")
    parser.add_argument("--total-timeout", type=float, default=300.0,
                        help="seconds one exercise's runs may take in all (default 300)")
    parser.add_argument("--memory-limit", type=float, default=8.0,
                        help="GiB of address space each test process may use (default 8)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="submissions graded in parallel (default: one per core, as many as "
                             "the available RAM holds at --memory-limit each)")
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                        help="auto (default): bubblewrap where it works, else none with a "
                             "warning; bwrap: refuse to grade without it; none: no sandbox")
    parser.add_argument("--regrade", action="store_true",
                        help="grade again submissions whose report is up to date")
    parser.add_argument("--run-slow", action="store_true", help="also grade tests marked slow")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--self", dest="self_mode", action="store_true",
                        help="grade this tree as it is (GitHub Classroom), without calibration")
    parser.add_argument("--exercise", choices=sorted(DELIVERABLE_OF),
                        help="with --self: the one exercise to grade")
    parser.add_argument("--max-score", type=float,
                        help="with --self: the exercise's maximum in the Classroom report")
    parser.add_argument("--classroom-output", type=Path,
                        help="with --self: append 'result=<base64 JSON>' for GitHub Classroom's "
                             "reporter to this file (the step's $GITHUB_OUTPUT)")
    if lms_exports is not None:
        lms_exports.add_arguments(parser)
    return parser


def default_options(**overrides):
    """The command line's defaults as an options object (for other tools, e.g. the release)."""
    options = build_parser().parse_args([])
    options.pytest_args = []
    options.jobs = default_jobs(options.memory_limit)
    vars(options).update(overrides)
    return options


def parse_args(argv):
    parser = build_parser()
    options = parser.parse_args(argv)
    options.pytest_args = ["--run-slow"] if options.run_slow else []
    if options.jobs is None:
        options.jobs = default_jobs(options.memory_limit)
    elif options.jobs < 1:
        parser.error("--jobs must be at least 1")
    if options.self_mode:
        if not options.exercise:
            parser.error("--self needs --exercise")
        return options
    if not options.submissions:
        parser.error("give at least one submission folder (or --self)")
    for submission in options.submissions:
        if not submission.is_dir():
            parser.error(f"{escaped_name(str(submission))} is not a folder")
    names = [escaped_name(s.resolve().name) for s in options.submissions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        parser.error(f"several submissions share a name (reports would collide): {duplicates}")
    if lms_exports is not None:
        lms_exports.check_arguments(parser, options, names)
    memory = available_memory()
    if memory and options.jobs * options.memory_limit * GiB > memory:
        print(f"warning: --jobs {options.jobs} x --memory-limit {options.memory_limit:g} GiB is more "
              f"than the {memory / GiB:.1f} GiB available: the machine may run out of memory",
              file=sys.stderr)
    return options


def grade_all(options, calibration):
    """Grade the submissions in parallel; each report is signed and written as soon as it is done."""
    from tqdm import tqdm
    to_grade = [s for s in options.submissions if options.regrade or not _up_to_date(s, calibration, options)]
    skipped = len(options.submissions) - len(to_grade)
    if skipped:
        print(f"{skipped} submissions unchanged since their report: not graded again "
              "(--regrade to force)", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool, \
            tqdm(total=len(to_grade), unit="submission", disable=options.no_progress) as progress:
        futures = {pool.submit(grade_submission, s, calibration, options): s for s in to_grade}
        for future in as_completed(futures):
            try:
                report = future.result()
            except Exception as error:  # noqa: BLE001 - grade_submission should not raise; if it does
                report = error_report(escaped_name(futures[future].resolve().name),
                                      f"{type(error).__name__}: {error}", calibration, options)
            write_json(sign_report(report, calibration.key), options.out / f'{report["submission"]}.json')
            progress.set_postfix_str(f'{report["submission"]}: {_fmt(report["total"])}')
            progress.update()


def _up_to_date(submission, calibration, options):
    try:
        contents, _ = read_deliverables(submission.resolve())
    except Exception:  # noqa: BLE001 - unreadable now: grade it (and get its error row)
        return False
    return is_up_to_date(options.out / f"{escaped_name(submission.resolve().name)}.json", contents,
                         calibration, options)


def grade_self(options):
    """Grade this tree as it is, one exercise, for GitHub Classroom; always exits 0."""
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        base = Path(tmp) / "base"
        copy_instructor_tree(base, stub_deliverables=False)
        collected = [t for t in collect_tests(base, options) if t["exercise"] == options.exercise]
        tests = [t for t in collected if not t.get("canary")]
        rows, notes = grade_tree(base, {}, tests, options) if tests else ([], {})
    report = make_report(PROJECT_ROOT.name, rows, notes, [options.exercise])
    maximum = options.max_score if options.max_score is not None else report["max_total"]
    score = min(report["total"], maximum)
    print_table([report], [options.exercise])
    for row in rows:
        if row["outcome"] != "passed":
            print(f'  {row["outcome"]:>8}  {row["name"]}: {row["message"][:300]}')
    print(f"Points {_fmt(score)}/{_fmt(maximum)}")
    if options.classroom_output:
        write_classroom_result(options.classroom_output, options.exercise, score, maximum, rows)
    return 0


def write_classroom_result(path, exercise, score, maximum, rows):
    """Append the step output that classroom-resources/autograding-grading-reporter reads:
    ``result`` = base64 of ``{version, status, max_score, tests: [{name, status, score, ...}]}``."""
    failed = [r for r in rows if r["outcome"] != "passed"]
    result = {"version": 1, "status": "fail" if failed or not rows else "pass", "max_score": maximum,
              "tests": [{"name": exercise, "status": "fail" if failed or not rows else "pass",
                         "score": score, "message": "; ".join(
                             f'{r["name"]}: {r["outcome"]}' for r in failed)[:2000],
                         "test_code": "", "filename": "", "line_no": 0, "duration": 0}]}
    encoded = base64.b64encode(json.dumps(result).encode()).decode()
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(f"result={encoded}\n")


def instructor_tree_digests(out):
    """Digests of the instructor tree (build outputs and ``out`` left out), to check that no
    run changed it."""
    ignore = list(NOT_COPIED)
    digests = file_digests(PROJECT_ROOT, ignore=ignore, skip_environments=True)
    try:
        inside = out.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return digests
    return {k: v for k, v in digests.items() if k != inside and not k.startswith(inside + "/")}


def peak_memory_mib():
    """The grader's own peak resident memory in MiB: ``VmHWM``, the high-water mark of this
    process's address space (Linux).

    Not ``ru_maxrss``: Linux carries it over ``exec``, so a grader started from a pytest process
    that had imported torch reported that process's ~900 MiB before grading anything. Elsewhere
    (no ``/proc``) ``ru_maxrss`` is the best there is (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (MiB if sys.platform == "darwin" else 1024)


def main(argv=None):
    options = parse_args(argv)
    if options.self_mode:
        return grade_self(options)
    options.out.mkdir(parents=True, exist_ok=True)
    instructor_before = instructor_tree_digests(options.out)
    print(f"sandbox: {sandbox_kind(options)}; jobs: {options.jobs}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="autograde-calibration-") as workdir:
        calibration = Calibration(options, Path(workdir))
        grade_all(options, calibration)
    reports, problems = load_reports(options.out, calibration.key)
    for problem in problems:
        print(f"warning: skipped a file in {options.out} that is not a grade report: {problem}",
              file=sys.stderr)
    names = {escaped_name(s.resolve().name) for s in options.submissions}
    print_table([r for r in reports if r["submission"] in names], calibration.exercises)
    print_summary([r for r in reports if r["submission"] in names], calibration.exercises)
    write_csv(reports, calibration.exercises, options.out / "grades.csv")
    print(f"\nreports: {options.out}/<submission>.json, {options.out / 'grades.csv'}")
    if lms_exports is not None:
        lms_exports.write_outputs(options, reports)
    print(f"grader peak memory: {peak_memory_mib()} MiB")
    changed = tampered_files(instructor_before, instructor_tree_digests(options.out))
    if changed:
        print(f"*** WARNING: the instructor tree changed while grading: {changed[:10]} ***",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
