"""Property tests: inputs drawn by hypothesis, biased toward the cases a contract names.

A graded property test checks one contract on many inputs against an oracle written in the test
(never against stored answers). Its inputs come from strategies that favour the edges where a
plausible implementation goes wrong: ties at a boundary, exact zeros, halves, tiny values, a
single element, shapes beyond the common 2-D case. When a property fails, hypothesis shrinks the
input to a small one and prints it ("Falsifying example: ...").

Seeding follows the other tests (``run_seed()``): the same examples every time you run them, a
fresh draw for every grading run.
"""
import functools

import hypothesis
import torch
from hypothesis import HealthCheck, strategies as st

from tests.helpers import UNFINISHED_RE, run_seed

PROPERTY_SETTINGS = hypothesis.settings(
    max_examples=40,
    deadline=None,          # the machine is shared: no timing-based failures
    database=None,          # nothing written to disk (the grader's tree is read-only)
    derandomize=False,      # the seed below decides
    print_blob=False,
    # No "explain" phase: it imports libcst, whose DeprecationWarnings filled a student's screen
    # whenever a property test met an unwritten exercise; the falsifying example is still printed.
    phases=tuple(phase for phase in hypothesis.Phase if phase != hypothesis.Phase.explain),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


class _Unfinished(BaseException):
    """Carries a stub's NotImplementedError through hypothesis, which would otherwise shrink it
    (as a real failure) at length: an unwritten exercise fails at once, reported as unfinished."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def property_test(*strategies, max_examples=None, **named_strategies):
    """``@given(...)`` with the lab's settings and the run's seed (see the module docstring)."""
    def decorate(test):
        settings = PROPERTY_SETTINGS if max_examples is None else hypothesis.settings(
            PROPERTY_SETTINGS, max_examples=max_examples)

        @functools.wraps(test)
        def stops_at_a_stub(*args, **kwargs):
            try:
                return test(*args, **kwargs)
            except NotImplementedError as error:
                if UNFINISHED_RE.match(str(error)):
                    raise _Unfinished(error) from None
                raise

        wrapped = hypothesis.seed(run_seed())(settings(
            hypothesis.given(*strategies, **named_strategies)(stops_at_a_stub)))

        @functools.wraps(wrapped)
        def property_or_stub(*args, **kwargs):
            try:
                return wrapped(*args, **kwargs)
            except _Unfinished as unfinished:
                raise unfinished.error from None
        return property_or_stub
    return decorate


# ---------------------------------------------------------------------------------------------
# Values and tensors, biased toward the edges
# ---------------------------------------------------------------------------------------------

EDGE_VALUES = (0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.5, 1e-7, -1e-7, 1e-20, 3.0, 100.0)
"""Values that meet boundaries: zeros of both signs, halves, tiny magnitudes, small integers."""


def float_values(max_magnitude=1e3):
    """One float32-representable value: edge values often, otherwise any finite float."""
    return st.one_of(
        st.sampled_from(EDGE_VALUES),
        # No subnormals (below 1.2e-38): their means cannot be compared to a relative tolerance.
        st.floats(-max_magnitude, max_magnitude, allow_nan=False, allow_infinity=False,
                  allow_subnormal=False, width=32),
        st.integers(-8, 8).map(lambda i: i / 2),  # halves and small integers: many ties
    )


@st.composite
def shapes(draw, min_dims=1, max_dims=4, min_side=1, max_side=6):
    return tuple(draw(st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims)))


@st.composite
def float_tensors(draw, shape=None, min_dims=1, max_dims=4, min_side=1, max_side=6,
                  max_magnitude=1e3, non_contiguous=True):
    """A float32 tensor built from ``float_values``: ties, zeros and halves are common; sometimes
    all zeros, sometimes one repeated magnitude; sometimes a non-contiguous (transposed) view."""
    shape = shape if shape is not None else draw(shapes(min_dims, max_dims, min_side, max_side))
    count = int(torch.Size(shape).numel())
    kind = draw(st.sampled_from(["mixed", "mixed", "mixed", "zeros", "ties"]))
    if kind == "zeros":
        values = [0.0] * count
    elif kind == "ties":
        magnitude = draw(st.sampled_from([0.1, 0.5, 1.0, 3.0]))
        values = [magnitude * draw(st.sampled_from([1.0, -1.0, 0.0])) for _ in range(count)]
    else:
        values = draw(st.lists(float_values(max_magnitude), min_size=count, max_size=count))
    tensor = torch.tensor(values, dtype=torch.float32).reshape(shape)
    if non_contiguous and tensor.dim() >= 2 and draw(st.booleans()):
        tensor = tensor.transpose(0, -1).contiguous().transpose(0, -1)  # same values, other strides
    return tensor
