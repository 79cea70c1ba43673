"""Reproducible CPU kernels for one training step of the job's MLP (specs/proof.md §1).

Every kernel is `numba.njit(fastmath=False)`: each float32 operation is one IEEE operation
rounded to nearest even, and LLVM may not reassociate or contract them (no FMA; the tests
read the generated assembly to make sure). Each output element is accumulated in float32
in the order the spec fixes; work is split between threads (`prange`) and SIMD lanes only
across independent output elements, never across a reduction, so the result is the same
bit for bit whatever the thread count and vector width.

Activations are kept transposed, (features, batch): the forward pass and the input gradient
then run their innermost loop across the batch, where consecutive elements are independent
outputs, and the weight gradient runs it across a row of W. That changes which elements
are computed together, never the order in which one element is summed.

The layers are driven from Python (`forward_backward`, `train_step`): each kernel has one
signature (2-d and 1-d C-contiguous float32 arrays, read-only where they come from a
state), so Numba compiles each once per process whatever the model's depth.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from numba import njit, prange

from verifier import float32_math
from verifier.errors import InvalidBatch
from verifier.model import AdamWHyper, Float32Array, Hyper, SgdHyper, TrainState

# Rows of W handled together in the forward pass (their activations row is reused from L1)
# and input-gradient rows handled together in the backward pass (one cache line of W).
forward_rows_block = 4
weight_rows_block = 4
weight_cols_chunk = 512
input_grad_block = 16

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@njit(fastmath=False, cache=False, inline="always")
def _mul(a: Any, b: Any) -> Any:
    return a * b


@njit(fastmath=False, cache=False, inline="always")
def _add(a: Any, b: Any) -> Any:
    return a + b


@njit(fastmath=False, cache=False, inline="always")
def _sub(a: Any, b: Any) -> Any:
    return a - b


_exp_source, _log_source = float32_math.build(_mul, _add, _sub, math.frexp, math.ldexp)
exp32 = njit(fastmath=False, cache=False)(_exp_source)
log32 = njit(fastmath=False, cache=False)(_log_source)


@njit(fastmath=False, cache=False, nogil=True)
def map_exp32(x: Any, out: Any) -> None:
    """out[e] = exp32(x[e]) for a 1-d float32 array (for accuracy measurements)."""
    for e in range(x.size):
        out[e] = exp32(x[e])


@njit(fastmath=False, cache=False, nogil=True)
def map_log32(x: Any, out: Any) -> None:
    """out[e] = log32(x[e]) for a 1-d float32 array (for accuracy measurements)."""
    for e in range(x.size):
        out[e] = log32(x[e])


@njit(fastmath=False, cache=False, parallel=True, nogil=True)
def linear_forward(w: Any, b: Any, a_t: Any, z_t: Any, relu: bool) -> None:
    """z_t[j, i] = (Σ_k ascending w[j, k] ⊗ a_t[k, i]) ⊕ b[j], then ReLU if `relu`.

    Four consecutive k are added in one expression, left to right: the order of each
    element's sum is unchanged, and its running value is loaded and stored a quarter as
    often.
    """
    rows, inputs = w.shape
    batch = a_t.shape[1]
    blocks = (rows + forward_rows_block - 1) // forward_rows_block
    main = inputs - inputs % 4
    for block in prange(blocks):
        j0 = block * forward_rows_block
        j1 = min(j0 + forward_rows_block, rows)
        for j in range(j0, j1):
            for i in range(batch):
                z_t[j, i] = _ZERO
        for k in range(0, main, 4):
            for j in range(j0, j1):
                w0, w1, w2, w3 = w[j, k], w[j, k + 1], w[j, k + 2], w[j, k + 3]
                for i in range(batch):
                    z_t[j, i] = (
                        ((z_t[j, i] + w0 * a_t[k, i]) + w1 * a_t[k + 1, i]) + w2 * a_t[k + 2, i]
                    ) + w3 * a_t[k + 3, i]
        for k in range(main, inputs):
            for j in range(j0, j1):
                wjk = w[j, k]
                for i in range(batch):
                    z_t[j, i] = z_t[j, i] + wjk * a_t[k, i]
        for j in range(j0, j1):
            bj = b[j]
            for i in range(batch):
                v = z_t[j, i] + bj
                if relu and not v > _ZERO:
                    v = _ZERO
                z_t[j, i] = v


@njit(fastmath=False, cache=False, nogil=True)
def softmax_cross_entropy(z_t: Any, labels: Any, dz_t: Any, losses: Any) -> Any:
    """Mean loss over the batch; dz_t = (softmax ⊖ onehot) ⊘ B, column i per example."""
    classes, batch = z_t.shape
    count = np.float32(batch)
    for i in range(batch):
        m = z_t[0, i]
        for j in range(1, classes):
            if z_t[j, i] > m:
                m = z_t[j, i]
        s = _ZERO
        for j in range(classes):
            e = exp32(z_t[j, i] - m)
            dz_t[j, i] = e
            s = s + e
        y = labels[i]
        losses[i] = log32(s) - (z_t[y, i] - m)
        for j in range(classes):
            p = dz_t[j, i] / s
            if j == y:
                p = p - _ONE
            dz_t[j, i] = p / count
    total = _ZERO
    for i in range(batch):
        total = total + losses[i]
    return total / count


@njit(fastmath=False, cache=False, parallel=True, nogil=True)
def weight_grads(dz_t: Any, a: Any, dw: Any, db: Any) -> None:
    """dw[j, k] = Σ_i ascending dz_t[j, i] ⊗ a[i, k]; db[j] = Σ_i ascending dz_t[j, i].

    Rows of dw are computed in blocks of `weight_rows_block` over chunks of
    `weight_cols_chunk` columns, so the four rows of `a` each pass reads stay in L1; four
    consecutive i are added in one left-to-right expression.
    """
    rows, batch = dz_t.shape
    inputs = a.shape[1]
    blocks = (rows + weight_rows_block - 1) // weight_rows_block
    main = batch - batch % 4
    for block in prange(blocks):
        j0 = block * weight_rows_block
        j1 = min(j0 + weight_rows_block, rows)
        for j in range(j0, j1):
            acc = _ZERO
            for i in range(batch):
                acc = acc + dz_t[j, i]
            db[j] = acc
        for c0 in range(0, inputs, weight_cols_chunk):
            c1 = min(c0 + weight_cols_chunk, inputs)
            # Loops over 1-d views from index 0: Numba then knows the index is not
            # negative, skips its wraparound check, and LLVM vectorizes with plain loads.
            width = c1 - c0
            for j in range(j0, j1):
                out = dw[j, c0:c1]
                for k in range(width):
                    out[k] = _ZERO
            for i in range(0, main, 4):
                r0, r1, r2, r3 = a[i, c0:c1], a[i + 1, c0:c1], a[i + 2, c0:c1], a[i + 3, c0:c1]
                for j in range(j0, j1):
                    g0, g1, g2, g3 = dz_t[j, i], dz_t[j, i + 1], dz_t[j, i + 2], dz_t[j, i + 3]
                    out = dw[j, c0:c1]
                    for k in range(width):
                        out[k] = (((out[k] + g0 * r0[k]) + g1 * r1[k]) + g2 * r2[k]) + g3 * r3[k]
            for i in range(main, batch):
                r0 = a[i, c0:c1]
                for j in range(j0, j1):
                    g = dz_t[j, i]
                    out = dw[j, c0:c1]
                    for k in range(width):
                        out[k] = out[k] + g * r0[k]


@njit(fastmath=False, cache=False, parallel=True, nogil=True)
def input_grads(w: Any, dz_t: Any, a_t: Any, da_t: Any) -> None:
    """da_t[k, i] = Σ_j ascending w[j, k] ⊗ dz_t[j, i] where a_t[k, i] > 0, else 0.

    Blocks of `input_grad_block` rows k (one cache line of a row of w), four consecutive j
    added in one left-to-right expression.
    """
    rows, inputs = w.shape
    batch = dz_t.shape[1]
    blocks = (inputs + input_grad_block - 1) // input_grad_block
    main = rows - rows % 4
    for block in prange(blocks):
        k0 = block * input_grad_block
        k1 = min(k0 + input_grad_block, inputs)
        for k in range(k0, k1):
            for i in range(batch):
                da_t[k, i] = _ZERO
        for j in range(0, main, 4):
            for k in range(k0, k1):
                w0, w1, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
                for i in range(batch):
                    da_t[k, i] = (
                        ((da_t[k, i] + w0 * dz_t[j, i]) + w1 * dz_t[j + 1, i]) + w2 * dz_t[j + 2, i]
                    ) + w3 * dz_t[j + 3, i]
        for j in range(main, rows):
            for k in range(k0, k1):
                wjk = w[j, k]
                for i in range(batch):
                    da_t[k, i] = da_t[k, i] + wjk * dz_t[j, i]
        for k in range(k0, k1):
            for i in range(batch):
                if not a_t[k, i] > _ZERO:
                    da_t[k, i] = _ZERO


@njit(fastmath=False, cache=False, parallel=True, nogil=True)
def sgd_update(
    p: Any, g: Any, buf: Any, p_out: Any, buf_out: Any, lr: Any, momentum: Any, wd: Any, first: bool
) -> None:
    """torch.optim.SGD (no dampening, no Nesterov), element by element (specs/proof.md §1.4)."""
    for e in prange(p.size):
        d = g[e]
        if wd != _ZERO:
            d = d + wd * p[e]
        v = d if first or momentum == _ZERO else buf[e] * momentum + d
        buf_out[e] = v
        p_out[e] = p[e] - lr * v


@njit(fastmath=False, cache=False, parallel=True, nogil=True)
def adamw_update(
    p: Any,
    g: Any,
    m: Any,
    v: Any,
    p_out: Any,
    m_out: Any,
    v_out: Any,
    decay: Any,
    beta1: Any,
    one_minus_beta1: Any,
    beta2: Any,
    one_minus_beta2: Any,
    step_size: Any,
    bc2_sqrt: Any,
    eps: Any,
) -> None:
    """torch.optim.AdamW's update, element by element, with float32 scalars (§1.4)."""
    for e in prange(p.size):
        ge = g[e]
        me = beta1 * m[e] + one_minus_beta1 * ge
        ve = beta2 * v[e] + one_minus_beta2 * ge * ge
        denom = math.sqrt(ve) / bc2_sqrt + eps
        m_out[e] = me
        v_out[e] = ve
        p_out[e] = p[e] * decay - step_size * (me / denom)


