"""Timing a call honestly (given code; the one place where the lab times anything).

Each timed call is bracketed by ``torch.cuda.synchronize()`` when CUDA is in use, so the clock
sees finished GPU work, not a kernel launch. (``torch.utils.benchmark.Timer`` does the same, but
adds hidden warm-up calls to every measurement, so a call count could not be promised.)
"""
import statistics
import time

import torch


def _synchronize():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_interleaved(functions, *, warmup=3, repeats=10):
    """Time several calls fairly: ``warmup`` untimed rounds, then ``repeats`` rounds in which each
    function of ``functions`` (a dict ``{label: function}``) is called once, in turn.

    Taking turns spreads the machine's slow moments (another process, a frequency change) over
    every function alike, so ratios between them are far steadier than timing one after another.

    Returns:
        ``{label: stats}``, each stats a dict with ``median``, ``q1``, ``q3`` (quartiles), ``min``,
        ``max`` (seconds), ``times`` (every timed call, in order) and ``threads``
        (``torch.get_num_threads()`` during the run).
    """
    if not (isinstance(repeats, int) and repeats >= 1 and isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"need integers repeats >= 1 and warmup >= 0, got repeats={repeats!r}, "
                         f"warmup={warmup!r}")
    if not functions:
        raise ValueError("nothing to time: functions is empty")
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {label: [] for label in functions}
    for _ in range(repeats):
        for label, function in functions.items():
            _synchronize()
            start = time.perf_counter()
            function()
            _synchronize()
            times[label].append(time.perf_counter() - start)
    return {label: _summary(samples) for label, samples in times.items()}


def time_call(function, *, warmup=3, repeats=10):
    """Seconds per call of ``function()``: ``time_interleaved`` with one function (same stats)."""
    return time_interleaved({"call": function}, warmup=warmup, repeats=repeats)["call"]


def _summary(times):
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return {"median": median, "q1": q1, "q3": q3, "min": min(times), "max": max(times),
            "times": times, "threads": torch.get_num_threads()}
