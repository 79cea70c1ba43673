"""The CUDA kernels equal the CPU kernels: logic under the simulator, instructions in the PTX,
and bits on a real GPU.

`NUMBA_ENABLE_CUDASIM` only takes effect before `numba.cuda` is first imported, and this
pytest process (or xdist worker) imports it for real, so the simulator runs in a fresh
subprocess (`python -m tests.verifier.cuda_run simulate`) that prints its results as JSON;
this process computes the same cases with the CPU kernels and compares. The PTX check runs
in a subprocess too, because it stubs the current device to compile without a GPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numba import cuda

from protocol.jobspec import MlpModel
from tests.verifier import cases
from tests.verifier.cuda_run import SIMULATED_SEEDS, STEPS, _digest
from verifier import kernels
from verifier.model import init_state

ROOT = Path(__file__).resolve().parents[2]
subprocess_seconds_max = 300


def _run(command: str, simulator: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "tests.verifier.cuda_run", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=subprocess_seconds_max,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_simulated_cuda_kernels_equal_the_cpu_kernels() -> None:
    """Under the simulator the CUDA kernels give the CPU's loss, grads, states, re-execution."""
    simulated = _run("simulate", simulator=True)
    assert simulated.pop("reexecute") == cases.TRAJECTORIES["adamw"][1]
    assert sorted(simulated) == sorted(str(seed) for seed in SIMULATED_SEEDS)
    for seed in SIMULATED_SEEDS:
        case = cases.random_case(seed)
        loss, grads = kernels.forward_backward(case.state.params, case.x, case.y)
        state = case.state
        for _ in range(STEPS):
            state = kernels.train_step(state, case.x, case.y, case.hyper)
        assert simulated[str(seed)] == {
            "loss": np.array(loss, dtype=np.float32).tobytes().hex(),
            "grads": _digest(grads),
            "state": state.hash().hex(),
        }, seed


_FORBIDDEN = re.compile(r"^(fma|mad)\.|\.approx\.|^(ex2|lg2|rcp|rsqrt|sin|cos)\.|\.ftz\.")


def test_cuda_kernels_compile_to_ptx_without_fused_or_approximate_arithmetic() -> None:
    """The PTX of every kernel has no FMA, no approximate or flush-to-zero float instruction."""
    result = _run("ptx", simulator=False)
    if "unavailable" in result:
        pytest.skip(f"cannot generate PTX here: {result['unavailable']}")
    for name, instructions in result["kernels"].items():
        assert instructions, name
        bad = [i for i in instructions if _FORBIDDEN.search(i)]
        assert not bad, (name, bad)
        for op in ("div", "sqrt"):
            assert all(i == f"{op}.rn.f32" for i in instructions if i.startswith(op + ".")), name


@pytest.mark.gpu
@pytest.mark.skipif(
    not cuda.is_available(), reason="no CUDA GPU on this machine (numba.cuda.is_available())"
)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_gpu_kernels_equal_the_cpu_kernels_bit_for_bit(optimizer: str) -> None:
    """On a real GPU, three steps of a digits-sized MLP and the tiny cases match the CPU's bits."""
    from verifier.cuda_kernels import forward_backward_cuda, train_step_cuda

    model = MlpModel(784, (512, 64), 10)
    data = cases.dataset(256, 784, 10)
    hyper = cases.hyper(optimizer)
    gpu = cpu = init_state(model, optimizer, 99)
    for step in range(3):
        x, y = data.x[step * 64 : step * 64 + 64], data.y[step * 64 : step * 64 + 64]
        gpu = train_step_cuda(gpu, x, y, hyper)
        cpu = kernels.train_step(cpu, x, y, hyper)
        assert gpu.hash() == cpu.hash(), step
    for seed in SIMULATED_SEEDS:
        case = cases.random_case(seed)
        loss_gpu, grads_gpu = forward_backward_cuda(case.state.params, case.x, case.y)
        loss_cpu, grads_cpu = kernels.forward_backward(case.state.params, case.x, case.y)
        assert np.array(loss_gpu).tobytes() == np.array(loss_cpu).tobytes()
        assert _digest(grads_gpu) == _digest(grads_cpu)
