"""Given code of Lab 5: everything the exercises need that you do not write.

Your work is in the three exercise files at the top of the repository (``quantization.py``,
``pruning.py``, ``distillation.py``). This package holds what the lab gives you, and it is *not*
part of a submission (the grader copies only the three exercise files):

- ``manifest``: the exercises, their files and markers, and the repository's paths.
- ``checks``: argument checks with clear error messages, shared by every module.
- ``sizes``: how many bytes a tensor or a model takes (stored, packed, CSR).
- ``quantized_linear``: ``QuantizedLinear`` and ``quantize_model``, which put your Exercise 1
  functions inside a real BERT (``QuantizedVector`` sits in the given part of ``quantization.py``).
- ``pruning_tools``: your Exercise 2 masks applied to whole models.
- ``bert_surgery``: structured pruning of a whole BERT with your Exercise 2 functions, and reload.
- ``distill_loop``: the plumbing of distillation (checks, batches, a frozen teacher, a new BERT
  to copy into); ``distill_model`` itself sits in the given part of ``distillation.py``.
- ``matmul``: the int8 and fp16 products LLM.int8() needs; ``torch_utils``: finding layers, masks.
- ``models``: which BERT a run uses (given, hub, offline model, random) and loading it.
- ``evaluation`` (a package): the measuring code behind the notebook (Exercise 4); ``experiments``: its
  ablations, sweeps and scans; ``timing``: the one place that times things; ``quiet``: the known
  harmless warnings, silenced.
- ``your_code``: the one doorway from the given code to your three exercise files.

Imports go one way: the exercise files import only leaf modules of this package
(``given.checks``, ``given.matmul``, ``given.sizes``, ``given.torch_utils`` and
``given.distill_loop``); the modules that run your code inside BERT reach the exercise files
through ``given.your_code``, which imports each one when it is first used.
"""
