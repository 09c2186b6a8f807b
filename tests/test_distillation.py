"""Graded tests for Exercise 3, distillation.py (run with: pytest -m ex3_distillation).

Every expected value comes from an independent reference written here: closed-form two-class
cases, the definition KL(p || q) = sum_c p_c (log p_c - log q_c) in float64, the analytic gradient
T * (q - p) / N, and training loops written out by hand.
The checks of given code (input validation, batch plumbing) are in test_given.py, never graded.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillation import compute_distillation_loss, distill_model, evenly_spaced_layers, make_bert_student
from helpers import NO_DROPOUT, changed_entries, run_seed, small_bert, state_copy

pytestmark = pytest.mark.ex3_distillation

NUM_FEATURES, NUM_CLASSES = 8, 4


# --------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------

def log_softmax_by_hand(logits, temperature):
    scaled = logits / temperature
    return scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)


def kl_by_definition(p_logits, q_logits, temperature):
    """KL(p || q) at every position: sum_c p_c (log p_c - log q_c), p and q softened by T."""
    log_p = log_softmax_by_hand(p_logits, temperature)
    log_q = log_softmax_by_hand(q_logits, temperature)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def random_logits(*shape, scale=3.0):
    return torch.randn(*shape) * scale


def assert_close(actual, expected, what, rtol=1e-5, atol=1e-6):
    actual, expected = float(actual), float(expected)
    assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol), (
        f"{what}: expected {expected:.6f}, got {actual:.6f}")


# --------------------------------------------------------------------------------------------
# Exercise 3.1: compute_distillation_loss
# --------------------------------------------------------------------------------------------

@pytest.mark.task("3.1")
@pytest.mark.worked_example(twin="test_distillation_loss_on_any_shape_mask_and_temperature")
@pytest.mark.points(0)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_loss_two_classes_closed_form(temperature):
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # teacher softened: p = (3^(1/T), 1) / (3^(1/T) + 1); student: q = (1/2, 1/2)
    p_first = 3 ** (1 / temperature) / (3 ** (1 / temperature) + 1)
    kl = sum(p * math.log(p / 0.5) for p in (p_first, 1 - p_first))
    expected = temperature**2 * kl
    loss = compute_distillation_loss(student, teacher, temperature)
    assert loss.dim() == 0, f"the loss must be a scalar tensor, got shape {tuple(loss.shape)}"
    assert_close(loss, expected,
                 f"student logits [[0, 0]], teacher logits [[ln 3, 0]], T={temperature}: "
                 f"T**2 * KL(teacher || student)")


@pytest.mark.task("3.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_loss_2d_is_batchmean_kl_times_t_squared(temperature):
    student, teacher = random_logits(6, 5), random_logits(6, 5)
    expected = kl_by_definition(teacher.double(), student.double(), temperature).mean() * temperature**2
    library = F.kl_div(F.log_softmax(student.double() / temperature, -1),
                       F.softmax(teacher.double() / temperature, -1),
                       reduction="batchmean") * temperature**2
    assert_close(library, expected, "the two references agree")  # guards the test itself
    loss = compute_distillation_loss(student, teacher, temperature)
    assert_close(loss, expected,
                 f"(6, 5) logits, T={temperature}: T**2 * sum over classes of KL, mean over the 6 rows "
                 f"(kl_div batchmean; reduction='mean' would also divide by the 5 classes)")


@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_loss_3d_is_mean_per_token():
    temperature = 2.0
    student, teacher = random_logits(2, 3, 5), random_logits(2, 3, 5)
    expected = kl_by_definition(teacher.double(), student.double(), temperature).mean() * temperature**2
    loss = compute_distillation_loss(student, teacher, temperature)
    assert_close(loss, expected,
                 "(B=2, L=3, C=5) logits, T=2: mean over the 6 tokens (batchmean would divide by B=2 "
                 "only, giving 3x the expected value)")


@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_loss_mask_counts_only_selected_positions():
    temperature = 2.0
    student, teacher = random_logits(2, 4, 5), random_logits(2, 4, 5)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    per_token = kl_by_definition(teacher.double(), student.double(), temperature)
    expected = per_token[mask].mean() * temperature**2  # 4 tokens, not the mean of 2 sequence means
    loss = compute_distillation_loss(student, teacher, temperature, mask=mask)
    assert_close(loss, expected,
                 f"(2, 4, 5) logits, T=2, mask {mask.int().tolist()}: mean over the 4 selected tokens")
    student_junk, teacher_junk = student.clone(), teacher.clone()
    student_junk[~mask] = 100.0 * torch.randn(int((~mask).sum()), 5)
    teacher_junk[~mask] = -100.0 * torch.randn(int((~mask).sum()), 5)
    loss_junk = compute_distillation_loss(student_junk, teacher_junk, temperature, mask=mask)
    assert_close(loss_junk, expected, "changing the logits at masked-out positions must not change the loss")


@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_loss_reverse_is_kl_student_to_teacher():
    temperature = 2.0
    student, teacher = random_logits(3, 4, 6), random_logits(3, 4, 6)
    expected = kl_by_definition(student.double(), teacher.double(), temperature).mean() * temperature**2
    loss = compute_distillation_loss(student, teacher, temperature, reverse=True)
    assert_close(loss, expected, "reverse=True, (3, 4, 6) logits, T=2: T**2 * KL(student || teacher) per token")
    forward = kl_by_definition(teacher.double(), student.double(), temperature).mean() * temperature**2
    assert_close(compute_distillation_loss(student, teacher, temperature), forward,
                 "reverse=False (default): T**2 * KL(teacher || student)")


@pytest.mark.task("3.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_loss_is_stable_for_large_logits(temperature):
    student, teacher = random_logits(4, 7, scale=1e4), random_logits(4, 7, scale=1e4)
    expected = kl_by_definition(teacher.double(), student.double(), temperature).mean() * temperature**2
    loss = compute_distillation_loss(student, teacher, temperature)
    assert torch.isfinite(loss), (f"logits ~1e4, T={temperature}: the loss must be finite, got {loss.item()} "
                                  "(use log_softmax, not log(softmax))")
    assert_close(loss, expected, f"logits ~1e4, T={temperature}", rtol=1e-4)


@pytest.mark.task("3.1")
@pytest.mark.points(1)
def test_loss_with_classes_the_teacher_rules_out():
    """A teacher logit of -inf is a class of probability 0: it adds 0 * log 0 = 0, never NaN."""
    student, teacher, temperature = random_logits(3, 5), random_logits(3, 5), 2.0
    teacher[:, 1] = -math.inf
    teacher[0, 3] = -math.inf
    expected = 0.0
    for s_row, t_row in zip(student.double(), teacher.double()):
        possible = torch.isfinite(t_row)  # the classes the teacher allows, by definition over them
        log_p = log_softmax_by_hand(t_row[possible], temperature)
        log_q = log_softmax_by_hand(s_row, temperature)[possible]
        expected += float((log_p.exp() * (log_p - log_q)).sum()) * temperature**2 / 3
    loss = compute_distillation_loss(student, teacher, temperature)
    assert torch.isfinite(loss), f"a teacher logit of -inf must not make the loss {loss.item()}"
    assert_close(loss.item(), expected, "KL with classes of teacher probability 0 (0 * log 0 = 0)")


@pytest.mark.task("3.1")
@pytest.mark.points(2)
def test_loss_gradient_reaches_the_student_only():
    temperature, num_rows = 3.0, 4
    student = random_logits(num_rows, 5).requires_grad_()
    teacher = random_logits(num_rows, 5).requires_grad_()  # e.g. logits from a model with grads on
    compute_distillation_loss(student, teacher, temperature).backward()
    assert teacher.grad is None, "no gradient may flow into the teacher's logits (detach them)"
    # d/ds of T**2 * mean_n KL(p_n || q_n), q = softmax(s / T): T * (q - p) / N
    p = torch.softmax(teacher.detach().double() / temperature, -1)
    q = torch.softmax(student.detach().double() / temperature, -1)
    expected = temperature * (q - p) / num_rows
    assert student.grad is not None, "the loss must be differentiable with respect to the student's logits"
    assert torch.allclose(student.grad.double(), expected, atol=1e-6), (
        f"(4, 5) logits, T=3: gradient w.r.t. the student's logits should be T * (q - p) / N; "
        f"expected {expected[0].tolist()} in row 0, got {student.grad[0].tolist()}")


# --------------------------------------------------------------------------------------------
# Exercise 3.2: distill_model on plain modules
# --------------------------------------------------------------------------------------------

def make_teacher():
    """A teacher whose train mode would show: BatchNorm updates its statistics, dropout randomises.

    Returned in train mode, as a freshly built module is: distill_model must freeze it itself.
    """
    torch.manual_seed(run_seed() + 1)
    teacher = nn.Sequential(nn.Linear(NUM_FEATURES, 32), nn.BatchNorm1d(32), nn.ReLU(),
                            nn.Dropout(0.5), nn.Linear(32, NUM_CLASSES))
    with torch.no_grad():
        teacher[-1].weight.mul_(4.0)  # confident teacher: distributions far from uniform
    return teacher


def make_student():
    torch.manual_seed(run_seed() + 2)
    return nn.Sequential(nn.Linear(NUM_FEATURES, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))


def make_batches(num_batches=4, batch_size=16):
    generator = torch.Generator().manual_seed(run_seed() + 3)
    rule = torch.randn(NUM_FEATURES, NUM_CLASSES, generator=generator)
    batches = []
    for _ in range(num_batches):
        inputs = torch.randn(batch_size, NUM_FEATURES, generator=generator)
        batches.append((inputs, (inputs @ rule).argmax(dim=1)))
    return batches


def reference_training(teacher, student, batches, temperature, alpha, num_epochs, learning_rate):
    """Distillation written out by hand on copies: Adam on alpha * KD + (1 - alpha) * CE."""
    teacher, student = copy.deepcopy(teacher).eval(), copy.deepcopy(student).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=learning_rate)
    epoch_losses = []
    for _ in range(num_epochs):
        batch_losses = []
        for inputs, labels in batches:
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            student_logits = student(inputs)
            loss = torch.zeros(())
            if alpha > 0:
                kd = kl_by_definition(teacher_logits, student_logits, temperature).mean() * temperature**2
                loss = loss + alpha * kd
            if alpha < 1:
                loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
        epoch_losses.append(sum(batch_losses) / len(batch_losses))
    return student, epoch_losses


def assert_same_weights(actual, expected, what, atol=1e-5):
    for (name, a), b in zip(actual.state_dict().items(), expected.state_dict().values()):
        assert torch.allclose(a, b, atol=atol), (
            f"{what}: student weight {name} differs from the reference by up to {(a - b).abs().max():.2e}")


def assert_same_losses(actual, expected, what):
    assert len(actual) == len(expected), f"{what}: expected {len(expected)} epoch losses, got {len(actual)}"
    for epoch, (a, b) in enumerate(zip(actual, expected), start=1):
        assert_close(a, b, f"{what}: mean loss of epoch {epoch}", rtol=1e-4)


@pytest.mark.task(None, uses=("3.1", "3.2"))
@pytest.mark.points(1)
def test_distill_model_lowers_the_loss_and_trains_the_student():
    teacher, student, batches = make_teacher(), make_student(), make_batches()
    before = state_copy(student)
    student.eval()  # distill_model must switch it to train mode itself
    modes = []  # the student's training flag at every forward that builds a graph
    student.register_forward_hook(
        lambda module, args, output: modes.append(module.training) if torch.is_grad_enabled() else None)
    returned, losses = distill_model(teacher, student, batches, temperature=2.0, alpha=0.5,
                                     num_epochs=4, learning_rate=1e-2, progress=False)
    assert returned is student, "distill_model must return the student it trained"
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), (
        f"expected 4 finite epoch losses, got {losses}")
    assert losses[-1] < losses[0], f"4 epochs at lr=1e-2 should lower the loss, got {losses}"
    assert changed_entries(student, before), "the student's weights did not change"
    assert modes and all(modes), "the student must be trained in train mode"
    assert not student.training, "distill_model returns the student in eval mode, ready to evaluate"


@pytest.mark.task(None, uses=("3.1", "3.2"))
@pytest.mark.points(2)
def test_distill_model_keeps_the_teacher_frozen():
    teacher, student, batches = make_teacher(), make_student(), make_batches()
    assert teacher.training
    before = state_copy(teacher)
    expected_student, _ = reference_training(teacher, student, batches, temperature=2.0, alpha=0.5,
                                             num_epochs=2, learning_rate=1e-2)
    seen = []  # (training, grad enabled) at every teacher forward
    teacher.register_forward_hook(lambda module, args, output: seen.append(
        (module.training, torch.is_grad_enabled())))
    distill_model(teacher, student, batches, temperature=2.0, alpha=0.5, num_epochs=2,
                  learning_rate=1e-2, progress=False)
    assert seen, "the teacher was never run"
    assert not any(training for training, _ in seen), (
        "the teacher must run in eval mode (its dropout and BatchNorm would otherwise change its outputs "
        "and its statistics)")
    assert not any(grad for _, grad in seen), "the teacher must run under torch.no_grad()"
    changed = changed_entries(teacher, before)
    assert not changed, f"the teacher's parameters and buffers must not change; changed: {changed}"
    assert all(p.grad is None for p in teacher.parameters()), "no gradient may reach the teacher's parameters"
    assert teacher.training, "distill_model must restore the teacher's training flag when it returns"
    assert_same_weights(student, expected_student,
                        "the teacher stayed frozen, but the student after distill_model (your 3.1 and 3.2) "
                        "differs from a hand-written loop's: alpha * T**2 * KL + (1 - alpha) * CE, "
                        "fresh gradients for every batch")


@pytest.mark.task(None, uses=("3.1", "3.2"))
@pytest.mark.points(2)
def test_alpha_zero_is_plain_cross_entropy_training():
    teacher, student, batches = make_teacher(), make_student(), make_batches()
    expected_student, expected_losses = reference_training(
        teacher, student, batches, temperature=2.0, alpha=0.0, num_epochs=2, learning_rate=1e-2)
    _, losses = distill_model(teacher, student, batches, temperature=2.0, alpha=0.0, num_epochs=2,
                              learning_rate=1e-2, progress=False)
    what = "alpha=0 (labels only) should equal plain cross-entropy training with Adam, step for step"
    assert_same_losses(losses, expected_losses, what)
    assert_same_weights(student, expected_student, what)


@pytest.mark.task(None, uses=("3.1", "3.2"))
@pytest.mark.points(2)
def test_alpha_one_learns_from_the_teacher_only():
    teacher, student, batches = make_teacher(), make_student(), make_batches()
    inputs = torch.cat([x for x, _ in batches])
    frozen = copy.deepcopy(teacher).eval()

    def kl_to_teacher(model):
        with torch.no_grad():
            return kl_by_definition(frozen(inputs), model.eval()(inputs), 1.0).mean().item()

    kl_before = kl_to_teacher(copy.deepcopy(student))
    other_labels = [(x, torch.randint(0, NUM_CLASSES, y.shape)) for x, y in batches]
    twin = copy.deepcopy(student)
    distill_model(teacher, student, batches, temperature=2.0, alpha=1.0, num_epochs=5,
                  learning_rate=1e-2, progress=False)
    kl_after = kl_to_teacher(student)
    assert kl_after < 0.8 * kl_before, (
        f"alpha=1: KL(teacher || student) over the data should fall, got {kl_before:.4f} -> {kl_after:.4f}")
    distill_model(teacher, twin, other_labels, temperature=2.0, alpha=1.0, num_epochs=5,
                  learning_rate=1e-2, progress=False)
    assert_same_weights(twin, student, "alpha=1 weighs the distillation term only: the labels must not matter")


@pytest.mark.task(None, uses=("3.1", "3.2"))
@pytest.mark.points(2)
def test_mixed_alpha_matches_a_hand_written_loop():
    teacher, student, batches = make_teacher(), make_student(), make_batches()
    expected_student, expected_losses = reference_training(
        teacher, student, batches, temperature=2.0, alpha=0.3, num_epochs=2, learning_rate=1e-2)
    _, losses = distill_model(teacher, student, batches, temperature=2.0, alpha=0.3, num_epochs=2,
                              learning_rate=1e-2, progress=False)
    what = "alpha=0.3, T=2: loss = 0.3 * T**2 * KL(teacher || student) + 0.7 * cross-entropy"
    assert_same_losses(losses, expected_losses, what)
    assert_same_weights(student, expected_student, what)


# --------------------------------------------------------------------------------------------
# Exercise 3.2 on Hugging Face models with dict batches
# --------------------------------------------------------------------------------------------

VOCAB = 1000


def seeded_bert(seed, num_layers):
    return small_bert(seed=seed, vocab_size=VOCAB, num_hidden_layers=num_layers, **NO_DROPOUT)


def teacher_for_make_bert_student(num_layers):
    """A teacher no fresh initialisation can equal by coincidence, so a student never copied into
    fails. Seeded apart from the global RNG (the autouse fixture seeds it with ``run_seed()``, and
    the student's random initialisation draws from it: a teacher of that seed and depth would be the
    same network), and every tensor moved off its initial value (biases start at 0 and LayerNorm
    weights at 1 in any BERT, so a copy that skips them would not show)."""
    teacher = seeded_bert(seed=run_seed() + 1, num_layers=num_layers)
    noise = torch.Generator().manual_seed(run_seed() + 2)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=noise))
    return teacher


def masked_lm_batch():
    """Two sequences of 8 tokens, the second padded after 5; 4 positions carry a label."""
    input_ids = torch.randint(5, VOCAB, (2, 8))
    attention_mask = torch.ones(2, 8, dtype=torch.long)
    attention_mask[1, 5:] = 0
    input_ids[1, 5:] = 0  # [PAD]
    labels = torch.full((2, 8), -100)
    for row, col in [(0, 1), (0, 6), (1, 2), (1, 4)]:
        labels[row, col] = input_ids[row, col]
        input_ids[row, col] = 3  # a stand-in [MASK] id
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                token_type_ids=torch.zeros(2, 8, dtype=torch.long), labels=labels)


@pytest.mark.task(None, uses=("3.1", "3.2"))
@pytest.mark.points(2)
def test_distill_bert_with_dict_batches():
    teacher, student = seeded_bert(seed=run_seed(), num_layers=2), seeded_bert(seed=run_seed() + 1, num_layers=1)
    with torch.no_grad():  # a confident teacher: a random BERT's outputs are nearly uniform
        teacher.cls.predictions.transform.LayerNorm.weight.mul_(10.0)
    batch = masked_lm_batch()
    temperature, alpha = 1.5, 0.7
    model_inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        teacher_logits = teacher(**model_inputs).logits
        student_logits = student(**model_inputs).logits
    real = batch["attention_mask"] == 1
    kd = kl_by_definition(teacher_logits.double(), student_logits.double(), temperature)[real].mean()
    ce = F.cross_entropy(student_logits.reshape(-1, VOCAB), batch["labels"].reshape(-1), ignore_index=-100)
    expected_first = alpha * kd * temperature**2 + (1 - alpha) * ce
    teacher_before, student_before = state_copy(teacher), state_copy(student)

    _, losses = distill_model(teacher, student, [batch], temperature, alpha, num_epochs=3,
                              learning_rate=1e-3, progress=False)

    assert_close(losses[0], expected_first,
                 "tiny BERT, one batch with padding, T=1.5: first loss = 0.7 * T**2 * KL averaged over the "
                 "13 real tokens (attention_mask == 1, labelled or not; padding excluded) "
                 "+ 0.3 * cross-entropy over the 4 labelled tokens",
                 rtol=1e-4)
    assert losses[-1] < losses[0], f"3 steps on one batch should lower its loss, got {losses}"
    changed = changed_entries(teacher, teacher_before)
    assert not changed, f"the BERT teacher must not change; changed: {changed[:3]}"
    assert changed_entries(student, student_before), "the BERT student's weights did not change"


# --------------------------------------------------------------------------------------------
# Exercises 3.3 and 3.4: a shallower BERT student
# --------------------------------------------------------------------------------------------

@pytest.mark.task("3.3")
@pytest.mark.worked_example(twin="test_evenly_spaced_layers_rounds_halves_up_for_any_depth")
@pytest.mark.points(0)
@pytest.mark.parametrize("teacher_layers, student_layers, expected", [
    (12, 6, [0, 2, 4, 7, 9, 11]),  # DistilBERT's choice for BERT-base
    (12, 4, [0, 4, 7, 11]),
    (24, 6, [0, 5, 9, 14, 18, 23]),
    (6, 4, [0, 2, 3, 5]),
    (4, 2, [0, 3]),
    (3, 2, [0, 2]),
])
def test_evenly_spaced_layers(teacher_layers, student_layers, expected):
    assert evenly_spaced_layers(teacher_layers, student_layers) == expected, (
        f"evenly_spaced_layers({teacher_layers}, {student_layers}) should be {expected}")


@pytest.mark.task("3.3")
@pytest.mark.worked_example(twin="test_evenly_spaced_layers_rounds_halves_up_for_any_depth")
@pytest.mark.points(0)
def test_evenly_spaced_layers_at_both_ends():
    """k = L keeps every layer and k = 1 keeps layer 0, and k in between still spreads out."""
    for teacher_layers, student_layers, expected in [(5, 5, [0, 1, 2, 3, 4]), (2, 1, [0]),
                                                     (7, 1, [0]), (5, 3, [0, 2, 4])]:
        assert evenly_spaced_layers(teacher_layers, student_layers) == expected, (
            f"evenly_spaced_layers({teacher_layers}, {student_layers}) should be {expected}")


def layer_mapped_name(name, layer_ids):
    """The teacher's name of a student state_dict entry: student layer i is teacher layer layer_ids[i]."""
    prefix = "bert.encoder.layer."
    if not name.startswith(prefix):
        return name
    index, rest = name[len(prefix):].split(".", 1)
    return f"{prefix}{layer_ids[int(index)]}.{rest}"


