"""Cheating providers against re-execution: every kind of fake is caught exactly when a
faked transition is sampled, detection over many samples follows the formula, and honest
runs are never rejected."""

from __future__ import annotations

import dataclasses
from math import comb
from pathlib import Path

import pytest
import yaml

from node.adversaries import ADVERSARIES, cheat
from node.datasets import DatasetArrays, build_synthetic
from node.trainer import SegmentRun, train_segment
from protocol.jobspec import JobSpec, VerificationMode, parse_job_spec
from protocol.keys import PrivateKey
from protocol.sampling import sample_indices
from verifier.model import initial_state
from verifier.reexecute import compare_tolerance, reexecute_step

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"


def make_spec(**changes: object) -> JobSpec:
    document = yaml.safe_load(TINY.read_text())
    document.update(changes)
    return parse_job_spec(document)


@pytest.fixture(scope="module")
def data() -> DatasetArrays:
    return build_synthetic(0, 512, 16, 4)


def rejected_steps(
    spec: JobSpec, data: DatasetArrays, run: SegmentRun, indices: list[int]
) -> list[int]:
    """The sampled transitions whose re-execution does not reach the committed hash."""
    start = run.start.step
    return [
        i
        for i in indices
        if reexecute_step(spec, data, run.checkpoints[start + i]).hash() != run.state_hashes[i + 1]
    ]


@pytest.mark.parametrize("kind", sorted(ADVERSARIES))
def test_each_kind_of_fake_is_caught_only_at_its_faked_step(kind: str, data: DatasetArrays) -> None:
    """A self-consistent cheat that fakes transition 3 is rejected at 3 and nowhere else."""
    spec = make_spec()
    run = cheat(spec, data, initial_state(spec), 8, {3}, kind, checkpoint_every=1)
    assert rejected_steps(spec, data, run, list(range(8))) == [3]


def test_detection_over_many_samples_follows_the_formula(data: DatasetArrays) -> None:
    """Faking 4 of 40 transitions, 200 verifiers each sampling 10 catch the cheat at the
    exact hypergeometric rate (within sampling error), which is at least 1 - (1 - f)^s."""
    spec = make_spec()
    steps, faked, samples = 40, {5, 17, 23, 36}, 10
    run = cheat(spec, data, initial_state(spec), steps, faked, "wrong-lr", checkpoint_every=1)
    bad = set(rejected_steps(spec, data, run, list(range(steps))))
    assert bad == faked
    trials = 200
    caught = sum(
        bool(
            bad
            & set(
                sample_indices(
                    run.root,
                    bytes(32),
                    PrivateKey.from_bytes((0x5000 + t).to_bytes(32, "big")).address,
                    steps,
                    samples,
                )
            )
        )
        for t in range(trials)
    )
    exact = 1 - comb(steps - len(faked), samples) / comb(steps, samples)
    with_replacement = 1 - (1 - len(faked) / steps) ** samples
    assert exact >= with_replacement
    assert abs(caught / trials - exact) < 0.08


@pytest.mark.parametrize("seed, hidden", [(1, [32]), (7, [8, 8]), (42, [])])
def test_honest_runs_are_never_rejected(seed: int, hidden: list[int], data: DatasetArrays) -> None:
    """Honest exact-mode runs of several seeds and shapes re-execute to every committed
    hash, and honest tolerance-mode (torch) runs stay within the calibrated bounds."""
    document = yaml.safe_load(TINY.read_text())
    document["seed"], document["model"]["hidden"] = seed, hidden
    spec = parse_job_spec(document)
    run = train_segment(spec, data, initial_state(spec), 12, checkpoint_every=1)
    assert rejected_steps(spec, data, run, list(range(12))) == []
    tolerant = dataclasses.replace(
        spec, verification=dataclasses.replace(spec.verification, mode=VerificationMode.TOLERANCE)
    )
    torch_run = train_segment(tolerant, data, initial_state(tolerant), 12, checkpoint_every=1)
    for step in range(12):
        recomputed = reexecute_step(tolerant, data, torch_run.checkpoints[step])
        assert compare_tolerance(recomputed, torch_run.checkpoints[step + 1]).ok
