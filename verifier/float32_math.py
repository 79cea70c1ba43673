"""Float32 `exp` and `log` built from correctly rounded +, -, *, / and exact operations.

libm's `expf`/`logf` and CUDA's `__expf`/`expf` differ in their last bits, and a training
step that calls them is then not reproducible across machines. These functions use only
operations whose results IEEE 754 fixes bit for bit: float32 +, -, * (each rounded once,
to nearest even; never fused), comparisons, `frexp` and `ldexp` with normal results
(exact), and integer <-> float conversion of small integers (exact). Normative text and
the measured accuracy: specs/proof.md §1.5.

The algorithms are written once, in `build`, over four arithmetic primitives, and compiled
three ways from that one source: for the CPU kernels (`numba.njit`, where `a * b` and
`a + b` are already single IEEE operations, because Numba without fastmath never lets LLVM
contract them), for the CUDA kernels (`numba.cuda.libdevice.fmul_rn` etc., which NVVM
never fuses into FMA) and as plain Python over numpy float32 scalars (for the reference
implementation and the CUDA simulator). The constants are the Cephes `expf`/`logf`
coefficients (S. L. Moshier), rounded to float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

F = np.float32
Binary = Callable[[Any, Any], Any]
Unary = Callable[[Any], Any]

# exp: x = n ln2 + r, |r| <= ln2 / 2, with ln2 split into C1 (9 significant bits, so n * C1
# is exact for |n| <= 2**15) and a small correction C2.
LOG2E = F(1.44269504088896341)
EXP_C1 = F(0.693359375)
EXP_C2 = F(-2.12194440e-4)
EXP_P = (
    F(1.9875691500e-4),
    F(1.3981999507e-3),
    F(8.3334519073e-3),
    F(4.1665795894e-2),
    F(1.6666665459e-1),
    F(5.0000001201e-1),
)
# Above EXP_HI the result overflows float32; below EXP_LO it is under half the smallest
# subnormal and rounds to zero.
EXP_HI = F(88.72283935546875)
EXP_LO = F(-103.97208404541016)
# Adding and subtracting 1.5 * 2**23 rounds a float32 of magnitude below 2**22 to the
# nearest integer (ties to even), with two exact-by-construction IEEE additions.
ROUND_MAGIC = F(12582912.0)
TWO_POW_M64 = F(2.0**-64)

# log: x = m 2**e with m in [sqrt(1/2), sqrt(2)), log x = log m + e ln2.
SQRT_HALF = F(0.707106781186547524)
LOG_P = (
    F(7.0376836292e-2),
    F(-1.1514610310e-1),
    F(1.1676998740e-1),
    F(-1.2420140846e-1),
    F(1.4249322787e-1),
    F(-1.6668057665e-1),
    F(2.0000714765e-1),
    F(-2.4999993993e-1),
    F(3.3333331174e-1),
)
LOG_C1 = F(0.693359375)
LOG_C2 = F(-2.12194440e-4)

ZERO = F(0.0)
HALF = F(0.5)
ONE = F(1.0)
INF = F(np.inf)
NAN = F(np.nan)


def build(
    mul: Binary, add: Binary, sub: Binary, frexp: Callable[[Any], tuple[Any, Any]], ldexp: Binary
) -> tuple[Unary, Unary]:
    """Return (exp32, log32) written over the given float32 primitives.

    `frexp` and `ldexp` are the exact C functions (`math.frexp`/`math.ldexp` under Numba);
    the caller passes them in because plain Python's versions return float64.
    """
    # Bound as locals so that Numba sees every constant as a float32 closure value.
    log2e, exp_c1, exp_c2 = LOG2E, EXP_C1, EXP_C2
    p0, p1, p2, p3, p4, p5 = EXP_P
    exp_hi, exp_lo, magic, two_m64 = EXP_HI, EXP_LO, ROUND_MAGIC, TWO_POW_M64
    sqrt_half, log_c1, log_c2 = SQRT_HALF, LOG_C1, LOG_C2
    q0, q1, q2, q3, q4, q5, q6, q7, q8 = LOG_P
    zero, half, one, inf, nan = ZERO, HALF, ONE, INF, NAN
    int32, float32 = np.int32, np.float32

    def exp32(x: Any) -> Any:
        if x != x:
            return x
        if x > exp_hi:
            return inf
        if x < exp_lo:
            return zero
        nf = sub(add(mul(x, log2e), magic), magic)
        r = sub(sub(x, mul(nf, exp_c1)), mul(nf, exp_c2))
        z = mul(r, r)
        p = add(mul(p0, r), p1)
        p = add(mul(p, r), p2)
        p = add(mul(p, r), p3)
        p = add(mul(p, r), p4)
        p = add(mul(p, r), p5)
        p = add(add(mul(p, z), r), one)
        n = int32(nf)
        if n < -125:
            # 2**n is below the normal range: scale in two steps so that the one rounding
            # into the subnormals is an IEEE multiplication, not ldexp's.
            return mul(ldexp(p, int32(n + 64)), two_m64)
        return ldexp(p, n)

    def log32(x: Any) -> Any:
        if x != x:
            return x
        if x < zero:
            return nan
        if x == zero:
            return -inf
        if x == inf:
            return x
        m, e = frexp(x)
        ef = float32(e)
        if m < sqrt_half:
            ef = sub(ef, one)
            f = sub(add(m, m), one)
        else:
            f = sub(m, one)
        z = mul(f, f)
        y = add(mul(q0, f), q1)
        y = add(mul(y, f), q2)
        y = add(mul(y, f), q3)
        y = add(mul(y, f), q4)
        y = add(mul(y, f), q5)
        y = add(mul(y, f), q6)
        y = add(mul(y, f), q7)
        y = add(mul(y, f), q8)
        y = mul(mul(y, f), z)
        y = add(y, mul(ef, log_c2))
        y = sub(y, mul(half, z))
        r = add(f, y)
        return add(r, mul(ef, log_c1))

    return exp32, log32


def _py_mul(a: Any, b: Any) -> Any:
    return F(a) * F(b)


def _py_add(a: Any, b: Any) -> Any:
    return F(a) + F(b)


def _py_sub(a: Any, b: Any) -> Any:
    return F(a) - F(b)


def _py_frexp(x: Any) -> tuple[Any, Any]:
    m, e = np.frexp(F(x))
    return F(m), np.int32(e)


def _py_ldexp(x: Any, n: Any) -> Any:
    return F(np.ldexp(F(x), int(n)))


# Plain Python over numpy float32 scalars: numpy computes float32 scalar arithmetic in
# float32 with one rounding per operation, as the kernels do. Slow; for the reference
# implementation in the tests and the CUDA simulator.
py_mul, py_add, py_sub, py_frexp, py_ldexp = _py_mul, _py_add, _py_sub, _py_frexp, _py_ldexp
py_exp32, py_log32 = build(py_mul, py_add, py_sub, py_frexp, py_ldexp)