@pytest.mark.task("3.4")
@pytest.mark.points(2)
def test_make_bert_student_copies_the_chosen_layers():
    teacher = teacher_for_make_bert_student(num_layers=4)
    student = make_bert_student(teacher, num_layers=2)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2, (
        "a 2-layer student of a 4-layer teacher needs 2 encoder layers")
    assert student.config.hidden_size == teacher.config.hidden_size, "the student keeps the teacher's width"
    teacher_state = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        source = layer_mapped_name(name, [0, 3])
        assert torch.equal(tensor, teacher_state[source]), (
            f"student {name} should be a copy of the teacher's {source} (layers [0, 3] of 4)")

    reference = copy.deepcopy(teacher)  # the same network built by cutting layers 1 and 2 out
    reference.bert.encoder.layer = nn.ModuleList([reference.bert.encoder.layer[i] for i in (0, 3)])
    batch = masked_lm_batch()
    model_inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected, actual = reference(**model_inputs).logits, student(**model_inputs).logits
    assert torch.allclose(actual, expected, atol=1e-5), (
        "the student's logits should equal the teacher's with encoder layers 1 and 2 removed")


@pytest.mark.task("3.4")
@pytest.mark.points(1)
def test_make_bert_student_default_is_an_independent_half_depth_copy():
    teacher = teacher_for_make_bert_student(num_layers=4)
    teacher_before = state_copy(teacher)
    student = make_bert_student(teacher)
    assert student.config.num_hidden_layers == 2, "by default the student keeps every other layer (4 -> 2)"
    assert not student.training, "the student is returned in eval mode"
    teacher_storage = {p.data_ptr() for p in teacher.state_dict().values()}
    shared = [n for n, p in student.state_dict().items() if p.data_ptr() in teacher_storage]
    assert not shared, f"the student must own copies, but shares storage with the teacher: {shared[:3]}"
    teacher_state = teacher.state_dict()
    for name, value in student.state_dict().items():  # layers 0 and 3 of 4, under the student's numbers
        source = name.replace("encoder.layer.1.", "encoder.layer.3.")
        assert torch.equal(value, teacher_state[source]), f"student {name} must equal the teacher's {source}"
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight, (
        "within the student, the decoder weight stays tied to the word embeddings, as in the teacher")
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(1.0)
    assert not changed_entries(teacher, teacher_before), "changing the student must not change the teacher"


