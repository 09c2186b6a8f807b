"""Tests of the given LLM.int8() plumbing around your Exercise 1.6-1.8 (issue 21). Never graded.

``QuantizedLinear`` must run *your* functions, search the outlier columns once per call, and raise
when one of them raises; ``time_breakdown``'s steps must compute what ``mixed_precision_forward``
computes. Speed is measured by ``benchmarks/bench_quantization.py``, never here.

They pass in the student release as it is: each test runs the given code on the plain
restatements of Exercise 1.1-1.8 below (the slow way: cut columns and rows, divide by the outer
product of the scales), installed in ``quantization`` by the ``lab_functions`` fixture.
"""
import numpy as np
import pytest
import torch
from torch import nn

import quantization
from given import quantized_linear
from given.matmul import fp16_matmul, int8_matmul_int32
from given.quantized_linear import QuantizedLinear
from quantization import QuantizedVector
from helpers import run_seed

pytestmark = pytest.mark.given_code

THRESHOLD = 6.0


# ---------------------------------------------------------------------------------------------
# Exercise 1.1, 1.2, 1.6-1.8 restated plainly. The LLM.int8() ones carry the lab's names, so that
# they find one another as module globals, as your functions do in quantization.py.
# ---------------------------------------------------------------------------------------------

def absmax_quantize(v, dim=None):
    max_abs = (v.abs().max() if dim is None else v.abs().amax(dim=dim, keepdim=True)).clamp_min(1e-30)
    alpha = 127 / max_abs
    return torch.round(v * alpha).clamp(-127, 127).to(torch.int8), alpha


def absmax_dequantize(q, alpha):
    return q.to(torch.float32) / alpha


def outlier_columns(x, threshold):
    if not threshold:
        return torch.zeros(x.shape[1], dtype=torch.bool)
    return (x.abs() >= threshold).any(dim=0)


def int8_vectorwise_matmul(x, weight):
    x_q = QuantizedVector(x, "int8", dim=1)
    w_q = weight if isinstance(weight, QuantizedVector) else QuantizedVector(weight, "int8", dim=0)
    accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)
    return accumulated.to(torch.float32) / (x_q.alpha * w_q.alpha)


def mixed_precision_forward(input, weight, threshold=6.0):
    x = input.reshape(-1, input.shape[-1]).float()
    is_outlier = outlier_columns(x, threshold)
    if is_outlier.all():
        result = torch.zeros(x.shape[0], weight.shape[1])
    else:
        result = int8_vectorwise_matmul(x[:, ~is_outlier], weight[~is_outlier])
    if is_outlier.any():
        rows = weight[is_outlier]
        rows = rows.dequantize() if isinstance(rows, QuantizedVector) else rows
        fp16_matmul(x[:, is_outlier], rows, add_to=result)
    return result.reshape(*input.shape[:-1], -1)


@pytest.fixture
def lab_functions(monkeypatch):
    """Installs the restatements above as quantization's Exercise 1 functions; returns
    ``replace(name, function)``, which swaps one of them in both places."""
    def replace(name, function):
        monkeypatch.setattr(quantization, name, function)
        monkeypatch.setitem(globals(), name, function)

    for function in (absmax_quantize, absmax_dequantize, outlier_columns, int8_vectorwise_matmul,
                     mixed_precision_forward):
        replace(function.__name__, function)
    return replace


