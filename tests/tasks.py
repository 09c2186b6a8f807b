"""The lab's tasks, the function each is written in, and the earlier tasks each one runs on.

Every graded test names the task it checks with ``@pytest.mark.task("1.7")`` (see
``tests/conftest.py``); a failure is reported as "Exercise 1.7 `int8_vectorwise_matmul`: ...", and
a test whose task runs on an earlier task that fails its own tests is reported as depending on it
("depends on Exercise 1.1 `absmax_quantize`, which fails: fix it first"), so that one mistake shows
up under its own task. No torch here: ``tools/hints.py`` reads this file too.
"""

TASKS = {
    "1.1": "absmax_quantize",
    "1.2": "absmax_dequantize",
    "1.3": "fp16_quantize",
    "1.4": "binary_quantize",
    "1.5": "ternary_quantize",
    "1.6": "outlier_columns",
    "1.7": "int8_vectorwise_matmul",
    "1.8": "mixed_precision_forward",
    "1.9": "groupwise_quantize",
    "1.10": "kmeans_quantize",
    "2.1": "magnitude_mask",
    "2.2": "global_magnitude_masks",
    "2.3": "row_norm_mask",
    "2.4": "nm_sparsity_mask",
    "2.5": "shrink_linear",
    "2.6": "remove_attention_heads",
    "2.7": "masked_finetune_step",
    "3.1": "compute_distillation_loss",
    "3.2": "distillation_step",
    "3.3": "evenly_spaced_layers",
    "3.4": "make_bert_student",
}
"""Task number -> the function of the exercise file it is written in (1.9 also writes
``groupwise_dequantize``)."""

RUNS_ON = {
    "1.2": ("1.1",),               # most of its tests dequantize what your 1.1 quantized
    "1.7": ("1.1",),               # QuantizedVector(x, "int8", dim=1) quantizes with your absmax
    "1.8": ("1.1", "1.6", "1.7"),  # outlier columns, then the int8 product of the rest
    "2.2": ("2.1",),               # global ranking is magnitude_mask on all weights at once
    "2.6": ("2.5",),               # heads are cut with shrink_linear
    "3.2": ("3.1",),               # the step's loss is your distillation loss
    "3.4": ("3.3",),               # the student's layers are evenly_spaced_layers' choice
}
"""Task -> the earlier tasks the reference solution calls (the hints and docstrings suggest it)."""

FORMAT_TASKS = {"int8": "1.1", "fp16": "1.3", "1bit": "1.4", "1.58bit": "1.5"}
"""The task that writes each ``QuantizedVector`` format."""

ROUND_TRIP_TASKS = {**FORMAT_TASKS, "int8": "1.2"}
"""The task a quantize-and-dequantize round trip of each format ends in."""


def task_key(number):
    """``"1.10"`` -> ``(1, 10)``: tasks in the order of the lab."""
    return tuple(int(part) for part in number.split("."))


def runs_on(numbers):
    """Every earlier task the tasks ``numbers`` run on, directly or not, in the lab's order."""
    found, todo = set(), list(numbers)
    while todo:
        for earlier in RUNS_ON.get(todo.pop(), ()):
            if earlier not in found:
                found.add(earlier)
                todo.append(earlier)
    return sorted(found, key=task_key)


def describe(number):
    """``Exercise 1.7 `int8_vectorwise_matmul```."""
    return f"Exercise {number} `{TASKS[number]}`"
