"""Judging a commitment by its openings: what a verifier and a referee check.

Given a commitment (`CommitmentFacts`, read from the gateway), the job's spec and data,
and a blob source, `judge` checks, in this order:

1. the openings manifest: its blob exists, hashes to the digest the provider signed, is
   for this root and length, every inclusion proof holds (`protocol.openings`), and it
   opens exactly the sampled transitions;
2. the checkpoints: the start state (made from the seed for `0x00…00`, else fetched) and
   the end state each decode, carry their step and hash to the manifest's first and last
   leaf;
3. each transition to re-execute: state i decodes, carries step `start_step + i` and
   hashes to its leaf; re-executed by the reproducible kernels, it reaches the committed
   state i + 1 (`exact`: its hash; `tolerance`: the opened state i + 1, checked against
   its leaf, within the bounds).

Every failure is the provider's: a missing or oversized blob, one that does not decode,
a bad proof, a hash or step that does not match, a comparison that fails. The finding
names the transition that failed (for a failure of the whole manifest: the first sampled
transition not opened, else the first one checked), which is what `PostVerdict` needs
as `failedStep`, and a reason that names it too. Operating errors (the gateway is down,
a download breaks) are not findings: they propagate, and the caller tries again later.

The referee runs the same checks on the one accused transition, against the sample the
accuser posted, so that every rejection an honest verifier makes is one the referee
confirms: a rejection for a bad manifest or checkpoint is confirmed whichever sampled
transition it names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.commands import text_chars_max
from protocol.errors import ProtocolError
from protocol.jobspec import JobSpec, VerificationMode
from protocol.openings import OpeningsManifest, manifest_bytes_max, parse_manifest
from verifier.checkpoints import SEED_CHECKPOINT, decode_state
from verifier.errors import InconsistentGateway, InvalidState
from verifier.model import TrainState, initial_state, tensor_layout
from verifier.reexecute import (
    DEFAULT_BOUNDS,
    Device,
    Examples,
    ToleranceBounds,
    compare_exact,
    compare_tolerance,
    reexecute_step,
)

# A state's safetensors file is its float32 tensors, an 8-byte step, an 8-byte header
# length and a JSON header of about 100 bytes a tensor; anything much larger is not a
# state of the job and is refused before it is downloaded.
header_bytes_per_tensor_max = 256
header_bytes_base_max = 4096


class BlobSource(Protocol):
    """The blob store as a verifier reads it (the gateway client has these methods)."""

    def get_blob(self, digest: str) -> bytes:
        """The blob's bytes, checked against `digest`; raise if it cannot be fetched."""
        ...

    def blob_size(self, digest: str) -> int | None:
        """The blob's size, or None when the store does not hold it."""
        ...


