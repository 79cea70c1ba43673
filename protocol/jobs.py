"""Jobs and the work they are cut into: segments leased to providers, the commitments
providers sign for them, and the disputes a failed verdict opens.

A job trains one run; its segments are trained one after another, each from the end
checkpoint of the last accepted one, so at most one segment of a job is in flight:
queued -> leased -> committed -> (disputed ->) accepted, or back to queued when a lease
expires or fraud is confirmed. `protocol.compute` checks every transition before it
triggers an event here; the apply bodies only record.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from protocol.ledger import namespaced_id

# Job status.
SUBMITTED = "submitted"
RUNNING = "running"
COMPLETED = "completed"
CANCELLED = "cancelled"
EXPIRED = "expired"
JOB_STATUSES = (SUBMITTED, RUNNING, COMPLETED, CANCELLED, EXPIRED)
FINISHED = frozenset({COMPLETED, CANCELLED, EXPIRED})

# State of the segment in flight.
QUEUED = "queued"
LEASED = "leased"
COMMITTED = "committed"
DISPUTED = "disputed"
DONE = "done"

# The checkpoint before the first step: the model is initialized from the job's seed.
SEED_CHECKPOINT = "0x" + "00" * 32


def job_key(developer: str, client_id: str) -> str:
    return str(namespaced_id("job", developer, client_id))


def lease_key(job: str, segment: int, attempt: int) -> str:
    return str(namespaced_id("lease", job, str(segment), str(attempt)))


def commitment_key(lease: str) -> str:
    return str(namespaced_id("commitment", lease))


def dispute_key(commitment: str) -> str:
    return str(namespaced_id("dispute", commitment))


class Job(Aggregate):
    """A training job: its spec, its escrow accounting and the segment in flight."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return UUID(key)

    @event("Submitted")
    def __init__(
        self,
        key: str,
        developer: str,
        spec: dict[str, Any],
        spec_hash: str,
        currency: str,
        budget: int,
        segments: list[list[int]],
        deadline: int,
    ) -> None:
        self.key = key
        self.developer = developer
        self.spec = spec
        self.spec_hash = spec_hash
        self.currency = currency
        self.budget = budget
        # [start_step, end_step] of every segment.
        self.segments = segments
        self.deadline = deadline
        self.status = SUBMITTED
        self.current = 0
        self.segment_state = QUEUED
        self.attempts = 0
        self.lease: str | None = None
        self.commitment: str | None = None
        self.checkpoint = SEED_CHECKPOINT
        self.paid = 0
        self.refunded = 0
        # One record per accepted segment: who trained and verified it, what it paid.
        self.accepted: list[dict[str, Any]] = []
        self.requeues = 0

    @property
    def escrow(self) -> int:
        return self.budget - self.paid - self.refunded

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @event("SegmentLeased")
    def segment_leased(self, segment: int, lease: str, provider: str) -> None:
        self.status = RUNNING if self.status == SUBMITTED else self.status
        self.segment_state = LEASED
        self.lease = lease
        self.attempts += 1

    @event("SegmentCommitted")
    def segment_committed(self, segment: int, lease: str, commitment: str) -> None:
        self.segment_state = COMMITTED
        self.commitment = commitment

    @event("SegmentDisputed")
    def segment_disputed(self, segment: int, commitment: str, dispute: str) -> None:
        self.segment_state = DISPUTED

    @event("SegmentRequeued")
    def segment_requeued(self, segment: int, lease: str, reason: str) -> None:
        self.segment_state = QUEUED
        self.lease = None
        self.commitment = None
        self.requeues += 1

    @event("SegmentAccepted")
    def segment_accepted(
        self,
        segment: int,
        lease: str,
        commitment: str,
        provider: str,
        verifier: str,
        end_checkpoint: str,
        payment: int,
    ) -> None:
        self.accepted.append(
            {
                "segment": segment,
                "lease": lease,
                "commitment": commitment,
                "provider": provider,
                "verifier": verifier,
                "end_checkpoint": end_checkpoint,
                "payment": payment,
            }
        )
        self.paid += payment
        self.checkpoint = end_checkpoint
        self.lease = None
        self.commitment = None
        self.current = segment + 1
        self.attempts = 0
        self.segment_state = DONE if self.current == len(self.segments) else QUEUED

    @event("SegmentDropped")
    def segment_dropped(self, segment: int, lease: str, reason: str) -> None:
        """A finished (cancelled, expired) job's in-flight segment ends unpaid."""
        self.lease = None
        self.commitment = None
        self.segment_state = DONE

    @event("Finished")
    def finish(self, status: str, reason: str) -> None:
        self.status = status
        if self.segment_state in (QUEUED, LEASED):
            self.segment_state = DONE
            self.lease = None

    @event("Refunded")
    def refund(self, amount: int) -> None:
        self.refunded += amount

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "developer": self.developer,
            "spec_hash": self.spec_hash,
            "spec": self.spec,
            "currency": self.currency,
            "budget": self.budget,
            "escrow": self.escrow,
            "paid": self.paid,
            "refunded": self.refunded,
            "deadline": self.deadline,
            "status": self.status,
            "segments": len(self.segments),
            "segments_accepted": len(self.accepted),
            "current_segment": self.current,
            "segment_state": self.segment_state,
            "lease": self.lease,
            "commitment": self.commitment,
            "checkpoint": self.checkpoint,
            "requeues": self.requeues,
        }


