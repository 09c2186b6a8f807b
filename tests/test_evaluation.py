"""Tests of evaluation.py, the measuring code behind the notebook (given code: not graded).

The numbers are pinned on inputs small enough to check by hand: the mask fraction, which
positions may be masked, token weighting of the loss, padding, byte counts of known modules.
"""
import importlib.util
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import given.evaluation as ev
import given.models as models
import given.sizes as sizes
from given.manifest import PROJECT_ROOT
from given.evaluation import IGNORE_INDEX, MaskedEvalSet

pytestmark = pytest.mark.given_code

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIALS = [PAD, UNK, CLS, SEP, MASK]


def windows(rows, seq_len):
    """(input_ids, attention_mask) for hand-written windows, padded with PAD to ``seq_len``."""
    input_ids = torch.full((len(rows), seq_len), PAD)
    attention_mask = torch.zeros((len(rows), seq_len), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row)
        attention_mask[i, :len(row)] = 1
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def sample_tokenizer():
    """The offline tokenizer built from the built-in sample (no files needed)."""
    return models._builtin_sample_tokenizer()


@pytest.fixture
def sample_bert(sample_tokenizer):
    """A seeded random BERT-tiny whose vocabulary is the sample tokenizer's (small and fast)."""
    return models.random_bert(seed=0, vocab_size=len(sample_tokenizer))


# ---------------------------------------------------------------------------------- windows, masks

def test_windows_follow_the_hf_recipe_with_cls_sep_and_padding():
    stream = torch.tensor([11, 12, 13, 14, 15, 16, 17])
    input_ids, attention_mask = ev.chunk_into_windows(stream, 5, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    assert input_ids.tolist() == [[CLS, 11, 12, 13, SEP], [CLS, 14, 15, 16, SEP], [CLS, 17, SEP, PAD, PAD]]
    assert attention_mask.tolist() == [[1] * 5, [1] * 5, [1, 1, 1, 0, 0]]


def test_mask_fraction_is_exact_and_labels_hold_the_original_tokens():
    # 3 windows with 40 maskable tokens each, plus [CLS]/[SEP], [UNK] and padding.
    rows = [[CLS, *range(1000, 1040), SEP], [CLS, *range(2000, 2020), UNK, *range(2020, 2040), SEP],
            [CLS, *range(3000, 3040), SEP]]
    input_ids, attention_mask = windows(rows, 50)
    original = input_ids.clone()
    masked, labels = ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK)
    chosen = labels != IGNORE_INDEX
    assert int(chosen.sum()) == 18, "15% of 120 maskable tokens is exactly 18"
    assert torch.equal(labels[chosen], original[chosen])
    assert (masked[chosen] == MASK).all(), "every scored token must be hidden behind [MASK] (no 80/10/10)"
    assert torch.equal(masked[~chosen], original[~chosen]), "unscored tokens must stay as they were"
    assert torch.equal(input_ids, original), "the inputs must not be modified"


def test_specials_and_padding_are_never_masked():
    rows = [[CLS, 5000, 5001, UNK, 5002, SEP], [CLS, 6000, SEP], [CLS, 7000, 7001, 7002, 7003, SEP]]
    input_ids, attention_mask = windows(rows, 8)
    input_ids[attention_mask == 0] = 4242  # padding known by the attention mask alone, not by its id
    for seed in range(20):
        masked, labels = ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK,
                                        mask_fraction=0.9, seed=seed)
        chosen = labels != IGNORE_INDEX
        assert int(chosen.sum()) == round(0.9 * 8)
        assert not torch.isin(input_ids[chosen], torch.tensor(SPECIALS)).any(), f"seed {seed}: special masked"
        assert not chosen[attention_mask == 0].any(), f"seed {seed}: padding masked"


def test_masks_are_identical_across_calls_and_leave_the_global_rng_alone():
    input_ids, attention_mask = windows([[CLS, *range(1000, 1100), SEP]], 102)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK, seed=7)
    assert torch.equal(torch.rand(3), expected_draw), "masking must not consume the global torch RNG"
    torch.manual_seed(999)  # a different global state must not matter
    second = ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK, seed=7)
    other_seed = ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK, seed=8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other_seed[1]), "another seed should give another mask"


