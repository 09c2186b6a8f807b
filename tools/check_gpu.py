"""Run every CUDA path of the lab once and print a table of what worked (needs a CUDA GPU).

    python tools/check_gpu.py                       # all checks, then the notebook end to end on the GPU
    python tools/check_gpu.py --skip-notebook       # the checks only (a minute)
    python tools/check_gpu.py --model PATH          # the BERT to use (default: ../shared/data/bert-mini-wikitext2)

Checks, each against an fp32 reference on the same inputs:
- bitsandbytes through transformers: LLM.int8(), FP4, NF4, NF4 + double quantization (size and logits);
- real FP16 (the model in half precision on the GPU: size, logits, speed-up over fp32);
- ``torch._int_mm`` under its CUDA shape rules (m > 16, k and n multiples of 8): exact against float64,
  and the lab's ``int8_matmul_int32`` exact on shapes outside the rules (its fallback);
- the lab's ``QuantizedLinear`` int8 (your LLM.int8()) on the GPU, against the same layer on the CPU;
- 2:4 semi-structured sparsity (compute capability 8.0+): the product against the dense one, and the
  true stored size (compressed values + metadata) against the dense size;
- the notebook, end to end, with ``tools/run_notebook.py --device cuda``.

On a machine without CUDA it says so and exits 0 (nothing to check). Exit status 1 when a check failed.
"""
import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root
from given.manifest import PROJECT_ROOT, SHARED_DATA_DIR  # noqa: E402

DEFAULT_MODEL = SHARED_DATA_DIR / "bert-mini-wikitext2"


def format_table(results):
    """The results (dicts with check, status, detail, seconds) as a fixed-width text table."""
    header = ("check", "status", "seconds", "detail")
    rows = [(r["check"], r["status"], f"{r['seconds']:.1f}", r["detail"]) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(3)]
    lines = ["  ".join(str(value).ljust(width) for value, width in zip(row[:3], widths)) + "  " + str(row[3])
             for row in [header, *rows]]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def run_check(name, function, results):
    """Run ``function()`` (returns a detail string, or raises ``Skip``); record ok / skipped / FAIL."""
    start = time.perf_counter()
    try:
        detail, status = function(), "ok"
    except Skip as reason:
        detail, status = str(reason), "skipped"
    except Exception as error:  # a failed check is reported, and the others still run
        detail, status = f"{type(error).__name__}: {error}", "FAIL"
    results.append({"check": name, "status": status, "detail": detail, "seconds": time.perf_counter() - start})
    print(f"[{status}] {name}: {detail}", flush=True)


