"""The same training step in stock PyTorch: what a provider in `tolerance` mode computes.

Built from `torch.nn.Linear`, `torch.nn.ReLU`, `torch.nn.functional.cross_entropy` and
`torch.optim.SGD`/`torch.optim.AdamW` (single-tensor implementations, `foreach=False`),
loaded with a `TrainState` and read back into one, so the gap between torch and the
reproducible kernels can be measured step by step (specs/proof.md §1.7). PyTorch on the CPU
is bitwise deterministic for a fixed thread count, and this pins it to one thread for the
duration of the step.

Where torch keeps no state the kernels keep, the state is completed by the kernels' rule:
AdamW's beta powers are advanced by one float32 multiplication, and SGD with momentum 0
(where torch keeps no buffer) stores the step's gradient with weight decay as its buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from verifier.kernels import check_batch, check_hyper
from verifier.model import AdamWHyper, Float32Array, Hyper, TrainState

TORCH_THREADS = 1


@contextmanager
def _pinned_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _network(state: TrainState) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    weights, biases = state.params[0::2], state.params[1::2]
    for index, (w, b) in enumerate(zip(weights, biases, strict=True)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.copy()))
            linear.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(linear)
        if index < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _numpy(tensor: torch.Tensor) -> Float32Array:
    array: Float32Array = tensor.detach().numpy().astype(np.float32, copy=True)
    return array


def torch_train_step(
    state: TrainState, x: npt.NDArray[Any], y: npt.NDArray[Any], hyper: Hyper
) -> TrainState:
    """State `step + 1` computed by stock PyTorch on the CPU, one thread."""
    check_hyper(state, hyper)
    check_batch(state.widths, x, y)
    with _pinned_threads(TORCH_THREADS):
        net = _network(state)
        params = list(net.parameters())
        old = [p.detach().clone() for p in params]
        optimizer: torch.optim.Optimizer
        if isinstance(hyper, AdamWHyper):
            optimizer = torch.optim.AdamW(
                params,
                lr=float(hyper.lr),
                betas=(float(hyper.beta1), float(hyper.beta2)),
                eps=float(hyper.eps),
                weight_decay=float(hyper.weight_decay),
                foreach=False,
            )
            for p, m, v in zip(params, state.slot("m"), state.slot("v"), strict=True):
                optimizer.state[p] = {
                    "step": torch.tensor(float(state.step), dtype=torch.float32),
                    "exp_avg": torch.from_numpy(m.copy()),
                    "exp_avg_sq": torch.from_numpy(v.copy()),
                }
        else:
            optimizer = torch.optim.SGD(
                params,
                lr=float(hyper.lr),
                momentum=float(hyper.momentum),
                weight_decay=float(hyper.weight_decay),
                foreach=False,
            )
            if state.step > 0 and hyper.momentum != 0:
                for p, buf in zip(params, state.slot("momentum"), strict=True):
                    optimizer.state[p] = {"momentum_buffer": torch.from_numpy(buf.copy())}
        loss = torch.nn.functional.cross_entropy(
            net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))),
            torch.from_numpy(np.asarray(y, dtype=np.int64)),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        grads = [p.grad.detach().clone() for p in params if p.grad is not None]
        optimizer.step()
        new_params = [_numpy(p) for p in params]
        if isinstance(hyper, AdamWHyper):
            ms = [_numpy(optimizer.state[p]["exp_avg"]) for p in params]
            vs = [_numpy(optimizer.state[p]["exp_avg_sq"]) for p in params]
            powers = [
                np.float32(state.powers[0][()] * hyper.beta1),
                np.float32(state.powers[1][()] * hyper.beta2),
            ]
            return TrainState.create(state.step + 1, state.optimizer, new_params, [ms, vs], powers)
        if hyper.momentum != 0:
            buffers = [_numpy(optimizer.state[p]["momentum_buffer"]) for p in params]
        else:
            buffers = [
                _numpy(g + float(hyper.weight_decay) * p0) if hyper.weight_decay != 0 else _numpy(g)
                for g, p0 in zip(grads, old, strict=True)
            ]
        return TrainState.create(state.step + 1, state.optimizer, new_params, [buffers])