def test_eval_set_is_fixed_once_and_the_same_for_every_model(sample_tokenizer, sample_bert):
    texts = models.BUILTIN_TEXT_SAMPLE.splitlines(keepends=True)
    first = ev.build_masked_eval_set(texts, sample_tokenizer, seq_len=32, seed=0)
    second = ev.build_masked_eval_set(texts, sample_tokenizer, seq_len=32, seed=0)
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(getattr(first, name), getattr(second, name)), f"{name} differs between calls"
    snapshot = {name: getattr(first, name).clone() for name in ("input_ids", "attention_mask", "labels")}
    ev.masked_lm_perplexity(sample_bert, first)
    ev.masked_lm_perplexity(models.random_bert(seed=1, vocab_size=len(sample_tokenizer)), first)
    for name, tensor in snapshot.items():
        assert torch.equal(getattr(first, name), tensor), f"evaluating a model changed the eval set's {name}"
    real_tokens = first.attention_mask.sum() - 2 * len(first)  # minus [CLS] and [SEP] per window
    assert first.num_masked == round(0.15 * int(real_tokens)), "15% of the text tokens (no [UNK] in the sample)"
    last = first.attention_mask[-1]
    assert last[-1] == 0, "the sample should end in a padded window (this test relies on it)"
    assert (first.labels[first.attention_mask == 0] == IGNORE_INDEX).all()
    assert (first.input_ids[first.attention_mask == 0] == sample_tokenizer.pad_token_id).all()


def test_bad_inputs_give_clear_errors(sample_tokenizer):
    input_ids, attention_mask = windows([[CLS, 5, 6, SEP]], 4)
    with pytest.raises(ValueError, match="mask_fraction"):
        ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK, mask_fraction=15)
    with pytest.raises(ValueError, match="too few"):
        ev.mask_tokens(input_ids, attention_mask, special_ids=SPECIALS, mask_id=MASK)
    with pytest.raises(ValueError, match="seq_len"):
        ev.chunk_into_windows(torch.tensor([1, 2]), 2, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    with pytest.raises(ValueError, match="empty"):
        ev.tokenize_stream(["", " \n"], sample_tokenizer)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        models.load_tokenizer("./no/such/vocab.txt")
    with pytest.raises(ValueError, match="split"):
        ev.load_wikitext_texts("valid", path=".")


# ---------------------------------------------------------------------------------- perplexity

class FixedDistributionLM(nn.Module):
    """Predicts q = [1/2, 1/4, 1/8, 1/8] at every real, non-special position, NaN elsewhere.

    NaN logits at padding, [CLS] and [SEP] make any perplexity that counts them NaN.
    """

    def forward(self, input_ids, attention_mask):
        log_q = torch.tensor([0.5, 0.25, 0.125, 0.125]).log()
        logits = log_q.expand(*input_ids.shape, 4).clone()
        not_scorable = (attention_mask == 0) | (input_ids == CLS) | (input_ids == SEP)
        logits[not_scorable] = float("nan")
        return SimpleNamespace(logits=logits)


def test_perplexity_is_token_weighted_and_ignores_padding_and_specials():
    # Window 0 scores one token (label 0: NLL ln 2); window 1 three tokens (labels 1, 2, 3:
    # NLL 2 ln 2, 3 ln 2, 3 ln 2). Token-weighted mean = 9/4 ln 2 -> perplexity 2 ** 2.25.
    # (The mean of per-batch means, (ln 2 + 8/3 ln 2) / 2, would give 2 ** (11/6) = 3.56.)
    input_ids = torch.tensor([[CLS, MASK, 2, SEP, PAD, PAD], [CLS, MASK, MASK, 1, MASK, SEP]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 1], labels[1, 1], labels[1, 2], labels[1, 4] = 0, 1, 2, 3
    eval_set = MaskedEvalSet(input_ids, attention_mask, labels)
    for batch_size in (1, 2):
        result = ev.masked_lm_perplexity(FixedDistributionLM(), eval_set, batch_size=batch_size)
        assert result["masked_tokens"] == 4
        assert result["loss"] == pytest.approx(2.25 * math.log(2), rel=1e-6)
        assert result["perplexity"] == pytest.approx(2 ** 2.25, rel=1e-6), (
            f"batch_size={batch_size}: expected 2**2.25 = 4.757 (token-weighted), got {result['perplexity']}")


def test_bert_perplexity_matches_hugging_face_loss_for_any_batch_size(sample_tokenizer, sample_bert):
    texts = models.BUILTIN_TEXT_SAMPLE.splitlines(keepends=True)
    eval_set = ev.build_masked_eval_set(texts, sample_tokenizer, seq_len=64)
    with torch.no_grad():  # reference: HF's own loss on the whole set in one batch (mean over labels)
        reference = sample_bert(input_ids=eval_set.input_ids, attention_mask=eval_set.attention_mask,
                              labels=eval_set.labels).loss.item()
    assert abs(reference - math.log(len(sample_tokenizer))) < 1.0, "a random BERT's loss is about ln(vocab)"
    for batch_size in (1, 3, len(eval_set)):
        result = ev.masked_lm_perplexity(sample_bert, eval_set, batch_size=batch_size)
        assert result["loss"] == pytest.approx(reference, rel=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(reference), rel=1e-4)


# ---------------------------------------------------------------------------------- size

def test_size_counts_parameters_and_buffers_as_stored_and_tied_weights_once():
    linear = nn.Linear(10, 5)
    linear.register_buffer("steps", torch.zeros(3, dtype=torch.int64))
    assert sizes.stored_bytes(linear) == (50 + 5) * 4 + 3 * 8
    assert sizes.stored_bytes(nn.Linear(10, 5).half()) == (50 + 5) * 2

    tied = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 7, bias=False))
    tied[1].weight = tied[0].weight
    assert sizes.stored_bytes(tied) == 7 * 4 * 4, "a tied weight is stored once"
    assert sizes.storage_dtypes(tied) == "float32"