# --------------------------------------------------------------------------------------------
# The edges each contract names, on inputs drawn for this run (property tests)
# --------------------------------------------------------------------------------------------

from fractions import Fraction  # noqa: E402

from hypothesis import strategies as st  # noqa: E402

from tests.properties import property_test  # noqa: E402


@st.composite
def distillation_cases(draw):
    """Logits (..., C) of 2 to 4 dims, sometimes float64 or non-contiguous, with a mask, the
    reverse direction, or teacher classes ruled out (-inf, never a whole position)."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))) + (draw(st.integers(2, 6)),)
    scale = draw(st.sampled_from([0.1, 3.0, 30.0]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31)))
    student = torch.randn(shape, generator=generator) * scale
    teacher = torch.randn(shape, generator=generator) * scale
    if draw(st.booleans()):
        teacher = student.clone()  # KL = 0 exactly
    reverse = draw(st.booleans())
    if not reverse and draw(st.booleans()):
        ruled_out = torch.rand(shape, generator=generator) < 0.3
        ruled_out[..., 0] = False  # every position keeps a class
        teacher = teacher.masked_fill(ruled_out, -math.inf)
    mask = None
    if draw(st.booleans()):
        mask = torch.rand(shape[:-1], generator=generator) < 0.5
        mask.view(-1)[0] = True
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    student, teacher = student.to(dtype), teacher.to(dtype)
    if draw(st.booleans()) and student.dim() >= 3:  # the same values in another memory layout
        student = student.transpose(0, 1).contiguous().transpose(0, 1)
    temperature = draw(st.one_of(st.sampled_from([0.5, 1.0, 2.5, 4.0]), st.floats(0.2, 8.0)))
    return student, teacher, temperature, mask, reverse


def kl_oracle(student, teacher, temperature, mask, reverse):
    """T**2 * KL, by definition in float64, over the classes of nonzero probability of p."""
    p_logits, q_logits = (student, teacher) if reverse else (teacher, student)
    log_p = log_softmax_by_hand(p_logits.double(), temperature)
    log_q = log_softmax_by_hand(q_logits.double(), temperature)
    terms = torch.where(torch.isinf(log_p), torch.zeros((), dtype=torch.float64), log_p.exp() * (log_p - log_q))
    per_position = terms.sum(-1)
    return float((per_position[mask] if mask is not None else per_position).mean()) * temperature ** 2


@pytest.mark.task("3.1")
@pytest.mark.points(3)
@property_test(distillation_cases())
def test_distillation_loss_on_any_shape_mask_and_temperature(case):
    student, teacher, temperature, mask, reverse = case
    student_before, teacher_before = student.clone(), teacher.clone()
    student_input = student.clone().requires_grad_()
    teacher_input = teacher.clone().requires_grad_()  # a teacher with grads on: none may reach it
    loss = compute_distillation_loss(student_input, teacher_input, temperature, mask=mask, reverse=reverse)
    task = (f"Exercise 3.1 compute_distillation_loss(logits {tuple(student.shape)} {student.dtype}, "
            f"T={temperature:g}, mask={'given' if mask is not None else None}, reverse={reverse})")
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.dtype == torch.float32, (
        f"{task}: a scalar float32 tensor, got {getattr(loss, 'dtype', type(loss))} of shape "
        f"{tuple(getattr(loss, 'shape', ()))}")
    expected = kl_oracle(student, teacher, temperature, mask, reverse)
    value = loss.item()
    assert math.isfinite(value), f"{task}: the loss is {value}, expected {expected:.6g}"
    assert_close(value, expected, f"{task}: T**2 * KL({'student || teacher' if reverse else 'teacher || student'}), "
                                 "summed over classes, mean over the counted positions", rtol=1e-4, atol=1e-5)
    loss.backward()
    assert teacher_input.grad is None, f"{task}: no gradient may flow into the teacher's logits"
    assert student_input.grad is not None and bool(torch.isfinite(student_input.grad).all()), \
        f"{task}: the student's logits get a finite gradient"
    assert torch.equal(student, student_before) and torch.equal(teacher, teacher_before), \
        f"{task}: the logits were modified"


def distillation_step_reference(teacher, student, inputs, labels, temperature, alpha, lr):
    """One SGD step written out by hand on a copy: ``(loss before the step, student after it)``."""
    student = copy.deepcopy(student)
    with torch.no_grad():
        teacher_logits = teacher(inputs)
    student_logits = student(inputs)
    kd = kl_by_definition(teacher_logits, student_logits, temperature).mean() * temperature ** 2
    labelled = labels != -100
    ce = F.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else 0.0  # none: 0
    loss = alpha * kd + (1 - alpha) * ce
    gradients = torch.autograd.grad(loss, list(student.parameters()))
    with torch.no_grad():
        for parameter, gradient in zip(student.parameters(), gradients):
            parameter -= lr * gradient
    return loss.item(), student


@pytest.mark.task("3.2")
@pytest.mark.points(2)
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_distillation_step_is_one_update_on_a_fresh_gradient(alpha):
    from distillation import distillation_step
    teacher, student = make_teacher().eval(), make_student().train()
    inputs, labels = make_batches(num_batches=1)[0]
    temperature, lr = 2.5, 0.1
    expected_loss, expected_student = distillation_step_reference(teacher, student, inputs, labels,
                                                                   temperature, alpha, lr)
    teacher_before = state_copy(teacher)
    for parameter in student.parameters():  # left over from an earlier batch: must not count
        parameter.grad = torch.full_like(parameter, 5.0)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr)
    loss = distillation_step(teacher, student, inputs, labels, None, optimizer, temperature, alpha)
    task = f"Exercise 3.2 distillation_step(alpha={alpha}, T={temperature}, one SGD step, lr={lr})"
    assert type(loss) is float, f"{task}: return the batch's loss as a Python float, got {type(loss).__name__}"
    assert_close(loss, expected_loss, f"{task}: the loss before the update, "
                                      "alpha * T**2 * KL(teacher || student) + (1 - alpha) * CE", rtol=1e-5)
    assert_same_weights(student, expected_student,
                        f"{task}: one step on this batch's gradient alone (optimizer.zero_grad() "
                        "before backward: gradients left from earlier batches must not count)")
    assert not changed_entries(teacher, teacher_before), f"{task}: the teacher must not change"
    assert all(p.grad is None for p in teacher.parameters()), \
        f"{task}: no gradient may reach the teacher (run it under torch.no_grad())"


@pytest.mark.task("3.2")
@pytest.mark.points(1)
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_distillation_step_on_a_batch_without_labels(alpha):
    """Every label -100 (a short masked-LM batch with no masked token): CE is 0, not NaN."""
    from distillation import distillation_step
    teacher, student = make_teacher().eval(), make_student().train()
    inputs, labels = make_batches(num_batches=1)[0]
    labels = torch.full_like(labels, -100)
    temperature, lr = 2.0, 0.1
    expected_loss, expected_student = distillation_step_reference(teacher, student, inputs, labels,
                                                                   temperature, alpha, lr)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr)
    loss = distillation_step(teacher, student, inputs, labels, None, optimizer, temperature, alpha)
    task = f"Exercise 3.2 distillation_step(alpha={alpha}, every label -100)"
    assert_close(loss, expected_loss, f"{task}: no labelled position, so CE = 0 (cross_entropy_loss's rule, "
                                      "not F.cross_entropy's NaN) and the loss is alpha * KD", rtol=1e-5)
    assert_same_weights(student, expected_student, f"{task}: one step on alpha * KD")


def evenly_spaced_oracle(teacher_layers, student_layers):
    """round(i * (L - 1) / (k - 1)) with halves rounded up, in exact fractions."""
    if student_layers == 1:
        return [0]
    return [math.floor(Fraction(i * (teacher_layers - 1), student_layers - 1) + Fraction(1, 2))
            for i in range(student_layers)]


@st.composite
def layer_counts(draw):
    teacher_layers = draw(st.one_of(st.integers(1, 40), st.integers(1, 10 ** 6)))
    return teacher_layers, draw(st.integers(1, min(teacher_layers, 40)))


@pytest.mark.task("3.3")
@pytest.mark.points(3)
@property_test(layer_counts(), max_examples=150)
def test_evenly_spaced_layers_rounds_halves_up_for_any_depth(counts):
    teacher_layers, student_layers = counts
    chosen = evenly_spaced_layers(teacher_layers, student_layers)
    expected = evenly_spaced_oracle(teacher_layers, student_layers)
    task = f"Exercise 3.3 evenly_spaced_layers({teacher_layers}, {student_layers})"
    assert isinstance(chosen, list) and all(type(i) is int for i in chosen), \
        f"{task}: a list of Python ints, got {type(chosen).__name__} {chosen!r:.80}"
    assert chosen == expected, (
        f"{task}: layer i is round(i * (L - 1) / (k - 1)) with halves rounded UP; expected "
        f"{expected[:12]}, got {chosen[:12]} (Python's round() sends halves to even: 2.5 -> 2)")


@pytest.mark.task("3.4")
@pytest.mark.points(2)
@pytest.mark.parametrize("student_layers", [1, 3])
def test_make_bert_student_at_both_depths(student_layers):
    teacher = teacher_for_make_bert_student(num_layers=3).train()
    teacher_before = state_copy(teacher)
    student = make_bert_student(teacher, num_layers=student_layers)
    layer_ids = evenly_spaced_oracle(3, student_layers)
    task = f"Exercise 3.4 make_bert_student(3-layer teacher, num_layers={student_layers})"
    assert student.config.num_hidden_layers == student_layers == len(student.bert.encoder.layer), \
        f"{task}: {student_layers} encoder layers, and config.num_hidden_layers saying so"
    assert teacher.config.num_hidden_layers == 3 and teacher.training, \
        f"{task}: the teacher keeps its configuration and its training flag"
    teacher_state = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        source = layer_mapped_name(name, layer_ids)
        assert torch.equal(tensor, teacher_state[source]), f"{task}: student {name} is a copy of the teacher's {source}"
    teacher_storage = {t.data_ptr() for t in teacher.state_dict().values()}
    assert not [n for n, t in student.state_dict().items() if t.data_ptr() in teacher_storage], \
        f"{task}: the student shares storage with the teacher"
    assert not student.training, f"{task}: the student is returned in eval mode"
    assert not changed_entries(teacher, teacher_before), f"{task}: the teacher must not change"


@pytest.mark.task("3.1")
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_distillation_loss_of_low_precision_logits_is_computed_in_float32(dtype):
    """bfloat16/float16 logits: the softmax and KL in float32 (upcast first), not in the logits' dtype."""
    shape = (int(torch.randint(1, 5, (1,))), int(torch.randint(2, 8, (1,))), int(torch.randint(20, 60, (1,))))
    student, teacher = random_logits(*shape).to(dtype), random_logits(*shape).to(dtype)
    temperature = float(torch.randint(1, 5, (1,)))
    loss = compute_distillation_loss(student.clone(), teacher.clone(), temperature)
    task = f"Exercise 3.1 compute_distillation_loss(logits {shape} in {dtype}, T={temperature:g})"
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float32, f"{task}: a float32 scalar"
    assert_close(loss, kl_oracle(student, teacher, temperature, None, False),
                 f"{task}: upcast the logits to float32 before the softmax (not only the result)", rtol=1e-4)


