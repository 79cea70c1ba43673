"""CUDA kernels for one training step, bit for bit the CPU kernels' (specs/proof.md §1).

One thread computes one output element, accumulating in float32 in the order the spec
fixes, exactly as `verifier.kernels` does on the CPU. The CUDA compiler (NVVM) contracts a
multiplication followed by an addition into one fused multiply-add by default (its `-fma=1`
is on whether or not Numba's `fastmath` is), and an FMA rounds once where the spec rounds
twice. So no kernel here writes `a * b + c`: every float32 operation is a libdevice
round-to-nearest intrinsic (`fmul_rn`, `fadd_rn`, `fsub_rn`, `fdiv_rn`, `fsqrt_rn`,
numba.cuda.libdevice in Numba 0.68), which NVVM never fuses or reorders. `exp` and `log`
are the project's own (`verifier.float32_math`), compiled from the same source as the CPU
kernels' over these intrinsics. Subnormals are kept: Numba compiles without
flush-to-zero unless `fastmath` is set, and it is not.

Under the CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`, which must be set before `numba.cuda`
is first imported) the libdevice functions are stubs, so the same kernels run over plain
numpy float32 operations instead; the simulator never fuses anything, so it proves the
kernels' logic and order, and a real GPU proves the bits (the `gpu` test).

Layouts follow the CPU kernels: activations and their gradients are (features, batch), so
that the 32 threads of a warp (consecutive batch columns, or consecutive columns of a
weight row) read consecutive addresses and share one weight.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import cuda
from numba.core import config

from verifier import float32_math
from verifier.kernels import adamw_scalars, check_batch, check_hyper
from verifier.model import Float32Array, Hyper, SgdHyper, TrainState

SIMULATOR = bool(config.ENABLE_CUDASIM)

if SIMULATOR:
    _mul, _add, _sub = float32_math.py_mul, float32_math.py_add, float32_math.py_sub

    def _div(a: Any, b: Any) -> Any:
        return np.float32(a) / np.float32(b)

    def _sqrt(a: Any) -> Any:
        return np.sqrt(np.float32(a))

    _exp32_source, _log32_source = float32_math.py_exp32, float32_math.py_log32
    # Every simulated thread is a Python thread: small blocks keep the simulator quick.
    _BLOCK_2D = (8, 8)
    _BLOCK_1D = 64
else:
    from numba.cuda import libdevice

    _mul, _add, _sub = libdevice.fmul_rn, libdevice.fadd_rn, libdevice.fsub_rn
    _div, _sqrt = libdevice.fdiv_rn, libdevice.fsqrt_rn
    _exp32_source, _log32_source = float32_math.build(
        libdevice.fmul_rn, libdevice.fadd_rn, libdevice.fsub_rn, math.frexp, math.ldexp
    )
    _BLOCK_2D = (32, 8)
    _BLOCK_1D = 256

_exp32 = cuda.jit(device=True)(_exp32_source)
_log32 = cuda.jit(device=True)(_log32_source)

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@cuda.jit
def _linear_forward(w: Any, b: Any, a_t: Any, z_t: Any, z: Any, relu: bool) -> None:
    """z_t[j, i] = (Σ_k ascending w[j, k] ⊗ a_t[k, i]) ⊕ b[j], ReLU if `relu`; z = z_tᵀ."""
    i, j = cuda.grid(2)
    if i < z_t.shape[1] and j < z_t.shape[0]:
        acc = _ZERO
        for k in range(w.shape[1]):
            acc = _add(acc, _mul(w[j, k], a_t[k, i]))
        v = _add(acc, b[j])
        if relu and not v > _ZERO:
            v = _ZERO
        z_t[j, i] = v
        z[i, j] = v


@cuda.jit
def _softmax_cross_entropy(z_t: Any, labels: Any, dz_t: Any, losses: Any) -> None:
    """Column i: the example's loss and (softmax ⊖ onehot) ⊘ B."""
    i = cuda.grid(1)
    classes, batch = z_t.shape
    if i < batch:
        count = np.float32(batch)
        m = z_t[0, i]
        for j in range(1, classes):
            if z_t[j, i] > m:
                m = z_t[j, i]
        s = _ZERO
        for j in range(classes):
            e = _exp32(_sub(z_t[j, i], m))
            dz_t[j, i] = e
            s = _add(s, e)
        y = labels[i]
        losses[i] = _sub(_log32(s), _sub(z_t[y, i], m))
        for j in range(classes):
            p = _div(dz_t[j, i], s)
            if j == y:
                p = _sub(p, _ONE)
            dz_t[j, i] = _div(p, count)


