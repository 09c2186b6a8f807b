"""The report (given code): one row per technique, the summary table, what its timings show, files.

``measure`` gives one row (size, perplexity, and optionally latency); ``results_table`` puts the
rows together with their ratios against the baseline; ``speed_findings`` and ``timing_conditions``
say in words what the timings show and how they were taken; ``save_results`` writes CSV and JSON.
The plots are in ``given/evaluation/plots.py``.
"""
import json
import math
from pathlib import Path

from given.evaluation.latency import measure_latency
from given.evaluation.perplexity import masked_lm_perplexity
from given.sizes import stored_bytes, storage_dtypes
from given.torch_utils import model_device


def measure(model, eval_set, latency_batch, name, *, model_name=None, batch_size=32, warmup=3, repeats=10,
            progress=True, **extra):
    """Measure one compressed model: one row of the summary table (a dict).

    Columns: ``technique`` (``name``), ``model`` (``model_name``: which model the technique was
    applied to, e.g. ``resolved.name``; None when not given), ``device``, ``dtype`` (as stored),
    ``params``, ``size_mb`` (parameters + buffers as stored, 1 MB = 10^6 bytes), ``perplexity``,
    ``loss``, ``masked_tokens``, then ``extra`` columns (e.g. ``sparse_size_mb=`` for a pruned
    model). With a ``latency_batch``, also ``latency_ms`` with quartiles and ``tokens_per_s`` of
    this model alone; pass ``latency_batch=None`` and time all models together with
    ``measure_latencies`` (fairer). The model is measured where it is.
    """
    row = {"technique": name, "model": model_name, "device": str(model_device(model)),
           "dtype": storage_dtypes(model), "params": sum(p.numel() for p in model.parameters()),
           "size_mb": stored_bytes(model) / 1e6}
    row.update(masked_lm_perplexity(model, eval_set, batch_size=batch_size, progress=progress))
    latency = ""
    if latency_batch is not None:
        timing = measure_latency(model, latency_batch, warmup=warmup, repeats=repeats)
        row.update({key: value for key, value in timing.items() if key.startswith(("latency", "tokens", "threads"))})
        latency = f"   {row['latency_ms']:8.2f} ms"
    row.update(extra)
    print(f"{name:<36} {row['size_mb']:9.2f} MB   perplexity {row['perplexity']:10.2f}{latency} "
          f"({row['device']}, {row['dtype']})", flush=True)
    return row


def results_table(rows, baseline="FP32", latencies=None):
    """A pandas DataFrame of ``measure`` rows, indexed by technique, with ratios against ``baseline``.

    Args:
        rows: dicts from ``measure``.
        baseline: the technique the ratios compare with.
        latencies: optional ``measure_latencies`` table; its columns replace any latency columns of
            the rows (models timed together beat models timed one after another).

    Added columns: ``x_smaller`` (baseline size / size), ``perplexity_change`` (perplexity -
    baseline's), ``x_faster`` (baseline latency / latency; from ``latencies``: the median of the
    per-round ratios, with its quartiles ``x_faster_q1``/``x_faster_q3``) and ``speed_up``, the
    speed-up as text with its spread, marked "(spread includes 1.00)" when the quartiles
    straddle 1.0: no measurable difference. Speed-ups are only meaningful between rows on the
    same device.
    """
    import pandas as pd

    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("no rows to tabulate")
    table = table.set_index("technique")
    if latencies is not None:
        timed = latencies.drop(columns=[c for c in ("device",) if c in latencies.columns])
        table = table.drop(columns=[c for c in timed.columns if c in table.columns]).join(timed, how="left")
    if baseline in table.index:
        base = table.loc[baseline]
        table["x_smaller"] = base["size_mb"] / table["size_mb"]
        table["perplexity_change"] = table["perplexity"] - base["perplexity"]
        if "latency_ms" in table.columns and "x_faster" not in table.columns:
            table["x_faster"] = base["latency_ms"] / table["latency_ms"]
    if "x_faster" in table.columns:
        table["speed_up"] = [_speed_up_text(row, technique == baseline) for technique, row in table.iterrows()]
    return table