def layer_and_input(tokens=10, features=32, out_features=24, outlier_columns_at=(3, 17)):
    torch.manual_seed(run_seed())
    linear = nn.Linear(features, out_features)
    x = torch.randn(2, tokens // 2, features)
    for column in outlier_columns_at:
        x[0, 1, column] = 8.0 + column  # one value is enough to make a column an outlier
    return linear, x


def independent_outlier_count(x, threshold=THRESHOLD):
    values = x.reshape(-1, x.shape[-1]).numpy()
    return int((np.abs(values) >= threshold).any(axis=0).sum())


# ---------------------------------------------------------------------------------------------
# QuantizedLinear runs your code: once, as it is, and raises with it
# ---------------------------------------------------------------------------------------------

def test_quantized_linear_int8_is_your_mixed_precision_forward_plus_the_bias(lab_functions):
    linear, x = layer_and_input()
    layer = QuantizedLinear(linear, "int8", threshold=THRESHOLD)
    expected = mixed_precision_forward(x.reshape(-1, 32), layer.quantized_weight(), THRESHOLD) + linear.bias
    with torch.no_grad():
        assert torch.equal(layer(x), expected.reshape(2, 5, 24).detach())
    assert layer.last_outlier_count == independent_outlier_count(x) == 2


def test_quantized_linear_searches_the_outlier_columns_once_per_call(lab_functions):
    calls, plain_outlier_columns = [], outlier_columns

    def counted_outlier_columns(x, threshold):
        calls.append(tuple(x.shape))
        return plain_outlier_columns(x, threshold)

    lab_functions("outlier_columns", counted_outlier_columns)
    linear, x = layer_and_input()
    layer = QuantizedLinear(linear, "int8", threshold=THRESHOLD)
    with torch.no_grad():
        layer(x)
        assert calls == [(10, 32)], f"outlier_columns ran {len(calls)} times for one forward: {calls}"
        assert layer.last_outlier_count == 2
        layer(torch.randn(3, 32) * 0.1)  # no outlier: the count follows the last call
    assert len(calls) == 2 and layer.last_outlier_count == 0


def test_outliers_are_counted_when_your_forward_finds_them_another_way(lab_functions):
    def inline_forward(input, weight, threshold=6.0):  # finds its outliers without outlier_columns
        x = input.reshape(-1, input.shape[-1])
        keep = x.abs().amax(dim=0) < threshold
        return quantization.int8_vectorwise_matmul(x[:, keep], weight[keep])

    lab_functions("mixed_precision_forward", inline_forward)
    linear, x = layer_and_input(outlier_columns_at=(1, 2, 30))
    layer = QuantizedLinear(linear, "int8", threshold=THRESHOLD)
    with torch.no_grad():
        layer(x)
    assert layer.last_outlier_count == independent_outlier_count(x) == 3


@pytest.mark.parametrize("exercise, name", [("1.6", "outlier_columns"), ("1.7", "int8_vectorwise_matmul"),
                                            ("1.8", "mixed_precision_forward")])
def test_quantized_linear_raises_when_your_exercise_raises(lab_functions, exercise, name):
    def unfinished(*args, **kwargs):
        raise NotImplementedError(f"Exercise {exercise}: not written yet")

    linear, x = layer_and_input()
    layer = QuantizedLinear(linear, "int8", threshold=THRESHOLD)
    lab_functions(name, unfinished)
    with pytest.raises(NotImplementedError, match=f"Exercise {exercise}"), torch.no_grad():
        layer(x)


# ---------------------------------------------------------------------------------------------
# time_breakdown: its steps are LLM.int8(), the same numbers as mixed_precision_forward
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outlier_features", [0, 2, 16])
def test_breakdown_steps_compute_what_mixed_precision_forward_computes(lab_functions, outlier_features):
    x, weight = quantized_linear.breakdown_data(tokens=40, in_features=16, out_features=24,
                                                outlier_features=outlier_features, seed=run_seed())
    w_q = QuantizedVector(weight, "int8", dim=0)
    steps, result = quantized_linear.llm_int8_steps(x, w_q, THRESHOLD)
    expected = mixed_precision_forward(x, w_q, THRESHOLD)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)
    assert len(steps) == 6 and quantized_linear.GEMM_STEP in steps
    for step in steps.values():
        step()
    if 0 < outlier_features < 16:  # the steps' fp16 part counts: without it the result is far off
        assert (result - int8_vectorwise_matmul(x[:, outlier_features:], w_q[outlier_features:])).abs().max() > 0.1