def test_size_includes_bitsandbytes_storage_and_quantization_state():
    bnb = pytest.importorskip("bitsandbytes")
    int8 = bnb.nn.Linear8bitLt(16, 8, has_fp16_weights=False, threshold=6.0)
    int8.weight = bnb.nn.Int8Params(torch.randn(8, 16), requires_grad=False, has_fp16_weights=False)
    int8 = int8.to("cpu")  # quantizes
    assert int8.weight.dtype == torch.int8
    assert sizes.stored_bytes(int8) == 8 * 16 + 8 * 4 + 8 * 4, "int8 weight + fp32 row scales (SCB) + bias"

    nf4 = bnb.nn.Linear4bit(128, 8, quant_type="nf4", compress_statistics=False)
    nf4.weight = bnb.nn.Params4bit(torch.randn(8, 128), requires_grad=False, quant_type="nf4",
                                   compress_statistics=False)
    nf4 = nf4.to("cpu")
    packed, absmax, code, bias = 8 * 128 // 2, 8 * 128 // 64 * 4, 16 * 4, 8 * 4
    assert sizes.stored_bytes(nf4) == packed + absmax + code + bias, (
        "4-bit: two weights per byte + one fp32 absmax per 64-weight block + the 16-level code book + bias")


# ---------------------------------------------------------------------------------- latency, rows

class CountingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        return self.linear(torch.ones(*input_ids.shape, 4))


def test_latency_reports_sane_fields_and_warms_up():
    model = CountingModel()
    batch = {"input_ids": torch.ones(2, 6, dtype=torch.long),
             "attention_mask": torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])}
    timing = ev.measure_latency(model, batch, warmup=2, repeats=5)
    assert model.calls == 2 + 5
    assert timing["device"] == "cpu" and timing["batch_shape"] == (2, 6)
    assert 0 < timing["latency_min_ms"] <= timing["latency_q1_ms"] <= timing["latency_ms"]
    assert timing["latency_ms"] <= timing["latency_q3_ms"] <= timing["latency_max_ms"]
    assert timing["tokens_per_s"] == pytest.approx(9 / (timing["latency_ms"] / 1e3)), "9 real tokens"


