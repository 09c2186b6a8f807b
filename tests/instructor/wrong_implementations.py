"""Wrong implementations a student could plausibly write, and which graded test catches each.

Each entry replaces a few lines of the reference solution with what a competent first attempt
might write instead: wrong on an input its task's contract names (a tie at the pruning
boundary, a value half-way between two integers, an all-zero vector, a 4-D weight, a Linear
without bias, a gradient left from the last batch). Every one must lose points: the slow test in
``test_wrong_implementations.py`` runs each exercise's public tests on it and names the first
test with points that fails (worked examples carry none, so they are left out). Add one
whenever a wrong implementation is found that earned full marks.

    python tests/instructor/wrong_implementations.py [TASK ...]   # the table: mistake -> first failing test
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, when run as a script

from given.manifest import EXERCISES  # noqa: E402
from given.manifest import PROJECT_ROOT as ROOT  # noqa: E402

KINDS = {
    "boundary": "a value exactly at a boundary, a tie, or half-way between two integers",
    "shapes": "a shape beyond the common 2-D case (1-D, 4-D, any dim, non-contiguous)",
    "dtypes": "the dtype going in or coming out",
    "degenerate": "a degenerate size (an empty list, zero tokens, all zeros, a tiny vector)",
    "side effects": "a side effect the contract forbids or promises (an input changed, a gradient, a return type)",
    "optional parts": "an optional part (a Linear without bias)",
    "common": "a common mistake the docstring warns about",
}


@dataclass(frozen=True)
class WrongImplementation:
    task: str   # "1.5"
    kind: str   # a key of KINDS
    what: str   # the mistake, in one sentence
    old: str    # lines of the reference solution (each must occur exactly once in its file)
    new: str    # what the wrong implementation has instead
    # (a mistake in two places: old and new are tuples of the same length, one pair per place)

    @property
    def exercise(self):
        return next(e for e in EXERCISES if str(e.number) == self.task.split(".")[0])


W = WrongImplementation
WRONG_IMPLEMENTATIONS = (
    # Exercise 1: quantization.py
    W("1.1", "boundary", "rounds with floor(x + 0.5), not torch.round (halves to even)",
      "q = (v * alpha).round_().to(torch.int8)", "q = (v * alpha + 0.5).floor_().to(torch.int8)"),
    W("1.1", "degenerate", "no lower bound on max|v|: an all-zero vector gives alpha = inf",
      'max_abs = _reduce_abs(v, "max", dim).clamp_min(SMALLEST_RANGE)', 'max_abs = _reduce_abs(v, "max", dim)'),
    W("1.1", "shapes", "handles dim=None, 0 and 1 of a matrix only (dim=-1 and 3-D tensors go wrong)",
      'max_abs = _reduce_abs(v, "max", dim).clamp_min(SMALLEST_RANGE)',
      'max_abs = (v.abs().max() if dim is None else v.abs().amax(dim=1 if dim == 1 else 0, keepdim=True)'
      ').clamp_min(SMALLEST_RANGE)'),
    W("1.2", "dtypes", "dequantizes in float64", "return q.to(torch.float32) / alpha",
      "return q.to(torch.float64) / alpha"),
    W("1.3", "side effects", "casts the input in place (v.data) and returns it",
      "return v.to(torch.float16)", "v.data = v.data.to(torch.float16)\n    return v"),
    W("1.4", "boundary", "sends 0 to +1 (v >= 0)", "q = torch.where(v > 0, 1, -1)", "q = torch.where(v >= 0, 1, -1)"),
    W("1.4", "boundary", "uses torch.sign, which sends 0 to 0 (a third symbol)",
      "q = torch.where(v > 0, 1, -1).to(torch.int8)", "q = torch.sign(v).to(torch.int8)"),
    W("1.5", "degenerate", "divides by gamma without the BITNET_EPS guard (a tiny vector rounds to +-1)",
      "q = torch.round(v / gamma.clamp_min(BITNET_EPS))", "q = torch.round(v / gamma)"),
    W("1.5", "boundary", "rounds halves up (floor(x + 0.5)): a value at gamma / 2 becomes 1",
      "q = torch.round(v / gamma.clamp_min(BITNET_EPS))", "q = torch.floor(v / gamma.clamp_min(BITNET_EPS) + 0.5)"),
    W("1.6", "boundary", "uses > instead of >=", "return (x.amax(dim=0) >= threshold) | (x.amin(dim=0) <= -threshold)",
      "return (x.amax(dim=0) > threshold) | (x.amin(dim=0) < -threshold)"),
    W("1.5", "degenerate", "divides by gamma + BITNET_EPS instead of max(gamma, BITNET_EPS)",
      "q = torch.round(v / gamma.clamp_min(BITNET_EPS))", "q = torch.round(v / (gamma + BITNET_EPS))"),
    W("1.6", "boundary", "compares the fp16 copy of x with the threshold (as LLM.int8() sees fp16 activations)",
      "return (x.amax(dim=0) >= threshold) | (x.amin(dim=0) <= -threshold)",
      "return (x.half().amax(dim=0) >= threshold) | (x.half().amin(dim=0) <= -threshold)"),
    W("1.6", "degenerate", "disables the decomposition for None only (threshold 0 makes every column an outlier)",
      "    if not threshold:\n        return torch.zeros(x.shape[1]",
      "    if threshold is None:\n        return torch.zeros(x.shape[1]"),
    W("1.7", "common", "multiplies int8 @ int8, which wraps around in int8",
      "accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)",
      "accumulated = x_q.quantized_vector @ w_q.quantized_vector"),
    W("1.7", "common", "one scale for the whole of x instead of one per row",
      'x_q = QuantizedVector(x, "int8", dim=1)', 'x_q = QuantizedVector(x, "int8")'),
    W("1.7", "common", "dequantizes both operands and multiplies in float32 (no int8 product, no int32 accumulation)",
      "    accumulated = int8_matmul_int32(x_q.quantized_vector, w_q.quantized_vector)\n"
      "    result = int32_to_float32_in_place(accumulated)  # accumulated's memory now holds float32\n"
      "    return result.div_(x_q.alpha).div_(w_q.alpha)  # row scales, then column scales, in place",
      "    return x_q.dequantize() @ w_q.dequantize()"),
    W("1.8", "shapes", "flattens with input.flatten(0, -2): a 1-D input (in,) raises",
      "x = input.reshape(-1, in_features).to(torch.float32)", "x = input.flatten(0, -2).to(torch.float32)"),
    W("1.8", "degenerate", "forgets the zero-token case",
      "    if x.shape[0] == 0:\n        return torch.zeros(*leading, out_features, dtype=torch.float32, device=x.device)\n",
      ""),
    W("1.8", "common", "quantizes a float weight with its outlier rows in (they set the column scales)",
      "regular_w = w if isinstance(w, QuantizedVector) else w * keep[:, None]",
      "regular_w = w"),
    W("1.8", "shapes", "restores the leading dimensions of a 3-D input only",
      "return result.reshape(*leading, out_features)",
      "return result.reshape(input.shape[0], -1, out_features) if input.dim() == 3 else result"),
    W("1.9", "boundary", "rounds halves up (floor(x + 0.5)), not torch.round (halves to even)",
      "q = torch.round(groups * alpha).clamp(-qmax, qmax)", "q = torch.floor(groups * alpha + 0.5).clamp(-qmax, qmax)"),
    W("1.9", "dtypes", "computes in v's dtype: a float64 v gives float64 alpha (fp16 v: inf alpha on a zero group)",
      "groups = v.to(torch.float32).reshape(rows, columns // group_size, group_size)",
      "groups = v.reshape(rows, columns // group_size, group_size)"),
    W("1.9", "dtypes", "groupwise_dequantize divides by alpha in alpha's dtype: float64 alpha gives float64",
      "return (grouped / alpha.to(torch.float32).unsqueeze(-1)).reshape(rows, columns)",
      "return (grouped / alpha.unsqueeze(-1)).reshape(rows, columns)"),
    W("1.10", "boundary", "assigns with bucketize(right=True) on the midpoints: a value exactly half-way goes to "
      "the HIGHER index",
      ("        assignment = nearest_centroid(values, codebook)\n",
       "    return codebook, nearest_centroid(values, codebook).to(torch.uint8).reshape(v.shape)"),
      ("        assignment = torch.bucketize(values, (codebook[1:] + codebook[:-1]) / 2, right=True)\n",
       "    return codebook, torch.bucketize(values, (codebook[1:] + codebook[:-1]) / 2, right=True)"
       ".to(torch.uint8).reshape(v.shape)")),
    W("1.10", "dtypes", "works in v's dtype: a float64 v gives a float64 codebook",
      ("values = v.detach().reshape(-1).to(torch.float32)", "dtype=torch.float32, device=values.device)"),
      ("values = v.detach().reshape(-1)", "dtype=values.dtype, device=values.device)")),
    # Exercise 2: pruning.py
    W("2.1", "boundary", "prunes every |w| <= the k-th smallest (a threshold: ties at it all go)",
      "    smallest = torch.topk(weight.detach().abs().flatten(), k=count, largest=False).indices\n"
      "    mask.view(-1)[smallest] = False\n",
      "    if count:\n        magnitudes = weight.detach().abs()\n"
      "        mask = magnitudes > magnitudes.flatten().kthvalue(count).values\n"),
    W("2.1", "shapes", "flattens with view(-1), which fails on a non-contiguous weight",
      "torch.topk(weight.detach().abs().flatten(), k=count", "torch.topk(weight.detach().abs().view(-1), k=count"),
    W("2.1", "boundary", "counts with int(fraction * n), not round(fraction * n)",
      "    count = number_to_prune(fraction, weight.numel())", "    count = int(fraction * weight.numel())"),
    W("2.2", "degenerate", "fails on an empty list of weights", "    if not weights:\n        return []\n", ""),
    W("2.3", "boundary", "keeps the rows whose norm exceeds the k-th smallest (ties at it all go)",
      "    keep = torch.topk(row_norms, k=rows - number_to_prune(fraction, rows), largest=True).indices\n"
      "    mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)\n"
      "    mask[keep] = True\n",
      "    count = number_to_prune(fraction, rows)\n"
      "    mask = torch.ones(weight.shape, dtype=torch.bool, device=weight.device)\n"
      "    if count:\n        mask[row_norms <= row_norms.kthvalue(count).values] = False\n"),
    W("2.3", "shapes", "computes row norms of 2-D weights only (dim=1 of a 4-D weight)",
      "row_norms = torch.linalg.vector_norm(weight.detach().reshape(rows, -1), ord=2, dim=1)",
      "row_norms = torch.linalg.vector_norm(weight.detach(), ord=2, dim=1).reshape(rows, -1).amax(dim=1)"),
    W("2.3", "common", "ranks rows by their L1 norm, not their L2 norm",
      "row_norms = torch.linalg.vector_norm(weight.detach().reshape(rows, -1), ord=2, dim=1)",
      "row_norms = torch.linalg.vector_norm(weight.detach().reshape(rows, -1), ord=1, dim=1)"),
    W("2.4", "boundary", "keeps every |w| >= the n-th largest of its group (ties keep too many)",
      "    largest = torch.topk(groups, k=n, dim=-1).indices\n"
      "    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, largest, True)\n",
      "    if n == 0:\n        return torch.zeros(rows, columns, dtype=torch.bool)\n"
      "    mask = groups >= torch.topk(groups, k=n, dim=-1).values[..., -1:]\n"),
    W("2.5", "optional parts", "assumes the Linear has a bias",
      "        if dim == 0 and linear.bias is not None:", "        if dim == 0:"),
    W("2.5", "side effects", "makes a frozen layer trainable again (new Parameters require grad)",
      "        linear.weight = nn.Parameter(linear.weight.index_select(dim, keep).clone(),\n"
      "                                     requires_grad=linear.weight.requires_grad)",
      "        linear.weight = nn.Parameter(linear.weight.index_select(dim, keep).clone())"),
    W("2.5", "side effects", "gives the new bias the weight's requires_grad (copy-paste)",
      "                                       requires_grad=linear.bias.requires_grad)",
      "                                       requires_grad=linear.weight.requires_grad)"),
    W("2.6", "side effects", "slices q/k/v/output.dense by hand (new Parameters) without shrink_linear: "
      "out_features/in_features stay stale, frozen weights become trainable",
      "    for projection in (self_attention.query, self_attention.key, self_attention.value):\n"
      "        shrink_linear(projection, keep, dim=0)\n"
      "    shrink_linear(attention.output.dense, keep, dim=1)\n",
      "    for projection in (self_attention.query, self_attention.key, self_attention.value):\n"
      "        projection.weight = nn.Parameter(projection.weight.detach()[keep].clone())\n"
      "        projection.bias = nn.Parameter(projection.bias.detach()[keep].clone())\n"
      "    dense = attention.output.dense\n"
      "    dense.weight = nn.Parameter(dense.weight.detach()[:, keep].clone())\n"),
    W("2.7", "side effects", "never calls model.train() (a model in eval mode stays in eval mode)",
      "    model.train()\n    optimizer.zero_grad()\n    loss = model(**inputs, labels=labels).loss",
      "    optimizer.zero_grad()\n    loss = model(**inputs, labels=labels).loss"),
    W("2.6", "boundary", "reads the hint's inclusive range as range(h*size, (h+1)*size - 1)",
      "removed_rows = [h * head_size + i for h in heads for i in range(head_size)]",
      "removed_rows = [h * head_size + i for h in heads for i in range(head_size - 1)]"),
    # Exercise 3: distillation.py
    W("3.1", "shapes", "averages (B, L, C) logits over B only (kl_div's batchmean)",
      "    return kl_per_position.mean() * temperature**2",
      "    return kl_per_position.sum() / kl_per_position.shape[0] * temperature**2"),
    W("3.1", "dtypes", "returns float64 for float64 logits",
      "log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)\n"
      "    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)",
      "log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)\n"
      "    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)"),
    W("3.1", "dtypes", "computes the KL in the logits' own dtype (bf16/fp16 logits: bf16 softmax) and casts the "
      "result to float32",
      ("log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)\n"
       "    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)",
       "    return kl_per_position.mean() * temperature**2"),
      ("log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)\n"
       "    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)",
       "    return (kl_per_position.mean() * temperature**2).float()")),
    W("3.1", "side effects", "lets the gradient flow into the teacher's logits (no detach)",
      "F.log_softmax(teacher_logits.detach().float() / temperature", "F.log_softmax(teacher_logits.float() / temperature"),
    W("3.1", "common", "multiplies by T instead of T**2", "    return kl_per_position.mean() * temperature**2",
      "    return kl_per_position.mean() * temperature"),
    W("3.2", "side effects", "forgets optimizer.zero_grad(): gradients of earlier batches add up",
      "    optimizer.zero_grad()\n    loss.backward()", "    loss.backward()"),
    W("3.2", "side effects", "returns the loss as a tensor, not a Python float", "    return loss.item()",
      "    return loss.detach()"),
    W("3.2", "degenerate", "uses F.cross_entropy directly: NaN when no position of the batch is labelled",
      "    loss_ce = cross_entropy_loss(student_logits, labels)",
      "    loss_ce = F.cross_entropy(student_logits.flatten(0, -2), labels.flatten(), ignore_index=-100)"),
    W("3.3", "boundary", "np.linspace(0, L-1, k) then floor(x + 0.5): float error turns some exact halves into x.4999",
      "    return [(2 * i * spans + gaps) // (2 * gaps) for i in range(num_student_layers)]",
      "    import numpy as np\n    return [int(x) for x in np.floor(np.linspace(0, spans, num_student_layers) + 0.5)]"),
    W("3.3", "boundary", "uses Python's round, which sends halves to even",
      "    return [(2 * i * spans + gaps) // (2 * gaps) for i in range(num_student_layers)]",
      "    return [round(i * spans / gaps) for i in range(num_student_layers)]"),
    W("3.4", "side effects", "puts the teacher's own layer modules into the student (shared storage)",
      "        student_layer.load_state_dict(teacher.bert.encoder.layer[teacher_index].state_dict())",
      "        student.bert.encoder.layer[list(layer_ids).index(teacher_index)] = "
      "teacher.bert.encoder.layer[teacher_index]"),
    W("3.4", "common", "copies the chosen layers and the head but leaves the embeddings at their random initialisation",
      "    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())\n", ""),
    W("3.4", "common", "leaves the student as new_bert_like made it (random weights, nothing copied)",
      "    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())\n"
      "    for student_layer, teacher_index in zip(student.bert.encoder.layer, layer_ids):\n"
      "        student_layer.load_state_dict(teacher.bert.encoder.layer[teacher_index].state_dict())\n"
      "    student.cls.load_state_dict(teacher.cls.state_dict())\n", ""),
    W("3.4", "side effects", "deep-copies the whole teacher and keeps the chosen layers (a frozen teacher gives a "
      "frozen student)",
      "    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())\n"
      "    for student_layer, teacher_index in zip(student.bert.encoder.layer, layer_ids):\n"
      "        student_layer.load_state_dict(teacher.bert.encoder.layer[teacher_index].state_dict())\n"
      "    student.cls.load_state_dict(teacher.cls.state_dict())\n",
      "    import copy\n    student = copy.deepcopy(teacher)\n"
      "    student.bert.encoder.layer = torch.nn.ModuleList([student.bert.encoder.layer[i] for i in layer_ids])\n"
      "    student.config.num_hidden_layers = num_layers\n"),
)


def apply(wrong, source_root=ROOT):
    """The exercise file of ``wrong.task`` with its mistake in, as text."""
    path = Path(source_root) / wrong.exercise.deliverable
    text = path.read_text()
    pairs = zip(wrong.old, wrong.new) if isinstance(wrong.old, tuple) else [(wrong.old, wrong.new)]
    for old, new in pairs:
        if text.count(old) != 1:
            raise ValueError(f"{wrong.task} ({wrong.what}): the lines it replaces occur "
                             f"{text.count(old)} times in {path.name}, not once: update the catalogue")
        text = text.replace(old, new)
    return text


def graded_test_files(exercise, root=ROOT):
    """The public test files that hold the exercise's graded tests."""
    return sorted(str(p.relative_to(root)) for p in (Path(root) / "tests").glob("test_*.py")
                  if exercise.marker in p.read_text())


