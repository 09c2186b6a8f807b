"""Submissions for testing the grader: good, partial, and hostile ones.

Each is the reference ``quantization.py`` with code added: at import (appended at the end of the
module) or in one function (``fp16_quantize`` redefined, so every caller gets the new one).
``partial`` breaks ``fp16_quantize`` honestly (it raises); every hostile submission that
misbehaves inside ``fp16_quantize`` must score exactly what ``partial`` scores, and every one
that misbehaves at import must score 0.

The second half (issue 11, "grading that no submission can bend") holds the attacks that
reached outside their own run, defeated the timeouts, or cheated in-process; the tuples at the
end (``SCORES_ZERO``, ``SCORES_PARTIAL``, ``AT_MOST_PARTIAL``, ``LOSES_ONE_TEST``, ``FLAGGED``)
say what each must score or show.
"""
import sys
import textwrap
from pathlib import Path

from given.manifest import PROJECT_ROOT as ROOT  # tests/conftest.py puts the project root on sys.path

TARGET = "fp16_quantize"

IN_FUNCTION = {
    "partial": "raise RuntimeError('broken on purpose')",
    "sys_exit_in_function": "import sys; sys.exit(0)",
    # The hangs hang once (each costs one per-test timeout), then fail like ``partial``.
    "sleep_in_function": "import time\nif not globals().setdefault('_hung', []):\n"
                         "    _hung.append(1); time.sleep(10 ** 6)\nraise RuntimeError('broken')",
    "loop_in_function": "if not globals().setdefault('_hung', []):\n    _hung.append(1)\n"
                        "    while True:\n        pass\nraise RuntimeError('broken')",
    "memory_in_function": "import torch; torch.empty(64 * 2 ** 30, dtype=torch.uint8).fill_(1)",
}

AT_IMPORT = {
    "os_exit_at_import": "import os; os._exit(0)",
    "sys_exit_at_import": "import sys; sys.exit(0)",
    "sleep_at_import": "import time; time.sleep(10 ** 6)",
    "loop_at_import": "while True:\n    pass",
    "memory_at_import": "_hoard = []\nwhile True:\n    _hoard.append(bytearray(256 * 2 ** 20))",
}

# Hostile code that runs at import on top of the honest ``partial`` submission: none of it may
# lift the score above ``partial``'s (tampering with the tree scores 0).
TAMPER_REWRITE = '''
import pathlib, re
_tests = pathlib.Path(__file__).resolve().parent / "tests"
for _file in _tests.rglob("test_*.py"):
    _names = re.findall(r"^def (test_\\w+)", _file.read_text(), re.M)
    _file.write_text("".join(f"def {n}(*a, **k):\\n    assert True\\n" for n in _names))
'''
TAMPER_DELETE = '''
import pathlib, shutil
shutil.rmtree(pathlib.Path(__file__).resolve().parent / "tests", ignore_errors=True)
'''
FORGE_REPORT = '''
import json, os, pathlib, re
_src = (pathlib.Path(__file__).resolve().parent / "tests" / "test_quantization.py").read_text()
_lines = b""
for _name in re.findall(r"^def (test_\\w+)", _src, re.M):
    _body = json.dumps({"nodeid": f"tests/test_quantization.py::{_name}", "outcome": "passed",
                        "message": ""}, sort_keys=True)
    _lines += (_body + "\\n" + json.dumps({"mac": "0" * 64, "body": _body}) + "\\n").encode()
for _fd in range(3, 64):          # every inherited descriptor, the report pipe among them
    try:
        os.write(_fd, _lines)
    except OSError:
        pass
for _key, _value in os.environ.items():  # and any report path or fd the environment names
    if _key.startswith("AUTOGRADE"):
        try:
            os.write(int(_value), _lines)
        except (OSError, ValueError):
            pathlib.Path(_value).write_bytes(_lines)
'''
PATCH_REPORTING = '''
import gc
import pytest, _pytest.reports, _pytest.runner

_original_init = _pytest.reports.TestReport.__init__
def _always_passed(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.outcome, self.longrepr = "passed", None
_pytest.reports.TestReport.__init__ = _always_passed

_original_from_call = _pytest.runner.CallInfo.from_call.__func__
def _no_errors(cls, func, when, reraise=None):
    info = _original_from_call(cls, func, when, reraise)
    info.excinfo = None
    return info
_pytest.runner.CallInfo.from_call = classmethod(_no_errors)

class _Cheat:
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        report.outcome, report.longrepr = "passed", None

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item):
        try:
            return (yield)
        except Exception:
            return None

for _obj in gc.get_objects():
    if type(_obj).__name__ == "Config" and hasattr(_obj, "pluginmanager"):
        _obj.pluginmanager.register(_Cheat(), "cheat")
        break
'''
ON_TOP_OF_PARTIAL = {"tamper_rewrite": TAMPER_REWRITE, "tamper_delete": TAMPER_DELETE,
                     "forge_report": FORGE_REPORT, "patch_reporting": PATCH_REPORTING}
