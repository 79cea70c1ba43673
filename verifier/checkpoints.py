"""A training state as a blob: safetensors bytes, addressed by their SHA-256.

Checkpoints (the `startCheckpoint` and `endCheckpoint` of a commitment) and the states of
opened transitions travel this way between providers, the blob store and verifiers. The
bytes are untrusted when read: safetensors' own parser (no pickle) reads them, then
`TrainState.from_tensors` checks every name, dtype and shape against the job's model.
"""

from __future__ import annotations

import hashlib

from safetensors import SafetensorError
from safetensors.numpy import load, save

from protocol.jobspec import JobSpec
from verifier.errors import InvalidState
from verifier.model import TrainState

# The seed checkpoint: state 0 is not fetched but made from the job's seed.
SEED_CHECKPOINT = "0x" + "00" * 32


def encode_state(state: TrainState) -> bytes:
    """The safetensors bytes of a state (the same state always gives the same bytes)."""
    return save(state.to_tensors())


def blob_digest(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


def decode_state(data: bytes, spec: JobSpec) -> TrainState:
    """A state of `spec`'s model read from untrusted bytes; InvalidState if they are not."""
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as error:
        raise InvalidState(f"not a safetensors state: {error}") from None
    return TrainState.from_tensors(tensors, spec.model, spec.optimizer.name)