class Lease(Aggregate):
    """One segment given to one provider until a deadline that heartbeats extend."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return UUID(key)

    @event("Granted")
    def __init__(
        self,
        key: str,
        job: str,
        segment: int,
        provider: str,
        verifier: str,
        start_step: int,
        end_step: int,
        start_checkpoint: str,
        currency: str,
        price_per_step: int,
        granted_at: int,
        deadline: int,
    ) -> None:
        self.key = key
        self.job = job
        self.segment = segment
        self.provider = provider
        self.verifier = verifier
        self.start_step = start_step
        self.end_step = end_step
        self.start_checkpoint = start_checkpoint
        self.currency = currency
        self.price_per_step = price_per_step
        self.granted_at = granted_at
        self.deadline = deadline
        self.heartbeats = 0
        # open | committed | expired | revoked
        self.state = "open"

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step

    @property
    def payment(self) -> int:
        return self.steps * self.price_per_step

    @event("Extended")
    def extend(self, deadline: int) -> None:
        self.deadline = deadline
        self.heartbeats += 1

    @event("Closed")
    def close(self, outcome: str) -> None:
        self.state = outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "job": self.job,
            "segment": self.segment,
            "provider": self.provider,
            "verifier": self.verifier,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "start_checkpoint": self.start_checkpoint,
            "currency": self.currency,
            "price_per_step": self.price_per_step,
            "payment": self.payment,
            "granted_at": self.granted_at,
            "deadline": self.deadline,
            "heartbeats": self.heartbeats,
            "state": self.state,
        }


class Commitment(Aggregate):
    """A provider's signed result for one lease, and the verification it is waiting for."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return UUID(key)

    @event("Recorded")
    def __init__(
        self,
        key: str,
        lease: str,
        job: str,
        segment: int,
        provider: str,
        verifier: str,
        start_step: int,
        start_checkpoint: str,
        end_checkpoint: str,
        root: str,
        steps: int,
        loss_trace: str,
        salt: str,
        samples: int,
        verdict_deadline: int,
        opening_deadline: int,
    ) -> None:
        self.key = key
        self.lease = lease
        self.job = job
        self.segment = segment
        self.provider = provider
        self.verifier = verifier
        self.start_step = start_step
        self.start_checkpoint = start_checkpoint
        self.end_checkpoint = end_checkpoint
        self.root = root
        self.steps = steps
        self.loss_trace = loss_trace
        self.salt = salt
        self.samples = samples
        self.verdict_deadline = verdict_deadline
        self.opening_deadline = opening_deadline
        # 0x SHA-256 of the openings manifest blob, once the provider has published it.
        self.openings: str | None = None
        self.opened_at = 0
        # pending -> accepted | disputed -> accepted | fraud; or dropped (job finished)
        self.status = "pending"
        self.verdict: dict[str, Any] | None = None
        self.dispute: str | None = None

    @event("Opened")
    def open(self, openings: str, at: int) -> None:
        self.openings = openings
        self.opened_at = at

    @event("VerifierReassigned")
    def reassign(self, verifier: str, verdict_deadline: int) -> None:
        self.verifier = verifier
        self.verdict_deadline = verdict_deadline

    @event("Verdict")
    def record_verdict(
        self, verifier: str, accepted: bool, samples: list[int], failed_step: int, reason: str
    ) -> None:
        self.verdict = {
            "verifier": verifier,
            "accepted": accepted,
            "samples": samples,
            "failed_step": failed_step,
            "reason": reason,
        }
        self.status = "accepted" if accepted else "disputed"

    @event("Disputed")
    def disputed(self, dispute: str) -> None:
        self.dispute = dispute

    @event("Resolved")
    def resolve(self, status: str) -> None:
        self.status = status

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "lease": self.lease,
            "job": self.job,
            "segment": self.segment,
            "provider": self.provider,
            "verifier": self.verifier,
            "start_step": self.start_step,
            "start_checkpoint": self.start_checkpoint,
            "end_checkpoint": self.end_checkpoint,
            "root": self.root,
            "steps": self.steps,
            "loss_trace": self.loss_trace,
            "salt": self.salt,
            "samples": self.samples,
            "verdict_deadline": self.verdict_deadline,
            "opening_deadline": self.opening_deadline,
            "openings": self.openings,
            "opened_at": self.opened_at,
            "status": self.status,
            "verdict": self.verdict,
            "dispute": self.dispute,
        }


class Dispute(Aggregate):
    """A failed verdict under review: the referee re-executes the accused step."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return UUID(key)

    @event("Opened")
    def __init__(
        self,
        key: str,
        commitment: str,
        job: str,
        provider: str,
        accuser: str,
        referee: str,
        step: int,
        deadline: int,
    ) -> None:
        self.key = key
        self.commitment = commitment
        self.job = job
        self.provider = provider
        self.accuser = accuser
        self.referee = referee
        self.step = step
        self.deadline = deadline
        # open -> fraud | cleared
        self.status = "open"
        self.reason = ""
        self.slashed = 0

    @event("RefereeReassigned")
    def reassign(self, referee: str, deadline: int) -> None:
        self.referee = referee
        self.deadline = deadline

    @event("Ruled")
    def rule(self, fraud: bool, reason: str, slashed: int) -> None:
        self.status = "fraud" if fraud else "cleared"
        self.reason = reason
        self.slashed = slashed

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "commitment": self.commitment,
            "job": self.job,
            "provider": self.provider,
            "accuser": self.accuser,
            "referee": self.referee,
            "step": self.step,
            "deadline": self.deadline,
            "status": self.status,
            "reason": self.reason,
            "slashed": self.slashed,
        }
