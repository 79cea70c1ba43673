"""The project's float32 exp and log (specs/proof.md §1.5): accuracy, special values, and one
source giving the same bits compiled (Numba) and interpreted (numpy scalars)."""

from __future__ import annotations

import numpy as np
import pytest

from verifier.float32_math import py_exp32, py_log32
from verifier.kernels import exp32, log32, map_exp32, map_log32

F = np.float32
# The spec's accuracy statement: measured exhaustively over every float32 input, these
# are the documented maxima; the tests sample densely and require them.
EXP_ULP_MAX = 1.0
LOG_ULP_MAX = 1.0


def _ulp_error(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|result - reference| in units of the float32 spacing at the reference."""
    spacing = np.spacing(np.abs(reference).astype(np.float32)).astype(np.float64)
    return np.abs(result.astype(np.float64) - reference) / spacing


def _float32_range(lo: float, hi: float, count: int) -> np.ndarray:
    """`count` float32 values spread evenly over the bit patterns between lo and hi."""
    a, b = np.array([lo, hi], np.float32)
    if lo < 0 <= hi:
        neg = np.linspace(0x80000000, int(np.array(a).view(np.uint32)), count // 2)
        pos = np.linspace(0, int(np.array(b).view(np.uint32)), count - count // 2)
        bits = np.concatenate([neg, pos]).astype(np.uint32)
    else:
        bits = np.linspace(
            int(np.array(a).view(np.uint32)), int(np.array(b).view(np.uint32)), count
        ).astype(np.uint32)
    return bits.view(np.float32)


def test_exp_is_within_one_ulp_of_the_true_value() -> None:
    """Over 2 million inputs spread across its range, exp32 errs by less than one ulp."""
    x = _float32_range(-87.0, 88.7, 2_000_000)
    out = np.empty_like(x)
    map_exp32(x, out)
    reference = np.exp(x.astype(np.float64))
    assert _ulp_error(out, reference).max() < EXP_ULP_MAX


def test_exp_rounds_gently_into_the_subnormals() -> None:
    """Below e**-87.3 results are subnormal, within one subnormal step of the truth."""
    x = np.linspace(-103.9, -87.4, 100_000).astype(np.float32)
    out = np.empty_like(x)
    map_exp32(x, out)
    reference = np.exp(x.astype(np.float64))
    assert np.abs(out.astype(np.float64) - reference).max() <= 2.0**-149


def test_log_is_within_one_ulp_of_the_true_value() -> None:
    """Over 2 million positive inputs, normal and subnormal, log32 errs by less than one ulp."""
    x = _float32_range(1e-45, 3.4e38, 2_000_000)
    out = np.empty_like(x)
    map_log32(x, out)
    reference = np.log(x.astype(np.float64))
    assert _ulp_error(out, reference).max() < LOG_ULP_MAX


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.0, 1.0),
        (-0.0, 1.0),
        (1.0, float(np.float32(np.e))),
        (88.8, np.inf),
        (-104.0, 0.0),
        (np.inf, np.inf),
        (-np.inf, 0.0),
    ],
)
def test_exp_special_values(x: float, expected: float) -> None:
    """exp32 of 0 is 1 exactly, of 1 is e rounded, overflow is inf and underflow is 0."""
    assert exp32(F(x)) == F(expected)
    assert py_exp32(F(x)) == F(expected)


@pytest.mark.parametrize(
    ("x", "expected"),
    [(1.0, 0.0), (0.0, -np.inf), (np.inf, np.inf), (2.0, float(np.float32(np.log(2.0))))],
)
def test_log_special_values(x: float, expected: float) -> None:
    """log32 of 1 is 0 exactly, of 0 is -inf, of inf is inf, of 2 is ln 2 rounded."""
    assert log32(F(x)) == F(expected)
    assert py_log32(F(x)) == F(expected)


def test_nan_and_negative_inputs_give_nan() -> None:
    """NaN propagates through both; the log of a negative number is NaN."""
    for f in (exp32, log32, py_exp32, py_log32):
        assert np.isnan(f(F(np.nan)))
    assert np.isnan(log32(F(-1.0))) and np.isnan(py_log32(F(-1.0)))


def test_compiled_and_interpreted_sources_agree_bit_for_bit() -> None:
    """The Numba build and the numpy-scalar build of the one source give identical bits."""
    x = _float32_range(-103.0, 88.0, 3001)
    out = np.empty_like(x)
    map_exp32(x, out)
    assert out.view(np.uint32).tolist() == [int(np.array(py_exp32(v)).view(np.uint32)) for v in x]
    y = _float32_range(1e-45, 3e38, 3001)
    map_log32(y, out)
    assert out.view(np.uint32).tolist() == [int(np.array(py_log32(v)).view(np.uint32)) for v in y]