def test_time_breakdown_reports_the_work_around_the_gemm(lab_functions, capsys):
    table = quantized_linear.time_breakdown(tokens=24, in_features=16, out_features=8, repeats=3)
    printed = capsys.readouterr().out
    assert printed.startswith("around the int8 GEMM: ") and " x fp32" in printed
    labels = list(table.index)
    assert labels[-3:] == [quantized_linear.WHOLE_CALL, quantized_linear.FP32_MATMUL,
                           quantized_linear.AROUND_THE_GEMM]
    around = table.loc[quantized_linear.AROUND_THE_GEMM]
    whole, gemm = table.loc[quantized_linear.WHOLE_CALL], table.loc[quantized_linear.GEMM_STEP]
    assert around["q1 x"] <= around["x fp32 matmul"] <= around["q3 x"]
    assert table.loc[quantized_linear.FP32_MATMUL, "x fp32 matmul"] == 1.0
    assert abs(around["median ms"]) <= whole["q3 ms"] + gemm["q3 ms"]  # a difference of two timings
    assert "2 outlier columns" in table.index.name


def test_breakdown_summary_says_faster_or_slower_only_when_the_spread_does():
    import pandas as pd
    labels = ["1. a", "2. b", "3. c", quantized_linear.GEMM_STEP, "5. d", "6. e", quantized_linear.WHOLE_CALL,
              quantized_linear.FP32_MATMUL, quantized_linear.AROUND_THE_GEMM]
    ratios = [0.01, 0.02, 0.03, 0.3, 0.1, 0.04, 0.55, 1.0, 0.25]
    table = pd.DataFrame({"x fp32 matmul": ratios, "q1 x": [r * 0.9 for r in ratios],
                          "q3 x": [r * 1.1 for r in ratios],
                          "% of steps": [2, 4, 6, 60, 20, 8, None, None, None]}, index=labels)
    table.loc[quantized_linear.WHOLE_CALL, ["x fp32 matmul", "q1 x", "q3 x"]] = [1.05, 0.95, 1.2]
    lines = quantized_linear.breakdown_summary(table).splitlines()
    assert "0.30x the float32 matmul's time [IQR 0.27-0.33]: faster than it" in lines[0]
    assert "1.05x" in lines[1] and "not distinguishable" in lines[1] and "faster" not in lines[1]
    assert lines[2].startswith("around the int8 GEMM: 0.25 x fp32 [IQR 0.23-0.28]")
    assert quantized_linear.GEMM_STEP in lines[3] and "60%" in lines[3]
    table.loc[quantized_linear.GEMM_STEP, ["q1 x", "q3 x"]] = [1.01, 1.5]
    assert "slower than it" in quantized_linear.breakdown_summary(table).splitlines()[0]


def test_speed_findings_claim_only_what_the_spread_shows():
    import pandas as pd

    from given.evaluation import speed_findings
    table = pd.DataFrame({"x_faster": [1.0, 2.5, 1.1, 0.6, float("nan")],
                          "x_faster_q1": [1.0, 2.2, 0.9, 0.5, float("nan")],
                          "x_faster_q3": [1.0, 2.8, 1.3, 0.7, float("nan")],
                          "x_smaller": [1.0, 2.0, 3.6, 3.6, 8.0]},
                         index=["FP32", "BF16", "Ex1 int8", "bnb int8", "Ex1 1bit"])
    lines = speed_findings(table).splitlines()
    assert lines[0] == "Measurably faster than FP32 on this machine: BF16 2.50 (2.20-2.80)."
    assert lines[1] == "Measurably slower: bnb int8 0.60 (0.50-0.70)."
    assert lines[2].endswith(": Ex1 int8.") and "1bit" not in "".join(lines)
    assert lines[3] == "Fastest measured: BF16, 2.50x FP32's speed."
    assert "Ex1 int8: 3.6x smaller" in lines[4] and lines[4].endswith("memory only.")
    table.loc["Ex1 int8", ["x_faster", "x_faster_q1", "x_faster_q3"]] = [3.0, 2.9, 3.1]
    lines = speed_findings(table).splitlines()
    assert lines[3] == "Fastest measured: Ex1 int8, 3.00x FP32's speed." and lines[4].endswith("memory and speed.")
    slow_only = table.loc[["FP32", "bnb int8"]]
    assert "No row is measurably faster than FP32 here." in speed_findings(slow_only)