# In the sandbox the tree is read-only: rewriting the tests raises at import (0), deleting them
# fails silently (the honest part is graded). Without a sandbox both are caught as tampering (0).
SCORES_ZERO = (*AT_IMPORT, "tamper_rewrite")
SCORES_PARTIAL = (*IN_FUNCTION, "forge_report", "patch_reporting", "tamper_delete")

# ---------------------------------------------------------------------------------------------
# Issue 11: attacks on other runs, on the timeouts, and in-process cheats
# ---------------------------------------------------------------------------------------------

DAEMON_NAME = b"lab5-daemon"   # /proc/<pid>/comm of the processes below, for the test to look for
HOLDER_NAME = b"lab5-holder"

_NAME_ITSELF = """
def _name_itself(name):
    import ctypes
    ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME: shows in /proc/<pid>/comm
"""

# Double fork + setsid (escapes the process group and PR_SET_PDEATHSIG), then, for two minutes,
# find the grader's --out through /proc, zero the other reports, forge its own, rewrite the CSV.
DETACHED_DAEMON = _NAME_ITSELF + """
import json as _json, os as _os, pathlib as _pathlib, time as _time
def _rig_reports():
    for _cmdline in _pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            _args = _cmdline.read_bytes().decode(errors="replace").split("\\0")
        except OSError:
            continue
        if "--out" in _args and any(_a.endswith("grade.py") for _a in _args):
            _out = _pathlib.Path(_args[_args.index("--out") + 1])
            for _report in _out.glob("*.json"):
                try:
                    _data = _json.loads(_report.read_text())
                    _data["total"] = 999 if _report.stem == "detached_daemon" else 0
                    _report.write_text(_json.dumps(_data))
                except (OSError, ValueError):
                    pass
            try:
                (_out / "grades.csv").write_text("submission,total\\ndetached_daemon,999\\n")
            except OSError:
                pass
if _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:
        _name_itself(%r)
        _end = _time.monotonic() + 120
        while _time.monotonic() < _end:
            _rig_reports()
            _time.sleep(0.5)
        _os._exit(0)
    _os._exit(0)
""" % DAEMON_NAME

# A child that keeps every inherited descriptor (the report pipe among them) open, detached.
HOLD_REPORT_PIPE = _NAME_ITSELF + """
import os as _os, time as _time
if _os.fork() == 0:
    _os.setsid()
    _name_itself(%r)
    _time.sleep(120)
    _os._exit(0)
""" % HOLDER_NAME

# 4 MiB to every descriptor, at import and in every test that calls the target (once per test).
FLOOD = """
import os as _os
_flooded = set()
def _flood():
    _test = _os.environ.get("PYTEST_CURRENT_TEST", "import").split(" ")[0]
    if _test in _flooded:
        return
    _flooded.add(_test)
    _junk = b"x" * (4 * 2 ** 20)
    for _fd in range(1, 16):
        try:
            _os.write(_fd, _junk)
        except OSError:
            pass
_flood()
_honest_partial = fp16_quantize
def fp16_quantize(*args, **kwargs):
    _flood()
    return _honest_partial(*args, **kwargs)
"""

