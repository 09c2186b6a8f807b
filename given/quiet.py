"""Silence the few known messages that look like errors but are not (given code, one place).

Call ``quiet_known_noise()`` once, before anything imports bitsandbytes or tqdm: the notebook's
set-up cell, ``tools/run_notebook.py``, ``tests/conftest.py`` and ``benchmarks/bench_quantization.py``
do. Each filter matches one message from one module; every other warning still shows.

=============================== ================================================================
message                         why it is harmless here
=============================== ================================================================
bitsandbytes "Failed to load    bitsandbytes tries to download an optional fast 4-bit CPU kernel;
CPU gemm_4bit_forward from      without it (no network, no ``kernels`` package) it uses its own,
kernels-community"              slower but correct, code.
bitsandbytes "MatMul8bitLt:     bitsandbytes' LLM.int8() works in fp16 by design (the benchmark
inputs will be cast from        compares its error anyway); without this filter it says so at every
torch.float32 to float16"       call, hundreds of times per timing.
torchao "Failed to load ...so", torchao (imported by transformers) looks for GPU kernels and
"Detected no triton"; torch     triton; on a CPU it does without. torch's note on torchao's enum
"... is an Enum subclass"       registration is addressed to torchao's authors.
torch "torch.ao.quantization    the benchmark compares with torch.ao's dynamic int8, deprecated in
is deprecated", "torch.         favour of torchao; it still works in this torch.
quantize_per_tensor, ... are
deprecated"
tqdm "IProgress not found"      without ipywidgets, progress bars are plain text: same bars.
the kernel's "running over TCP  the notebook's kernel talks to its runner over TCP on localhost;
without encryption"             nothing leaves the machine (given a ``NotebookClient``, the
                                kernel's own log shows errors only).
the fallback ``RuntimeWarning`` ``announce`` prints its banner (once) itself; its warning would
                                print the same message a second time.
=============================== ================================================================

``quiet_transformers()`` is the one blanket silence, for a block only: transformers' own load
report and progress bars, where the caller reports what matters itself (``tools/make_offline_bert.py``).
"""
import contextlib
import logging
import warnings

KNOWN_LOG_MESSAGES = (
    # (logger name, a piece of the message it logs; logging filters see the unformatted text)
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast from"),  # at every call
    ("torchao", "Failed to load "),  # torchao's optional GPU kernels (.so files) on a CPU machine
    ("torchao.kernel.intmm", "Detected no triton"),  # triton compiles GPU kernels: not needed here
    ("torch.utils._pytree", "is an Enum subclass and is now natively supported"),  # torchao vs torch versions
)

KNOWN_WARNINGS = (
    # (message regex, matched at the start of the message; category; module regex)
    (r"IProgress not found", "TqdmWarning", r"tqdm(\..*)?$"),
    (r"torch\.ao\.quantization is deprecated", DeprecationWarning, r"__main__"),  # the benchmark's caller
    (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation",
     UserWarning, r"torch\.ao\..*"),
    (r"(The model hub is not reachable|Neither the dataset hub nor a local wikitext|FALLBACK RUN)",
     RuntimeWarning, r"given\..*|__main__"),
)


class _DropMessagesContaining(logging.Filter):
    def __init__(self, fragment):
        super().__init__()
        self.fragment = fragment

    def filter(self, record):
        return self.fragment not in str(record.msg)


KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
"""The kernel runs in a process of its own: its start-up log (the TCP warning) is quieted by its
command line, not by a filter here."""


def quiet_known_noise(notebook_client=None):
    """Install the filters above (calling it twice installs nothing twice).

    Args:
        notebook_client: an ``nbclient.NotebookClient`` whose kernel should start quietly, or None.
    """
    if notebook_client is not None:
        notebook_client.extra_arguments = [*notebook_client.extra_arguments,
                                           *(a for a in KERNEL_ARGUMENTS
                                             if a not in notebook_client.extra_arguments)]
    for logger_name, fragment in KNOWN_LOG_MESSAGES:
        logger = logging.getLogger(logger_name)
        if not any(getattr(f, "fragment", None) == fragment for f in logger.filters):
            logger.addFilter(_DropMessagesContaining(fragment))
    for message, category, module in KNOWN_WARNINGS:
        if isinstance(category, str):  # tqdm's own class: import tqdm only when it is installed
            category = _tqdm_warning_class()
            if category is None:
                continue
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def _tqdm_warning_class():
    try:
        from tqdm.std import TqdmWarning
    except ImportError:
        return None
    return TqdmWarning


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars inside the block (restored after it)."""
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
