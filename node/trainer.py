"""Training a leased segment: the provider's side of a commitment.

From the segment's start state, run its steps with the job's computation (the
reproducible kernels in `exact` mode, stock PyTorch in `tolerance` mode), hashing the
state before the first step and after every step (the commitment's S + 1 leaves,
`protocol.openings`), recording each step's loss (the loss trace) and keeping every
`checkpoint_every`-th state so that any sampled state can be recomputed for its opening
without keeping them all: an opening of step i re-runs at most `checkpoint_every - 1`
steps from the checkpoint before it (the trade-off is measured in bench/).

By default (`checkpoint_every=None`) a segment whose every state fits in
`kept_states_bytes_max` keeps them all, so its openings cost no recomputation; a larger
one keeps every `checkpoint_every_default`-th state.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.jobspec import JobSpec, VerificationMode
from protocol.openings import commitment_root
from verifier.kernels import apply_update, forward_backward
from verifier.model import Hyper, TrainState, hyper_from_spec
from verifier.reexecute import Examples, step_batch
from verifier.torch_step import TorchTrainer

Progress = Callable[[int, float], None]
checkpoint_every_default = 16
# States kept in memory per segment when every state is kept (the default for small models).
kept_states_bytes_max = 256 * 2**20


def auto_checkpoint_every(start: TrainState, steps: int) -> int:
    """1 (keep every state) when the segment's S + 1 states fit the budget, else 16."""
    state_bytes = sum(a.nbytes for a in start.arrays())
    return 1 if state_bytes * (steps + 1) <= kept_states_bytes_max else checkpoint_every_default


@dataclass
class SegmentRun:
    """What training a segment produced."""

    start: TrainState
    end: TrainState
    state_hashes: list[bytes]
    losses: list[float]
    checkpoints: dict[int, TrainState] = field(default_factory=dict)
    train_seconds: float = 0.0
    hash_seconds: float = 0.0
    # Where torch trained a tolerance-mode run; recomputing one of its states for an
    # opening must happen on the same device to reproduce the committed bits.
    device: str = "cpu"

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def root(self) -> bytes:
        return commitment_root(self.state_hashes)

    def loss_trace(self) -> str:
        """The losses as the Commit message carries them: float32, big-endian, 0x-hex."""
        return "0x" + b"".join(struct.pack(">f", loss) for loss in self.losses).hex()


StepFunction = Callable[[TrainState, Any, Any, Hyper], tuple[TrainState, float]]


class _TorchSteps:
    """Tolerance-mode steps: one live torch model carried from step to step, rebuilt only
    when asked to step from a state other than the one it produced last (a checkpoint)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.trainer: TorchTrainer | None = None

    def __call__(self, state: TrainState, x: Any, y: Any, hyper: Hyper) -> tuple[TrainState, float]:
        if self.trainer is None or self.trainer.state is not state or self.trainer.hyper != hyper:
            self.trainer = TorchTrainer(state, hyper, self.device)
        return self.trainer.step(x, y)


def _exact_step(state: TrainState, x: Any, y: Any, hyper: Hyper) -> tuple[TrainState, float]:
    loss, grads = forward_backward(state.params, x, y)
    return apply_update(state, grads, hyper), float(loss)


def step_function(spec: JobSpec, device: str = "cpu") -> StepFunction:
    """One step of the job's computation: the next state and the loss at the state the
    step starts from (the reproducible kernels in exact mode, which run on the CPU; stock
    PyTorch on `device` in tolerance mode)."""
    if spec.verification.mode is VerificationMode.EXACT:
        return _exact_step
    return _TorchSteps(device)


def train_segment(
    spec: JobSpec,
    data: Examples,
    start: TrainState,
    end_step: int,
    *,
    checkpoint_every: int | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
) -> SegmentRun:
    """Train from `start` (state `start.step`) up to state `end_step`.

    `hash_seconds` is the time spent hashing states (what committing to every state costs
    the training loop) and `train_seconds` the rest of the loop's wall time. Hashing runs
    inline: a background hashing thread was measured slower on the small example models,
    where the hand-offs cost more than the hashes (specs/proof.md §1.6)."""
    if not start.step < end_step <= spec.total_steps:
        raise ValueError(f"end_step {end_step} does not follow state {start.step}")
    if checkpoint_every is None:
        checkpoint_every = auto_checkpoint_every(start, end_step - start.step)
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every: at least 1")
    hyper = hyper_from_spec(spec.optimizer)
    step = step_function(spec, device)
    started = time.perf_counter()
    hashing = 0.0
    state = start
    clock = time.perf_counter()
    hashes = [state.hash()]
    hashing += time.perf_counter() - clock
    losses: list[float] = []
    checkpoints = {start.step: start}
    while state.step < end_step:
        x, y = step_batch(spec, data, state.step)
        state, loss = step(state, x, y, hyper)
        losses.append(float(np.float32(loss)))
        clock = time.perf_counter()
        hashes.append(state.hash())
        hashing += time.perf_counter() - clock
        if (state.step - start.step) % checkpoint_every == 0:
            checkpoints[state.step] = state
        if progress is not None:
            progress(state.step, losses[-1])
    checkpoints[state.step] = state
    return SegmentRun(
        start,
        state,
        hashes,
        losses,
        checkpoints,
        time.perf_counter() - started - hashing,
        hashing,
        device,
    )


def states_at(
    spec: JobSpec, data: Examples, run: SegmentRun, steps: Iterable[int]
) -> dict[int, TrainState]:
    """The states before each of `steps`, recomputed in one forward walk from the
    checkpoints (each checked against its committed hash): opening many sampled steps
    costs at most one re-run of the segment, not one re-run per step."""
    wanted = sorted(set(steps))
    if wanted and not run.start.step <= wanted[0] <= wanted[-1] <= run.end.step:
        raise ValueError("steps outside the segment")
    hyper = hyper_from_spec(spec.optimizer)
    advance = step_function(spec, run.device)
    found: dict[int, TrainState] = {}
    state: TrainState | None = None
    for step in wanted:
        base = max(s for s in run.checkpoints if s <= step)
        if state is None or state.step > step or base > state.step:
            state = run.checkpoints[base]
        while state.step < step:
            x, y = step_batch(spec, data, state.step)
            state, _ = advance(state, x, y, hyper)
            if state.hash() != run.state_hashes[state.step - run.start.step]:
                raise AssertionError(
                    f"recomputed state {state.step} differs from the one committed"
                )
        found[step] = state
    return found


def state_at(spec: JobSpec, data: Examples, run: SegmentRun, step: int) -> TrainState:
    """The state before step `step` of the run, recomputed from the nearest checkpoint
    (and checked against the hash committed for it)."""
    if not run.start.step <= step <= run.end.step:
        raise ValueError(f"step {step} is outside the segment")
    base = max(s for s in run.checkpoints if s <= step)
    state = run.checkpoints[base]
    hyper = hyper_from_spec(spec.optimizer)
    advance = step_function(spec, run.device)
    while state.step < step:
        x, y = step_batch(spec, data, state.step)
        state, _ = advance(state, x, y, hyper)
    if state.hash() != run.state_hashes[step - run.start.step]:
        raise AssertionError(f"recomputed state {step} differs from the one committed")
    return state
