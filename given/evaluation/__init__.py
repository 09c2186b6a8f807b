"""The measuring code behind the notebook (Exercise 4; given code): every technique measured the same way.

Read it top to bottom:

1. Text: ``load_wikitext_texts`` (the hub by default, a local folder offline, a loud fallback to a
   small built-in sample). Models and tokenizers: ``given/models.py``.
2. Perplexity: ``build_masked_eval_set`` fixes the masked inputs once (seeded, independent of any
   model or device); ``masked_lm_perplexity`` scores every model on exactly those tokens.
3. Latency: ``make_latency_batch``; ``measure_latencies`` times every model in interleaved rounds
   and gives each speed-up with its spread (``measure_latency``: one model alone).
4. ``measure`` gives one table row (with the ``model`` it came from); ``results_table``, the plots
   and ``save_results`` the summary; ``plot_sparsity_curves`` and ``plot_layer_sensitivity`` draw
   ``given/experiments.py``'s sweeps.
5. ``distill_bert_student``: Exercise 3 on wikitext in one call (``alpha=0.0``: its control).

The code is in this package, one module per step: ``wikitext`` (1, and 2's masked set),
``perplexity`` (2's scoring), ``latency`` (3), ``report`` and ``plots`` (4), ``distillation_hook``
(5). The notebook imports only ``given.evaluation``, which holds every name below.
"""
import contextlib

from given.evaluation.distillation_hook import MAX_TEXT_PASSES, distill_bert_student, make_mlm_batches
from given.evaluation.latency import make_latency_batch, measure_latencies, measure_latency
from given.evaluation.perplexity import PUBLISHED_BERT_BASE_PERPLEXITY, masked_lm_perplexity
from given.evaluation.plots import (PRUNING_STYLES, SHORT_MODULE_NAMES, plot_latency, plot_layer_sensitivity,
                                    plot_size_vs_perplexity, plot_sparsity_curves)
from given.evaluation.report import measure, results_table, save_results, speed_findings, timing_conditions
from given.evaluation.wikitext import (SHARED_WIKITEXT_DIR, WIKITEXT_HUB_ID, MaskedEvalSet, build_masked_eval_set,
                                       chunk_into_windows, load_wikitext_texts, mask_tokens, tokenize_stream,
                                       windows_from_texts)
from given.torch_utils import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "MAX_TEXT_PASSES", "PRUNING_STYLES", "PUBLISHED_BERT_BASE_PERPLEXITY", "SHARED_WIKITEXT_DIR",
           "SHORT_MODULE_NAMES", "WIKITEXT_HUB_ID", "MaskedEvalSet", "build_masked_eval_set", "chunk_into_windows",
           "distill_bert_student", "load_wikitext_texts", "make_latency_batch", "make_mlm_batches", "mask_tokens",
           "masked_lm_perplexity", "measure", "measure_latencies", "measure_latency", "plot_latency",
           "plot_layer_sensitivity", "plot_size_vs_perplexity", "plot_sparsity_curves", "results_table",
           "save_results", "skip_if_not_implemented", "speed_findings", "timing_conditions", "tokenize_stream",
           "windows_from_texts"]


@contextlib.contextmanager
def skip_if_not_implemented(what):
    """Run a notebook block; if the student's code raises ``NotImplementedError``, say so and go on.

    Only ``NotImplementedError`` (an unfinished stub) is caught: every other error still fails.
    """
    try:
        yield
    except NotImplementedError as error:
        print(f"Skipped {what}: not implemented yet ({error}). Finish it, then re-run this cell.")
