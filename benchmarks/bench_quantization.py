"""Benchmark Exercise 1's LLM.int8() against float32 and bitsandbytes, at BERT-base shapes.

    python benchmarks/bench_quantization.py [--tokens 2048] [--repeats 10]

One run measures, on the same input (tokens x 768 activations with a few outlier columns) and
the same (768 -> 3072) weight, the median time and the relative error to the float32 product of:
- float32 matmul (the baseline),
- ``mixed_precision_forward`` (weight quantized at every call, as the exercise states it),
- ``QuantizedLinear`` int8 (weight quantized once, as a model would use it),
- bitsandbytes ``Linear8bitLt`` (threshold 6.0), when bitsandbytes is installed.
It prints ratios measured in this run; nothing here is a pass/fail test.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from given.quantized_linear import QuantizedLinear  # noqa: E402
from given.timing import time_call  # noqa: E402
from quantization import mixed_precision_forward  # noqa: E402


def median_ms(function, repeats):
    stats = time_call(function, warmup=1, repeats=repeats)
    return 1000 * stats["median"], 1000 * (stats["max"] - stats["min"])


def bitsandbytes_layer(linear, threshold):
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=False,
                                has_fp16_weights=False, threshold=threshold)
    layer.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False,
                                     has_fp16_weights=False)
    return layer.to("cpu")  # quantizes the weight to int8 (bitsandbytes >= 0.45 runs on CPU)


def what_bitsandbytes_computes(layer, x):
    """Whether the layer's output is exactly the weight-only product ``x @ dequant(W).T``.

    On CPU, bitsandbytes 0.50 dequantizes the int8 weight and multiplies in float: no int8
    activations, no outlier decomposition, so its error is that of int8 weights alone and not
    comparable with LLM.int8()'s (which also quantizes the activations)."""
    row_scales = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB  # moved by forward
    weight = layer.weight.data.float() * (row_scales[:, None].float() / 127)
    with torch.inference_mode():
        gap = float((layer(x).float() - x @ weight.T).abs().max())
    if gap == 0:
        return "weight-only int8 (output == x @ dequantized W exactly), not LLM.int8()"
    return f"differs from weight-only int8 by up to {gap:.2e}: int8 activations too"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="rows of the activation matrix")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    linear = torch.nn.Linear(768, 3072, bias=False)
    x = torch.randn(args.tokens, 768)
    x[:, [17, 301, 622]] *= 15.0  # three systematic outlier features (|x| well above 6)
    weight = linear.weight.detach().T.contiguous()  # (in, out), the exercise's layout
    exact = x @ weight

    candidates = {
        "float32 matmul": lambda: x @ weight,
        "mixed_precision_forward": lambda: mixed_precision_forward(x, weight, 6.0),
        "QuantizedLinear int8": QuantizedLinear(linear, "int8", threshold=6.0),
    }
    bnb_layer = bitsandbytes_layer(linear, 6.0)
    if bnb_layer is not None:
        candidates["bitsandbytes Linear8bitLt"] = bnb_layer

    print(f"x: {tuple(x.shape)} with 3 outlier columns, W: (768, 3072); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} runs\n")
    print(f'{"method":<28}{"median ms":>10}{"spread ms":>10}{"vs fp32":>9}{"rel. error":>12}')
    baseline = None
    results = {}
    with torch.inference_mode():
        for name, candidate in candidates.items():
            run = candidate if not isinstance(candidate, torch.nn.Module) else (lambda c=candidate: c(x))
            ms, spread = median_ms(run, args.repeats)
            baseline = baseline or ms
            error = float((run().float() - exact).norm() / exact.norm())
            results[name] = (ms, error)
            print(f"{name:<28}{ms:>10.1f}{spread:>10.1f}{baseline / ms:>8.2f}x{error:>12.2e}")
    if "bitsandbytes Linear8bitLt" in results:
        print(f"\nbitsandbytes on {x.device.type}: {what_bitsandbytes_computes(bnb_layer, x)}")
        bnb_ms, bnb_error = results["bitsandbytes Linear8bitLt"]
        for name in ("mixed_precision_forward", "QuantizedLinear int8"):
            ms, error = results[name]
            print(f"\n{name}: {bnb_ms / ms:.2f}x the speed of bitsandbytes on this CPU, "
                  f"error {error / bnb_error:.2f}x bitsandbytes'")


if __name__ == "__main__":
    main()
