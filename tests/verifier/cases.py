"""Small jobs, datasets and states the verifier tests share (also imported by the CUDA
simulator subprocess, so everything here is deterministic and cheap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.jobspec import JobSpec, MlpModel, parse_job_spec
from verifier.model import (
    AdamWHyper,
    Float32Array,
    Hyper,
    SgdHyper,
    TrainState,
    init_state,
    stream_words,
    uniform_tensor,
)

F = np.float32
# The state hashes of the first three steps of the tiny jobs of this module: they
# pin initialization, batch selection, the kernels and the hash together (specs/proof.md §1).
TRAJECTORIES = {
    "sgd": [
        "7abdbde9d6faea73c552f672592dece938fc3e4e480b41c9d263714325f646dc",
        "813e6ac0826b7ddeda0fd33cc629b8f5c833c4a77a6eec9aceed5502ed074925",
        "aeca785839e478938200266a0d38ae25d3377a95766eae018dc28f670a4f5b01",
        "4517b3a311774bc8dc1b995b24294d6022cb87eccc5bea9614d98e9a2aebfcda",
    ],
    "adamw": [
        "6fa1c9bee94f1f9c3acce072d728df7b0b983a6dfe1357544771e413f5a0b8cc",
        "4d06ede6de421f4da93c57a26179dab0fe06abbd98cbc9b6d83771caa835a5c9",
        "13783d3ee7b7b8a8177dc229b23560ca95ae44589ea7eb158836fc58c27ca817",
        "52c9a030820eb03eebb6112b898f467e2d1e6ad2cef12c60bb96779db5dfdaea",
    ],
}
SGD = SgdHyper(F(0.1), F(0.9), F(0.01))
ADAMW = AdamWHyper(F(0.01), F(0.9), F(0.999), F(1e-8), F(0.01))


@dataclass(frozen=True, slots=True, eq=False)
class Examples:
    """A dataset as the verifier takes it: features and labels."""

    x: Float32Array
    y: npt.NDArray[np.int32]


def dataset(examples: int, features: int, classes: int, key: bytes = b"\x07" * 32) -> Examples:
    """Features uniform in [-2, 2) and labels from the SHA-256 stream: the same everywhere."""
    x = uniform_tensor(key, (examples, features), F(2.0))
    y = (stream_words(bytes(reversed(key)), examples) % np.uint32(classes)).astype(np.int32)
    return Examples(x, y)


def spec(
    widths: tuple[int, ...] = (8, 6, 3),
    optimizer: str = "sgd",
    examples: int = 32,
    batch_size: int = 4,
    seed: int = 42,
    total_steps: int = 10,
    lr: str | None = None,
    mode: str = "exact",
) -> JobSpec:
    """A valid job spec for a tiny MLP."""
    if optimizer == "sgd":
        opt: dict[str, Any] = {
            "name": "sgd",
            "lr": lr or "0.1",
            "momentum": "0.9",
            "weight_decay": "0.01",
        }
    else:
        opt = {
            "name": "adamw",
            "lr": lr or "0.01",
            "beta1": "0.9",
            "beta2": "0.999",
            "eps": "1e-8",
            "weight_decay": "0.01",
        }
    return parse_job_spec(
        {
            "version": "1",
            "model": {
                "family": "mlp",
                "input": widths[0],
                "hidden": list(widths[1:-1]),
                "classes": widths[-1],
            },
            "dataset": {
                "sha256": "0x" + "ab" * 32,
                "examples": examples,
                "features": widths[0],
                "classes": widths[-1],
            },
            "optimizer": opt,
            "batch_size": batch_size,
            "seed": seed,
            "total_steps": total_steps,
            "segment_steps": total_steps,
            "verification": {"mode": mode, "detection_probability": "0.99"},
            "payment": {"currency": "BLACK", "price_per_step_max": 1},
            "deadline": 1798761600,
        }
    )


def hyper(optimizer: str) -> Hyper:
    return SGD if optimizer == "sgd" else ADAMW


@dataclass(frozen=True, slots=True, eq=False)
class Case:
    """A state, a batch and hyperparameters: one step to compute."""

    state: TrainState
    x: Float32Array
    y: npt.NDArray[np.int32]
    hyper: Hyper


def random_case(seed: int) -> Case:
    """A small random model, state and batch (numpy's generator: only tests use it)."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    widths = [int(w) for w in rng.integers(1, 7, size=depth + 1)]
    widths[-1] = max(widths[-1], 2)
    optimizer = "sgd" if seed % 2 == 0 else "adamw"
    model = MlpModel(widths[0], tuple(widths[1:-1]), widths[-1])
    state = init_state(model, optimizer, int(rng.integers(0, 2**63)))
    batch = int(rng.integers(1, 7))
    x = (rng.standard_normal((batch, widths[0])) * 3).astype(F)
    y = rng.integers(0, widths[-1], batch).astype(np.int32)
    return Case(state, x, y, hyper(optimizer))
