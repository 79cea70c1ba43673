"""Re-executing one sampled step and comparing it with the provider's committed state.

`reexecute_step` takes the opened state i, selects step i's batch by the job's rule and
runs the reproducible kernels (CUDA when asked, the CPU otherwise) to get state i + 1.
In `exact` mode the result must hash to the committed h_{i+1} (`compare_exact`); in
`tolerance` mode, where the provider trained with stock PyTorch, every tensor must lie
within a per-tensor bound of the provider's opened state i + 1 (`compare_tolerance`).
Normative text: specs/proof.md §1.7.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from protocol.jobspec import JobSpec
from verifier.errors import InvalidBatch, InvalidState
from verifier.kernels import train_step
from verifier.model import (
    POWER_NAMES,
    Float32Array,
    TrainState,
    batch_indices,
    hyper_from_spec,
    tensor_layout,
)

Device = Literal["cpu", "cuda"]


class Examples(Protocol):
    """A training set: features `x` (float32, N by F) and labels `y` (integers, N)."""

    @property
    def x(self) -> npt.NDArray[np.float32]: ...

    @property
    def y(self) -> npt.NDArray[Any]: ...


def step_batch(spec: JobSpec, data: Examples, step: int) -> tuple[Float32Array, npt.NDArray[Any]]:
    """The examples and labels of step `step`, in ascending index order."""
    examples, features = spec.dataset.examples, spec.dataset.features
    if data.x.shape != (examples, features) or data.x.dtype != np.float32:
        raise InvalidBatch(
            f"x: the job's dataset is float32 ({examples}, {features}), "
            f"got {data.x.dtype} {data.x.shape}"
        )
    if data.y.shape != (examples,):
        raise InvalidBatch(f"y: the job's dataset has {examples} labels, got {data.y.shape}")
    indices = batch_indices(spec.seed, step, examples, spec.batch_size)
    return data.x[indices], data.y[indices]


def check_state_fits(spec: JobSpec, state: TrainState) -> None:
    """Refuse a state of another model or optimizer, or one past the job's last step."""
    if state.widths != spec.model.widths:
        raise InvalidState(f"state has widths {state.widths}, the job {spec.model.widths}")
    if state.optimizer != spec.optimizer.name:
        raise InvalidState(
            f"state is for {state.optimizer}, the job uses {spec.optimizer.name}", tensor=None
        )
    if not 0 <= state.step < spec.total_steps:
        raise InvalidState(
            f"step {state.step} is outside the job's steps 0 … {spec.total_steps - 1}",
            tensor="step",
        )


def reexecute_step(
    spec: JobSpec, data: Examples, state: TrainState, *, device: Device = "cpu"
) -> TrainState:
    """State `state.step + 1` of the job, from `state`, by the reproducible kernels."""
    check_state_fits(spec, state)
    x, y = step_batch(spec, data, state.step)
    hyper = hyper_from_spec(spec.optimizer)
    if device == "cuda":
        # Imported here: importing numba.cuda costs time, and the CPU path needs none of it.
        from verifier.cuda_kernels import train_step_cuda

        return train_step_cuda(state, x, y, hyper)
    return train_step(state, x, y, hyper)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing a re-executed state with a committed one.

    On failure `tensor` names the first tensor (canonical order) that disagrees, "step"
    when the step counters differ, or None when only hashes were compared; `difference`
    and `allowed` are the largest element difference found and the bound it broke
    (tolerance mode).
    """

    ok: bool
    mode: Literal["exact", "tolerance"]
    tensor: str | None = None
    difference: float | None = None
    allowed: float | None = None
    detail: str = ""


def compare_exact(recomputed: TrainState, committed: TrainState | bytes) -> Comparison:
    """Exact mode: the recomputed state must hash to the committed state hash.

    `committed` is the committed hash h_{i+1}, or an opened state whose hash is compared;
    given a state, a mismatch also names the first tensor that differs.
    """
    expected = committed if isinstance(committed, bytes) else committed.hash()
    actual = recomputed.hash()
    if actual == expected:
        return Comparison(ok=True, mode="exact")
    detail = f"state hash 0x{actual.hex()} differs from the committed 0x{expected.hex()}"
    if isinstance(committed, bytes):
        return Comparison(ok=False, mode="exact", detail=detail)
    first = _first_difference(recomputed, committed)
    return Comparison(ok=False, mode="exact", tensor=first, detail=detail)


def _first_difference(a: TrainState, b: TrainState) -> str | None:
    if a.step != b.step:
        return "step"
    if a.optimizer != b.optimizer or a.widths != b.widths:
        return None
    layout = tensor_layout(a.widths, a.optimizer)
    for (name, _), x, y in zip(layout, a.arrays(), b.arrays(), strict=True):
        if x.tobytes() != y.tobytes():
            return name
    return None


@dataclass(frozen=True, slots=True)
class ToleranceBounds:
    """Per-kind relative bounds: a tensor passes when max|a - b| <= bound * max|b|.

    The kind of a tensor is the part of its name before the layer index: `param`,
    `opt.momentum`, `opt.m`, `opt.v`; the beta powers are computed identically by torch
    runs and kernels (one float32 multiplication per step) and must be equal. Defaults
    and their calibration: specs/proof.md §1.7.
    """

    relative: Mapping[str, float]

    def bound_for(self, name: str) -> float:
        """The relative bound of the tensor `name` (0 for the beta powers: equal or fail)."""
        if name in _POWER_TENSORS:
            return 0.0
        return self.relative[name.rsplit(".", 2)[0]]


_POWER_TENSORS = frozenset(f"opt.{power}" for powers in POWER_NAMES.values() for power in powers)


DEFAULT_BOUNDS = ToleranceBounds(
    relative={"param": 0.05, "opt.momentum": 0.2, "opt.m": 0.01, "opt.v": 0.01}
)


def compare_tolerance(
    recomputed: TrainState, committed: TrainState, bounds: ToleranceBounds = DEFAULT_BOUNDS
) -> Comparison:
    """Tolerance mode: every tensor of `committed` within its bound of `recomputed`."""
    if recomputed.step != committed.step:
        return Comparison(
            ok=False,
            mode="tolerance",
            tensor="step",
            detail=f"step {committed.step} committed, {recomputed.step} recomputed",
        )
    if recomputed.optimizer != committed.optimizer or recomputed.widths != committed.widths:
        return Comparison(
            ok=False, mode="tolerance", detail="the states have different models or optimizers"
        )
    layout = tensor_layout(recomputed.widths, recomputed.optimizer)
    for (name, _), a, b in zip(layout, recomputed.arrays(), committed.arrays(), strict=True):
        difference, scale = _max_difference(a, b)
        allowed = bounds.bound_for(name) * scale
        # `not <=` also refuses NaN: a non-finite difference never passes.
        if not difference <= allowed:
            return Comparison(
                ok=False,
                mode="tolerance",
                tensor=name,
                difference=difference,
                allowed=allowed,
                detail=f"{name}: max |difference| {difference:.3e} exceeds {allowed:.3e}",
            )
    return Comparison(ok=True, mode="tolerance")


def _max_difference(a: Float32Array, b: Float32Array) -> tuple[float, float]:
    """max|a - b| and max|b| in float64 (exact for float32 inputs), NaN if either has one."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if a64.size == 0:
        return 0.0, 0.0
    return float(np.max(np.abs(a64 - b64))), float(np.max(np.abs(b64)))