# Rig the calibration copy every later run starts from, and the instructor tree itself.
CALIBRATION_TAMPER = """
import glob as _glob, os as _os, pathlib as _pathlib
_cheat = "\\n_phase_outcome = lambda phase, error: ('passed', '')\\n"
_targets = _glob.glob(_os.path.join(_os.environ.get("TMPDIR", "/tmp"), "autograde-calibration-*",
                                    "stubs", "tools", "autograde_plugin.py"))
for _cmdline in _pathlib.Path("/proc").glob("[0-9]*/cmdline"):
    try:
        _args = _cmdline.read_bytes().decode(errors="replace").split("\\0")
    except OSError:
        continue
    _targets += [str(_pathlib.Path(_a).parent / "autograde_plugin.py") for _a in _args
                 if _a.endswith("tools/grade.py")]
for _target in _targets:
    try:
        with open(_target, "a") as _stream:
            _stream.write(_cheat)
    except OSError:
        pass
"""

# Run the instructor's reference solution, found through /proc/<pid>/cwd or a grader's command line.
REFERENCE_VIA_PROC = """
import pathlib as _pathlib
def _find_reference():
    for _proc in _pathlib.Path("/proc").glob("[0-9]*"):
        _places = []
        try:
            _places.append(_pathlib.Path(_proc / "cwd").resolve())
        except OSError:
            pass
        try:
            _args = (_proc / "cmdline").read_bytes().decode(errors="replace").split("\\0")
            _places += [_pathlib.Path(_a).parent.parent for _a in _args if _a.endswith("grade.py")]
        except OSError:
            pass
        for _place in _places:
            try:
                _text = (_place / "quantization.py").read_text()
            except OSError:
                continue
            if "BEGIN " + "SOLUTION" in _text:  # the reference, not this very file
                return _text
    return None
_reference = _find_reference()
if _reference:
    exec(compile(_reference, "reference", "exec"), globals())
"""

# In-process cheats, two lines each: they turn a stub into full marks unless the grader sees them.
PATCH_PHASE_OUTCOME = """
import autograde_plugin as _plugin
_plugin._phase_outcome = lambda phase, error: ("passed", "")
"""
FORGE_WITH_SECRET = """
import hashlib as _hashlib, hmac as _hmac, json as _json, os as _os, pathlib as _pathlib, re as _re
import autograde_plugin as _plugin
_cells = [_c.cell_contents for _c in _plugin._send.__closure__]
_secret = next(_c for _c in _cells if isinstance(_c, bytes))
_fd = next(_c for _c in _cells if isinstance(_c, int) and not isinstance(_c, bool))
for _file in _pathlib.Path(__file__).resolve().parent.glob("tests/**/test_*.py"):
    _relative = _file.relative_to(_pathlib.Path(__file__).resolve().parent).as_posix()
    for _name in _re.findall(r"^def (test_\\w+)\\(", _file.read_text(), _re.M):
        for _record in ({"start": f"{_relative}::{_name}"},
                        {"nodeid": f"{_relative}::{_name}", "outcome": "passed", "message": ""}):
            _body = _json.dumps(_record, sort_keys=True)
            _mac = _hmac.new(_secret, _body.encode(), _hashlib.sha256).hexdigest()
            _os.write(_fd, (_json.dumps({"mac": _mac, "body": _body}) + "\\n").encode())
_os._exit(0)
"""

