"""Masked-LM perplexity (given code): every model scored on exactly the tokens of one ``MaskedEvalSet``.

Runs the model it is given (which may hold the student's quantized or pruned layers) and nothing
else of the student's.
"""
import math

import torch
import torch.nn.functional as F

from given.checks import check_positive_integer
from given.torch_utils import IGNORE_INDEX, model_device

PUBLISHED_BERT_BASE_PERPLEXITY = 4.0
"""About 4, the anchor the notebook prints for ``bert-base-uncased`` only. Source: J. Devlin,
google-research/bert issue #90: held-out masked-LM log-likelihood of BERT-Base after pre-training
about -1.4 nats (e^1.4 = 4.0), on its pre-training text, with the 80/10/10 masking and up to 512
tokens. Meade et al. 2022 (bias-bench) report 4.47 on WikiText-2 with 512-token windows. This lab's
protocol (128-token windows, every chosen token masked) gives a higher number."""


def _logits_at(model, input_ids, attention_mask, scored):
    """Vocabulary logits at the ``scored`` positions only, shape (num_scored, vocab).

    For a Hugging Face ``...ForMaskedLM`` with a BERT body (``.bert``) and head (``.cls``), the head
    runs on the scored positions only: it acts on each position independently, so this is exact,
    and it skips ~85% of the (tokens x 768 x 30,522) vocabulary projection. Any other model
    is called as ``model(input_ids=..., attention_mask=...)`` and must return logits (or ``.logits``).
    """
    if hasattr(model, "bert") and hasattr(model, "cls"):
        hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return model.cls(hidden[scored])
    output = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = getattr(output, "logits", output)
    return logits[scored]


@torch.inference_mode()
def masked_lm_perplexity(model, eval_set, *, batch_size=32, progress=False):
    """Masked-LM perplexity: exp of the mean cross-entropy over every scored token of ``eval_set``.

    Token-weighted: the summed negative log-likelihood of all scored tokens (in float64) divided by
    their number, not a mean of per-batch means. Padding, [CLS]/[SEP] and unmasked tokens never
    count. Inputs move to the model's device; logits are scored in float32 whatever the model's
    dtype.

    Returns:
        dict with ``perplexity``, ``loss`` (mean NLL in nats) and ``masked_tokens``.
    """
    from tqdm.auto import tqdm

    check_positive_integer(batch_size, "batch_size")
    model.eval()
    device = model_device(model)
    total_nll, total_tokens = 0.0, 0
    num_batches = math.ceil(len(eval_set) / batch_size)
    for batch in tqdm(eval_set.batches(batch_size), total=num_batches, desc="perplexity",
                      disable=not progress, leave=False):
        labels = batch["labels"].to(device)
        scored = labels != IGNORE_INDEX
        if not scored.any():
            continue
        logits = _logits_at(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), scored)
        total_nll += F.cross_entropy(logits.float(), labels[scored], reduction="sum").item()
        total_tokens += int(scored.sum())
    if total_tokens == 0:
        raise ValueError("the evaluation set has no scored ([MASK]ed) tokens")
    loss = total_nll / total_tokens
    perplexity = math.exp(loss) if loss < 700 else math.inf  # exp overflows float64 beyond ~709
    return {"perplexity": perplexity, "loss": loss, "masked_tokens": total_tokens}
