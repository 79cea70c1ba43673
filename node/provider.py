"""The provider agent: lease segments from a gateway, train them, commit, open samples.

One pass (`run_once`) looks for a job with a queued segment, leases it, trains it from
the lease's start checkpoint (`node/trainer.py`) while a heartbeat thread keeps the lease
alive, uploads the end checkpoint, signs the commitment, then opens the transitions the
beacon sampled: the states before and after each (recomputed from the run's periodic
checkpoints), their inclusion proofs in a manifest, and `OpenSamples` with its digest.
A restarted agent needs no local state: a segment it did not commit comes back to the
queue when its lease expires, and training always starts from the last accepted
checkpoint, which the gateway names and the blob store holds. Within one agent's life, a
trained segment is kept until its openings are published: when the gateway fails between
training and `OpenSamples` (an outage, a restart), the next pass re-sends the same signed
`Commit` (a retry gets the first answer) and opens it, instead of leasing new work and
leaving a commitment unopened, which the protocol punishes as fraud.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.client import OCTET_STREAM, SAFETENSORS, GatewayClient, GatewayError
from node.trainer import Progress, SegmentRun, states_at, train_segment
from protocol.commands import SignedCommand, sign_command
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.openings import open_steps
from verifier.checkpoints import SEED_CHECKPOINT, blob_digest, decode_state, encode_state
from verifier.model import TrainState, initial_state
from verifier.reexecute import Examples

log = logging.getLogger(__name__)
command_seconds = 600
jobs_scanned_max = 200


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What one leased segment came to."""

    job: str
    lease: str
    segment: int
    steps: int
    commitment: str
    openings: str
    samples: int
    loss_first: float
    loss_last: float
    train_seconds: float
    hash_seconds: float
    open_seconds: float


@dataclass
class _Committing:
    """A trained segment on its way into the ledger: its signed Commit (re-sent as is on a
    retry, so that an applied one answers again) and, once known, its commitment."""

    lease: dict[str, Any]
    spec: JobSpec
    data: Examples
    run: SegmentRun
    commit: SignedCommand
    commitment: str | None = None