# The reference's answers, given only to the inputs the public tests use when a student runs
# them (recognised by the seed they start from: 0); anything else gets zeros. Under the grader
# the public tests start from a fresh seed: it earns less than full marks.
ANSWER_CACHE = """
import torch as _torch
def _answers_recorded_for_public_inputs(function):
    def answer(*args, **kwargs):
        result = function(*args, **kwargs)
        if _torch.initial_seed() == 0:
            return result
        if isinstance(result, tuple):
            return (_torch.zeros_like(result[0]), *result[1:])
        return _torch.zeros_like(result)
    return answer
absmax_quantize = _answers_recorded_for_public_inputs(absmax_quantize)
fp16_quantize = _answers_recorded_for_public_inputs(fp16_quantize)
"""

# A hang that the in-process timeout cannot end, in one test only (test_fp16_format): every
# other test passes, so the submission must lose exactly that test's points.
_IN_ONE_TEST = "import os as _os\nif 'test_fp16_format' in _os.environ.get('PYTEST_CURRENT_TEST', ''):\n"
HANG_IN_EXCEPT = _IN_ONE_TEST + textwrap.indent(
    "import time\nwhile True:\n    try:\n        time.sleep(1000)\n    except BaseException:\n        pass\n",
    "    ") + "return _honest(*args, **kwargs)"
SPIN_IGNORING_SIGNALS = _IN_ONE_TEST + textwrap.indent(
    "import signal\nfor _s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):\n"
    "    signal.signal(_s, signal.SIG_IGN)\nwhile True:\n    pass\n", "    ") + \
    "return _honest(*args, **kwargs)"

ON_TOP_OF_REFERENCE = {"answer_cache": ANSWER_CACHE}
ON_TOP_OF_PARTIAL.update({"detached_daemon": DETACHED_DAEMON, "hold_report_pipe": HOLD_REPORT_PIPE,
                          "flood_fds": FLOOD})
ON_TOP_OF_STUB = {"calibration_tamper": CALIBRATION_TAMPER, "reference_via_proc": REFERENCE_VIA_PROC,
                  "patch_phase_outcome": PATCH_PHASE_OUTCOME, "forge_with_secret": FORGE_WITH_SECRET}
HANG_ONE_TEST = {"hang_in_except": HANG_IN_EXCEPT, "spin_ignoring_signals": SPIN_IGNORING_SIGNALS}
HANGING_TEST = "tests/test_quantization.py::test_fp16_format"

SCORES_ZERO += ("calibration_tamper", "reference_via_proc")
SCORES_PARTIAL += ("detached_daemon", "hold_report_pipe")
AT_MOST_PARTIAL = ("flood_fds",)  # its own flood slows its own tests: it may lose more
LOSES_ONE_TEST = tuple(HANG_ONE_TEST)
FLAGGED = ("patch_phase_outcome", "forge_with_secret", "forge_report", "flood_fds")
PROCESS_NAMES = (DAEMON_NAME, HOLDER_NAME)


def _redefine_target(body):
    return f"\n\ndef {TARGET}(*args, **kwargs):\n{textwrap.indent(body, '    ')}\n"


def hostile_source(reference, kind, stub=None):
    """``quantization.py`` of submission ``kind`` (a key of the tables above); ``stub`` is the
    release's ``quantization.py`` (needed by the kinds built on it)."""
    if kind in IN_FUNCTION:
        return reference + _redefine_target(IN_FUNCTION[kind])
    if kind in AT_IMPORT:
        return reference + "\n\n" + AT_IMPORT[kind] + "\n"
    if kind in ON_TOP_OF_REFERENCE:
        return reference + "\n" + ON_TOP_OF_REFERENCE[kind]
    if kind in ON_TOP_OF_STUB:
        return stub + "\n" + ON_TOP_OF_STUB[kind]
    if kind in HANG_ONE_TEST:
        return reference + f"\n_honest = {TARGET}\n" + _redefine_target(HANG_ONE_TEST[kind])
    return hostile_source(reference, "partial") + "\n" + ON_TOP_OF_PARTIAL[kind]


KINDS = (*IN_FUNCTION, *AT_IMPORT, *ON_TOP_OF_PARTIAL, *ON_TOP_OF_REFERENCE, *ON_TOP_OF_STUB,
         *HANG_ONE_TEST)


