"""Timing a call honestly (given code; the one place where the lab times anything).

Three rules make a timing worth comparing:

1. **Finished work only.** Each timed block is bracketed by ``torch.cuda.synchronize()`` when
   CUDA is in use, so the clock sees finished GPU work, not a kernel launch.
2. **Warm-up, then enough calls.** Untimed warm-up rounds first (kernel selection, caches, lazy
   initialisation); then every sample times a block of calls long enough (``min_block_s``) that
   the clock's resolution and the launch overhead do not dominate.
3. **Take turns.** Several functions are timed in interleaved rounds (A, B, C, A, B, C, ...), so a
   slow moment of the machine (another process, a frequency change) hits all of them alike. A
   speed-up is then computed *per round* (``speedups``), and its spread says how much to trust it.

``torch.utils.benchmark.Timer`` does 1 and 2 for one statement at a time, but it adds hidden
warm-up calls to every ``timeit`` and runs on one thread unless told otherwise, so it can neither
take turns nor promise a call count: these few lines do the same things in the open.
"""
import math
import statistics
import time

import torch


def _synchronize():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _check_counts(warmup, repeats, min_block_s):
    if not (isinstance(repeats, int) and repeats >= 1 and isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"need integers repeats >= 1 and warmup >= 0, got repeats={repeats!r}, "
                         f"warmup={warmup!r}")
    if not (isinstance(min_block_s, (int, float)) and math.isfinite(min_block_s) and min_block_s >= 0):
        raise ValueError(f"min_block_s must be a finite number of seconds >= 0, got {min_block_s!r}")


def clock():
    """Seconds on a monotonic clock, read once the work started so far has finished (CUDA
    synchronized first): the one clock everything here reads."""
    _synchronize()
    return time.perf_counter()


def _timed_block(function, calls):
    """Seconds per call of ``calls`` back-to-back calls of ``function()``, synchronized around."""
    start = clock()
    for _ in range(calls):
        function()
    return (clock() - start) / calls


def time_interleaved(functions, *, warmup=3, repeats=10, min_block_s=0.0):
    """Time several calls fairly, in interleaved rounds.

    1. ``warmup`` untimed rounds: each function of ``functions`` (a dict ``{label: function}``)
       is called once per round, in turn. The last warm-up call of each is timed to choose its
       block size: ``calls = ceil(min_block_s / that time)`` (at least 1; with ``warmup=0`` or
       ``min_block_s=0``, 1).
    2. ``repeats`` timed rounds: in each, every function runs one block of ``calls`` calls, in
       turn; a sample is the block's time divided by ``calls``. Round ``r`` starts with function
       ``r mod n`` (the order rotates), so no function always runs first or after the same one.

    So each function is called exactly ``warmup + repeats * calls`` times, and sample ``r`` of
    every function comes from the same round ``r``: ``speedups`` pairs them.

    Returns:
        ``{label: stats}``, each stats a dict with ``median``, ``q1``, ``q3`` (quartiles), ``min``,
        ``max`` (seconds per call), ``times`` (one per round, in order), ``calls`` (calls per
        block) and ``threads`` (``torch.get_num_threads()`` during the run).
    """
    _check_counts(warmup, repeats, min_block_s)
    if not functions:
        raise ValueError("nothing to time: functions is empty")
    calls = {label: 1 for label in functions}
    for round_index in range(warmup):
        for label, function in functions.items():
            if round_index == warmup - 1 and min_block_s > 0:
                seconds = _timed_block(function, 1)
                calls[label] = max(1, math.ceil(min_block_s / max(seconds, 1e-9)))
            else:
                function()
    times = {label: [] for label in functions}
    labels = list(functions)
    for round_index in range(repeats):
        shift = round_index % len(labels)  # rotate who goes first: no function always follows the same one
        for label in labels[shift:] + labels[:shift]:
            times[label].append(_timed_block(functions[label], calls[label]))
    return {label: {**_summary(samples), "calls": calls[label]} for label, samples in times.items()}


def time_call(function, *, warmup=3, repeats=10, min_block_s=0.0):
    """Seconds per call of ``function()``: ``time_interleaved`` with one function (same stats)."""
    return time_interleaved({"call": function}, warmup=warmup, repeats=repeats,
                            min_block_s=min_block_s)["call"]


def speedups(stats, baseline):
    """How many times faster than ``baseline`` each function ran, round by round.

    Args:
        stats: the result of ``time_interleaved``; ``baseline`` must be one of its labels.

    Returns:
        ``{label: {"median", "q1", "q3", "min", "max", "ratios"}}`` where ``ratios[r]`` is
        ``baseline time / label time`` in round ``r`` (> 1: faster than the baseline). The
        quartiles of these per-round ratios are the speed-up's spread: when they straddle 1.0,
        the measurement cannot tell the two apart.
    """
    if baseline not in stats:
        raise ValueError(f"baseline {baseline!r} was not timed; timed: {', '.join(map(str, stats))}")
    base_times = stats[baseline]["times"]
    result = {}
    for label, entry in stats.items():
        if len(entry["times"]) != len(base_times):
            raise ValueError(f"{label!r} has {len(entry['times'])} rounds, the baseline "
                             f"{len(base_times)}: speed-ups need samples from the same rounds")
        ratios = [b / t for b, t in zip(base_times, entry["times"])]
        summary = _summary(ratios)
        result[label] = {key: summary[key] for key in ("median", "q1", "q3", "min", "max")} | {"ratios": ratios}
    return result


def spread_includes_one(speedup):
    """Whether a ``speedups`` entry's interquartile range contains 1.0 (no clear difference)."""
    return speedup["q1"] <= 1.0 <= speedup["q3"]


def _summary(times):
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return {"median": median, "q1": q1, "q3": q3, "min": min(times), "max": max(times),
            "times": times, "threads": torch.get_num_threads()}