@pytest.mark.task("3.3")
@pytest.mark.points(1)
def test_evenly_spaced_layers_rounds_exact_halves_up():
    """Depths (L, k) drawn for this run where some i * (L - 1) / (k - 1) is exactly a half: a float
    computation (np.linspace, i * step) can land just below it."""
    generator = torch.Generator().manual_seed(run_seed())
    cases = []
    while len(cases) < 300:
        teacher_layers = int(torch.randint(3, 2000, (1,), generator=generator))
        student_layers = int(torch.randint(3, min(teacher_layers, 200) + 1, (1,), generator=generator))
        gaps = student_layers - 1
        if any(2 * i * (teacher_layers - 1) % (2 * gaps) == gaps for i in range(student_layers)):
            cases.append((teacher_layers, student_layers))
    for teacher_layers, student_layers in cases:
        expected = evenly_spaced_oracle(teacher_layers, student_layers)
        chosen = evenly_spaced_layers(teacher_layers, student_layers)
        assert chosen == expected, (
            f"Exercise 3.3 evenly_spaced_layers({teacher_layers}, {student_layers}): some i * (L - 1) / (k - 1) is "
            f"exactly a half, which rounds UP; expected {expected[:12]}..., got {chosen[:12]}... (compute in "
            f"integers: float arithmetic can turn x.5 into x.4999)")


@pytest.mark.task("3.4")
@pytest.mark.points(1)
def test_make_bert_student_of_a_frozen_teacher_is_trainable():
    """A teacher frozen before distillation (requires_grad_(False)) gives a student whose every
    parameter is trainable: the student is a new model (new_bert_like), not a copy of the teacher."""
    teacher = teacher_for_make_bert_student(num_layers=3).requires_grad_(False)
    student_layers = int(torch.randint(1, 4, (1,)))
    student = make_bert_student(teacher, num_layers=student_layers)
    teacher_state, layer_ids = teacher.state_dict(), evenly_spaced_oracle(3, student_layers)
    for name, tensor in student.state_dict().items():
        source = layer_mapped_name(name, layer_ids)
        assert torch.equal(tensor, teacher_state[source]), f"student {name} is a copy of the teacher's {source}"
    frozen = [name for name, parameter in student.named_parameters() if not parameter.requires_grad]
    assert not frozen, (f"Exercise 3.4 make_bert_student(frozen teacher): every parameter of the student must be "
                        f"trainable; frozen: {frozen[:3]} ({len(frozen)} in all)")
    assert not any(parameter.requires_grad for parameter in teacher.parameters()), "the teacher stays frozen"