FAILED_LINE = re.compile(r"^FAILED (\S+)", re.MULTILINE)


def one_thread_environment(**extra):
    """The environment of a student's run, for a pytest process started by these checks: no
    pytest or grader settings of the parent's, no CI variables (pytest prints whole diffs where
    CI or BUILD_NUMBER is set), one torch thread (two such runs go at once: ``two_at_a_time``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "GRADER_")) and k not in ("CI", "BUILD_NUMBER")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def two_at_a_time(run, items, workdir):
    """``{item: run(item, workdir)}``, two runs at once: each is one pytest process on one thread,
    and CI has two cores."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(items, pool.map(lambda item: run(item, workdir), items)))


def selected(request, test_name, parameter="wrong"):
    """The ``parameter`` values of the cases of ``test_name`` that this pytest run selected
    (after -k and node ids), so a module fixture can run just those, two at a time."""
    return [item.callspec.params[parameter] for item in request.session.items
            if getattr(item, "originalname", None) == test_name]


def first_failure(wrong, workdir, seed=None, timeout=900):
    """Run the exercise's public graded tests on ``wrong`` in a copy of the tree under ``workdir``;
    return ``(exit code, first failing test or None, output)``."""
    tree = Path(workdir) / f"tree-{wrong.task}-{abs(hash(wrong.what))}"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", ".hypothesis", ".venv", "outputs", "release", "grades", "hidden"))
    (tree / wrong.exercise.deliverable).write_text(apply(wrong))
    env = one_thread_environment(**({} if seed is None else {"GRADER_FRESH_SEED": str(seed)}))
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                             "-m", f"{wrong.exercise.marker} and not worked_example",  # tests with points
                             *graded_test_files(wrong.exercise, tree)],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    failed = FAILED_LINE.findall(result.stdout)
    return result.returncode, (failed[0] if failed else None), result.stdout


def main(tasks=()):
    """Print the table (only the wrong implementations of ``tasks``, e.g. ``1.5 2.3``, if given)."""
    chosen = [w for w in WRONG_IMPLEMENTATIONS if not tasks or w.task in tasks]
    with tempfile.TemporaryDirectory() as workdir:
        results = two_at_a_time(first_failure, chosen, workdir)
    print("| task | kind | wrong implementation | first graded test that fails |")
    print("|---|---|---|---|")
    for wrong, (code, failed, _) in results.items():
        caught = f"`{failed.split('::', 1)[1]}`" if failed else f"**none** (exit {code})"
        print(f"| {wrong.task} | {wrong.kind} | {wrong.what} | {caught} |")


if __name__ == "__main__":
    main(sys.argv[1:])