@cuda.jit
def _mean_loss(losses: Any, out: Any) -> None:
    """out[0] = (Σ_i ascending losses[i]) ⊘ B, by one thread: a sum in order has no parallelism."""
    if cuda.grid(1) == 0:
        total = _ZERO
        for i in range(losses.shape[0]):
            total = _add(total, losses[i])
        out[0] = _div(total, np.float32(losses.shape[0]))


@cuda.jit
def _weight_grads(dz_t: Any, a: Any, dw: Any) -> None:
    """dw[j, k] = Σ_i ascending dz_t[j, i] ⊗ a[i, k]."""
    k, j = cuda.grid(2)
    if k < dw.shape[1] and j < dw.shape[0]:
        acc = _ZERO
        for i in range(a.shape[0]):
            acc = _add(acc, _mul(dz_t[j, i], a[i, k]))
        dw[j, k] = acc


@cuda.jit
def _bias_grads(dz_t: Any, db: Any) -> None:
    """db[j] = Σ_i ascending dz_t[j, i]."""
    j = cuda.grid(1)
    if j < db.shape[0]:
        acc = _ZERO
        for i in range(dz_t.shape[1]):
            acc = _add(acc, dz_t[j, i])
        db[j] = acc


@cuda.jit
def _input_grads(w: Any, dz_t: Any, a_t: Any, da_t: Any) -> None:
    """da_t[k, i] = Σ_j ascending w[j, k] ⊗ dz_t[j, i] where a_t[k, i] > 0, else 0."""
    i, k = cuda.grid(2)
    if i < da_t.shape[1] and k < da_t.shape[0]:
        acc = _ZERO
        for j in range(w.shape[0]):
            acc = _add(acc, _mul(w[j, k], dz_t[j, i]))
        if not a_t[k, i] > _ZERO:
            acc = _ZERO
        da_t[k, i] = acc


@cuda.jit
def _sgd_update(
    p: Any, g: Any, buf: Any, p_out: Any, buf_out: Any, lr: Any, momentum: Any, wd: Any, first: bool
) -> None:
    """torch.optim.SGD's update of one element (specs/proof.md §1.4)."""
    e = cuda.grid(1)
    if e < p.shape[0]:
        d = g[e]
        if wd != _ZERO:
            d = _add(d, _mul(wd, p[e]))
        v = d if first or momentum == _ZERO else _add(_mul(buf[e], momentum), d)
        buf_out[e] = v
        p_out[e] = _sub(p[e], _mul(lr, v))


