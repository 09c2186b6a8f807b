"""The sandbox every test run goes into: bubblewrap, or (loudly) none.

Trusts nothing that runs inside: the submission's code and the tests it imports get a new user,
PID, network, IPC and UTS namespace, the graded tree and the offline data read-only, a private
size-capped ``/tmp`` and nothing else of the machine. Trusts this machine's system and Python
folders, mounted read-only.
"""
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from given.manifest import PROJECT_ROOT, SHARED_DATA_DIR
from grading.limits import TMPFS_BYTES

SANDBOX_TREE = "/grading/lab"    # where the graded tree appears inside the sandbox
SANDBOX_SHARED_DATA = "/grading/shared/data"  # = SANDBOX_TREE/../shared/data, as given.manifest expects
SANDBOX_UID = 65534              # "nobody"

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
    return args


def _python_mount_args():
    """Python's folders, read-only. Mounted after the private ``/tmp``, which would otherwise hide
    a Python environment that lives under ``/tmp`` (a clone in ``/tmp`` with its venv inside)."""
    return [arg for path in python_mounts() for arg in ("--ro-bind", os.path.realpath(path), path)]


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
    args += _python_mount_args()
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
