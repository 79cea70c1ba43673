"""The training step of specs/proof.md §1, written out as plainly as possible.

Slow (Python loops over numpy float32 scalars, one rounding per operation), in the spec's
own layout (no transposes, no blocking, no unrolling), and sharing nothing with the
kernels but the scalar exp/log source: the tests run it on tiny shapes and require the
kernels to agree with it bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from verifier.float32_math import py_exp32, py_log32
from verifier.model import AdamWHyper, Float32Array, Hyper, TrainState

F = np.float32


def forward_backward(
    params: tuple[Float32Array, ...], x: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[np.float32, list[Float32Array]]:
    """Loss and gradients, element by element in the order the spec fixes."""
    weights, biases = params[0::2], params[1::2]
    layers = len(weights)
    batch = x.shape[0]
    acts = [x.astype(F)]
    for layer in range(layers):
        w, b, a = weights[layer], biases[layer], acts[layer]
        out = np.zeros((batch, w.shape[0]), F)
        for i in range(batch):
            for j in range(w.shape[0]):
                acc = F(0)
                for k in range(w.shape[1]):
                    acc = F(acc + F(w[j, k] * a[i, k]))
                v = F(acc + b[j])
                if layer < layers - 1 and not v > 0:
                    v = F(0)
                out[i, j] = v
        acts.append(out)
    z = acts[-1]
    classes = z.shape[1]
    count = F(batch)
    dz = np.zeros_like(z)
    losses = []
    for i in range(batch):
        m = z[i, 0]
        for j in range(1, classes):
            if z[i, j] > m:
                m = z[i, j]
        e = [py_exp32(F(z[i, j] - m)) for j in range(classes)]
        s = F(0)
        for j in range(classes):
            s = F(s + e[j])
        losses.append(F(py_log32(s) - F(z[i, int(y[i])] - m)))
        for j in range(classes):
            p = F(e[j] / s)
            if j == int(y[i]):
                p = F(p - F(1))
            dz[i, j] = F(p / count)
    total = F(0)
    for value in losses:
        total = F(total + value)
    loss = F(total / count)
    grads: list[Float32Array] = [np.zeros(0, F)] * (2 * layers)
    for layer in reversed(range(layers)):
        w, a = weights[layer], acts[layer]
        dw = np.zeros_like(w)
        db = np.zeros(w.shape[0], F)
        for j in range(w.shape[0]):
            for k in range(w.shape[1]):
                acc = F(0)
                for i in range(batch):
                    acc = F(acc + F(dz[i, j] * a[i, k]))
                dw[j, k] = acc
            acc = F(0)
            for i in range(batch):
                acc = F(acc + dz[i, j])
            db[j] = acc
        grads[2 * layer], grads[2 * layer + 1] = dw, db
        if layer > 0:
            da = np.zeros_like(a)
            for i in range(batch):
                for k in range(w.shape[1]):
                    acc = F(0)
                    for j in range(w.shape[0]):
                        acc = F(acc + F(dz[i, j] * w[j, k]))
                    da[i, k] = acc if a[i, k] > 0 else F(0)
            dz = da
    return loss, grads


def train_step(
    state: TrainState, x: npt.NDArray[Any], y: npt.NDArray[Any], hyper: Hyper
) -> TrainState:
    """The next state, with the optimizer written element by element from the spec."""
    _, grads = forward_backward(state.params, x, y)
    one = F(1)
    if isinstance(hyper, AdamWHyper):
        b1p = F(state.powers[0][()] * hyper.beta1)
        b2p = F(state.powers[1][()] * hyper.beta2)
        decay = F(one - F(hyper.lr * hyper.weight_decay))
        c1, c2 = F(one - hyper.beta1), F(one - hyper.beta2)
        step_size = F(hyper.lr / F(one - b1p))
        bc2_sqrt = F(np.sqrt(F(one - b2p)))
        params, ms, vs = [], [], []
        for p, g, m, v in zip(state.params, grads, state.slot("m"), state.slot("v"), strict=True):
            p2, m2, v2 = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
            for e in np.ndindex(p.shape):
                me = F(F(hyper.beta1 * m[e]) + F(c1 * g[e]))
                ve = F(F(hyper.beta2 * v[e]) + F(F(c2 * g[e]) * g[e]))
                denom = F(F(np.sqrt(ve) / bc2_sqrt) + hyper.eps)
                p2[e] = F(F(p[e] * decay) - F(step_size * F(me / denom)))
                m2[e], v2[e] = me, ve
            params.append(p2)
            ms.append(m2)
            vs.append(v2)
        return TrainState.create(
            state.step + 1, state.optimizer, params, [ms, vs], [np.array(b1p), np.array(b2p)]
        )
    params, bufs = [], []
    for p, g, buf in zip(state.params, grads, state.slot("momentum"), strict=True):
        p2, b2 = np.zeros_like(p), np.zeros_like(p)
        for e in np.ndindex(p.shape):
            d = g[e]
            if hyper.weight_decay != 0:
                d = F(d + F(hyper.weight_decay * p[e]))
            v = d if state.step == 0 or hyper.momentum == 0 else F(F(buf[e] * hyper.momentum) + d)
            b2[e] = v
            p2[e] = F(p[e] - F(hyper.lr * v))
        params.append(p2)
        bufs.append(b2)
    return TrainState.create(state.step + 1, state.optimizer, params, [bufs])
