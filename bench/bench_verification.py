"""What verification costs and what it catches, on the example jobs.

- `training.exact_over_torch_{job}`: training the example job with the reproducible
  kernels (exact mode) against stock PyTorch (tolerance mode), both with commitments;
- `training.commitment_overhead_pct_{job}_{mode}`: what committing to every state (hashing
  it, inline) adds to the training loop: the time the loop spent hashing, as a share of
  the rest of its wall time, timed inside the same run (best of three runs). Measured
  directly rather than as the difference of two runs with and without hashes, which on a
  shared two-core machine is smaller than its noise;
- `verification.compute_pct_10k`: for a 10,000-step job in segments of 1,000 that must
  catch a provider faking >= 5% of its steps with >= 99% probability, the re-executed
  steps (`samples_needed` per segment) as a share of the trained steps, and its ratio to
  the 1% aim;
- `detection.f{f}_s{s}`: measured detection rate of a self-consistent cheat faking a
  fraction f of a 100-step segment, over many verifier samples of s steps, with the exact
  formula and 1 - (1 - f)^s beside it;
- `honest.false_rejections`: re-executions of every step of honest runs (exact mode:
  hash equality; tolerance mode: the calibrated bounds) that failed. Must be 0.

Usage: python bench/bench_verification.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from fractions import Fraction
from math import comb
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import figure, finish, machine, say
from node.adversaries import cheat
from node.datasets import build_digits, build_synthetic
from node.trainer import states_at, train_segment
from protocol.jobspec import JobSpec, VerificationMode, parse_job_spec
from protocol.keys import PrivateKey
from protocol.sampling import sample_indices, samples_needed
from verifier.model import initial_state
from verifier.reexecute import compare_tolerance, reexecute_step

EXAMPLES = Path(__file__).resolve().parent.parent / "specs" / "examples"


def load(name: str, **changes: object) -> JobSpec:
    document = yaml.safe_load((EXAMPLES / name).read_text())
    document.update(changes)
    return parse_job_spec(document)


def tolerant(spec: JobSpec) -> JobSpec:
    return dataclasses.replace(
        spec, verification=dataclasses.replace(spec.verification, mode=VerificationMode.TOLERANCE)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    tiny_data = build_synthetic(0, 512, 16, 4)
    jobs = [("tiny", load("tiny.yaml"), tiny_data)]
    if not args.quick:
        jobs.append(("digits", load("digits.yaml", total_steps=200), build_digits()))
        wide_data = build_synthetic(3, 2048, 784, 10)
        wide = {
            "model": {"family": "mlp", "input": 784, "hidden": [1024], "classes": 10},
            "dataset": {
                "sha256": "0x" + "ab" * 32,
                "examples": 2048,
                "features": 784,
                "classes": 10,
            },
            "total_steps": 40,
            "segment_steps": 40,
        }
        jobs.append(("wide1024", load("tiny.yaml", **wide), wide_data))
    for name, spec, data in jobs:
        # Compile the kernels (numba JIT) and warm torch before anything is timed.
        train_segment(spec, data, initial_state(spec), 1)
        train_segment(tolerant(spec), data, initial_state(spec), 1)
        torch_spec = tolerant(spec)
        runs = {
            mode: min(
                (train_segment(s, data, initial_state(s), s.total_steps) for _ in range(3)),
                key=lambda run: run.train_seconds + run.hash_seconds,
            )
            for mode, s in (("exact", spec), ("torch", torch_spec))
        }
        exact, torch_run = runs["exact"], runs["torch"]
        figure(
            f"training.exact_over_torch_{name}",
            exact.train_seconds / torch_run.train_seconds,
            "x",
            baseline="torch training of the same job",
            ratio=exact.train_seconds / torch_run.train_seconds,
        )
        for mode, run in (("exact", exact), ("torch", torch_run)):
            figure(
                f"training.commitment_overhead_pct_{name}_{mode}",
                100 * run.hash_seconds / run.train_seconds,
                "% of training wall time",
                baseline="the same run's training time without its hashing",
                ratio=(run.train_seconds + run.hash_seconds) / run.train_seconds,
            )
        # Openings: states kept in memory (the default when a segment's states fit in
        # 256 MiB) cost nothing to open; kept only every 16 steps, a sampled state is
        # recomputed from the checkpoint before it. The cost of opening the default sample
        # of every segment that way, against training the job:
        sparse = train_segment(
            spec, data, initial_state(spec), spec.total_steps, checkpoint_every=16
        )
        started = time.perf_counter()
        for first in range(0, spec.total_steps, spec.segment_steps):
            length = min(spec.segment_steps, spec.total_steps - first)
            count = samples_needed(length, Fraction(99, 100), max(1, length // 10))
            chosen = sample_indices(sparse.root, bytes(32), "0x" + "00" * 20, length, count)
            states_at(
                spec, data, sparse, [first + i for i in chosen] + [first + i + 1 for i in chosen]
            )
        opening = time.perf_counter() - started
        figure(
            f"openings.recompute_pct_{name}",
            100 * opening / sparse.train_seconds,
            "% of training time (states recomputed in one walk from checkpoints every 16 "
            "steps; 0 with the default of keeping every state of a small segment)",
        )
    # A 10,000-step job catching >= 5% fakes with >= 99% probability: the share of steps
    # re-executed depends on the segment length (the sample is sized per segment).
    for segment in (1000, 10_000):
        per_segment = samples_needed(segment, Fraction(99, 100), segment // 20)
        share = 100 * per_segment / segment
        figure(
            f"verification.compute_pct_10k_steps_segments_of_{segment}",
            share,
            "% of training steps re-executed",
            baseline="the 1% aim",
            ratio=share / 1.0,
        )
    steps, trials = 100, 100 if args.quick else 300
    spec = load("tiny.yaml", total_steps=steps, segment_steps=steps)
    for faked_count in (1, 5, 10):
        faked = set(range(0, steps, steps // faked_count)[:faked_count])
        run = cheat(
            spec, tiny_data, initial_state(spec), steps, faked, "wrong-lr", checkpoint_every=1
        )
        bad = {
            i
            for i in range(steps)
            if reexecute_step(spec, tiny_data, run.checkpoints[i]).hash() != run.state_hashes[i + 1]
        }
        assert bad == faked, (bad, faked)
        for samples in (5, 20, 45):
            caught = sum(
                bool(
                    bad
                    & set(
                        sample_indices(
                            run.root,
                            bytes(32),
                            PrivateKey.from_bytes((0x9000 + t).to_bytes(32, "big")).address,
                            steps,
                            samples,
                        )
                    )
                )
                for t in range(trials)
            )
            f = faked_count / steps
            exact_p = 1 - comb(steps - faked_count, samples) / comb(steps, samples)
            figure(
                f"detection.f{f:g}_s{samples}",
                100 * caught / trials,
                f"% caught (exact {100 * exact_p:.1f}%, "
                f"1-(1-f)^s {100 * (1 - (1 - f) ** samples):.1f}%)",
                baseline="exact formula",
                ratio=(caught / trials) / exact_p,
            )
    rejections = 0
    checked = 0
    started = time.perf_counter()
    for seed in (1, 2, 3):
        for base in (load("tiny.yaml", seed=seed), tolerant(load("tiny.yaml", seed=seed))):
            run = train_segment(base, tiny_data, initial_state(base), 30, checkpoint_every=1)
            for i in range(30):
                following = reexecute_step(base, tiny_data, run.checkpoints[i])
                if base.verification.mode is VerificationMode.EXACT:
                    ok = following.hash() == run.state_hashes[i + 1]
                else:
                    ok = compare_tolerance(following, run.checkpoints[i + 1]).ok
                rejections += not ok
                checked += 1
    say(f"honest re-executions checked: {checked} in {time.perf_counter() - started:.1f} s")
    figure("honest.false_rejections", rejections, f"of {checked} honest steps")
    finish()


if __name__ == "__main__":
    main()