class Skip(Exception):
    """A check that cannot run here (e.g. 2:4 sparsity below compute capability 8.0)."""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="local BERT folder (default: %(default)s)")
    parser.add_argument("--skip-notebook", action="store_true", help="do not run the notebook end to end")
    parser.add_argument("--notebook-mode", choices=("quick", "full"), default="full",
                        help="RUN_MODE of the notebook run (default: full)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("check_gpu: this check needs a CUDA GPU, and torch sees none here "
              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Nothing to check; exiting.")
        return 0

    from given import models, quantized_linear
    from given.matmul import _int_mm_supported, int8_matmul_int32
    from given.sizes import stored_bytes
    from given.timing import speedups, time_interleaved
    from given.torch_utils import relative_error

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    capability = torch.cuda.get_device_capability(device)
    print(f"GPU: {name}, compute capability {capability[0]}.{capability[1]}; torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    model_path = Path(args.model)
    if not model_path.is_dir():
        print(f"check_gpu: no model folder at {model_path}; pass --model PATH", file=sys.stderr)
        return 1
    tokenizer = models.load_tokenizer(str(model_path))
    batch = tokenizer(["The quick brown fox jumps over the lazy dog."] * 8, padding="max_length",
                      max_length=128, truncation=True, return_tensors="pt")
    batch = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
    reference = models.load_bert(str(model_path), device=device).eval()
    with torch.inference_mode():
        reference_logits = reference(**batch).logits.float()
    fp32_mb = stored_bytes(reference) / 1e6
    results = []

    def bitsandbytes_check(**config):
        def check():
            from transformers import BitsAndBytesConfig

            model = models.load_bert(str(model_path), device=device,
                                     quantization_config=BitsAndBytesConfig(**config)).eval()
            with torch.inference_mode():
                logits = model(**batch).logits
            error = relative_error(logits, reference_logits)
            if not math.isfinite(error) or error > 0.5:
                raise AssertionError(f"logits relative error {error:.3f} against fp32")
            return f"{stored_bytes(model) / 1e6:.1f} MB (fp32 {fp32_mb:.1f}); logits rel. error {error:.4f}"
        return check

    for label, config in {
        "bitsandbytes LLM.int8() t=6": dict(load_in_8bit=True, llm_int8_threshold=6.0),
        "bitsandbytes FP4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float16),
        "bitsandbytes NF4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16),
        "bitsandbytes NF4 + double quant": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                bnb_4bit_use_double_quant=True,
                                                bnb_4bit_compute_dtype=torch.float16),
    }.items():
        run_check(label, bitsandbytes_check(**config), results)

    def fp16_check():
        import copy

        half = copy.deepcopy(reference).half()
        with torch.inference_mode():
            logits = half(**batch).logits
            if logits.dtype != torch.float16:
                raise AssertionError(f"the fp16 model returned {logits.dtype}")
            stats = time_interleaved({"fp32": lambda: reference(**batch), "fp16": lambda: half(**batch)},
                                     warmup=3, repeats=10, min_block_s=0.05)
        ratio = speedups(stats, "fp32")["fp16"]
        return (f"{stored_bytes(half) / 1e6:.1f} MB; logits rel. error {relative_error(logits, reference_logits):.4f}; "
                f"speed-up over fp32 {ratio['median']:.2f} ({ratio['q1']:.2f}-{ratio['q3']:.2f})")

    run_check("real FP16", fp16_check, results)

    def int_mm_check():
        generator = torch.Generator().manual_seed(0)
        report = []
        for m, k, n in [(32, 64, 128), (1024, 384, 1536), (16, 64, 64), (33, 60, 64)]:
            a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=generator)
            b = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=generator)
            exact = (a.double() @ b.double()).to(torch.int32)
            rules = _int_mm_supported(a.to(device), b.to(device))
            if rules:
                direct = torch._int_mm(a.to(device), b.to(device)).cpu()
                if not torch.equal(direct, exact):
                    raise AssertionError(f"torch._int_mm ({m}x{k} @ {k}x{n}) differs from the exact product")
            lab = int8_matmul_int32(a.to(device), b.to(device)).cpu()
            if not torch.equal(lab, exact):
                raise AssertionError(f"int8_matmul_int32 ({m}x{k} @ {k}x{n}) differs from the exact product")
            report.append(f"{m}x{k}x{n} {'_int_mm' if rules else 'fallback'}")
        return "exact: " + ", ".join(report)

    run_check("torch._int_mm (CUDA shape rules)", int_mm_check, results)

    def quantized_linear_check():
        linear = torch.nn.Linear(384, 1536)
        x = torch.randn(2, 64, 384)
        x[..., 5] *= 20  # one outlier feature column
        layer = quantized_linear.QuantizedLinear(linear, "int8", threshold=6.0)
        with torch.inference_mode():
            on_cpu = layer(x)
            on_gpu = layer.to(device)(x.to(device)).cpu()
        error = relative_error(on_gpu, on_cpu)
        if error > 1e-3:
            raise AssertionError(f"GPU and CPU results differ: relative error {error:.2e}")
        return f"your LLM.int8() on the GPU matches the CPU (rel. error {error:.1e}); outliers {layer.last_outlier_count}"

    run_check("QuantizedLinear int8 on CUDA", quantized_linear_check, results)

    def semi_structured_check():
        if capability < (8, 0):
            raise Skip(f"needs compute capability 8.0+ (this GPU: {capability[0]}.{capability[1]})")
        from torch.sparse import to_sparse_semi_structured

        from pruning import nm_sparsity_mask

        weight = torch.randn(1536, 384, dtype=torch.float16, device=device)
        weight = weight * nm_sparsity_mask(weight, 2, 4)
        module = torch.nn.Linear(384, 1536, bias=False).half().to(device)
        module.weight = torch.nn.Parameter(weight, requires_grad=False)
        dense_bytes = stored_bytes(module)
        x = torch.randn(128, 384, dtype=torch.float16, device=device)
        with torch.inference_mode():
            expected = module(x)
            module.weight = torch.nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
            got = module(x)
        sparse_bytes = stored_bytes(module)
        error = relative_error(got, expected)
        if error > 1e-2:
            raise AssertionError(f"2:4 product differs from the dense one: relative error {error:.2e}")
        if not sparse_bytes < 0.75 * dense_bytes:
            raise AssertionError(f"stored size {sparse_bytes} B is not below 3/4 of dense {dense_bytes} B")
        return (f"1536x384 fp16: dense {dense_bytes / 1e3:.0f} kB, 2:4 stored {sparse_bytes / 1e3:.0f} kB "
                f"({sparse_bytes / dense_bytes:.3f} of dense: half the values + metadata); rel. error {error:.1e}")

    run_check("2:4 semi-structured sparsity", semi_structured_check, results)

    if not args.skip_notebook:
        def notebook_check():
            output = Path(tempfile.mkdtemp(prefix="check_gpu_notebook_"))
            command = [sys.executable, str(PROJECT_ROOT / "tools" / "run_notebook.py"), "--offline", "--device", "cuda",
                       "--model", str(model_path), "--mode", args.notebook_mode, "--output-dir", str(output)]
            completed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
            if completed.returncode != 0:
                raise AssertionError(f"run_notebook.py exited {completed.returncode}: "
                                     f"{completed.stderr.strip().splitlines()[-1:] or completed.stdout[-300:]}")
            import pandas as pd

            table = pd.read_csv(output / "results.csv", index_col=0)
            devices = sorted(set(table["device"].astype(str)))
            return f"{len(table)} rows on {', '.join(devices)}; outputs in {output}"

        run_check("notebook end to end on the GPU", notebook_check, results)

    print()
    print(format_table(results))
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
