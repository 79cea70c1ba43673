"""Cheating providers, for testing that verification catches them.

Each adversary fakes a chosen set of a segment's transitions and is otherwise honest; it
is self-consistent: it commits to the hashes of the states it actually produced, so its
commitment, checkpoints and openings all check out, and only re-executing a faked
transition shows the lie. The honest transitions after a fake start from the faked
state, so they re-execute correctly: exactly the faked transitions are detectable, which
is the model behind the detection probability (specs/compute_sampling_fees.md §1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from node.trainer import SegmentRun
from protocol.jobspec import JobSpec
from verifier.kernels import apply_update, forward_backward
from verifier.model import AdamWHyper, Hyper, SgdHyper, TrainState, hyper_from_spec
from verifier.reexecute import Examples, step_batch

# A faked transition: (state i, the honest step function, hyper, batch of i, batch of i+1,
# the run so far) -> state i + 1.
Fake = Callable[
    [TrainState, Callable[[TrainState, Hyper, int], TrainState], Hyper, int, list[TrainState]],
    TrainState,
]


def _with_params(state: TrainState, params: list[np.ndarray], step: int) -> TrainState:
    return TrainState.create(step, state.optimizer, params, state.slots, state.powers)


def _skip(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Skip the work: the state stays, only its step counter moves."""
    return _with_params(state, list(state.params), state.step + 1)


def _noise(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Do the step, then add noise of a few ulps to the parameters."""
    following = honest(state, hyper, step)
    rng = np.random.default_rng(step)
    noisy = [
        p + (rng.standard_normal(p.shape).astype(np.float32) * np.float32(1e-6))
        for p in following.params
    ]
    return _with_params(following, noisy, following.step)


def _wrong_lr(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Use twice the learning rate."""
    doubled = dataclasses.replace(hyper, lr=np.float32(hyper.lr * 2))
    return honest(state, doubled, step)


def _wrong_batch(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Train on the next step's batch instead of this one's."""
    return honest(state, hyper, step + 1)


def _low_precision(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Do the step in half precision: parameters rounded through float16."""
    following = honest(state, hyper, step)
    rounded = [p.astype(np.float16).astype(np.float32) for p in following.params]
    return _with_params(following, rounded, following.step)


def _stale(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Replay the segment's first state as if it were this step's result."""
    return _with_params(history[0], list(history[0].params), state.step + 1)


def _interpolate(
    state: TrainState,
    honest: Callable[..., TrainState],
    hyper: Hyper,
    step: int,
    history: list[TrainState],
) -> TrainState:
    """Train fewer steps: jump two steps ahead and claim the midpoint as this step's."""
    ahead = honest(honest(state, hyper, step), hyper, step + 1)
    half = np.float32(0.5)
    middle = [(p + q) * half for p, q in zip(state.params, ahead.params, strict=True)]
    return _with_params(state, middle, state.step + 1)


ADVERSARIES: dict[str, Fake] = {
    "interpolate": _interpolate,
    "skip": _skip,
    "noise": _noise,
    "wrong-lr": _wrong_lr,
    "wrong-batch": _wrong_batch,
    "low-precision": _low_precision,
    "stale-checkpoint": _stale,
}


def cheat(
    spec: JobSpec,
    data: Examples,
    start: TrainState,
    end_step: int,
    faked: set[int],
    kind: str,
    *,
    checkpoint_every: int = 16,
) -> SegmentRun:
    """A self-consistent run from `start` to `end_step` whose transitions at the
    segment indices in `faked` are done by adversary `kind`, the others honestly."""
    fake = ADVERSARIES[kind]
    hyper = hyper_from_spec(spec.optimizer)
    if not isinstance(hyper, SgdHyper | AdamWHyper):
        raise AssertionError(hyper)

    def honest(state: TrainState, used: Hyper, batch_step: int) -> TrainState:
        x, y = step_batch(spec, data, batch_step)
        _, grads = forward_backward(state.params, x, y)
        following = apply_update(state, grads, used)
        return following

    state, states = start, [start]
    while state.step < end_step:
        index = state.step - start.step
        if index in faked:
            state = fake(state, honest, hyper, state.step, states)
        else:
            state = honest(state, hyper, state.step)
        states.append(state)
    checkpoints = {s.step: s for s in states if (s.step - start.step) % checkpoint_every == 0}
    checkpoints[state.step] = state
    return SegmentRun(
        start,
        state,
        [s.hash() for s in states],
        [0.0] * (len(states) - 1),
        checkpoints,
    )
