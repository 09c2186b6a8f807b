"""Lazy submissions: every exercise written as a stub that returns zeros, or its input unchanged.

"Zero for zero": graded with ``tools/grade.py``, each must score 0 in every exercise. A test that
a lazy stub passes pays for no work (it compares a result with itself, or checks only what given
code does, or an edge case where doing nothing is right): fix the test.

    python -c "import sys; sys.path.insert(0, 'tests/instructor'); import lazy_submissions as l; \
l.write_lazy_submissions('SUBS')"
    python tools/grade.py SUBS/* --out GRADES
"""
import re
import sys
from pathlib import Path

from given.manifest import PROJECT_ROOT as ROOT  # tests/conftest.py puts the project root on sys.path
sys.path.insert(0, str(ROOT / "tools"))

from solution_markers import strip_python_solutions  # noqa: E402

KINDS = ("zeros", "unchanged")

# Exercise number -> (body returning zeros, body returning the input unchanged / doing nothing).
# Where one exercise has two stubs (1.9), "number task" keys the second by its task text.
LAZY_BODIES = {
    "1.1": ("return torch.zeros_like(v, dtype=torch.int8), _reduce_abs(v, 'max', dim) * 0 + 1",
            "return v, _reduce_abs(v, 'max', dim) * 0 + 1"),
    "1.2": ("return torch.zeros(q.shape)", "return q"),
    "1.3": ("return torch.zeros_like(v, dtype=torch.float16)", "return v"),
    "1.4": ("return torch.zeros_like(v, dtype=torch.int8), _reduce_abs(v, 'mean', dim) * 0",
            "return v, _reduce_abs(v, 'mean', dim) * 0 + 1"),
    "1.5": ("return torch.zeros_like(v, dtype=torch.int8), _reduce_abs(v, 'mean', dim) * 0",
            "return v, _reduce_abs(v, 'mean', dim) * 0 + 1"),
    "1.6": ("return torch.zeros(x.shape[1], dtype=torch.bool)", "return x"),
    "1.7": ("return torch.zeros(x.shape[0], weight.shape[1])", "return x"),
    "1.8": ("return torch.zeros(*input.shape[:-1], weight.shape[1])", "return input"),
    "1.9": ("return torch.zeros_like(v, dtype=torch.int8), torch.ones(v.shape[0], v.shape[1] // group_size)",
            "return v, torch.ones(v.shape[0], v.shape[1] // group_size)"),
    "1.9 group-wise dequantization": ("return torch.zeros(q.shape)", "return q.float()"),
    "1.10": ("return torch.zeros(2 ** bits), torch.zeros(v.shape, dtype=torch.uint8)",
             "return v, torch.zeros(v.shape, dtype=torch.uint8)"),
    "2.1": ("return torch.zeros_like(weight, dtype=torch.bool)", "return torch.ones_like(weight, dtype=torch.bool)"),
    "2.2": ("return [torch.zeros_like(w, dtype=torch.bool) for w in weights]",
            "return [torch.ones_like(w, dtype=torch.bool) for w in weights]"),
    "2.3": ("return torch.zeros_like(weight, dtype=torch.bool)", "return torch.ones_like(weight, dtype=torch.bool)"),
    "2.4": ("return torch.zeros_like(weight, dtype=torch.bool)", "return torch.ones_like(weight, dtype=torch.bool)"),
    "2.5": ("linear.weight.data.zero_()\n{i}return linear", "return linear"),
    "2.6": ("[p.data.zero_() for p in attention.parameters()]\n{i}return attention", "return attention"),
    "2.7": ("return 0.0", "return float(model(**inputs, labels=labels).loss)"),
    "3.1": ("return student_logits.sum() * 0.0", "return student_logits.float().mean()"),
    "3.2": ("return 0.0", "return 0.0"),
    "3.3": ("return [0] * num_student_layers", "return list(range(num_student_layers))"),
    "3.4": ("[p.data.zero_() for p in student.parameters()]", "pass"),
}

STUB_RE = re.compile(r"^(?P<indent>[ \t]*)raise NotImplementedError\((?P<quote>['\"])Exercise (?P<number>[\d.]+): "
                     r"(?P<task>.*)(?P=quote)\)$", re.MULTILINE)
"""A stub line; its quotes are double when the task has an apostrophe (``repr``)."""


def lazy_source(reference_source, kind):
    """The student file with every exercise written lazily (``kind``: "zeros" or "unchanged")."""
    stubbed, _ = strip_python_solutions(reference_source)

    def lazy(match):
        bodies = next((LAZY_BODIES[key] for key in LAZY_BODIES
                       if " " in key and f"{match['number']} {match['task']}".startswith(key)),
                      LAZY_BODIES[match["number"]])
        body = bodies[KINDS.index(kind)]
        return match["indent"] + body.format(i=match["indent"])

    lazy_file, count = STUB_RE.subn(lazy, stubbed)
    assert count and not re.search(r"raise NotImplementedError\(['\"]Exercise", lazy_file), "every stub is replaced"
    return lazy_file


def write_lazy_submissions(folder, root=ROOT):
    """``folder/lazy_zeros`` and ``folder/lazy_unchanged``, each with the three exercise files."""
    from given.manifest import DELIVERABLES
    paths = []
    for kind in KINDS:
        submission = Path(folder) / f"lazy_{kind}"
        submission.mkdir(parents=True, exist_ok=True)
        for name in DELIVERABLES:
            (submission / name).write_text(lazy_source((root / name).read_text(), kind))
        paths.append(submission)
    return paths
