"""Latency (given code): models timed on one fixed batch, together, in interleaved rounds.

``make_latency_batch`` takes the batch from the evaluation set; ``measure_latencies`` times every
model in turn, round after round, and gives each speed-up with its spread (``given.timing``);
``measure_latency`` times one model alone.
"""
import torch

from given.timing import speedups, time_call, time_interleaved
from given.torch_utils import model_device


def make_latency_batch(eval_set, batch_size=8):
    """One fixed batch for timing: the first ``batch_size`` windows (input_ids, attention_mask), on CPU."""
    if not 1 <= batch_size <= len(eval_set):
        raise ValueError(f"batch_size must be in [1, {len(eval_set)}] (windows in the set), got {batch_size}")
    return {"input_ids": eval_set.input_ids[:batch_size], "attention_mask": eval_set.attention_mask[:batch_size]}


def _on_device(batch, device):
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _real_tokens(batch):
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


@torch.inference_mode()
def measure_latency(model, batch, *, warmup=3, repeats=10, min_block_s=0.0):
    """Time ``model(**batch)`` on the model's device: median and spread of ``repeats`` samples.

    The batch is copied to the device once, before any timing; the model is put in eval mode;
    ``given.timing.time_call`` does the timing (``warmup`` untimed calls, CUDA synchronized, each
    sample a block of calls lasting at least ``min_block_s``). To compare models, time them
    together with ``measure_latencies``: one after another, a busy moment of the machine would
    land on some of them only.

    Returns:
        dict: ``device``, ``latency_ms`` (median), ``latency_q1_ms``/``latency_q3_ms`` (quartiles),
        ``latency_min_ms``/``latency_max_ms``, ``tokens_per_s`` (real tokens / median time),
        ``threads`` and ``batch_shape``.
    """
    model.eval()
    device = model_device(model)
    batch = _on_device(batch, device)
    timing = time_call(lambda: model(**batch), warmup=warmup, repeats=repeats, min_block_s=min_block_s)
    return {"device": str(device), **_latency_columns(timing, _real_tokens(batch)),
            "threads": timing["threads"], "batch_shape": tuple(batch["input_ids"].shape)}


def _latency_columns(timing, num_tokens):
    return {"latency_ms": 1e3 * timing["median"], "latency_q1_ms": 1e3 * timing["q1"],
            "latency_q3_ms": 1e3 * timing["q3"], "latency_min_ms": 1e3 * timing["min"],
            "latency_max_ms": 1e3 * timing["max"], "tokens_per_s": num_tokens / timing["median"]}


@torch.inference_mode()
def measure_latencies(models, batch, *, baseline="FP32", warmup=3, repeats=10, min_block_s=0.05):
    """Time every model of ``models`` (a dict ``{technique: model}``) in interleaved rounds.

    In each of ``repeats`` rounds every model runs ``model(**batch)`` in turn (a block of calls
    lasting at least ``min_block_s``), after ``warmup`` untimed rounds (``given.timing``). The
    speed-up over ``baseline`` is computed round by round (baseline time / model time in the
    same round), so a slow moment of the machine cancels out of it; its quartiles over the
    rounds are its spread. Every model is put in eval mode and timed on its own device, with the
    batch copied there once. Speed-ups between devices compare devices, not techniques.

    Returns:
        A pandas DataFrame indexed by technique: ``device``, ``threads``, ``batch_shape``,
        ``latency_ms`` with ``latency_q1_ms``/``latency_q3_ms``/``latency_min_ms``/``latency_max_ms``,
        ``tokens_per_s``, ``calls`` (calls per timed block), and, when ``baseline`` is one of the
        models, ``x_faster`` (median per-round speed-up) with ``x_faster_q1``/``x_faster_q3``.
    """
    import pandas as pd

    if not models:
        raise ValueError("no models to time")
    calls, devices, batches = {}, {}, {}
    for name, model in models.items():
        model.eval()
        devices[name] = model_device(model)
        batches[name] = _on_device(batch, devices[name])
        calls[name] = (lambda model=model, inputs=batches[name]: model(**inputs))
    stats = time_interleaved(calls, warmup=warmup, repeats=repeats, min_block_s=min_block_s)
    ratios = speedups(stats, baseline) if baseline in stats else {}
    rows = {}
    for name, timing in stats.items():
        rows[name] = {"device": str(devices[name]), "threads": timing["threads"],
                      "batch_shape": tuple(batches[name]["input_ids"].shape),
                      **_latency_columns(timing, _real_tokens(batches[name])), "calls": timing["calls"]}
        if name in ratios:
            rows[name].update(x_faster=ratios[name]["median"], x_faster_q1=ratios[name]["q1"],
                              x_faster_q3=ratios[name]["q3"])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "technique"
    return table