def _readonly(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A read-only view, so that every kernel argument has one Numba type (one compile)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def check_batch(widths: tuple[int, ...], x: npt.NDArray[Any], y: npt.NDArray[Any]) -> None:
    """Refuse a batch whose shapes, dtypes or labels do not fit the model."""
    if x.ndim != 2 or x.shape[1] != widths[0] or x.dtype != np.float32:
        raise InvalidBatch(f"x: expected float32 (B, {widths[0]}), got {x.dtype} {x.shape}")
    if x.shape[0] < 1:
        raise InvalidBatch("x: the batch is empty")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise InvalidBatch(f"y: expected integer labels ({x.shape[0]},), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= widths[-1]:
        raise InvalidBatch(f"y: labels must lie in 0 … {widths[-1] - 1}")


def forward_backward(
    params: tuple[Float32Array, ...], x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[np.float32, tuple[Float32Array, ...]]:
    """Loss and gradients (dW0, db0, dW1, …) of the batch (rows of x in the order given)."""
    weights = [_readonly(np.ascontiguousarray(w, dtype=np.float32)) for w in params[0::2]]
    biases = [_readonly(np.ascontiguousarray(b, dtype=np.float32)) for b in params[1::2]]
    widths = (weights[0].shape[1], *(w.shape[0] for w in weights))
    check_batch(widths, x, y)
    batch = x.shape[0]
    layers = len(weights)
    # activations_t[l] is the input of layer l, (width[l], B); rows[l] the same as (B, width).
    rows = [np.ascontiguousarray(x)]
    activations_t = [np.ascontiguousarray(x.T)]
    z_t = np.empty((widths[-1], batch), dtype=np.float32)
    for layer in range(layers):
        hidden = layer < layers - 1
        out = np.empty((widths[layer + 1], batch), dtype=np.float32) if hidden else z_t
        linear_forward(weights[layer], biases[layer], activations_t[layer], out, hidden)
        if hidden:
            activations_t.append(out)
            rows.append(np.ascontiguousarray(out.T))
    dz_t = np.empty_like(z_t)
    losses = np.empty(batch, dtype=np.float32)
    loss = np.float32(
        softmax_cross_entropy(z_t, np.ascontiguousarray(y, dtype=np.int64), dz_t, losses)
    )
    grads: list[Float32Array] = [np.empty(0, np.float32)] * (2 * layers)
    for layer in reversed(range(layers)):
        dw = np.empty_like(weights[layer])
        db = np.empty_like(biases[layer])
        weight_grads(dz_t, rows[layer], dw, db)
        grads[2 * layer], grads[2 * layer + 1] = dw, db
        if layer > 0:
            da_t = np.empty_like(activations_t[layer])
            input_grads(weights[layer], dz_t, activations_t[layer], da_t)
            dz_t = da_t
    return loss, tuple(grads)


def adamw_scalars(
    hyper: AdamWHyper, beta1_power: np.float32, beta2_power: np.float32
) -> dict[str, np.float32]:
    """The per-step float32 scalars of AdamW (specs/proof.md §1.4), from the stored powers."""
    one = np.float32(1.0)
    b1p = np.float32(beta1_power * hyper.beta1)
    b2p = np.float32(beta2_power * hyper.beta2)
    return {
        "beta1_power": b1p,
        "beta2_power": b2p,
        "decay": np.float32(one - np.float32(hyper.lr * hyper.weight_decay)),
        "one_minus_beta1": np.float32(one - hyper.beta1),
        "one_minus_beta2": np.float32(one - hyper.beta2),
        "step_size": np.float32(hyper.lr / np.float32(one - b1p)),
        "bc2_sqrt": np.float32(np.sqrt(np.float32(one - b2p))),
    }


def check_hyper(state: TrainState, hyper: Hyper) -> None:
    """Programmer errors: the hyperparameters must match the state's optimizer, as float32."""
    assert hyper.name == state.optimizer, (hyper.name, state.optimizer)
    for value in (getattr(hyper, f) for f in hyper.__slots__):
        assert isinstance(value, np.float32), value


def train_step(
    state: TrainState, x: npt.NDArray[Any], y: npt.NDArray[Any], hyper: Hyper
) -> TrainState:
    """State `step + 1` from state `step` and the step's batch (rows ascending by index)."""
    check_hyper(state, hyper)
    _, grads = forward_backward(state.params, x, y)
    return apply_update(state, grads, hyper)


def apply_update(state: TrainState, grads: tuple[Float32Array, ...], hyper: Hyper) -> TrainState:
    """The optimizer's step on every parameter: the new state, step advanced by one."""
    params_out: list[Float32Array] = []
    if isinstance(hyper, SgdHyper):
        buffers_out: list[Float32Array] = []
        for p, g, buf in zip(state.params, grads, state.slot("momentum"), strict=True):
            p_out, buf_out = np.empty_like(p), np.empty_like(p)
            sgd_update(
                p.reshape(-1),
                g.reshape(-1),
                buf.reshape(-1),
                p_out.reshape(-1),
                buf_out.reshape(-1),
                hyper.lr,
                hyper.momentum,
                hyper.weight_decay,
                state.step == 0,
            )
            params_out.append(p_out)
            buffers_out.append(buf_out)
        return _advanced(state, params_out, (buffers_out,), ())
    scalars = adamw_scalars(hyper, np.float32(state.powers[0][()]), np.float32(state.powers[1][()]))
    ms_out: list[Float32Array] = []
    vs_out: list[Float32Array] = []
    for p, g, m, v in zip(state.params, grads, state.slot("m"), state.slot("v"), strict=True):
        p_out, m_out, v_out = np.empty_like(p), np.empty_like(p), np.empty_like(p)
        adamw_update(
            p.reshape(-1),
            g.reshape(-1),
            m.reshape(-1),
            v.reshape(-1),
            p_out.reshape(-1),
            m_out.reshape(-1),
            v_out.reshape(-1),
            scalars["decay"],
            hyper.beta1,
            scalars["one_minus_beta1"],
            hyper.beta2,
            scalars["one_minus_beta2"],
            scalars["step_size"],
            scalars["bc2_sqrt"],
            hyper.eps,
        )
        params_out.append(p_out)
        ms_out.append(m_out)
        vs_out.append(v_out)
    powers = (np.array(scalars["beta1_power"]), np.array(scalars["beta2_power"]))
    return _advanced(state, params_out, (ms_out, vs_out), powers)


def _advanced(
    state: TrainState,
    params: list[Float32Array],
    slots: tuple[list[Float32Array], ...],
    powers: tuple[Float32Array, ...],
) -> TrainState:
    """The next state from freshly computed arrays, which it takes over (made read-only)."""
    for array in (*params, *(a for slot in slots for a in slot), *powers):
        array.flags.writeable = False
    return TrainState(
        state.step + 1, state.optimizer, tuple(params), tuple(tuple(s) for s in slots), powers
    )


def step_hash(state: TrainState) -> bytes:
    """The state hash of specs/proof.md §1.6 (the commitment's leaf)."""
    return state.hash()


def set_threads(count: int) -> None:
    """Run the parallel kernels on `count` threads (results do not depend on it)."""
    numba.set_num_threads(count)
