"""Canary tests: each must FAIL for every submission, honest or not (points 0).

A canary reported as passed means the run's test outcomes were changed from inside the test
process (the grader's plugin patched, records forged with its secret, ``torch.equal`` or
``assert_close`` replaced, ...): the grader flags the submission for a look by hand. They run
after the exercise's other tests, and they call the student's functions first, so a patch made
lazily, while tests run, is caught as well.
"""
import pytest
import torch

pytestmark = [pytest.mark.canary, pytest.mark.points(0)]


def _call_quietly(function, *args):
    """Call a student function for its side effects (a lazy patch); its result and errors do not matter."""
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - a stub raises NotImplementedError: still a canary
        pass


@pytest.mark.task("1.1")
@pytest.mark.ex1_quantization
def test_canary_quantization_assert():
    from quantization import absmax_quantize
    _call_quietly(absmax_quantize, torch.tensor([1.0, -2.0]))
    assert 127 == 128, "canary: this must fail"


@pytest.mark.task("1.3")
@pytest.mark.ex1_quantization
def test_canary_quantization_torch_equal():
    from quantization import fp16_quantize
    _call_quietly(fp16_quantize, torch.ones(3))
    assert torch.equal(torch.ones(3), torch.zeros(3)), "canary: this must fail"


@pytest.mark.task("2.1")
@pytest.mark.ex2_pruning
def test_canary_pruning_raises():
    from pruning import magnitude_mask
    _call_quietly(magnitude_mask, torch.randn(4, 4), 0.5)
    raise AssertionError("canary: this must fail")


@pytest.mark.task("2.1")
@pytest.mark.ex2_pruning
def test_canary_pruning_assert_close():
    torch.testing.assert_close(torch.zeros(2), torch.ones(2), msg="canary: this must fail")


@pytest.mark.task("3.1")
@pytest.mark.ex3_distillation
def test_canary_distillation_assert():
    from distillation import compute_distillation_loss
    _call_quietly(compute_distillation_loss, torch.randn(2, 3), torch.randn(2, 3), 2.0)
    assert 0.0 == 1.0, "canary: this must fail"


@pytest.mark.task("3.1")
@pytest.mark.ex3_distillation
def test_canary_distillation_assert_close():
    torch.testing.assert_close(torch.zeros(2), torch.ones(2), msg="canary: this must fail")