def _speed_up_text(row, is_baseline=False):
    """``"1.23 (1.10-1.35)"``, plus a warning when the spread includes 1.0; "" without a timing."""
    if is_baseline:
        return "1.00 (baseline)"
    if not math.isfinite(row.get("x_faster", math.nan)):
        return ""
    if not all(math.isfinite(row.get(k, math.nan)) for k in ("x_faster_q1", "x_faster_q3")):
        return f"{row['x_faster']:.2f}"
    text = f"{row['x_faster']:.2f} ({row['x_faster_q1']:.2f}-{row['x_faster_q3']:.2f})"
    return text + " (spread includes 1.00)" if row["x_faster_q1"] <= 1.0 <= row["x_faster_q3"] else text


def speed_findings(table, baseline="FP32"):
    """What this run's timing shows, in sentences that quote ``table`` (a ``results_table`` with
    ``latencies``): the rows measurably faster and slower than ``baseline``, the fastest of them,
    and for each int8 row whether its win here is speed or memory alone.

    A row is faster (slower) only when both quartiles of its per-round speed-up are above (below)
    1.00; the others are "not distinguishable". Nothing is said of a row that was not timed.
    """
    timed = table.drop(index=[baseline], errors="ignore")
    timed = timed[[all(math.isfinite(row.get(k, math.nan)) for k in ("x_faster", "x_faster_q1", "x_faster_q3"))
                   for _, row in timed.iterrows()]]
    if timed.empty:
        return f"No row was timed against {baseline}."
    faster = timed[timed["x_faster_q1"] > 1.0].sort_values("x_faster", ascending=False)
    slower = timed[timed["x_faster_q3"] < 1.0]
    unclear = timed.drop(index=[*faster.index, *slower.index])

    def listed(rows):
        return "; ".join(f"{name} {_speed_up_text(row)}" for name, row in rows.iterrows()) or "none"

    lines = [f"Measurably faster than {baseline} on this machine: {listed(faster)}.",
             f"Measurably slower: {listed(slower)}.",
             f"Not distinguishable from {baseline} (spread includes 1.00): "
             f"{', '.join(unclear.index) or 'none'}."]
    lines.append(f"Fastest measured: {faster.index[0]}, {faster['x_faster'].iloc[0]:.2f}x {baseline}'s speed."
                 if len(faster) else f"No row is measurably faster than {baseline} here.")
    for name, row in timed.iterrows():
        if "int8" in str(name) and math.isfinite(row.get("x_smaller", math.nan)):
            win = "memory and speed" if name in faster.index else "memory only"
            lines.append(f"{name}: {row['x_smaller']:.1f}x smaller than {baseline}, speed-up "
                         f"{_speed_up_text(row)}: its win on this machine is {win}.")
    return "\n".join(lines)


def timing_conditions(table):
    """One line saying where and how the latencies were measured: device, threads, batch, dtype."""
    parts = []
    for column, label in (("device", "device"), ("threads", "CPU threads"), ("batch_shape", "batch (windows x tokens)")):
        if column in table.columns:
            values = sorted({str(v) for v in table[column].dropna()})
            parts.append(f"{label}: {', '.join(values)}")
    if "dtype" in table.columns:
        parts.append("dtypes as stored: see the dtype column")
    return "; ".join(parts)


def save_results(table, output_dir, stem="results"):
    """Write ``table`` as ``<stem>.csv`` and ``<stem>.json`` in ``output_dir``; return both paths.

    The JSON is strict (any JSON parser reads it): a list of row objects, NaN and infinities
    written as ``null``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = output_dir / f"{stem}.csv", output_dir / f"{stem}.json"
    table.to_csv(csv_path)
    records = [{key: _json_value(value) for key, value in record.items()}
               for record in table.reset_index().to_dict(orient="records")]
    json_path.write_text(json.dumps(records, indent=2, allow_nan=False))
    return csv_path, json_path


def _json_value(value):
    """A JSON-ready copy of one table cell: NaN/inf -> None, numpy scalars -> Python, rest -> str."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
