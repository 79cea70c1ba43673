"""Re-executing a sampled step from an opened state, and the two comparison rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.verifier import cases
from verifier import kernels
from verifier.errors import InvalidBatch, InvalidState
from verifier.model import TrainState, batch_indices, initial_state
from verifier.reexecute import (
    DEFAULT_BOUNDS,
    ToleranceBounds,
    compare_exact,
    compare_tolerance,
    reexecute_step,
    step_batch,
)
from verifier.torch_step import torch_train_step


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_trajectory_of_the_tiny_job_is_pinned(optimizer: str) -> None:
    """State hashes 0..3 of the tiny job are the golden vectors."""
    spec = cases.spec(optimizer=optimizer)
    data = cases.dataset(32, 8, 3)
    state = initial_state(spec)
    hashes = [state.hash().hex()]
    for _ in range(3):
        state = reexecute_step(spec, data, state)
        hashes.append(state.hash().hex())
    assert hashes == cases.TRAJECTORIES[optimizer]


def test_any_step_re_executes_alone_from_its_opened_state() -> None:
    """Step 2 from an opened state 2 (through safetensors tensors) gives state 3's hash."""
    spec = cases.spec(optimizer="adamw")
    data = cases.dataset(32, 8, 3)
    state = initial_state(spec)
    for _ in range(2):
        state = reexecute_step(spec, data, state)
    opened = TrainState.from_tensors(state.to_tensors(), spec.model, "adamw")
    assert compare_exact(
        reexecute_step(spec, data, opened), bytes.fromhex(cases.TRAJECTORIES["adamw"][3])
    ).ok


def test_the_batch_is_the_spec_rule_in_ascending_order() -> None:
    """step_batch takes the rows batch_indices names, in ascending index order."""
    spec = cases.spec()
    data = cases.dataset(32, 8, 3)
    x, y = step_batch(spec, data, 5)
    indices = batch_indices(spec.seed, 5, 32, spec.batch_size)
    assert list(indices) == sorted(indices)
    assert x.tobytes() == data.x[indices].tobytes() and list(y) == list(data.y[indices])


def test_exact_comparison_names_the_first_differing_tensor() -> None:
    """A one-bit change fails exact mode and names the tensor; the hash alone fails too."""
    spec = cases.spec()
    data = cases.dataset(32, 8, 3)
    good = reexecute_step(spec, data, initial_state(spec))
    tensors = good.to_tensors()
    changed = np.array(tensors["opt.momentum.0.b"])
    changed.view(np.uint32)[1] ^= 1
    bad = TrainState.from_tensors({**tensors, "opt.momentum.0.b": changed}, spec.model, "sgd")
    assert compare_exact(good, good).ok
    result = compare_exact(good, bad)
    assert not result.ok and result.tensor == "opt.momentum.0.b"
    by_hash = compare_exact(good, bad.hash())
    assert not by_hash.ok and by_hash.tensor is None and "differs" in by_hash.detail
    later = dataclasses.replace(good, step=good.step + 1)
    assert compare_exact(good, later).tensor == "step"


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_tolerance_mode_accepts_torch_and_rejects_a_skipped_update(optimizer: str) -> None:
    """A stock torch step passes the default bounds; a state that skipped the update does not."""
    spec = cases.spec(optimizer=optimizer, mode="tolerance")
    data = cases.dataset(32, 8, 3)
    state = initial_state(spec)
    hyper = cases.hyper(optimizer)
    for _ in range(3):
        x, y = step_batch(spec, data, state.step)
        honest = torch_train_step(state, x, y, hyper)
        assert compare_tolerance(reexecute_step(spec, data, state), honest).ok
        state = honest
    recomputed = reexecute_step(spec, data, state)
    lazy = dataclasses.replace(state, step=state.step + 1)
    result = compare_tolerance(recomputed, lazy)
    assert not result.ok and result.tensor is not None
    assert result.difference is not None and result.allowed is not None
    assert result.difference > result.allowed


def test_tolerance_bounds_are_relative_to_the_committed_tensor() -> None:
    """A perturbation just inside the relative bound passes and just outside fails, by tensor."""
    spec = cases.spec()
    data = cases.dataset(32, 8, 3)
    state = reexecute_step(spec, data, initial_state(spec))
    tensors = state.to_tensors()
    w = np.array(tensors["param.1.W"], dtype=np.float32)
    scale = float(np.max(np.abs(w)))
    bound = DEFAULT_BOUNDS.bound_for("param.1.W")
    for factor, ok in ((0.5, True), (2.0, False)):
        moved = w.copy()
        flat = moved.reshape(-1)
        index = int(np.argmin(np.abs(flat)))
        flat[index] += np.float32(factor * bound * scale)
        other = TrainState.from_tensors({**tensors, "param.1.W": moved}, spec.model, "sgd")
        result = compare_tolerance(state, other)
        assert result.ok is ok
        if not ok:
            assert result.tensor == "param.1.W"
    strict = ToleranceBounds(relative=dict.fromkeys(DEFAULT_BOUNDS.relative, 0.0))
    assert compare_tolerance(state, state, strict).ok


def test_nan_never_passes_tolerance_mode() -> None:
    """A committed tensor holding NaN fails, whatever the bound."""
    spec = cases.spec()
    state = initial_state(spec)
    tensors = state.to_tensors()
    poisoned = np.array(tensors["param.0.b"])
    poisoned[0] = np.nan
    bad = TrainState.from_tensors({**tensors, "param.0.b": poisoned}, spec.model, "sgd")
    assert compare_tolerance(state, bad).tensor == "param.0.b"


def test_states_and_data_that_do_not_fit_the_job_are_refused() -> None:
    """Another optimizer, a step past the end, or a dataset of another shape is refused."""
    spec = cases.spec(total_steps=3)
    data = cases.dataset(32, 8, 3)
    with pytest.raises(InvalidState):
        reexecute_step(spec, data, initial_state(cases.spec(optimizer="adamw")))
    last = dataclasses.replace(initial_state(spec), step=3)
    with pytest.raises(InvalidState) as caught:
        reexecute_step(spec, data, last)
    assert caught.value.tensor == "step"
    with pytest.raises(InvalidBatch):
        reexecute_step(spec, cases.dataset(31, 8, 3), initial_state(spec))


def test_reexecution_equals_the_kernel_step_on_the_selected_batch() -> None:
    """reexecute_step is train_step on the batch the spec selects for the state's step."""
    spec = cases.spec(optimizer="adamw")
    data = cases.dataset(32, 8, 3)
    state = initial_state(spec)
    x, y = step_batch(spec, data, 0)
    direct = kernels.train_step(state, x, y, cases.hyper("adamw"))
    assert reexecute_step(spec, data, state).hash() == direct.hash()
