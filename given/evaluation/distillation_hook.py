"""Exercise 3 on WikiText in one call (given code): masked-LM batches and ``distill_bert_student``.

``distill_bert_student`` runs the student's Exercise 3 (``make_bert_student``, ``distill_model``,
reached through ``given.your_code``) on batches from ``make_mlm_batches``; ``alpha=0.0`` is its
control experiment.
"""
import math

import torch
from transformers import set_seed

from given import your_code
from given.evaluation.wikitext import mask_tokens, windows_from_texts
from given.torch_utils import model_device

MAX_TEXT_PASSES = 100
"""``make_mlm_batches`` repeats a short text with fresh masks, but at most this many times."""


def make_mlm_batches(texts, tokenizer, *, num_batches, batch_size=16, seq_len=128, mask_fraction=0.15, seed=0):
    """``num_batches`` masked-LM training batches (dicts: input_ids, attention_mask, labels) from ``texts``.

    Windows are drawn in a seeded random order; when the text runs out, another pass starts with a
    fresh mask (seed + pass number), so short texts still give varied batches.
    """
    if num_batches < 1 or batch_size < 1:
        raise ValueError(f"need num_batches >= 1 and batch_size >= 1, got {num_batches}, {batch_size}")
    input_ids, attention_mask = windows_from_texts(texts, tokenizer, seq_len=seq_len)
    generator = torch.Generator().manual_seed(seed)
    needed, windows = num_batches * batch_size, []
    if math.ceil(needed / len(input_ids)) > MAX_TEXT_PASSES:
        raise ValueError(f"{num_batches} batches of {batch_size} windows would need "
                         f"{math.ceil(needed / len(input_ids)):,} passes over a text of only "
                         f"{len(input_ids)} windows (at most {MAX_TEXT_PASSES}): ask for fewer "
                         "batches or give more text")
    for pass_number in range(math.ceil(needed / len(input_ids))):
        masked, labels = mask_tokens(input_ids, attention_mask, special_ids=tokenizer.all_special_ids,
                                     mask_id=tokenizer.mask_token_id, mask_fraction=mask_fraction,
                                     seed=seed + pass_number)
        order = torch.randperm(len(input_ids), generator=generator)
        windows += [(masked[i], attention_mask[i], labels[i]) for i in order.tolist()]
    return [{"input_ids": torch.stack([w[0] for w in chunk]),
             "attention_mask": torch.stack([w[1] for w in chunk]),
             "labels": torch.stack([w[2] for w in chunk])}
            for chunk in (windows[start:start + batch_size] for start in range(0, needed, batch_size))]


def distill_bert_student(teacher, train_texts, tokenizer, *, num_layers=None, steps=200, epochs=2,
                         batch_size=16, seq_len=128, temperature=2.0, alpha=0.5, learning_rate=5e-5,
                         seed=0, progress=True):
    """Distil a BERT masked-LM teacher into a shallower student on ``train_texts`` (Exercise 3).

    The student comes from ``distillation.make_bert_student(teacher, num_layers)`` (DistilBERT's
    recipe: same width, every other layer copied); ``distillation.distill_model`` then trains it for
    ``epochs`` passes over ``steps // epochs`` masked-LM batches, on the teacher's device, on
    ``alpha * KD + (1 - alpha) * CE``. Train on wikitext's validation split and evaluate on its
    test split, never on the same tokens.

    **The control experiment:** ``alpha=0.0`` trains the same student (same initialisation from
    the teacher's layers) on the same batches, in the same order, for the same steps, with the same
    seed, on the labels alone: only the teacher's soft targets differ. Distillation has helped
    when the ``alpha > 0`` student beats this one.

    Returns:
        ``(student, epoch_losses)``, the student in eval mode.
    """
    yours = your_code.distillation  # your Exercise 3

    if steps < epochs or epochs < 1:
        raise ValueError(f"need epochs >= 1 and steps >= epochs, got steps={steps}, epochs={epochs}")
    set_seed(seed)
    batches = make_mlm_batches(train_texts, tokenizer, num_batches=steps // epochs, batch_size=batch_size,
                               seq_len=seq_len, seed=seed)
    device = model_device(teacher)
    student = yours.make_bert_student(teacher, num_layers=num_layers).to(device)  # a copy: teacher unchanged
    student, epoch_losses = yours.distill_model(teacher, student, batches, temperature, alpha, epochs, learning_rate,
                                          progress=progress, device=device)
    return student.eval(), epoch_losses