def test_measure_gives_a_row_and_the_summary_files(tmp_path, sample_tokenizer, sample_bert):
    texts = models.BUILTIN_TEXT_SAMPLE.splitlines(keepends=True)
    eval_set = ev.build_masked_eval_set(texts, sample_tokenizer, seq_len=64)
    batch = ev.make_latency_batch(eval_set, batch_size=2)
    rows = [ev.measure(sample_bert, eval_set, batch, "FP32", model_name="tiny", repeats=2, progress=False),
            ev.measure(sample_bert.to(torch.bfloat16), eval_set, batch, "BF16", model_name="tiny", repeats=2,
                       progress=False)]
    assert list(rows[0])[:2] == ["technique", "model"] and rows[1]["model"] == "tiny"
    assert rows[0]["dtype"].startswith("float32") and rows[1]["dtype"].startswith("bfloat16")
    int64_buffers = 2 * 512 * 8  # position_ids and token_type_ids, not cast by .to(bfloat16)
    assert rows[0]["size_mb"] * 1e6 == pytest.approx(rows[0]["params"] * 4 + int64_buffers, abs=0.5)
    assert rows[1]["size_mb"] * 1e6 == pytest.approx(rows[1]["params"] * 2 + int64_buffers, abs=0.5)
    assert rows[0]["masked_tokens"] == rows[1]["masked_tokens"] == eval_set.num_masked
    table = ev.results_table(rows)
    assert table.loc["FP32", "x_smaller"] == 1.0
    assert table.loc["BF16", "x_smaller"] == pytest.approx(rows[0]["size_mb"] / rows[1]["size_mb"])
    csv_path, json_path = ev.save_results(table, tmp_path)
    ev.plot_size_vs_perplexity(table, tmp_path / "size.png", anchor=4.0)
    ev.plot_latency(table, tmp_path / "latency.png")
    assert csv_path.read_text().startswith("technique,model,")
    assert all((tmp_path / name).stat().st_size > 0 for name in ("results.json", "size.png", "latency.png"))


# ---------------------------------------------------------------------------------- loading

def test_tokenizer_from_the_shared_vocabulary(shared_data_dir):
    vocab = shared_data_dir / "bert-base-uncased-vocab" / "vocab.txt"
    for source in (vocab, vocab.parent):
        tokenizer = models.load_tokenizer(source)
        ids = tokenizer("Hello World, compression is fun!")["input_ids"]
        assert ids == [101, 7592, 2088, 1010, 13379, 2003, 4569, 999, 102], f"from {source}: got {ids}"


def test_local_wikitext_gives_the_hub_rows_and_token_count(shared_data_dir):
    rows = ev.load_wikitext_texts("test", shared_data_dir / "wikitext-2-raw-v1")
    assert len(rows) == 4358 and sum(1 for row in rows if row) == 2891
    assert rows[:2] == ["", " = Robert Boulter = \n"], "whitespace-only rows become '' as on the hub"
    tokenizer = models.load_tokenizer(shared_data_dir / "bert-base-uncased-vocab" / "vocab.txt")
    assert len(ev.tokenize_stream(rows, tokenizer)) == 273_178


def test_without_hub_and_local_wikitext_the_builtin_sample_is_loud(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "SHARED_WIKITEXT_DIR", tmp_path / "absent")
    with pytest.warns(RuntimeWarning, match="BUILT-IN TEXT SAMPLE"):
        rows = ev.load_wikitext_texts("test", offline=True)
    assert "".join(rows) == models.BUILTIN_TEXT_SAMPLE


def test_builtin_sample_tokenizer_covers_the_sample(sample_tokenizer):
    ids = ev.tokenize_stream(models.BUILTIN_TEXT_SAMPLE, sample_tokenizer)
    assert sample_tokenizer.unk_token_id not in ids.tolist()
    assert {sample_tokenizer.pad_token_id, sample_tokenizer.mask_token_id} <= set(sample_tokenizer.all_special_ids)


# ---------------------------------------------------------------------------------- distillation hook

def test_mlm_batches_are_seeded_and_cover_the_requested_steps(sample_tokenizer):
    texts = models.BUILTIN_TEXT_SAMPLE.splitlines(keepends=True)
    first = ev.make_mlm_batches(texts, sample_tokenizer, num_batches=5, batch_size=4, seq_len=32, seed=3)
    again = ev.make_mlm_batches(texts, sample_tokenizer, num_batches=5, batch_size=4, seq_len=32, seed=3)
    assert len(first) == 5 and all(batch["input_ids"].shape == (4, 32) for batch in first)
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, again))
    assert all((batch["labels"] != IGNORE_INDEX).any() for batch in first)


