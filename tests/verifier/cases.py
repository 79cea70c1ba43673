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
        "dab578cb653a766056b2459bc4d068589d475521ea3e4e55923a2ec6fffcd653",
        "9aaab9a7541afc50f34c1bfaab42c85a9f226c3a5c00262d08250a53597f2732",
        "a8ebf64612325c667a89890c19bf2869aa7a9dce49bea49cf976dd2435a946bb",
        "a61e095512c028870a6de588780ce1eca08c5da629a2d0e14e880d9fa3791555",
    ],
    "adamw": [
        "ebbc38dea9bdd51e6b826eebc447e9995546587d0246a95f1a7a4196639683be",
        "57f730cef5d3c4889a8404ad1d32f36dd591c50416dc1be117aa1fa8b38e8163",
        "c5263e7c02378567cc0f9fef7e98f5c4b1d6bb0ede583262ee727394b7eff9e2",
        "8107bd51d6a22fa7de094179497998632d6f053e52007377eee295f7d0adf203",
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