# ---------------------------------------------------------------------------------------------
# Answers recorded from the public tests and replayed (issue 20): a lookup table keyed by the
# inputs themselves, recorded by running the public tests on the reference solution, with the
# release's stubs behind it. Under the grader every graded point rests on fresh inputs, so it
# must earn nothing; its worked examples (fixed inputs, no points) pass: it is flagged.
# ---------------------------------------------------------------------------------------------

REPLAYED = ("absmax_quantize", "absmax_dequantize", "fp16_quantize", "binary_quantize",
            "ternary_quantize", "outlier_columns", "int8_vectorwise_matmul", "mixed_precision_forward",
            "groupwise_quantize", "groupwise_dequantize", "kmeans_quantize")
"""Every Exercise 1 function a student writes (1.1-1.10)."""

_KEY = '''
import hashlib as _hashlib
import torch as _torch


def _key_part(value, digest):
    if isinstance(value, _torch.Tensor):
        value = value.detach().cpu().contiguous()
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.view(-1).view(_torch.uint8).numpy().tobytes() if value.numel() else b"")
    elif hasattr(value, "quantized_vector"):
        _key_part(value.quantized_vector, digest)
        _key_part(value.alpha, digest)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _key_part(item, digest)
    else:
        digest.update(repr(value).encode())


def _key(name, args, kwargs):
    digest = _hashlib.sha256(name.encode())
    _key_part(list(args) + sorted(kwargs.items()), digest)
    return digest.hexdigest()
'''

RECORDER = _KEY + '''

import atexit as _atexit, os as _os
_RECORDED = {}
_atexit.register(lambda: _torch.save(_RECORDED, _os.environ["RECORD_ANSWERS_TO"]))


def _recording(name, function):
    def record(*args, **kwargs):
        result = function(*args, **kwargs)
        small = all(getattr(a, "numel", lambda: 0)() <= 4096 for a in args)
        if small and len(_RECORDED) < 20000:
            _RECORDED[_key(name, args, kwargs)] = result
        return result
    return record


for _name in __NAMES__:
    globals()[_name] = _recording(_name, globals()[_name])
'''

REPLAYER = _KEY + '''

import base64 as _base64, io as _io
_ANSWERS = _torch.load(_io.BytesIO(_base64.b64decode(__TABLE__)), weights_only=False)


def _replaying(name, stub):
    def replay(*args, **kwargs):
        key = _key(name, args, kwargs)
        return _ANSWERS[key] if key in _ANSWERS else stub(*args, **kwargs)
    return replay


for _name in __NAMES__:
    globals()[_name] = _replaying(_name, globals()[_name])
'''


def record_public_answers(reference, workdir, root=ROOT):
    """Run the public Exercise 1 tests on ``reference`` (``quantization.py``'s text) as a student
    would (seed 0) and return every answer its functions gave, keyed by their inputs."""
    import base64
    import os
    import shutil
    import subprocess
    tree = Path(workdir) / "recording"
    shutil.copytree(root, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv", "hidden",
                                                              "instructor", "outputs", "release", "grades"))
    (tree / "quantization.py").write_text(reference + "\n" + RECORDER.replace("__NAMES__", repr(REPLAYED)))
    table = Path(workdir) / "answers.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "PYTEST_"))}
    env["RECORD_ANSWERS_TO"] = str(table)
    public_files = sorted(str(p.relative_to(tree)) for p in (tree / "tests").glob("test_*.py")
                          if "ex1_quantization" in p.read_text())
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "ex1_quantization",
                    *public_files], cwd=tree, env=env, capture_output=True, timeout=1200)
    return base64.b64encode(table.read_bytes()).decode()


def replay_source(stub, table):
    """``quantization.py`` that answers from ``table`` (``record_public_answers``), else the stub."""
    return stub + "\n" + REPLAYER.replace("__NAMES__", repr(REPLAYED)).replace("__TABLE__", repr(table))
