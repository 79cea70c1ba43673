"""Offline proofs of training: `blacktail train` writes a bundle, `blacktail verify` checks
one (specs/proof.md §2).

A bundle is a directory:

    bundle.json                  the manifest: the spec, the dataset id, the commitment
                                 (every state hash, the root, the loss trace), and the
                                 SHA-256 and size of every other file
    checkpoints/<step>.safetensors   the state every `checkpoint_every` steps and the last
    openings.json                the openings manifest (protocol/openings.py) of the
                                 default sample, whose beacon offline is SHA-256 of
                                 "blacktail/offline/v1" and the root
    states/<step>.safetensors    the states those openings name

Verification checks every file against the manifest first, then the commitment (the root
of the listed hashes, every checkpoint hashing to its leaf), then re-executes a sample of
steps: each sampled state is taken from the included openings when they hold it, or else
recomputed from the checkpoint before it (every intermediate state checked against its
committed hash on the way; in tolerance mode this needs the hardware torch trained on, since
torch's bits depend on it), stepped once with the reproducible kernels, and compared with
the next committed hash (exact mode) or the next state within the calibrated bounds
(tolerance mode). The first failing step is named.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from node.trainer import Progress, SegmentRun, states_at, step_function, train_segment
from protocol import canonical
from protocol.jobspec import JobSpec, VerificationMode, parse_job_spec
from protocol.openings import commitment_root, open_steps, parse_manifest
from protocol.sampling import sample_indices, samples_needed
from verifier.checkpoints import blob_digest, decode_state, encode_state
from verifier.model import TrainState, hyper_from_spec, initial_state
from verifier.reexecute import Examples, compare_tolerance, reexecute_step, step_batch

BUNDLE_VERSION = "1"
MANIFEST = "bundle.json"
OPENINGS = "openings.json"
OFFLINE_DOMAIN = b"blacktail/offline/v1"
# A deterministic stand-in for the sampling verifier's address when none is given.
OFFLINE_VERIFIER = "0x" + "00" * 20
files_max = 100_000


class BundleError(Exception):
    """A bundle that cannot be read: missing, tampered or malformed files."""


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    samples: list[int]
    failed_step: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "samples": self.samples,
            "failed_step": self.failed_step,
            "reason": self.reason,
        }


def offline_beacon(root: bytes) -> bytes:
    return hashlib.sha256(OFFLINE_DOMAIN + root).digest()


def default_samples(spec: JobSpec, steps: int) -> int:
    probability = spec.verification.detection_probability.value
    return samples_needed(steps, probability, max(1, math.ceil(steps / 10)))


def write_bundle(
    spec: JobSpec,
    data: Examples,
    dataset_id: str,
    out: Path,
    *,
    checkpoint_every: int = 16,
    progress: Progress | None = None,
    device: str = "cpu",
) -> SegmentRun:
    """Train the whole job and write its bundle into `out` (which must not exist)."""
    out.mkdir(parents=True)
    run = train_segment(
        spec,
        data,
        initial_state(spec),
        spec.total_steps,
        checkpoint_every=checkpoint_every,
        progress=progress,
        device=device,
    )
    files: dict[str, dict[str, Any]] = {}

    def put(name: str, payload: bytes) -> str:
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        digest = blob_digest(payload)
        files[name] = {"sha256": digest, "bytes": len(payload)}
        return digest

    for step, state in sorted(run.checkpoints.items()):
        put(f"checkpoints/{step}.safetensors", encode_state(state))
    sample = sample_indices(
        run.root,
        offline_beacon(run.root),
        OFFLINE_VERIFIER,
        run.steps,
        default_samples(spec, run.steps),
    )
    needed = sorted(set(sample) | {i + 1 for i in sample})
    states = states_at(spec, data, run, needed)
    blobs = {i: put(f"states/{i}.safetensors", encode_state(states[i])) for i in needed}
    put(OPENINGS, open_steps(run.state_hashes, sample, blobs).encode())
    manifest = {
        "version": BUNDLE_VERSION,
        "spec": spec.to_json(),
        "dataset": dataset_id,
        "checkpoint_every": checkpoint_every,
        "commitment": {
            "root": "0x" + run.root.hex(),
            "steps": run.steps,
            "state_hashes": ["0x" + h.hex() for h in run.state_hashes],
            "loss_trace": run.loss_trace(),
        },
        "files": files,
    }
    (out / MANIFEST).write_bytes(canonical.encode(manifest))
    return run


@dataclass(frozen=True, slots=True)
class Bundle:
    directory: Path
    spec: JobSpec
    dataset: str
    root: bytes
    state_hashes: list[bytes]
    checkpoints: dict[int, Path]
    # The states the bundle's openings include: used as they are (checked against their
    # hashes) instead of being recomputed, which in tolerance mode would need the very
    # hardware torch trained on.
    opened: dict[int, Path]


def read_bundle(directory: Path) -> Bundle:
    """The bundle in `directory`, every file checked against the manifest first."""
    try:
        manifest = canonical.decode((directory / MANIFEST).read_bytes())
        spec = parse_job_spec(manifest["spec"])
        files = manifest["files"]
        if not isinstance(files, dict) or len(files) > files_max:
            raise BundleError("files: expected a bounded object")
        for name, facts in files.items():
            path = (directory / name).resolve()
            if directory.resolve() not in path.parents:
                raise BundleError(f"{name}: outside the bundle")
            payload = path.read_bytes()
            if len(payload) != facts["bytes"] or blob_digest(payload) != facts["sha256"]:
                raise BundleError(f"{name}: does not match its digest in {MANIFEST}")
        listed = set(files) | {MANIFEST}
        present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
        if present - listed:
            raise BundleError(f"files not in the manifest: {sorted(present - listed)[:5]}")
        commitment = manifest["commitment"]
        hashes = [bytes.fromhex(h[2:]) for h in commitment["state_hashes"]]
        root = bytes.fromhex(commitment["root"][2:])
        if len(hashes) != commitment["steps"] + 1 or commitment_root(hashes) != root:
            raise BundleError("commitment: the state hashes do not give its root")
        checkpoints = {
            int(name.split("/")[1].split(".")[0]): directory / name
            for name in files
            if name.startswith("checkpoints/")
        }
        opened = {
            int(name.split("/")[1].split(".")[0]): directory / name
            for name in files
            if name.startswith("states/")
        }
        return Bundle(directory, spec, manifest["dataset"], root, hashes, checkpoints, opened)
    except BundleError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{directory}: not a readable bundle: {error}") from None


def verify_bundle(
    bundle: Bundle,
    data: Examples,
    *,
    samples: int | None = None,
    detect: Fraction | None = None,
    verifier: str = OFFLINE_VERIFIER,
) -> Verdict:
    """Re-execute a sample of the bundle's steps; the first failure rejects it."""
    spec, steps = bundle.spec, len(bundle.state_hashes) - 1
    for step, path in bundle.checkpoints.items():
        state = decode_state(path.read_bytes(), spec)
        if (
            state.step != step
            or not 0 <= step <= steps
            or state.hash() != bundle.state_hashes[step]
        ):
            return Verdict(False, [], step, f"checkpoint {step} does not hash to its leaf")
    if 0 not in bundle.checkpoints:
        return Verdict(False, [], 0, "no checkpoint of state 0")
    if initial_state(spec).hash() != bundle.state_hashes[0]:
        return Verdict(False, [], 0, "state 0 is not the job's seeded initial state")
    count = (
        samples
        if samples is not None
        else (
            samples_needed(steps, detect, max(1, math.ceil(steps / 10)))
            if detect is not None
            else default_samples(spec, steps)
        )
    )
    count = min(max(count, 0), steps)
    sample = sample_indices(bundle.root, offline_beacon(bundle.root), verifier, steps, count)
    # The included openings must belong to this commitment (every proof checks).
    parse_manifest(
        (bundle.directory / OPENINGS).read_bytes(),
        digest=blob_digest((bundle.directory / OPENINGS).read_bytes()),
        root=bundle.root,
        steps=steps,
    )
    hyper = hyper_from_spec(spec.optimizer)
    advance = step_function(spec)
    for index in sample:
        before = _recompute(bundle, data, index, hyper, advance)
        if before is None:
            return Verdict(False, sample, index, f"state {index} is not the committed one")
        following = reexecute_step(spec, data, before)
        if spec.verification.mode is VerificationMode.EXACT:
            if following.hash() != bundle.state_hashes[index + 1]:
                return Verdict(
                    False, sample, index, f"step {index} does not lead to state {index + 1}"
                )
        else:
            committed = _recompute(bundle, data, index + 1, hyper, advance)
            if committed is None:
                return Verdict(False, sample, index, f"state {index + 1} is not the committed one")
            comparison = compare_tolerance(following, committed)
            if not comparison.ok:
                return Verdict(False, sample, index, f"step {index}: {comparison.detail}")
    return Verdict(True, sample, None, "")


def _recompute(
    bundle: Bundle, data: Examples, index: int, hyper: Any, advance: Callable[..., Any]
) -> TrainState | None:
    if index in bundle.opened:
        state = decode_state(bundle.opened[index].read_bytes(), bundle.spec)
        if state.step != index or state.hash() != bundle.state_hashes[index]:
            return None
        return state
    base = max(step for step in bundle.checkpoints if step <= index)
    state = decode_state(bundle.checkpoints[base].read_bytes(), bundle.spec)
    while state.step < index:
        x, y = step_batch(bundle.spec, data, state.step)
        state, _ = advance(state, x, y, hyper)
        if state.hash() != bundle.state_hashes[state.step]:
            return None
    return state