def test_distill_bert_student_in_one_call(sample_tokenizer, sample_bert):
    distillation = pytest.importorskip("distillation", reason="distillation.py not in this tree")
    if not hasattr(distillation, "make_bert_student"):
        pytest.skip("distillation.make_bert_student not available")
    teacher_state = {k: v.clone() for k, v in sample_bert.state_dict().items()}
    try:
        student, losses = ev.distill_bert_student(sample_bert, models.BUILTIN_TEXT_SAMPLE.splitlines(True),
                                                  sample_tokenizer, num_layers=1, steps=2, epochs=2,
                                                  batch_size=2, seq_len=32, progress=False)
    except NotImplementedError as error:
        pytest.skip(f"Exercise 3 not implemented in this tree: {error}")
    assert student.config.num_hidden_layers == 1 and len(losses) == 2
    assert all(torch.equal(v, teacher_state[k]) for k, v in sample_bert.state_dict().items()), "teacher changed"


# ---------------------------------------------------------------------------------- the notebook

def load_runner():
    spec = importlib.util.spec_from_file_location("run_notebook", PROJECT_ROOT / "tools" / "run_notebook.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


def test_runner_injects_parameters_after_the_parameters_cell_papermill_style():
    nbformat = pytest.importorskip("nbformat")
    runner = load_runner()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# title"),
                                               nbformat.v4.new_code_cell("EVAL_TOKENS = None"),
                                               nbformat.v4.new_code_cell("print(EVAL_TOKENS)")])
    notebook.cells[1].metadata["tags"] = ["parameters"]
    runner.inject_parameters(notebook, {"EVAL_TOKENS": 4096, "DATA_PATH": "../shared"})
    runner.inject_parameters(notebook, {"EVAL_TOKENS": 512})  # a second injection replaces the first
    assert [cell.source for cell in notebook.cells][1:] == [
        "EVAL_TOKENS = None", "# Parameters injected by tools/run_notebook.py\nEVAL_TOKENS = 512", "print(EVAL_TOKENS)"]
    assert notebook.cells[2].metadata["tags"] == ["injected-parameters"]
    assert runner.parse_assignment("EVAL_TOKENS=4096") == ("EVAL_TOKENS", 4096)
    assert runner.parse_assignment("DEVICE=cuda") == ("DEVICE", "cuda")
    with pytest.raises(ValueError, match="parameters"):
        runner.inject_parameters(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), {"x": 2})


def test_notebook_has_the_parameters_and_the_sections():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(PROJECT_ROOT / "model compression and pruning.ipynb", as_version=4)
    nbformat.validate(notebook)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "MODEL_NAME_OR_PATH" in tagged[0].source and "EVAL_TOKENS" in tagged[0].source
    headings = [line for cell in notebook.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("## ")]
    assert [h.split(".")[0] for h in headings if h[3].isdigit()] == [f"## {n}" for n in range(1, 8)]
    answers = [cell.source for cell in notebook.cells if "BEGIN SOLUTION" in cell.source]
    assert answers and all(a.count("BEGIN SOLUTION") == a.count("END SOLUTION") == 1 for a in answers)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it unexecuted"


def run_notebook_offline(output_dir, **environment):
    import os
    runner = PROJECT_ROOT / "tools" / "run_notebook.py"
    completed = subprocess.run([sys.executable, str(runner), "--offline", "--output-dir", str(output_dir)],
                               capture_output=True, text=True, timeout=880, env={**os.environ, **environment})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_notebook_runs_offline_end_to_end_and_names_its_model(tmp_path):
    expected = models.choose_model(offline=True)
    out = run_notebook_offline(tmp_path)
    results = (tmp_path / "results.csv").read_text()
    assert "FP32" in results and (tmp_path / "size_vs_perplexity.png").is_file()
    assert out.splitlines()[0] == f"Model: {expected.description}" or expected.is_random_fallback, out[:2000]
    assert {row.split(",")[1] for row in results.splitlines()[1:]} == {expected.name}, results
    assert ("WARNING: every number" in out) == expected.is_random_fallback, out[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_notebook_without_a_trained_model_says_loudly_it_measured_a_random_one(tmp_path):
    out = run_notebook_offline(tmp_path, **{models.OFFLINE_MODEL_ENV: ""})
    last_box = out[out.rindex("WARNING: every number"):]
    assert models.MAKE_OFFLINE_MODEL in last_box and not out.rstrip().endswith(("png", "json", "csv")), out[-3000:]
    assert models.RANDOM_MODEL_NAME in (tmp_path / "results.csv").read_text()
