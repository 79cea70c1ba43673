"""Run in a subprocess by test_cuda.py: the CUDA kernels on the shared cases, as JSON.

`NUMBA_ENABLE_CUDASIM` is read once, when `numba.cuda` is first imported, so a process
that has imported it for real (the pytest worker) cannot switch to the simulator; the test
starts this module as a fresh process with the variable set. Usage:

    NUMBA_ENABLE_CUDASIM=1 python -m tests.verifier.cuda_run simulate   # kernels' results
    python -m tests.verifier.cuda_run ptx                               # PTX instruction set
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from typing import Any

import numpy as np

# The cases the simulator runs: random tiny models (both optimizers, one to three layers).
SIMULATED_SEEDS = range(6)
STEPS = 2


def _digest(arrays: Any) -> str:
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return h.hexdigest()


def simulate() -> dict[str, Any]:
    """Loss, gradients and the state after STEPS steps of every simulated case."""
    from tests.verifier import cases
    from verifier import cuda_kernels
    from verifier.model import initial_state
    from verifier.reexecute import reexecute_step

    assert cuda_kernels.SIMULATOR, "run with NUMBA_ENABLE_CUDASIM=1"
    out: dict[str, Any] = {}
    for seed in SIMULATED_SEEDS:
        case = cases.random_case(seed)
        loss, grads = cuda_kernels.forward_backward_cuda(case.state.params, case.x, case.y)
        state = case.state
        for _ in range(STEPS):
            state = cuda_kernels.train_step_cuda(state, case.x, case.y, case.hyper)
        out[str(seed)] = {
            "loss": np.array(loss, dtype=np.float32).tobytes().hex(),
            "grads": _digest(grads),
            "state": state.hash().hex(),
        }
    spec = cases.spec(optimizer="adamw")
    state = reexecute_step(spec, cases.dataset(32, 8, 3), initial_state(spec), device="cuda")
    out["reexecute"] = state.hash().hex()
    return out


# Signatures to compile each kernel for: C-contiguous float32 arrays, int64 labels.
def _signatures() -> dict[str, tuple[Any, ...]]:
    from numba import boolean, float32, int64

    a2, a1 = float32[:, ::1], float32[::1]
    return {
        "_linear_forward": (a2, a1, a2, a2, a2, boolean),
        "_softmax_cross_entropy": (a2, int64[::1], a2, a1),
        "_mean_loss": (a1, a1),
        "_weight_grads": (a2, a2, a2),
        "_bias_grads": (a2, a1),
        "_input_grads": (a2, a2, a2, a2),
        "_sgd_update": (a1, a1, a1, a1, a1, float32, float32, float32, boolean),
        "_adamw_update": (a1,) * 7 + (float32,) * 8,
    }


def ptx() -> dict[str, Any]:
    """The float32 arithmetic instructions of every kernel compiled to PTX (no GPU needed)."""
    import numba.cuda.dispatcher
    from numba import cuda
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        return {"unavailable": "libNVVM not found (no CUDA toolkit)"}

    class _Device:
        # Device functions are compiled for the current device's compute capability; with
        # no GPU, pretend to be one (sm_80) so that the PTX can still be generated.
        compute_capability = (8, 0)

    numba.cuda.dispatcher.get_current_device = _Device  # type: ignore[attr-defined]
    from verifier import cuda_kernels

    found: dict[str, list[str]] = {}
    for name, signature in _signatures().items():
        code, _ = cuda.compile_ptx(getattr(cuda_kernels, name).py_func, signature, cc=(8, 0))
        found[name] = sorted(set(re.findall(r"\b(?:[a-z0-9]+)(?:\.[a-z0-9]+)*\.f32\b", code)))
    return {"kernels": found}


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    result = {"simulate": simulate, "ptx": ptx}[command]()
    json.dump(result, sys.stdout)
