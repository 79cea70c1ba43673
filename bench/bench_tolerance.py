"""Calibration of tolerance mode's bounds: how far stock PyTorch's step lands from the
reproducible kernels' step, across widths, learning rates, optimizers and training time.

For each configuration (MLP 784 → w → w → 10 on seeded synthetic clustered data, batch 64)
a provider's torch trajectory is trained (`verifier.torch_step.TorchTrainer`, one live
model); at evenly spaced points along it, the step the provider took is re-executed with
the kernels from the same state, as a verifier does, and the gap of each tensor is measured
as max|torch - kernels| / max|torch| (the quantity `compare_tolerance` bounds). Figures:

- `tolerance.gap_{kind}`: the largest gap of each tensor kind over every configuration and
  point, with the default bound and the margin (bound / gap) as its ratio;
- `tolerance.gap_param_w{w}`: the largest parameter gap at each width (growth with width);
- `tolerance.growth_{opt}_lr{lr}`: the parameter gap over the last half of the trajectory
  against the first half (growth with training time);
- `tolerance.false_rejections`: points where an honest torch step failed the bounds.

Usage: python bench/bench_tolerance.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import figure, finish, machine, say
from node.datasets import build_synthetic
from protocol.jobspec import JobSpec, parse_job_spec
from verifier.model import TrainState, hyper_from_spec, initial_state, tensor_layout
from verifier.reexecute import DEFAULT_BOUNDS, compare_tolerance, reexecute_step, step_batch
from verifier.torch_step import TorchTrainer

OPTIMIZERS = {
    ("sgd", "0.01"): {"name": "sgd", "lr": "0.01", "momentum": "0.9", "weight_decay": "0"},
    ("sgd", "0.1"): {"name": "sgd", "lr": "0.1", "momentum": "0.9", "weight_decay": "0.0001"},
    ("adamw", "0.001"): {
        "name": "adamw",
        "lr": "0.001",
        "beta1": "0.9",
        "beta2": "0.999",
        "eps": "1e-8",
        "weight_decay": "0.01",
    },
    ("adamw", "0.01"): {
        "name": "adamw",
        "lr": "0.01",
        "beta1": "0.9",
        "beta2": "0.999",
        "eps": "1e-8",
        "weight_decay": "0.01",
    },
}
POINTS = 5


def spec_for(width: int, optimizer: dict[str, str], steps: int) -> JobSpec:
    return parse_job_spec(
        {
            "version": "1",
            "model": {"family": "mlp", "input": 784, "hidden": [width, width], "classes": 10},
            "dataset": {
                "sha256": "0x" + "cd" * 32,
                "examples": 4096,
                "features": 784,
                "classes": 10,
            },
            "optimizer": optimizer,
            "batch_size": 64,
            "seed": width,
            "total_steps": steps,
            "segment_steps": steps,
            "verification": {"mode": "tolerance", "detection_probability": "0.99"},
            "payment": {"currency": "BLACK", "price_per_step_max": 1},
            "deadline": 4102444800,
        }
    )


def gaps(committed: TrainState, recomputed: TrainState) -> dict[str, float]:
    """Per tensor kind, the largest max|committed - recomputed| / max|committed|."""
    out: dict[str, float] = {}
    layout = tensor_layout(committed.widths, committed.optimizer)
    for (name, _), x, y in zip(layout, committed.arrays(), recomputed.arrays(), strict=True):
        if name.startswith("opt.beta"):
            continue
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        scale = float(np.max(np.abs(x64)))
        gap = float(np.max(np.abs(x64 - y64))) / scale if scale else 0.0
        kind = name.rsplit(".", 2)[0]
        out[kind] = max(out.get(kind, 0.0), gap)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    data = build_synthetic(11, 4096, 784, 10)
    plan = {256: 200, 512: 120, 1024: 60, 2048: 24}
    if args.quick:
        plan = {256: 40, 512: 20}
    worst: dict[str, float] = {}
    rejections = checked = 0
    growth: dict[tuple[str, str], list[float]] = {}
    for width, steps in plan.items():
        width_worst = 0.0
        for (name, lr), optimizer in OPTIMIZERS.items():
            spec = spec_for(width, optimizer, steps)
            hyper = hyper_from_spec(spec.optimizer)
            points = {round(i * (steps - 1) / (POINTS - 1)) for i in range(POINTS)}
            trainer = TorchTrainer(initial_state(spec), hyper)
            early, late = 0.0, 0.0
            for step in range(steps):
                before = trainer.state
                x, y = step_batch(spec, data, step)
                following, _ = trainer.step(x, y)
                if step not in points:
                    continue
                recomputed = reexecute_step(spec, data, before)
                measured = gaps(following, recomputed)
                for kind, gap in measured.items():
                    worst[kind] = max(worst.get(kind, 0.0), gap)
                width_worst = max(width_worst, measured["param"])
                if step < steps / 2:
                    early = max(early, measured["param"])
                else:
                    late = max(late, measured["param"])
                rejections += not compare_tolerance(recomputed, following).ok
                checked += 1
            growth.setdefault((name, lr), []).append(late / early if early else 1.0)
            say(f"w={width} {name} lr={lr}: param gap early {early:.2e}, late {late:.2e}")
        figure(f"tolerance.gap_param_w{width}", width_worst, "max|Δ|/max|X| of parameters")
    for kind, gap in sorted(worst.items()):
        bound = DEFAULT_BOUNDS.relative[kind]
        figure(
            f"tolerance.gap_{kind.replace('.', '_')}",
            gap,
            f"max|Δ|/max|X| (bound {bound:g})",
            baseline="the default bound (ratio: margin, bound / gap)",
            ratio=bound / gap if gap else float("inf"),
        )
    for (name, lr), ratios in sorted(growth.items()):
        figure(
            f"tolerance.growth_{name}_lr{lr}",
            max(ratios),
            "x (late-half gap / early-half gap, worst width)",
        )
    figure("tolerance.false_rejections", rejections, f"of {checked} honest torch steps")
    finish()


if __name__ == "__main__":
    main()
