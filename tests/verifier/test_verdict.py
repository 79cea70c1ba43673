"""Judging a commitment by its openings (`verifier.verdict.judge`): what is accepted, and
which transition each kind of bad opening is blamed on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from node.trainer import train_segment
from protocol.jobspec import JobSpec
from protocol.openings import OpeningsManifest, commitment_root, open_steps
from tests.verifier import cases
from verifier.checkpoints import SEED_CHECKPOINT, blob_digest, encode_state
from verifier.model import TrainState, initial_state
from verifier.verdict import CommitmentFacts, judge

SAMPLE = [1, 4, 7]
STEPS = 10


class MemoryBlobs:
    """A content-addressed store in a dict, with the two reads a verifier makes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = blob_digest(data)
        self.blobs[digest] = data
        return digest

    def get_blob(self, digest: str) -> bytes:
        return self.blobs[digest]

    def blob_size(self, digest: str) -> int | None:
        data = self.blobs.get(digest)
        return None if data is None else len(data)


@dataclasses.dataclass
class Segment:
    spec: JobSpec
    data: cases.Examples
    states: list[TrainState]
    blobs: MemoryBlobs
    facts: CommitmentFacts
    manifest: OpeningsManifest


def segment(
    *,
    mode: str = "exact",
    optimizer: str = "sgd",
    start_step: int = 0,
    tamper_after: int | None = None,
    tamper: float = 1e-3,
    sample: list[int] = SAMPLE,
) -> Segment:
    """A trained segment of STEPS steps, committed, its sample opened, every blob stored;
    with `tamper_after`, the states after that index are moved by `tamper` (hashes
    recomputed), so that only transition `tamper_after` crosses from one to the other."""
    spec = cases.spec(optimizer=optimizer, total_steps=start_step + STEPS, mode=mode)
    data = cases.dataset(32, 8, 3)
    start = initial_state(spec)
    if start_step:
        start = train_segment(spec, data, start, start_step).end
    run = train_segment(spec, data, start, start_step + STEPS, checkpoint_every=1)
    states = [run.checkpoints[start_step + i] for i in range(STEPS + 1)]
    if tamper_after is not None:
        states = [
            state if i <= tamper_after else nudged(state, tamper) for i, state in enumerate(states)
        ]
    hashes = [state.hash() for state in states]
    blobs = MemoryBlobs()
    digests = {i: blobs.put(encode_state(state)) for i, state in enumerate(states)}
    manifest = open_steps(hashes, sample, digests)
    openings = blobs.put(manifest.encode())
    facts = CommitmentFacts(
        id="c",
        job="j",
        verifier="0x" + "00" * 20,
        status="pending",
        root=commitment_root(hashes),
        beacon=b"\x01" * 32,
        steps=STEPS,
        samples=len(sample),
        sample_indices=tuple(sample),
        start_step=start_step,
        start_checkpoint=SEED_CHECKPOINT if start_step == 0 else digests[0],
        end_checkpoint=digests[STEPS],
        openings=openings,
        opening_deadline=0,
        verdict_samples=None,
    )
    return Segment(spec, data, states, blobs, facts, manifest)


def nudged(state: TrainState, amount: float) -> TrainState:
    params = [np.array(p) for p in state.params]
    params[0][0, 0] += np.float32(amount)
    return TrainState.create(state.step, state.optimizer, params, state.slots, state.powers)


def judged(
    s: Segment, steps: list[int] = SAMPLE, sample: list[int] = SAMPLE
) -> tuple[bool, int | None, str]:
    finding = judge(s.spec, s.data, s.facts, s.blobs, sample=sample, steps=steps)
    return finding.accepted, finding.failed_step, finding.reason


@pytest.mark.parametrize("start_step", [0, 5])
def test_an_honest_segment_is_accepted_with_every_sampled_step_re_executed(
    start_step: int,
) -> None:
    """From the seed or from a fetched start checkpoint, an honest segment's sample
    re-executes to its committed hashes."""
    s = segment(start_step=start_step)
    finding = judge(s.spec, s.data, s.facts, s.blobs, sample=SAMPLE, steps=SAMPLE)
    assert (finding.accepted, finding.failed_step, finding.checked) == (True, None, tuple(SAMPLE))


