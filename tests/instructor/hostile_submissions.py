"""Submissions for testing the grader: good, partial, and hostile ones.

Each is the reference ``quantization.py`` with code added: at import (appended at the end of the
module) or in one function (``fp16_quantize`` redefined, so every caller gets the new one).
``partial`` breaks ``fp16_quantize`` honestly (it raises); every hostile submission that
misbehaves inside ``fp16_quantize`` must score exactly what ``partial`` scores, and every one
that misbehaves at import must score 0.
"""
import textwrap

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
SCORES_ZERO = (*AT_IMPORT, "tamper_rewrite", "tamper_delete")
SCORES_PARTIAL = (*IN_FUNCTION, "forge_report", "patch_reporting")


def _redefine_target(body):
    return f"\n\ndef {TARGET}(*args, **kwargs):\n{textwrap.indent(body, '    ')}\n"


def hostile_source(reference, kind):
    """``quantization.py`` of submission ``kind`` (a key of the tables above)."""
    if kind in IN_FUNCTION:
        return reference + _redefine_target(IN_FUNCTION[kind])
    if kind in AT_IMPORT:
        return reference + "\n\n" + AT_IMPORT[kind] + "\n"
    return hostile_source(reference, "partial") + "\n" + ON_TOP_OF_PARTIAL[kind]


KINDS = (*IN_FUNCTION, *AT_IMPORT, *ON_TOP_OF_PARTIAL)