@cuda.jit
def _adamw_update(
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
    """torch.optim.AdamW's update of one element, with float32 scalars (§1.4)."""
    e = cuda.grid(1)
    if e < p.shape[0]:
        ge = g[e]
        me = _add(_mul(beta1, m[e]), _mul(one_minus_beta1, ge))
        ve = _add(_mul(beta2, v[e]), _mul(_mul(one_minus_beta2, ge), ge))
        denom = _add(_div(_sqrt(ve), bc2_sqrt), eps)
        m_out[e] = me
        v_out[e] = ve
        p_out[e] = _sub(_mul(p[e], decay), _mul(step_size, _div(me, denom)))


def _grid_2d(columns: int, rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Blocks covering a (rows, columns) output with x along columns."""
    bx, by = _BLOCK_2D
    return (-(-columns // bx), -(-rows // by)), (bx, by)


def _grid_1d(count: int) -> tuple[int, int]:
    return -(-count // _BLOCK_1D), _BLOCK_1D


def available() -> bool:
    """Whether a CUDA GPU (or the simulator) can run these kernels."""
    return bool(cuda.is_available())


def _forward_backward_device(
    params: tuple[Float32Array, ...], x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[np.float32, list[Any]]:
    """Loss and device arrays of the gradients (dW0, db0, dW1, …)."""
    weights = [cuda.to_device(np.ascontiguousarray(w, dtype=np.float32)) for w in params[0::2]]
    biases = [cuda.to_device(np.ascontiguousarray(b, dtype=np.float32)) for b in params[1::2]]
    widths = (weights[0].shape[1], *(w.shape[0] for w in weights))
    check_batch(widths, x, y)
    batch = x.shape[0]
    layers = len(weights)
    rows = [cuda.to_device(np.ascontiguousarray(x, dtype=np.float32))]
    activations_t = [cuda.to_device(np.ascontiguousarray(x.T, dtype=np.float32))]
    for layer in range(layers):
        width = widths[layer + 1]
        out_t = cuda.device_array((width, batch), dtype=np.float32)
        out = cuda.device_array((batch, width), dtype=np.float32)
        blocks, threads = _grid_2d(batch, width)
        _linear_forward[blocks, threads](
            weights[layer], biases[layer], activations_t[layer], out_t, out, layer < layers - 1
        )
        activations_t.append(out_t)
        rows.append(out)
    z_t = activations_t.pop()
    rows.pop()
    dz_t = cuda.device_array_like(z_t)
    losses = cuda.device_array(batch, dtype=np.float32)
    labels = cuda.to_device(np.ascontiguousarray(y, dtype=np.int64))
    blocks1, threads1 = _grid_1d(batch)
    _softmax_cross_entropy[blocks1, threads1](z_t, labels, dz_t, losses)
    loss = cuda.device_array(1, dtype=np.float32)
    _mean_loss[1, 1](losses, loss)
    grads: list[Any] = [None] * (2 * layers)
    for layer in reversed(range(layers)):
        fan_out, fan_in = weights[layer].shape
        dw = cuda.device_array((fan_out, fan_in), dtype=np.float32)
        db = cuda.device_array(fan_out, dtype=np.float32)
        blocks, threads = _grid_2d(fan_in, fan_out)
        _weight_grads[blocks, threads](dz_t, rows[layer], dw)
        blocks1, threads1 = _grid_1d(fan_out)
        _bias_grads[blocks1, threads1](dz_t, db)
        grads[2 * layer], grads[2 * layer + 1] = dw, db
        if layer > 0:
            da_t = cuda.device_array((fan_in, batch), dtype=np.float32)
            blocks, threads = _grid_2d(batch, fan_in)
            _input_grads[blocks, threads](weights[layer], dz_t, activations_t[layer], da_t)
            dz_t = da_t
    return np.float32(loss.copy_to_host()[0]), grads


def forward_backward_cuda(
    params: tuple[Float32Array, ...], x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[np.float32, tuple[Float32Array, ...]]:
    """Loss and gradients on the GPU; equal bit for bit to `kernels.forward_backward`."""
    loss, grads = _forward_backward_device(params, x, y)
    return loss, tuple(g.copy_to_host() for g in grads)


def train_step_cuda(
    state: TrainState, x: npt.NDArray[Any], y: npt.NDArray[Any], hyper: Hyper
) -> TrainState:
    """State `step + 1` computed on the GPU; equal bit for bit to `kernels.train_step`."""
    check_hyper(state, hyper)
    _, grads = _forward_backward_device(state.params, x, y)
    params_out: list[Float32Array] = []
    if isinstance(hyper, SgdHyper):
        buffers_out: list[Float32Array] = []
        for p, g, buf in zip(state.params, grads, state.slot("momentum"), strict=True):
            p_dev = cuda.to_device(p.reshape(-1))
            buf_dev = cuda.to_device(buf.reshape(-1))
            p_out = cuda.device_array(p.size, dtype=np.float32)
            buf_out = cuda.device_array(p.size, dtype=np.float32)
            blocks, threads = _grid_1d(p.size)
            _sgd_update[blocks, threads](
                p_dev,
                g.reshape(p.size),
                buf_dev,
                p_out,
                buf_out,
                hyper.lr,
                hyper.momentum,
                hyper.weight_decay,
                state.step == 0,
            )
            params_out.append(p_out.copy_to_host().reshape(p.shape))
            buffers_out.append(buf_out.copy_to_host().reshape(p.shape))
        return TrainState.create(state.step + 1, state.optimizer, params_out, [buffers_out])
    scalars = adamw_scalars(hyper, np.float32(state.powers[0][()]), np.float32(state.powers[1][()]))
    ms_out: list[Float32Array] = []
    vs_out: list[Float32Array] = []
    for p, g, m, v in zip(state.params, grads, state.slot("m"), state.slot("v"), strict=True):
        outs = [cuda.device_array(p.size, dtype=np.float32) for _ in range(3)]
        blocks, threads = _grid_1d(p.size)
        _adamw_update[blocks, threads](
            cuda.to_device(p.reshape(-1)),
            g.reshape(p.size),
            cuda.to_device(m.reshape(-1)),
            cuda.to_device(v.reshape(-1)),
            *outs,
            scalars["decay"],
            hyper.beta1,
            scalars["one_minus_beta1"],
            hyper.beta2,
            scalars["one_minus_beta2"],
            scalars["step_size"],
            scalars["bc2_sqrt"],
            hyper.eps,
        )
        p_out, m_out, v_out = (o.copy_to_host().reshape(p.shape) for o in outs)
        params_out.append(p_out)
        ms_out.append(m_out)
        vs_out.append(v_out)
    powers = [scalars["beta1_power"], scalars["beta2_power"]]
    return TrainState.create(state.step + 1, state.optimizer, params_out, [ms_out, vs_out], powers)
