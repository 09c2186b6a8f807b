"""The lab's lessons, checked on the trained offline model (marker ``lessons``; not graded).

    python -m pytest --run-lessons -m lessons      # or: python -m pytest tests/test_lessons.py --run-lessons

A randomly initialised BERT scores ~30,000 whatever you do to it, so it shows no lesson. The
offline model (``bert-mini-wikitext2``: ``$LAB5_OFFLINE_MODEL``, else ``../shared/data/``; build one
with ``python tools/make_offline_bert.py``) has learned, so compression shows on it. Every model
is scored on the same masked tokens: the first 16,384 WikiText-2 test tokens (the notebook's quick
size), 128-token windows, 15% of the tokens replaced by [MASK] with seed 123; the FP32 check
against the model's README uses the README's 40,000 tokens. Each failure message prints the
numbers. Without the offline model these tests skip, saying why.
"""
import contextlib
import copy
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import given.evaluation as ev
import given.models as models

pytestmark = [pytest.mark.lessons, pytest.mark.timeout(1800)]

EVAL_TOKENS = 16_384
"""Text tokens every lesson is scored on (2,457 of them masked): comparisons are paired, on the same tokens."""
README_EVAL_TOKENS = 40_000
"""The model README's evaluation size (313 windows there, 318 here: see ``test_fp32_matches_the_model_readme``)."""
EVAL_SEED = 123
DISTILL = dict(steps=40, epochs=1, batch_size=8, seq_len=128, temperature=2.0, learning_rate=1e-4, seed=0)
"""The distillation lesson's budget: a 2-layer student, 40 steps of 8 windows (see the test)."""


@pytest.fixture(scope="module")
def offline_model():
    folder = models.offline_model_dir()
    if folder is None:
        pytest.skip(f"no trained offline model (neither ${models.OFFLINE_MODEL_ENV} nor "
                    f"{models.SHARED_OFFLINE_MODEL_DIR}): the lessons need one; build it with "
                    f"{models.MAKE_OFFLINE_MODEL}")
    return folder


@pytest.fixture(scope="module")
def wikitext_dir(offline_model):
    if not ev.SHARED_WIKITEXT_DIR.is_dir():
        pytest.skip(f"no local WikiText-2 at {ev.SHARED_WIKITEXT_DIR}")
    return ev.SHARED_WIKITEXT_DIR


@pytest.fixture(scope="module")
def tokenizer(offline_model):
    return models.load_tokenizer(offline_model)


@pytest.fixture(scope="module")
def test_texts(wikitext_dir):
    return ev.load_wikitext_texts("test", wikitext_dir)


@pytest.fixture(scope="module")
def eval_set(tokenizer, test_texts):
    return ev.build_masked_eval_set(test_texts, tokenizer, seq_len=128, max_tokens=EVAL_TOKENS, seed=EVAL_SEED)


@pytest.fixture(scope="module")
def fp32_model(offline_model):
    return models.load_bert(offline_model, device="cpu")


@contextlib.contextmanager
def exercise(name):
    """Skip (saying which) when the student's code for this lesson is not written yet."""
    try:
        yield
    except NotImplementedError as error:
        pytest.skip(f"{name} not implemented yet: {error}")


class Perplexities:
    """Each technique's masked-LM perplexity on the shared ``eval_set``, computed once per module."""

    def __init__(self, eval_set):
        self.eval_set, self.values = eval_set, {}

    def of(self, name, build_model):
        if name not in self.values:
            model = build_model()
            self.values[name] = ev.masked_lm_perplexity(model, self.eval_set)["perplexity"]
            print(f"{name}: perplexity {self.values[name]:,.2f}", flush=True)  # shown with -s
        return self.values[name]


@pytest.fixture(scope="module")
def perplexity(eval_set):
    return Perplexities(eval_set)


@pytest.fixture(scope="module")
def fp32(perplexity, fp32_model):
    return perplexity.of("FP32", lambda: fp32_model)


def ratio_text(name, value, fp32):
    return f"{name} {value:,.1f} vs FP32 {fp32:,.1f} ({value / fp32:.3f}x)"


# ---------------------------------------------------------------------------------- the baseline

