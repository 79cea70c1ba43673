"""The same training step in stock PyTorch: what a provider in `tolerance` mode computes.

Built from `torch.nn.Linear`, `torch.nn.ReLU`, `torch.nn.functional.cross_entropy` and
`torch.optim.SGD`/`torch.optim.AdamW` (single-tensor implementations, `foreach=False`),
loaded with a `TrainState` and read back into one, so the gap between torch and the
reproducible kernels can be measured step by step (specs/proof.md §1.7).

`TorchTrainer` keeps the model and the optimizer alive across steps, as a training loop
does; `torch_train_step` is one step of a freshly loaded trainer. Both give the same bits:
torch's optimizers keep nothing a `TrainState` does not hold (the AdamW step count is the
state's step), so continuing a trainer and reloading it from the state it returned are
the same computation (tested).

Where torch keeps no state the kernels keep, the state is completed by the kernels' rule:
AdamW's beta powers are advanced by one float32 multiplication, and SGD with momentum 0
(where torch keeps no buffer) stores the step's gradient with weight decay as its buffer.

Determinism: on the CPU, PyTorch is bitwise deterministic for a fixed thread count, and
the trainer pins it to `TORCH_THREADS` while it works. On CUDA it runs with
`torch.use_deterministic_algorithms(True)`, TF32 off and cuBLAS's fixed workspace
(`CUBLAS_WORKSPACE_CONFIG`, which must be set before CUDA starts: `cuda_environment`), so
re-running a segment on the same GPU model reproduces its hashes; a CPU and a GPU
trajectory differ, and are compared within the tolerance bounds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from verifier.kernels import check_batch, check_hyper
from verifier.model import AdamWHyper, Float32Array, Hyper, TrainState

TORCH_THREADS = 1
CUBLAS_WORKSPACE = ":4096:8"


def cuda_environment() -> None:
    """Make cuBLAS deterministic; call before the first CUDA operation of the process."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def default_device() -> str:
    """ "cuda" when PyTorch sees a GPU, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def _pinned_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tensor(array: npt.NDArray[Any], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(device)


def _numpy(tensor: torch.Tensor) -> Float32Array:
    array: Float32Array = tensor.detach().cpu().numpy().astype(np.float32, copy=True)
    return array


class TorchTrainer:
    """A torch model and optimizer loaded from a `TrainState`, stepped in place."""

    def __init__(self, state: TrainState, hyper: Hyper, device: str = "cpu") -> None:
        check_hyper(state, hyper)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            cuda_environment()
            torch.use_deterministic_algorithms(True)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.hyper = hyper
        self.state = state
        layers: list[torch.nn.Module] = []
        weights, biases = state.params[0::2], state.params[1::2]
        for index, (w, b) in enumerate(zip(weights, biases, strict=True)):
            linear = torch.nn.Linear(w.shape[1], w.shape[0], device=self.device)
            with torch.no_grad():
                linear.weight.copy_(_tensor(w, self.device))
                linear.bias.copy_(_tensor(b, self.device))
            layers.append(linear)
            if index < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        self.params = list(self.net.parameters())
        self.optimizer: torch.optim.Optimizer
        if isinstance(hyper, AdamWHyper):
            self.optimizer = torch.optim.AdamW(
                self.params,
                lr=float(hyper.lr),
                betas=(float(hyper.beta1), float(hyper.beta2)),
                eps=float(hyper.eps),
                weight_decay=float(hyper.weight_decay),
                foreach=False,
            )
            for p, m, v in zip(self.params, state.slot("m"), state.slot("v"), strict=True):
                self.optimizer.state[p] = {
                    "step": torch.tensor(float(state.step), dtype=torch.float32),
                    "exp_avg": _tensor(m, self.device),
                    "exp_avg_sq": _tensor(v, self.device),
                }
        else:
            self.optimizer = torch.optim.SGD(
                self.params,
                lr=float(hyper.lr),
                momentum=float(hyper.momentum),
                weight_decay=float(hyper.weight_decay),
                foreach=False,
            )
            # torch starts the momentum buffer from the first gradient when it has none,
            # which is the kernels' rule for state 0 (whose buffers are zero).
            if state.step > 0 and hyper.momentum != 0:
                for p, buf in zip(self.params, state.slot("momentum"), strict=True):
                    self.optimizer.state[p] = {"momentum_buffer": _tensor(buf, self.device)}

    def step(self, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> tuple[TrainState, float]:
        """Train one step on the batch; the next state and the loss at the state before."""
        state, hyper = self.state, self.hyper
        check_batch(state.widths, x, y)
        with _pinned_threads(TORCH_THREADS):
            inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            labels = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)
            loss = torch.nn.functional.cross_entropy(self.net(inputs), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            grads = [p.grad for p in self.params if p.grad is not None]
            buffers: list[Float32Array] = []
            if not isinstance(hyper, AdamWHyper) and hyper.momentum == 0:
                # Read before the step changes the parameters the weight decay term uses.
                decay = float(hyper.weight_decay)
                buffers = [
                    _numpy(g + decay * p) if decay != 0 else _numpy(g)
                    for g, p in zip(grads, self.params, strict=True)
                ]
            self.optimizer.step()
            new_params = [_numpy(p) for p in self.params]
            if isinstance(hyper, AdamWHyper):
                slots = self.optimizer.state
                ms = [_numpy(slots[p]["exp_avg"]) for p in self.params]
                vs = [_numpy(slots[p]["exp_avg_sq"]) for p in self.params]
                powers = [
                    np.float32(state.powers[0][()] * hyper.beta1),
                    np.float32(state.powers[1][()] * hyper.beta2),
                ]
                following = TrainState.create(
                    state.step + 1, state.optimizer, new_params, [ms, vs], powers
                )
            else:
                if hyper.momentum != 0:
                    slots = self.optimizer.state
                    buffers = [_numpy(slots[p]["momentum_buffer"]) for p in self.params]
                following = TrainState.create(
                    state.step + 1, state.optimizer, new_params, [buffers]
                )
        self.state = following
        return following, float(loss.item())


def torch_train_step(
    state: TrainState, x: npt.NDArray[Any], y: npt.NDArray[Any], hyper: Hyper
) -> TrainState:
    """State `step + 1` computed by stock PyTorch on the CPU, one thread."""
    following, _ = TorchTrainer(state, hyper).step(x, y)
    return following
