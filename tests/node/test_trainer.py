"""The provider's segment trainer: per-step state hashes, losses and checkpoints that a
verifier's re-execution agrees with."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
import yaml

from node.datasets import DatasetArrays, build_synthetic
from node.trainer import auto_checkpoint_every, kept_states_bytes_max, state_at, train_segment
from protocol.jobspec import JobSpec, VerificationMode, parse_job_spec
from verifier.model import initial_state
from verifier.reexecute import compare_exact, reexecute_step

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"


@pytest.fixture(scope="module")
def spec() -> JobSpec:
    return parse_job_spec(yaml.safe_load(TINY.read_text()))


@pytest.fixture(scope="module")
def data(spec: JobSpec) -> object:
    return build_synthetic(
        1 - 1, spec.dataset.examples, spec.dataset.features, spec.dataset.classes
    )


def test_exact_training_is_reproducible_and_every_step_reexecutes_to_its_hash(
    spec: JobSpec, data: DatasetArrays
) -> None:
    """Two runs of a segment commit to the same root, and the verifier's re-execution of
    every step from the committed state gives exactly the next committed hash."""
    start = initial_state(spec)
    first = train_segment(spec, data, start, 12, checkpoint_every=4)
    second = train_segment(spec, data, start, 12, checkpoint_every=5)
    assert first.root == second.root and len(first.state_hashes) == 13
    for step in range(12):
        state = state_at(spec, data, first, step)
        following = reexecute_step(spec, data, state)
        assert compare_exact(following, first.state_hashes[step + 1]).ok
    trace = bytes.fromhex(first.loss_trace()[2:])
    assert [struct.unpack(">f", trace[i : i + 4])[0] for i in range(0, 48, 4)] == first.losses
    assert first.losses[-1] < first.losses[0]


def test_a_changed_state_is_caught_by_its_hash(spec: JobSpec, data: DatasetArrays) -> None:
    """Recomputing an opened state that does not match its committed hash is refused."""
    run = train_segment(spec, data, initial_state(spec), 6, checkpoint_every=3)
    run.state_hashes[4] = bytes(32)
    with pytest.raises(AssertionError):
        state_at(spec, data, run, 4)


def test_tolerance_mode_trains_with_torch_and_stays_close_to_the_kernels(
    spec: JobSpec, data: DatasetArrays
) -> None:
    """In tolerance mode the segment is trained by stock PyTorch: its states differ from
    the kernels' only by float32 rounding, and its loss falls."""
    tolerant = dataclasses.replace(
        spec,
        verification=dataclasses.replace(spec.verification, mode=VerificationMode.TOLERANCE),
    )
    run = train_segment(tolerant, data, initial_state(tolerant), 8)
    exact = train_segment(spec, data, initial_state(spec), 8)
    assert run.root != exact.root or run.state_hashes == exact.state_hashes
    for a, b in zip(run.end.params, exact.end.params, strict=True):
        assert float(abs(a - b).max()) < 1e-4
    assert run.losses[-1] < run.losses[0]


def test_a_small_segment_keeps_every_state_and_a_large_one_every_sixteenth(
    spec: JobSpec, data: DatasetArrays
) -> None:
    """By default the tiny job keeps all its states (openings cost nothing); a segment too
    large for the memory budget keeps every 16th."""
    start = initial_state(spec)
    run = train_segment(spec, data, start, 20)
    assert sorted(run.checkpoints) == list(range(21))
    assert auto_checkpoint_every(start, 20) == 1
    state_bytes = sum(a.nbytes for a in start.arrays())
    too_many = kept_states_bytes_max // state_bytes + 1
    assert auto_checkpoint_every(start, too_many) == 16