def readme_perplexity(folder):
    """The test perplexity the model's README states (row ``| this model | **117.3** |``), else the
    last ``test_ppl`` of its ``training_log.json``."""
    readme = Path(folder) / "README.md"
    if readme.is_file():
        found = re.search(r"^\|\s*this model\s*\|\s*\**\s*([\d,]+(?:\.\d+)?)", readme.read_text(), re.MULTILINE)
        if found:
            return float(found.group(1).replace(",", ""))
    log = Path(folder) / "training_log.json"
    if log.is_file():
        return float(json.loads(log.read_text())["log"][-1]["test_ppl"])
    pytest.fail(f"{folder} states no test perplexity: no '| this model | N |' row in README.md, "
                "no training_log.json")


def test_fp32_matches_the_model_readme(offline_model, tokenizer, test_texts, fp32_model):
    """The README's protocol, re-implemented by ``given.evaluation``: same 40,000 tokens, 15%
    [MASK], seed 123, but its own windows (126 text tokens + [CLS]/[SEP]: 318 windows, where the
    README counts 313) and its own draw of the masked positions, so a few percent apart."""
    stated = readme_perplexity(offline_model)
    eval_set = ev.build_masked_eval_set(test_texts, tokenizer, seq_len=128, max_tokens=README_EVAL_TOKENS,
                                        seed=EVAL_SEED)
    fp32 = ev.masked_lm_perplexity(fp32_model, eval_set)["perplexity"]
    print(f"FP32 on the README's {README_EVAL_TOKENS:,} tokens: {fp32:.2f} (README: {stated})")
    assert abs(fp32 / stated - 1) <= 0.10, (
        f"FP32 perplexity {fp32:.1f} on {eval_set.num_masked:,} masked tokens ({len(eval_set)} windows) is "
        f"{fp32 / stated - 1:+.1%} from the {stated:.1f} stated in {offline_model}/README.md (allowed: 10%)")


# ---------------------------------------------------------------------------------- quantization

def load_bnb(folder, **config):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from transformers import BitsAndBytesConfig
    return models.load_bert(folder, quantization_config=BitsAndBytesConfig(**config), device="cpu")


def students_quantized(fp32_model, quantization_format):
    from given.quantized_linear import quantize_model
    with exercise(f"Exercise 1 ({quantization_format})"):
        model, _ = quantize_model(copy.deepcopy(fp32_model), quantization_format=quantization_format, threshold=6.0)
        return model


def test_bf16_and_llm_int8_keep_the_quality(perplexity, fp32, fp32_model, offline_model):
    """Half precision and LLM.int8() (the students' and bitsandbytes') stay within 3% of FP32."""
    measured = {
        "BF16": perplexity.of("BF16", lambda: copy.deepcopy(fp32_model).to(torch.bfloat16)),
        "Ex1 int8 (students' LLM.int8())": perplexity.of("Ex1 int8", lambda: students_quantized(fp32_model, "int8")),
        "bnb LLM.int8()": perplexity.of("bnb LLM.int8()", lambda: load_bnb(offline_model, load_in_8bit=True)),
    }
    report = "; ".join(ratio_text(name, value, fp32) for name, value in measured.items())
    assert all(abs(value / fp32 - 1) <= 0.03 for value in measured.values()), f"allowed 3%: {report}"


def test_nf4_costs_a_little(perplexity, fp32, offline_model):
    nf4 = perplexity.of("bnb NF4", lambda: load_bnb(offline_model, load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                    bnb_4bit_compute_dtype=torch.float32))
    assert abs(nf4 / fp32 - 1) <= 0.15, f"allowed 15%: {ratio_text('NF4', nf4, fp32)}"


@pytest.mark.parametrize("quantization_format", ["1.58bit", "1bit"])
def test_ternary_and_binary_weights_after_training_ruin_it(perplexity, fp32, fp32_model, quantization_format):
    """Post-training 1.58-bit and 1-bit weights: several (here: at least 3) times worse than FP32."""
    value = perplexity.of(f"Ex1 {quantization_format}", lambda: students_quantized(fp32_model, quantization_format))
    assert value >= 3 * fp32, f"expected at least 3x FP32: {ratio_text(quantization_format, value, fp32)}"