@dataclass(frozen=True, slots=True)
class CommitmentFacts:
    """A commitment as GET /commitments/<id> describes it, parsed and type-checked."""

    id: str
    job: str
    verifier: str
    status: str
    root: bytes
    beacon: bytes
    steps: int
    samples: int
    sample_indices: tuple[int, ...]
    start_step: int
    start_checkpoint: str
    end_checkpoint: str
    openings: str | None
    opening_deadline: int
    # The sample the posted verdict named (None until a verdict is posted).
    verdict_samples: tuple[int, ...] | None

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> CommitmentFacts:
        """Read the gateway's answer; InconsistentGateway if it lacks a field or a field
        has the wrong type."""
        try:
            verdict = document["verdict"]
            return cls(
                id=_text(document["id"]),
                job=_text(document["job"]),
                verifier=_text(document["verifier"]),
                status=_text(document["status"]),
                root=_bytes32(document["root"]),
                beacon=_bytes32(document["beacon"]),
                steps=_count(document["steps"]),
                samples=_count(document["samples"]),
                sample_indices=tuple(_count(i) for i in _list(document["sample_indices"])),
                start_step=_count(document["start_step"]),
                start_checkpoint=_digest(document["start_checkpoint"]),
                end_checkpoint=_digest(document["end_checkpoint"]),
                openings=None if document["openings"] is None else _digest(document["openings"]),
                opening_deadline=_count(document["opening_deadline"]),
                verdict_samples=None
                if verdict is None
                else tuple(_count(i) for i in _list(verdict["samples"])),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InconsistentGateway(f"commitment: not the documented shape: {error}") from None


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of judging a commitment: accepted, or the transition that failed."""

    accepted: bool
    failed_step: int | None
    reason: str
    # The transitions re-executed (all of them when accepted; up to the failing one).
    checked: tuple[int, ...]


class _Fault(Exception):
    """A check the provider's openings failed: `step` is the transition it is blamed on."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


def state_bytes_max(spec: JobSpec) -> int:
    """The largest blob that can be a state of `spec`'s model and optimizer."""
    layout = tensor_layout(spec.model.widths, spec.optimizer.name)
    elements = sum(math.prod(shape) for _, shape in layout)
    tensors = len(layout) + 1
    return 4 * elements + 16 + header_bytes_base_max + header_bytes_per_tensor_max * tensors


def judge(
    spec: JobSpec,
    data: Examples,
    commitment: CommitmentFacts,
    blobs: BlobSource,
    *,
    sample: Sequence[int],
    steps: Sequence[int],
    device: Device = "cpu",
    bounds: ToleranceBounds = DEFAULT_BOUNDS,
) -> Finding:
    """Check the openings of `commitment`, which must open exactly `sample`, and re-execute
    the transitions `steps` (the whole sample for a verdict, the accused one for a ruling);
    the first failure rejects."""
    assert steps, "a judgement re-executes at least one transition"
    assert set(steps) <= set(sample), (steps, sample)
    checked: list[int] = []
    try:
        manifest = _manifest(commitment, blobs, sample, steps[0])
        _check_checkpoints(spec, commitment, manifest, blobs, steps[0])
        for step in steps:
            checked.append(step)
            _check_step(spec, data, commitment, manifest, blobs, step, device, bounds)
    except _Fault as fault:
        reason = clip(f"step {fault.step}: {fault.reason}")
        return Finding(False, fault.step, reason, tuple(checked))
    return Finding(True, None, "", tuple(checked))


def clip(text: str) -> str:
    """`text` cut to what a command's text field holds."""
    return text if len(text) <= text_chars_max else text[: text_chars_max - 1] + "…"


def _manifest(
    commitment: CommitmentFacts, blobs: BlobSource, sample: Sequence[int], first: int
) -> OpeningsManifest:
    digest = commitment.openings
    if digest is None:
        raise _Fault(first, "no openings manifest was published")
    raw = _fetch(blobs, digest, manifest_bytes_max, first, "the openings manifest")
    try:
        manifest = parse_manifest(raw, digest=digest, root=commitment.root, steps=commitment.steps)
    except ProtocolError as error:
        raise _Fault(first, f"openings manifest: {error}") from None
    opened = [opening.step for opening in manifest.openings]
    if opened != sorted(sample):
        missing = sorted(set(sample) - set(opened))
        raise _Fault(
            missing[0] if missing else first,
            f"the manifest opens {len(opened)} transitions, not the {len(sample)} sampled"
            + (f" (transition {missing[0]} is missing)" if missing else ""),
        )
    return manifest


def _check_checkpoints(
    spec: JobSpec,
    commitment: CommitmentFacts,
    manifest: OpeningsManifest,
    blobs: BlobSource,
    first: int,
) -> None:
    start_step, end_step = commitment.start_step, commitment.start_step + commitment.steps
    if commitment.start_checkpoint == SEED_CHECKPOINT:
        # Only segment 0 starts from the seed; its state 0 is made, not fetched.
        if start_step != 0:
            raise _Fault(first, f"the seed checkpoint names state 0, not state {start_step}")
        if initial_state(spec).hash() != manifest.start_state_hash:
            raise _Fault(first, "the first leaf is not the job's initial state")
    else:
        _state(
            spec,
            blobs,
            commitment.start_checkpoint,
            manifest.start_state_hash,
            start_step,
            first,
            "the start checkpoint",
        )
    _state(
        spec,
        blobs,
        commitment.end_checkpoint,
        manifest.end_state_hash,
        end_step,
        first,
        "the end checkpoint",
    )


def _check_step(
    spec: JobSpec,
    data: Examples,
    commitment: CommitmentFacts,
    manifest: OpeningsManifest,
    blobs: BlobSource,
    step: int,
    device: Device,
    bounds: ToleranceBounds,
) -> None:
    opening = manifest.opening(step)
    if opening is None:
        raise _Fault(step, "not opened")
    at = commitment.start_step + step
    before = _state(spec, blobs, opening.state, opening.state_hash, at, step, f"state {step}")
    try:
        recomputed = reexecute_step(spec, data, before, device=device)
    except InvalidState as error:
        raise _Fault(step, f"state {step} cannot be stepped: {error}") from None
    if spec.verification.mode is VerificationMode.EXACT:
        comparison = compare_exact(recomputed, opening.next_state_hash)
    else:
        after = _state(
            spec,
            blobs,
            opening.next_state,
            opening.next_state_hash,
            at + 1,
            step,
            f"state {step + 1}",
        )
        comparison = compare_tolerance(recomputed, after, bounds)
    if not comparison.ok:
        raise _Fault(step, f"re-executed, it does not reach state {step + 1}: {comparison.detail}")


def _state(
    spec: JobSpec,
    blobs: BlobSource,
    digest: str,
    leaf: bytes,
    at: int,
    step: int,
    what: str,
) -> TrainState:
    """The state in blob `digest`, which must be state `at` of the job and hash to `leaf`."""
    raw = _fetch(blobs, digest, state_bytes_max(spec), step, what)
    try:
        state = decode_state(raw, spec)
    except InvalidState as error:
        raise _Fault(step, f"{what} is not a state of this job: {error}") from None
    if state.step != at:
        raise _Fault(step, f"{what} is state {state.step}, not state {at}")
    if state.hash() != leaf:
        raise _Fault(step, f"{what} does not hash to its committed leaf")
    return state


def _fetch(blobs: BlobSource, digest: str, bytes_max: int, step: int, what: str) -> bytes:
    # The size is asked first: a blob the store does not hold is the provider's fault (it
    # had to upload it), while a download that fails is an operating error, retried later.
    size = blobs.blob_size(digest)
    if size is None:
        raise _Fault(step, f"{what} ({digest}) is not in the blob store")
    if size > bytes_max:
        raise _Fault(step, f"{what} is {size} bytes, more than the {bytes_max} it can be")
    return blobs.get_blob(digest)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r}")
    return value


def _bytes32(value: Any) -> bytes:
    text = _text(value)
    if len(text) != 66 or not text.startswith("0x"):
        raise ValueError(f"expected 0x and 32 bytes of hex, got {text!r}")
    return bytes.fromhex(text[2:])


def _digest(value: Any) -> str:
    return "0x" + _bytes32(value).hex()
