"""Tests of given/models.py: which model a run uses, in the lab's order, and saying so (given code).

The order (``choose_model``): the model the user names; Google's BERT from the hub; the trained
offline model (``$LAB5_OFFLINE_MODEL``, else ``../shared/data/bert-mini-wikitext2``); last, loudly,
a random BERT-tiny. Each branch is pinned with the hub and the offline folder faked, so these tests
need neither the network nor ``../shared``.
"""
import importlib.util
import json

import pytest

import given.models as models
from given.manifest import PROJECT_ROOT

pytestmark = pytest.mark.given_code


@pytest.fixture
def hub(monkeypatch):
    """Set whether the (faked) hub answers: ``hub(True)`` / ``hub(False)``."""
    def set_reachable(reachable):
        monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: reachable)
    set_reachable(False)
    return set_reachable


@pytest.fixture
def saved_tiny(tmp_path):
    """A folder holding a random BERT-tiny and a tokenizer, as save_pretrained writes them."""
    folder = tmp_path / "tiny-bert"
    models.random_bert(seed=0, vocab_size=len(models._builtin_sample_tokenizer())).save_pretrained(folder)
    models._builtin_sample_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def offline_model(monkeypatch, saved_tiny):
    """Make ``saved_tiny`` the offline model, as ``../shared/data/bert-mini-wikitext2`` would be."""
    monkeypatch.delenv(models.OFFLINE_MODEL_ENV, raising=False)
    monkeypatch.setattr(models, "SHARED_OFFLINE_MODEL_DIR", saved_tiny)
    return saved_tiny


@pytest.fixture
def no_offline_model(monkeypatch, tmp_path):
    """Neither ``$LAB5_OFFLINE_MODEL`` nor the shared folder: as on a clone without ``../shared``."""
    monkeypatch.delenv(models.OFFLINE_MODEL_ENV, raising=False)
    monkeypatch.setattr(models, "SHARED_OFFLINE_MODEL_DIR", tmp_path / "absent")


# ---------------------------------------------------------------------------------- the order

def test_1_a_folder_the_user_gives_wins_over_hub_and_offline_model(hub, offline_model, tmp_path):
    given = tmp_path / "mine"
    models.random_bert(seed=1).save_pretrained(given)
    hub(True)
    choice = models.choose_model(str(given))
    assert (choice.source, choice.path, choice.name) == ("given", str(given), "mine")
    assert "2 layers, hidden 128" in choice.description and "you gave" in choice.description
    assert models.choose_model(str(given), offline=True).source == "given", "offline changes nothing for a folder"


def test_1_a_hub_id_the_user_gives_needs_the_hub(hub, offline_model):
    hub(True)
    choice = models.choose_model("prajjwal1/bert-tiny")
    assert (choice.source, choice.path, choice.name) == ("given", "prajjwal1/bert-tiny", "prajjwal1/bert-tiny")
    with pytest.raises(ConnectionError, match="offline run"):
        models.choose_model("prajjwal1/bert-tiny", offline=True)
    hub(False)
    with pytest.raises(ConnectionError, match="not reachable"):
        models.choose_model("prajjwal1/bert-tiny")


