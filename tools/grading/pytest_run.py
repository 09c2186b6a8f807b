"""One pytest run on a graded tree, and one exercise's runs: sandboxed, supervised from outside.

Trusts the test process for nothing: it runs the submission's code. Its results come only through
the signed channel (``channel``); its time is kept from outside (a per-test watchdog, the total
timeout, its process group killed at the end); its environment is built here, minimal inside the
sandbox. A test that hangs or kills its process is charged alone and the others run again.
"""
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from given.manifest import DELIVERABLE_OF
from grading.channel import PipeReader, ReportChannel
from grading.limits import (EXIT_GRACE, FILE_SIZE_LIMIT, GiB, KILL_GRACE, OUTPUT_TAIL_LIMIT, PROCESS_LIMIT,
                            REPORT_CHANNEL_LIMIT)
from grading.sandbox import SANDBOX_TREE, sandbox_command, sandbox_kind

OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}  # duplicates: the worse wins


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