# ---------------------------------------------------------------------------------- pruning

def unstructured(fp32_model, fraction):
    import pruning
    model = copy.deepcopy(fp32_model)
    with exercise("Exercise 2.1 (apply_weight_pruning)"):
        pruning.apply_weight_pruning(model.bert.encoder, nn.Linear, fraction)
    return model


def structured(fp32_model, fraction):
    from given.bert_surgery import shrink_bert
    with exercise("Exercise 2 (structured pruning)"):
        return shrink_bert(copy.deepcopy(fp32_model), fraction)


def test_unstructured_pruning_costs_little_at_20_percent_and_more_at_40(perplexity, fp32, fp32_model):
    p20 = perplexity.of("unstructured 20%", lambda: unstructured(fp32_model, 0.2))
    p40 = perplexity.of("unstructured 40%", lambda: unstructured(fp32_model, 0.4))
    report = f"{ratio_text('20%', p20, fp32)}; {ratio_text('40%', p40, fp32)}"
    assert p20 < p40, f"pruning 20% should cost less than 40%: {report}"
    assert p20 <= 1.10 * fp32, f"20% unstructured should stay within 10% of FP32: {report}"


def test_structured_pruning_costs_more_than_unstructured(perplexity, fp32, fp32_model):
    unstructured_40 = perplexity.of("unstructured 40%", lambda: unstructured(fp32_model, 0.4))
    structured_40 = perplexity.of("structured 40%", lambda: structured(fp32_model, 0.4))
    assert structured_40 > unstructured_40, (
        f"removing 40% of the neurons and heads should cost more than zeroing 40% of the weights: "
        f"{ratio_text('structured 40%', structured_40, fp32)}; {ratio_text('unstructured 40%', unstructured_40, fp32)}")


# ---------------------------------------------------------------------------------- distillation

def test_distillation_beats_the_untrained_student_and_training_on_labels_alone(perplexity, fp32, fp32_model,
                                                                                tokenizer, wikitext_dir):
    """A 2-layer student (the teacher's layers 0 and 3) trained on the validation split, the same
    ``DISTILL`` batches and steps twice: with the teacher (alpha = 0.5) and on the labels alone
    (alpha = 0, the control). Only the teacher's soft targets differ."""
    import distillation

    train_texts = ev.load_wikitext_texts("validation", wikitext_dir)
    with exercise("Exercise 3 (distillation)"):
        untrained = perplexity.of("student untrained", lambda: distillation.make_bert_student(fp32_model))
        distilled = perplexity.of("student distilled", lambda: ev.distill_bert_student(
            fp32_model, train_texts, tokenizer, alpha=0.5, progress=False, **DISTILL)[0])
        control = perplexity.of("student labels only", lambda: ev.distill_bert_student(
            fp32_model, train_texts, tokenizer, alpha=0.0, progress=False, **DISTILL)[0])
    report = (f"teacher (FP32) {fp32:,.1f}; 2-layer student untrained {untrained:,.1f}, distilled (alpha 0.5) "
              f"{distilled:,.1f}, labels only (alpha 0) {control:,.1f}; {DISTILL}")
    assert distilled < untrained, f"distillation should improve the student: {report}"
    assert distilled < control, f"the teacher's soft targets should beat the labels alone: {report}"


# ---------------------------------------------------------------------------------- granularity

def fake_quantized(fp32_model, scheme, bits, group_size=None):
    from given.experiments import quantize_linear_weights
    with exercise(f"Exercise 1.9/1.10 ({scheme})"):
        return quantize_linear_weights(copy.deepcopy(fp32_model), scheme, bits, group_size)[0]


def test_finer_scales_win_at_4_bits_per_group_then_per_channel_then_per_tensor(perplexity, fp32, fp32_model):
    """4-bit weights: one scale per 64 weights beats one per output row, which beats one per matrix."""
    per_tensor = perplexity.of("4-bit per-tensor", lambda: fake_quantized(fp32_model, "per-tensor", 4))
    per_channel = perplexity.of("4-bit per-channel", lambda: fake_quantized(fp32_model, "per-channel", 4))
    per_group = perplexity.of("4-bit per-group 64", lambda: fake_quantized(fp32_model, "per-group", 4, 64))
    report = "; ".join(ratio_text(name, value, fp32) for name, value in
                       (("per-group 64", per_group), ("per-channel", per_channel), ("per-tensor", per_tensor)))
    assert per_group < per_channel < per_tensor, f"expected per-group 64 < per-channel < per-tensor: {report}"