def test_a_tampered_trajectory_fails_at_the_first_sampled_step_after_the_tamper() -> None:
    """In exact mode, states perturbed after state 3 (hashes recomputed) fail at the
    first sampled transition from a perturbed state: no kernel computes its successor."""
    s = segment(tamper_after=3)
    accepted, failed, reason = judged(s)
    assert (accepted, failed) == (False, 4)
    assert reason.startswith("step 4: re-executed, it does not reach state 5")


def test_a_missing_state_blob_is_blamed_on_its_transition() -> None:
    """A sampled state the provider did not upload rejects at that transition."""
    s = segment()
    del s.blobs.blobs[s.manifest.opening(4).state]  # type: ignore[union-attr]
    accepted, failed, reason = judged(s)
    assert (accepted, failed) == (False, 4)
    assert "state 4" in reason and "not in the blob store" in reason


def test_a_garbled_state_blob_is_blamed_on_its_transition() -> None:
    """A blob that is not a safetensors state of the job rejects at that transition,
    even though it is stored under the digest the manifest names."""
    s = segment()
    opening = s.manifest.opening(7)
    assert opening is not None
    s.blobs.blobs[opening.state] = b"not a state"
    accepted, failed, reason = judged(s)
    assert (accepted, failed) == (False, 7)
    assert "is not a state of this job" in reason


def test_a_manifest_that_leaves_out_a_sampled_step_is_blamed_on_that_step() -> None:
    """A manifest opening fewer transitions than sampled names the first one missing."""
    s = segment(sample=[1, 7])
    accepted, failed, reason = judged(s, sample=SAMPLE)
    assert (accepted, failed) == (False, 4)
    assert "transition 4 is missing" in reason


def test_an_unpublished_or_foreign_manifest_is_blamed_on_the_first_sampled_step() -> None:
    """No manifest, or one for another root, rejects naming the first sampled step."""
    s = segment()
    s.facts = dataclasses.replace(s.facts, openings=None)
    assert judged(s)[:2] == (False, 1)
    other = segment(tamper_after=0)
    s.facts = dataclasses.replace(s.facts, openings=other.facts.openings)
    s.blobs.blobs.update(other.blobs.blobs)
    accepted, failed, reason = judged(s)
    assert (accepted, failed) == (False, 1)
    assert "openings manifest" in reason


def test_an_end_checkpoint_off_the_trajectory_is_blamed_on_the_first_sampled_step() -> None:
    """An end checkpoint that does not hash to the last leaf rejects the whole segment."""
    s = segment()
    wrong = s.blobs.put(encode_state(nudged(s.states[-1], 1e-3)))
    s.facts = dataclasses.replace(s.facts, end_checkpoint=wrong)
    accepted, failed, reason = judged(s)
    assert (accepted, failed) == (False, 1)
    assert "the end checkpoint does not hash to its committed leaf" in reason


def test_a_referee_checks_only_the_accused_step() -> None:
    """Judging one accused transition re-executes just that one: a tamper after it
    goes unseen, a tamper before it is confirmed."""
    s = segment(tamper_after=5)
    assert judged(s, steps=[4])[:2] == (True, None)
    assert judged(s, steps=[7])[:2] == (False, 7)


def test_tolerance_mode_accepts_a_torch_trajectory_and_rejects_a_large_perturbation() -> None:
    """A segment trained with stock torch passes within the bounds; a trajectory moved
    far beyond them after state 4 fails at transition 4, which crosses the move."""
    s = segment(mode="tolerance", optimizer="adamw")
    assert judged(s)[:2] == (True, None)
    t = segment(mode="tolerance", optimizer="adamw", tamper_after=4, tamper=1.0)
    accepted, failed, reason = judged(t)
    assert (accepted, failed) == (False, 4)
    assert "param.0.W" in reason
