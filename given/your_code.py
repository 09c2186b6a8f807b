"""The one doorway from the given code to yours: ``your_code.quantization``, ``your_code.pruning``
and ``your_code.distillation`` are your three exercise files.

Every given module that runs your functions (``QuantizedLinear``, the BERT surgery, the pruning
and distillation runs, the notebook's experiments) reaches them through here, and only here::

    from given import your_code

    mask = your_code.pruning.magnitude_mask(weight, 0.5)

Each exercise file is imported when it is first used, not when the given module is: the given code
imports (and the notebook's measuring code runs) while an exercise file is unfinished, or even
while it does not import at all, and the error then names your file when a function of it is
called. A name is looked up at every call, so the given code always runs your latest functions.
"""
import importlib

from given.manifest import EXERCISES

EXERCISE_MODULES = tuple(exercise.deliverable.removesuffix(".py") for exercise in EXERCISES)
"""The module names of the exercise files: "quantization", "pruning", "distillation"."""


def __getattr__(name):
    if name in EXERCISE_MODULES:
        return importlib.import_module(name)
    raise AttributeError(f"given.your_code has no {name!r}: your exercise files are {', '.join(EXERCISE_MODULES)}")