def test_1_a_missing_folder_is_an_error_not_a_fallback(hub, offline_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        models.choose_model(str(tmp_path / "typo"))


def test_2_by_default_google_bert_from_the_hub_when_reachable(hub, offline_model):
    hub(True)
    choice = models.choose_model()
    assert (choice.source, choice.path, choice.name) == ("hub", models.DEFAULT_MODEL, models.DEFAULT_MODEL)
    assert not choice.is_random_fallback


def test_3_without_the_hub_the_offline_model(hub, offline_model):
    for reachable, offline in ((False, False), (True, True)):
        hub(reachable)
        choice = models.choose_model(offline=offline)
        assert (choice.source, choice.path) == ("offline", str(offline_model)), (reachable, offline)
        assert "offline stand-in" in choice.description and "2 layers, hidden 128" in choice.description


def test_3_the_environment_variable_names_the_offline_model(hub, monkeypatch, no_offline_model, saved_tiny):
    monkeypatch.setenv(models.OFFLINE_MODEL_ENV, str(saved_tiny))
    choice = models.choose_model()
    assert (choice.source, choice.path, choice.name) == ("offline", str(saved_tiny.resolve()), "tiny-bert")
    monkeypatch.setenv(models.OFFLINE_MODEL_ENV, str(saved_tiny / "absent"))
    with pytest.raises(FileNotFoundError, match=models.OFFLINE_MODEL_ENV):
        models.choose_model()


def test_3_an_empty_environment_variable_means_no_offline_model(hub, monkeypatch, offline_model):
    monkeypatch.setenv(models.OFFLINE_MODEL_ENV, "")
    assert models.choose_model().source == "random"


def test_4_last_the_random_model(hub, no_offline_model):
    choice = models.choose_model()
    assert choice.source == "random" and choice.is_random_fallback and choice.path is None
    assert choice.name == models.RANDOM_MODEL_NAME


# ---------------------------------------------------------------------------------- resolving

def test_resolve_says_which_model_in_one_line_and_loads_its_tokenizer(hub, offline_model, capsys):
    resolved = models.resolve_model(offline=True)
    out = capsys.readouterr().out
    assert out.startswith("Model: tiny-bert (2 layers, hidden 128), the trained offline stand-in") and out.count("\n") == 1
    assert (resolved.source, resolved.name, resolved.path) == ("offline", "tiny-bert", str(offline_model))
    assert resolved.tokenizer.mask_token_id == models._builtin_sample_tokenizer().mask_token_id


def test_the_random_fallback_is_loud_says_how_to_get_a_trained_model_and_loads(hub, no_offline_model, tmp_path,
                                                                               capsys):
    with pytest.warns(RuntimeWarning, match="SEEDED RANDOM BERT") as warned:
        resolved = models.resolve_model(offline=True, fallback_dir=tmp_path / "tiny")
    message = str(warned[0].message)
    assert models.MAKE_OFFLINE_MODEL in message and models.OFFLINE_MODEL_ENV in message
    assert "SEEDED RANDOM BERT" in capsys.readouterr().out
    assert resolved.is_random_fallback and resolved.name == models.RANDOM_MODEL_NAME
    model = models.load_bert(resolved.path, device="cpu")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128
    assert models.load_tokenizer(resolved.path).mask_token_id == resolved.tokenizer.mask_token_id


# ---------------------------------------------------------------------------------- the runner says so

def load_runner():
    spec = importlib.util.spec_from_file_location("run_notebook", PROJECT_ROOT / "tools" / "run_notebook.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


def write_results(folder, model_name):
    folder.mkdir(exist_ok=True)
    (folder / "results.csv").write_text(f"technique,model,perplexity\nFP32,{model_name},117.9\nBF16,{model_name},117.8\n")


def test_the_runner_names_the_trained_model_and_ends_plainly(tmp_path):
    runner = load_runner()
    choice = models.ModelChoice("offline", "/x/bert-mini-wikitext2", "bert-mini-wikitext2", "the offline stand-in")
    write_results(tmp_path, "bert-mini-wikitext2")
    assert runner.model_line(choice) == "Model: the offline stand-in"
    report = runner.closing_report(choice, tmp_path)
    assert report.startswith("Done: every cell ran. The numbers come from bert-mini-wikitext2")
    assert "WARNING" not in report


def test_the_runner_ends_a_random_run_with_a_warning_box(tmp_path, monkeypatch):
    runner = load_runner()
    choice = models.ModelChoice("random", None, models.RANDOM_MODEL_NAME, "a SEEDED RANDOM BERT")
    write_results(tmp_path, models.RANDOM_MODEL_NAME)
    for text in (runner.model_line(choice), runner.closing_report(choice, tmp_path)):
        lines = text.splitlines()
        assert lines[0] == lines[-1] == "#" * len(lines[0]), "boxed"
        assert all(line.startswith("# ") and line.endswith(" #") for line in lines[1:-1])
        assert models.MAKE_OFFLINE_MODEL in " ".join(text.split()), text
    assert "WARNING: every number" in runner.closing_report(choice, tmp_path)
    # The results decide too: a random model in the CSV is flagged even if the choice said otherwise.
    trained = models.ModelChoice("offline", "/x", "bert-mini-wikitext2", "the offline stand-in")
    assert "WARNING" in runner.closing_report(trained, tmp_path)


def test_results_json_is_strict_and_names_the_model(tmp_path):
    pd = pytest.importorskip("pandas")
    import given.evaluation as ev

    rows = [{"technique": "FP32", "model": "m", "size_mb": 1.0, "latency_ms": 2.0, "perplexity": 100.0},
            {"technique": "1bit", "model": "m", "size_mb": 0.1, "latency_ms": 2.0, "perplexity": float("inf")},
            {"technique": "odd", "model": "m", "size_mb": 0.0, "latency_ms": 2.0, "perplexity": float("nan")}]
    table = ev.results_table(rows)
    assert isinstance(table, pd.DataFrame)
    _, json_path = ev.save_results(table, tmp_path)
    text = json_path.read_text()
    records = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert [r["perplexity"] for r in records] == [100.0, None, None]
    assert [r["x_smaller"] for r in records] == [1.0, 10.0, None], "1.0 / 0.0 = inf -> null"
    assert all(r["model"] == "m" for r in records)
