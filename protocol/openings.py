"""Commitments to a segment's training trajectory, and the openings of its sampled steps.

A provider training a segment of S steps hashes the model state before the first step and
after every step: S + 1 state hashes h_0 .. h_S (how a state is hashed is the job's
computation, `specs/proof.md`). The commitment's `root` is the RFC 6962 Merkle root over
those 32-byte hashes as leaves. Once the sample is known, the provider *opens* each
sampled transition i: it publishes the full state i (a safetensors blob, addressed by its
SHA-256), h_i and h_{i+1}, and inclusion proofs of both. A verifier checks the proofs
against the root, hashes the state it fetched, re-executes step i and compares with
h_{i+1}.

The openings manifest is canonical JSON, and its SHA-256 is what `OpenSamples` signs:

    {"version": "1", "root": "0x…", "steps": S,
     "start_state_hash": "0x<h_0>", "start_proof": [...],
     "end_state_hash": "0x<h_S>", "end_proof": [...],
     "openings": [
       {"step": i, "state": "0x<sha256 of the blob of state i>",
        "state_hash": "0x<h_i>", "proof": ["0x…", …],
        "next_state": "0x<sha256 of the blob of state i+1>",
        "next_state_hash": "0x<h_i+1>", "next_proof": ["0x…", …]}, …]}

with openings in ascending step order, one per sampled transition. The start and end
leaves bind the commitment's checkpoints (the blobs `startCheckpoint` and
`endCheckpoint` name) to the trajectory: whoever fetches a checkpoint checks that its
state hashes to h_0 or h_S. Both states of an opening are published, so that a
`tolerance`-mode verifier can compare tensors, not only hashes. This module knows
nothing of tensors: it takes state hashes as given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol import canonical, merkle
from protocol.errors import InvalidInput, InvalidProof

OPENINGS_VERSION = "1"
# An openings manifest lists at most one opening per step of a segment.
openings_max = 65536
manifest_bytes_max = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Opening:
    """Transition `step` of a committed segment, opened."""

    step: int
    state: str
    state_hash: bytes
    proof: tuple[bytes, ...]
    next_state: str
    next_state_hash: bytes
    next_proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "state": self.state,
            "state_hash": "0x" + self.state_hash.hex(),
            "proof": ["0x" + p.hex() for p in self.proof],
            "next_state": self.next_state,
            "next_state_hash": "0x" + self.next_state_hash.hex(),
            "next_proof": ["0x" + p.hex() for p in self.next_proof],
        }


@dataclass(frozen=True, slots=True)
class OpeningsManifest:
    root: bytes
    steps: int
    start_state_hash: bytes
    start_proof: tuple[bytes, ...]
    end_state_hash: bytes
    end_proof: tuple[bytes, ...]
    openings: tuple[Opening, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": OPENINGS_VERSION,
            "root": "0x" + self.root.hex(),
            "steps": self.steps,
            "start_state_hash": "0x" + self.start_state_hash.hex(),
            "start_proof": ["0x" + p.hex() for p in self.start_proof],
            "end_state_hash": "0x" + self.end_state_hash.hex(),
            "end_proof": ["0x" + p.hex() for p in self.end_proof],
            "openings": [o.to_json() for o in self.openings],
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    def digest(self) -> str:
        """What OpenSamples signs: 0x + SHA-256 of the canonical manifest."""
        return "0x" + hashlib.sha256(self.encode()).hexdigest()

    def opening(self, step: int) -> Opening | None:
        return next((o for o in self.openings if o.step == step), None)


def commitment_root(state_hashes: Sequence[bytes]) -> bytes:
    """The Merkle root over the S + 1 state hashes of a segment of S steps."""
    if len(state_hashes) < 2:
        raise InvalidInput("state_hashes: a segment of S >= 1 steps has S + 1 states")
    return merkle.root(list(state_hashes))


def open_steps(
    state_hashes: Sequence[bytes], steps: Sequence[int], state_blobs: Mapping[int, str]
) -> OpeningsManifest:
    """The manifest opening each transition in `steps` (indices within the segment);
    `state_blobs` maps an index to the 0x SHA-256 of the blob holding that state, for
    every index i and i + 1 opened."""
    size = len(state_hashes)
    leaves = list(state_hashes)
    root = commitment_root(state_hashes)

    def proof(index: int) -> tuple[bytes, ...]:
        return tuple(merkle.inclusion_proof(index, leaves))

    openings = []
    for step in sorted(set(steps)):
        if not 0 <= step < size - 1:
            raise InvalidInput(f"steps: {step} is not a transition of {size - 1} steps")
        openings.append(
            Opening(
                step,
                state_blobs[step],
                leaves[step],
                proof(step),
                state_blobs[step + 1],
                leaves[step + 1],
                proof(step + 1),
            )
        )
    return OpeningsManifest(
        root, size - 1, leaves[0], proof(0), leaves[-1], proof(size - 1), tuple(openings)
    )


def parse_manifest(data: bytes, *, digest: str, root: bytes, steps: int) -> OpeningsManifest:
    """Read an openings manifest fetched by its digest and check it belongs to the
    commitment (root, steps) and that every proof holds; raise InvalidProof or
    InvalidInput naming what is wrong. The states themselves are checked by whoever
    fetches them (their SHA-256 and their state hash)."""
    if len(data) > manifest_bytes_max:
        raise InvalidInput(f"manifest: larger than {manifest_bytes_max} bytes")
    if "0x" + hashlib.sha256(data).hexdigest() != digest:
        raise InvalidProof("manifest: its SHA-256 is not the digest the provider signed")
    try:
        document = canonical.decode(data)
        manifest = _from_json(document)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInput(f"manifest: malformed: {error}") from None
    if manifest.root != root or manifest.steps != steps:
        raise InvalidProof("manifest: for another commitment (root or steps differ)")
    size = steps + 1
    merkle.verify_inclusion(manifest.start_state_hash, 0, size, manifest.start_proof, root)
    merkle.verify_inclusion(manifest.end_state_hash, steps, size, manifest.end_proof, root)
    for opening in manifest.openings:
        merkle.verify_inclusion(opening.state_hash, opening.step, size, opening.proof, root)
        merkle.verify_inclusion(
            opening.next_state_hash, opening.step + 1, size, opening.next_proof, root
        )
    return manifest


def _from_json(document: Any) -> OpeningsManifest:
    if not isinstance(document, dict) or document.get("version") != OPENINGS_VERSION:
        raise ValueError("not a version 1 openings manifest")
    openings = document["openings"]
    if not isinstance(openings, list) or len(openings) > openings_max:
        raise ValueError("openings: expected a bounded list")
    parsed = tuple(
        Opening(
            _int(o["step"]),
            _digest(o["state"]),
            _bytes32(o["state_hash"]),
            tuple(_bytes32(p) for p in _list(o["proof"])),
            _digest(o["next_state"]),
            _bytes32(o["next_state_hash"]),
            tuple(_bytes32(p) for p in _list(o["next_proof"])),
        )
        for o in openings
    )
    steps = [o.step for o in parsed]
    if steps != sorted(set(steps)):
        raise ValueError("openings: steps must be ascending and distinct")
    return OpeningsManifest(
        _bytes32(document["root"]),
        _int(document["steps"]),
        _bytes32(document["start_state_hash"]),
        tuple(_bytes32(p) for p in _list(document["start_proof"])),
        _bytes32(document["end_state_hash"]),
        tuple(_bytes32(p) for p in _list(document["end_proof"])),
        parsed,
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > 64:
        raise ValueError("expected a proof of at most 64 hashes")
    return value


def _bytes32(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
        raise ValueError(f"expected 0x and 32 bytes of hex, got {value!r}")
    return bytes.fromhex(value[2:])


def _digest(value: Any) -> str:
    return "0x" + _bytes32(value).hex()