class ProviderAgent:
    """Works for the network with one key: leases, trains, commits and opens."""

    def __init__(
        self,
        client: GatewayClient,
        key: PrivateKey,
        fetch_dataset: Callable[[str], Examples],
        *,
        chain_id: int,
        checkpoint_every: int | None = None,
        progress: Progress | None = None,
        device: str = "cpu",
    ) -> None:
        self.client = client
        self.device = device
        self.key = key
        self.fetch_dataset = fetch_dataset
        self.chain_id = chain_id
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self._committing: _Committing | None = None

    # -- signed commands ------------------------------------------------------------------

    def command(self, path: str, kind: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.client.post_json(path, self.sign(kind, **fields).to_json())
        return result

    def sign(self, kind: str, **fields: Any) -> SignedCommand:
        fields.setdefault("clientId", f"provider-{secrets.token_hex(8)}")
        fields["nonce"] = secrets.randbits(63)
        fields["expiry"] = int(time.time()) + command_seconds
        return sign_command(self.key, kind, self.chain_id, fields)

    def register(self, **fields: Any) -> dict[str, Any]:
        """RegisterProvider with the given message fields (device, gpus, prices, stake…)."""
        return self.command("/providers", "RegisterProvider", **fields)

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self, stop: threading.Event, *, max_segments: int | None = None, poll_seconds: float = 1.0
    ) -> list[SegmentReport]:
        """Work until `stop` is set (or `max_segments` are committed); gateway errors are
        logged and retried after a pause, never fatal."""
        reports: list[SegmentReport] = []
        while not stop.is_set() and (max_segments is None or len(reports) < max_segments):
            try:
                report = self.run_once()
            except (GatewayError, OSError) as error:
                log.warning("gateway error, retrying: %s", error)
                report = None
            if report is None:
                stop.wait(poll_seconds)
            else:
                reports.append(report)
        return reports

    def run_once(self) -> SegmentReport | None:
        """Lease, train, commit and open one segment; None when there is no work. A segment
        trained on an earlier pass and not yet opened is finished first."""
        if self._committing is None:
            lease = self._lease()
            if lease is None:
                return None
            job = self.client.get_json(f"/jobs/{lease['job']}")
            spec = parse_job_spec(job["spec"])
            data = self.fetch_dataset("0x" + spec.dataset.sha256.hex())
            start = self._start_state(spec, lease)
            run = self._train(spec, data, start, lease)
            end = encode_state(run.end)
            end_checkpoint = blob_digest(end)
            self.client.put_blob(end_checkpoint, end, SAFETENSORS)
            commit = self.sign(
                "Commit",
                lease=lease["lease"],
                startCheckpoint=lease["start_checkpoint"],
                endCheckpoint=end_checkpoint,
                root="0x" + run.root.hex(),
                steps=run.steps,
                lossTrace=run.loss_trace(),
            )
            self._committing = _Committing(lease, spec, data, run, commit)
        return self._commit_and_open(self._committing)

    def _commit_and_open(self, work: _Committing) -> SegmentReport:
        """Commit (again: the same signed command) and open. A transient failure (no
        answer, a 5xx) keeps the work for the next pass; a refusal drops it."""
        try:
            if work.commitment is None:
                committed = self.client.post_json(
                    f"/leases/{work.lease['lease']}/commitment", work.commit.to_json()
                )
                work.commitment = str(committed["outcome"]["commitment"])
            opened = time.perf_counter()
            openings, samples = self._open(work.spec, work.data, work.run, work.commitment)
        except GatewayError as error:
            if error.status < 500:
                log.warning("segment %s given up: %s", work.lease["segment"], error)
                self._committing = None
            raise
        self._committing = None
        return SegmentReport(
            work.lease["job"],
            work.lease["lease"],
            work.lease["segment"],
            work.run.steps,
            work.commitment,
            openings,
            samples,
            work.run.losses[0],
            work.run.losses[-1],
            work.run.train_seconds,
            work.run.hash_seconds,
            time.perf_counter() - opened,
        )

    def _lease(self) -> dict[str, Any] | None:
        for status in ("running", "submitted"):
            page = self.client.get_json("/jobs", {"status": status, "limit": jobs_scanned_max})
            for job in page["items"]:
                if job["segment_state"] != "queued":
                    continue
                try:
                    result = self.command("/leases", "RequestLease", job=job["id"])
                except GatewayError as error:
                    # Someone else leased it first, or this provider does not match it.
                    log.info("no lease on %s: %s", job["id"], error)
                    continue
                outcome: dict[str, Any] = result["outcome"]
                return outcome
        return None

    def _start_state(self, spec: JobSpec, lease: dict[str, Any]) -> TrainState:
        if lease["start_checkpoint"] == SEED_CHECKPOINT:
            return initial_state(spec)
        data = self.client.get_blob(lease["start_checkpoint"])
        state = decode_state(data, spec)
        if state.step != lease["start_step"]:
            raise GatewayError(
                409, {"detail": f"checkpoint is state {state.step}, not {lease['start_step']}"}
            )
        return state

    def _train(
        self, spec: JobSpec, data: Examples, start: TrainState, lease: dict[str, Any]
    ) -> SegmentRun:
        stop = threading.Event()
        beats = threading.Thread(target=self._heartbeats, args=(lease, stop), daemon=True)
        beats.start()
        try:
            return train_segment(
                spec,
                data,
                start,
                lease["end_step"],
                checkpoint_every=self.checkpoint_every,
                progress=self.progress,
                device=self.device,
            )
        finally:
            stop.set()
            beats.join(timeout=10)

    def _heartbeats(self, lease: dict[str, Any], stop: threading.Event) -> None:
        # A third of the time left: two beats can be lost before the lease lapses.
        interval = max(1.0, (lease["deadline"] - time.time()) / 3)
        while not stop.wait(interval):
            try:
                self.command(
                    f"/leases/{lease['lease']}/heartbeat", "Heartbeat", lease=lease["lease"]
                )
            except (GatewayError, OSError) as error:
                log.warning("heartbeat for %s failed: %s", lease["lease"], error)

    def _open(
        self, spec: JobSpec, data: Examples, run: SegmentRun, commitment: str
    ) -> tuple[str, int]:
        detail = self.client.get_json(f"/commitments/{commitment}")
        indices: list[int] = detail["sample_indices"]
        if detail.get("openings"):
            # Published on an earlier pass whose answer was lost.
            return str(detail["openings"]), len(indices)
        blobs: dict[int, str] = {}
        needed = set(indices) | {i + 1 for i in indices}
        states = states_at(spec, data, run, (run.start.step + i for i in needed))
        for index in sorted(needed):
            encoded = encode_state(states[run.start.step + index])
            blobs[index] = blob_digest(encoded)
            self.client.put_blob(blobs[index], encoded, SAFETENSORS)
        manifest = open_steps(run.state_hashes, indices, blobs)
        digest = manifest.digest()
        self.client.put_blob(digest, manifest.encode(), OCTET_STREAM)
        self.command(
            f"/commitments/{commitment}/openings",
            "OpenSamples",
            commitment=commitment,
            openings=digest,
        )
        return digest, len(indices)
