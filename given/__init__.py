"""Given code of Lab 5: everything the exercises need that you do not write.

Your work is in the three exercise files at the top of the repository (``quantization.py``,
``pruning.py``, ``distillation.py``). This package holds what the lab gives you, and it is *not*
part of a submission (the grader copies only the three exercise files):

- ``manifest``: the exercises, their files and markers, and the repository's paths.
- ``checks``: argument checks with clear error messages, shared by every module.
- ``sizes``: how many bytes a tensor or a model takes (stored, packed, CSR).
- ``quantized_vector`` and ``quantized_linear``: ``QuantizedVector``, ``QuantizedLinear`` and
  ``quantize_model``, which put your Exercise 1 functions inside a real BERT.
- ``pruning_tools``: your Exercise 2 masks applied to whole models.
- ``bert_surgery``: structured pruning of a whole BERT with your Exercise 2 functions, and reload.
- ``distill_loop``: ``distill_model`` and the BERT student, around your Exercise 3 functions.
- ``matmul``: the int8 and fp16 products LLM.int8() needs; ``torch_utils``: finding layers, masks.
- ``models``: which BERT a run uses (given, hub, offline model, random) and loading it.
- ``evaluation`` (a package): the measuring code behind the notebook (Exercise 4); ``experiments``: its
  ablations, sweeps and scans; ``timing``: the one place that times things; ``quiet``: the known
  harmless warnings, silenced.

Imports go one way: the exercise files import only ``given.checks`` and ``given.matmul``; the
modules that run your code inside BERT import the exercise files.
"""
