"""The CPU kernels compute exactly the step of specs/proof.md §1, whatever the thread count.

Exactness is pinned against the plain reference (tests/verifier/reference.py) on random
tiny shapes; the math itself (that the gradients are the loss's derivatives) against
float64 finite differences; and the code generation against the assembly Numba emits.
"""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.jobspec import MlpModel
from tests.verifier import cases, reference
from verifier import kernels
from verifier.errors import InvalidBatch
from verifier.model import init_state
from verifier.reexecute import compare_tolerance
from verifier.torch_step import torch_train_step

F = np.float32


@settings(max_examples=25, deadline=None, print_blob=True)
@given(st.integers(0, 2**32 - 1))
def test_kernels_equal_the_plain_reference_bit_for_bit(seed: int) -> None:
    """On random tiny models, states and batches, loss, gradients and two steps match exactly."""
    case = cases.random_case(seed)
    loss, grads = kernels.forward_backward(case.state.params, case.x, case.y)
    ref_loss, ref_grads = reference.forward_backward(case.state.params, case.x, case.y)
    assert np.array(loss).tobytes() == np.array(ref_loss).tobytes()
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.tobytes() == want.tobytes()
    state, ref_state = case.state, case.state
    for _ in range(2):
        state = kernels.train_step(state, case.x, case.y, case.hyper)
        ref_state = reference.train_step(ref_state, case.x, case.y, case.hyper)
        assert state.hash() == ref_state.hash()


def _medium_case(optimizer: str) -> cases.Case:
    """Shapes that leave a remainder in every block, chunk and unrolled loop of the kernels."""
    model = MlpModel(37, (530, 19), 5)
    state = init_state(model, optimizer, 3)
    data = cases.dataset(64, 37, 5)
    return cases.Case(state, data.x[:13], data.y[:13], cases.hyper(optimizer))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_results_do_not_depend_on_threads_or_repetition(optimizer: str) -> None:
    """One thread, two threads and repeated runs give the same state hash after two steps."""
    case = _medium_case(optimizer)
    hashes = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS, 1):
            kernels.set_threads(threads)
            state = case.state
            for _ in range(2):
                state = kernels.train_step(state, case.x, case.y, case.hyper)
            hashes.append(state.hash())
    finally:
        kernels.set_threads(previous)
    assert len(set(hashes)) == 1


def test_medium_shapes_equal_the_reference_in_one_layer() -> None:
    """The blocked, unrolled, chunked loops give the reference's gradients on odd shapes."""
    model = MlpModel(13, (530,), 3)
    state = init_state(model, "sgd", 8)
    data = cases.dataset(16, 13, 3)
    x, y = data.x[:6], data.y[:6]
    loss, grads = kernels.forward_backward(state.params, x, y)
    ref_loss, ref_grads = reference.forward_backward(state.params, x, y)
    assert loss == ref_loss
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.tobytes() == want.tobytes()


_FUSED = re.compile(r"\bv?f(n)?m(add|sub)\d+[sp][sd]\b")


def test_no_kernel_contains_a_fused_multiply_add() -> None:
    """The generated assembly of every kernel has no FMA and no call to libm's exp or log."""
    _medium = _medium_case("adamw")
    kernels.train_step(_medium.state, _medium.x, _medium.y, _medium.hyper)
    compiled = [
        kernels.linear_forward,
        kernels.softmax_cross_entropy,
        kernels.weight_grads,
        kernels.input_grads,
        kernels.adamw_update,
    ]
    sgd = _medium_case("sgd")
    kernels.train_step(sgd.state, sgd.x, sgd.y, sgd.hyper)
    compiled.append(kernels.sgd_update)
    for dispatcher in compiled:
        assembly = "\n".join(dispatcher.inspect_asm().values())
        assert assembly, dispatcher
        assert not _FUSED.search(assembly), dispatcher.py_func.__name__
        assert not re.search(r"\b(expf|logf|__expf|__logf)\b", assembly)


def _loss64(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The mean softmax cross-entropy of the MLP, in float64 with the textbook formula."""
    a = x.astype(np.float64)
    layers = len(params) // 2
    for layer in range(layers):
        a = a @ params[2 * layer].T + params[2 * layer + 1]
        if layer < layers - 1:
            a = np.maximum(a, 0.0)
    shifted = a - a.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(y)), y].mean())


def test_gradients_are_the_derivatives_of_the_loss() -> None:
    """Kernel gradients match float64 central differences of the float64 loss."""
    state = init_state(MlpModel(4, (5, 4), 3), "sgd", 21)
    data = cases.dataset(8, 4, 3)
    loss, grads = kernels.forward_backward(state.params, data.x, data.y)
    params = [p.astype(np.float64) for p in state.params]
    assert abs(float(loss) - _loss64(params, data.x, data.y)) < 1e-5
    step = 1e-6
    for index, grad in enumerate(grads):
        for position in np.ndindex(grad.shape):
            plus = [p.copy() for p in params]
            minus = [p.copy() for p in params]
            plus[index][position] += step
            minus[index][position] -= step
            numeric = (_loss64(plus, data.x, data.y) - _loss64(minus, data.x, data.y)) / (2 * step)
            assert abs(float(grad[position]) - numeric) < 1e-4 + 1e-3 * abs(numeric), (
                index,
                position,
            )


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_stock_torch_step_is_close_to_the_kernel_step(optimizer: str) -> None:
    """From the same states, torch's step stays within the default tolerance bounds."""
    spec = cases.spec(widths=(16, 24, 4), optimizer=optimizer, examples=64, batch_size=16)
    data = cases.dataset(64, 16, 4)
    hyper = cases.hyper(optimizer)
    state = init_state(spec.model, optimizer, spec.seed)
    for step in range(5):
        x, y = data.x[step * 8 : step * 8 + 16], data.y[step * 8 : step * 8 + 16]
        ours = kernels.train_step(state, x, y, hyper)
        theirs = torch_train_step(state, x, y, hyper)
        result = compare_tolerance(ours, theirs)
        assert result.ok, result.detail
        for a, b in zip(ours.arrays(), theirs.arrays(), strict=True):
            assert np.max(np.abs(a - b), initial=0.0) <= 1e-5 * max(np.max(np.abs(b)), 1.0)
        state = theirs


def test_a_step_leaves_its_input_state_untouched() -> None:
    """train_step returns a new read-only state one step later and does not write the old one."""
    case = cases.random_case(4)
    before = case.state.hash()
    after = kernels.train_step(case.state, case.x, case.y, case.hyper)
    assert case.state.hash() == before
    assert after.step == case.state.step + 1
    assert all(not a.flags.writeable for a in after.arrays())


def test_a_batch_that_does_not_fit_the_model_is_refused() -> None:
    """Labels out of range, wrong feature counts and float64 features raise InvalidBatch."""
    case = cases.random_case(6)
    classes = case.state.widths[-1]
    with pytest.raises(InvalidBatch):
        kernels.forward_backward(case.state.params, case.x, np.full_like(case.y, classes))
    with pytest.raises(InvalidBatch):
        kernels.forward_backward(case.state.params, case.x[:, :0], case.y)
    with pytest.raises(InvalidBatch):
        kernels.forward_backward(case.state.params, case.x.astype(np.float64), case.y)
