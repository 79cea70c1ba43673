"""Reproducible kernels against PyTorch's own training step, on the same machine.

For an MLP `width -> width -> 10` (one hidden layer) trained with AdamW on batches of 64:
- `kernels.step_ms_w{W}`: one `verifier.kernels.train_step` (forward, backward, update),
  with its ratio to torch's step (below 1 means faster than torch);
- `kernels.reexecute_ms_w{W}`: what a verifier pays per sampled step: the batch drawn by
  the job's rule, the step, and the SHA-256 state hash it compares;
- `kernels.torch_step_ms_w{W}`: the baseline, stock `torch.nn` + `torch.optim.AdamW`
  (torch's default, multi-tensor implementation) with torch's default thread count;
- on a machine with a CUDA GPU, `kernels.cuda_step_ms_w{W}` against torch on that GPU.
Each figure is the best of `rounds` timed runs, best because noise only ever slows a run.

Usage: python bench/bench_kernels.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import figure, finish, machine, say
from protocol.jobspec import MlpModel
from verifier import kernels
from verifier.model import AdamWHyper, batch_indices, init_state

WIDTHS = (256, 512, 1024, 2048)
QUICK_WIDTHS = (256, 512)
batch_size = 64
classes = 10
examples = 4096
rounds = 7
quick_rounds = 3
HYPER = AdamWHyper(
    np.float32(1e-3), np.float32(0.9), np.float32(0.999), np.float32(1e-8), np.float32(0.01)
)


def best_seconds(run: Callable[[], object], count: int) -> float:
    run()  # warm: compilation, allocator, caches
    best = float("inf")
    for _ in range(count):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def torch_step(width: int, x: np.ndarray, y: np.ndarray, device: str) -> Callable[[], object]:
    net = torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, classes)
    ).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


def measure(width: int, count: int) -> None:
    model = MlpModel(width, (width,), classes)
    state = init_state(model, "adamw", 1)
    rng = np.random.default_rng(width)
    data_x = rng.standard_normal((examples, width)).astype(np.float32)
    data_y = rng.integers(0, classes, examples).astype(np.int32)
    indices = batch_indices(1, 0, examples, batch_size)
    x, y = data_x[indices], data_y[indices]

    def reexecute() -> bytes:
        chosen = batch_indices(1, state.step, examples, batch_size)
        return kernels.train_step(state, data_x[chosen], data_y[chosen], HYPER).hash()

    torch_seconds = best_seconds(torch_step(width, x, y, "cpu"), count)
    step_seconds = best_seconds(lambda: kernels.train_step(state, x, y, HYPER), count)
    reexecute_seconds = best_seconds(reexecute, count)
    figure(f"kernels.torch_step_ms_w{width}", torch_seconds * 1e3, "ms")
    figure(
        f"kernels.step_ms_w{width}",
        step_seconds * 1e3,
        "ms",
        baseline="torch step (CPU)",
        ratio=step_seconds / torch_seconds,
    )
    figure(
        f"kernels.reexecute_ms_w{width}",
        reexecute_seconds * 1e3,
        "ms",
        baseline="torch step (CPU)",
        ratio=reexecute_seconds / torch_seconds,
    )
    if torch.cuda.is_available():
        from verifier.cuda_kernels import available, train_step_cuda

        if available():
            torch_gpu = best_seconds(torch_step(width, x, y, "cuda"), count)
            ours_gpu = best_seconds(lambda: train_step_cuda(state, x, y, HYPER), count)
            figure(f"kernels.torch_cuda_step_ms_w{width}", torch_gpu * 1e3, "ms")
            figure(
                f"kernels.cuda_step_ms_w{width}",
                ours_gpu * 1e3,
                "ms",
                baseline="torch step (CUDA)",
                ratio=ours_gpu / torch_gpu,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="two widths, fewer rounds")
    arguments = parser.parse_args()
    say(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    for width in QUICK_WIDTHS if arguments.quick else WIDTHS:
        measure(width, quick_rounds if arguments.quick else rounds)
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