def test_kmeans_4_bit_beats_uniform_per_tensor_4_bit(perplexity, fp32, fp32_model):
    """One 16-entry codebook per matrix against one uniform 16-level grid per matrix."""
    per_tensor = perplexity.of("4-bit per-tensor", lambda: fake_quantized(fp32_model, "per-tensor", 4))
    kmeans = perplexity.of("4-bit k-means", lambda: fake_quantized(fp32_model, "k-means", 4))
    assert kmeans < per_tensor, (f"k-means should beat the uniform grid it starts from: "
                                 f"{ratio_text('k-means 4-bit', kmeans, fp32)}; {ratio_text('per-tensor 4-bit', per_tensor, fp32)}")


# ---------------------------------------------------------------------------------- prune, then fine-tune

FINETUNE = dict(steps=20, batch_size=8, seq_len=64, learning_rate=1e-4, seed=0)
"""The fine-tuning lesson's budget: 20 masked-LM steps of 8 windows of 64 tokens from the validation split."""


@pytest.fixture(scope="module")
def validation_texts(wikitext_dir):
    return ev.load_wikitext_texts("validation", wikitext_dir)


def test_finetuning_with_the_mask_kept_recovers_60_percent_pruning(perplexity, fp32, fp32_model, tokenizer,
                                                                  validation_texts):
    from given.experiments import finetune_pruned
    from given.pruning_tools import sparsity

    pruned = perplexity.of("unstructured 60%", lambda: unstructured(fp32_model, 0.6))
    batches = ev.make_mlm_batches(validation_texts, tokenizer, num_batches=FINETUNE["steps"],
                                  batch_size=FINETUNE["batch_size"], seq_len=FINETUNE["seq_len"], seed=FINETUNE["seed"])
    kept = {}

    def finetuned_model():
        model = unstructured(fp32_model, 0.6)
        with exercise("Exercise 2.7 (masked_finetune_step)"):
            model, _ = finetune_pruned(model, batches, learning_rate=FINETUNE["learning_rate"])
        kept["sparsity"] = sparsity(model.bert.encoder, nn.Linear)
        return model

    finetuned = perplexity.of("unstructured 60%, fine-tuned", finetuned_model)
    report = f"{ratio_text('pruned 60%', pruned, fp32)}; {ratio_text('then fine-tuned', finetuned, fp32)}; {FINETUNE}"
    assert kept.get("sparsity", 0.6) >= 0.6 - 1e-6, f"the fine-tune revived pruned weights: sparsity {kept['sparsity']:.4f}"
    assert finetuned < pruned, f"fine-tuning with the mask kept should recover: {report}"


def test_sensitivity_chosen_sparsity_is_no_worse_than_uniform(perplexity, fp32, fp32_model, tokenizer,
                                                             validation_texts):
    """Per-layer fractions chosen from a one-layer-at-a-time scan (at 80%, on 4,096 validation tokens, so
    that the choice never sees the test tokens that score it) against uniform 60% local pruning."""
    from given.experiments import layer_sensitivity, prune_per_layer, sensitivity_sparsities

    scan_set = ev.build_masked_eval_set(validation_texts, tokenizer, seq_len=128, max_tokens=4096, seed=EVAL_SEED)
    with exercise("Exercise 2.1 (magnitude_mask)"):
        scan = layer_sensitivity(fp32_model, scan_set, 0.8)
    chosen = sensitivity_sparsities(scan, 0.6, spread=0.2)
    uniform = perplexity.of("unstructured 60%", lambda: unstructured(fp32_model, 0.6))
    per_layer = perplexity.of("per-layer 60% (sensitivity)", lambda: prune_per_layer(fp32_model, chosen)[0])
    assert per_layer <= uniform, (f"sparsity chosen per layer should be no worse than uniform at the same 60%: "
                                  f"{ratio_text('per layer', per_layer, fp32)}; {ratio_text('uniform', uniform, fp32)}")
