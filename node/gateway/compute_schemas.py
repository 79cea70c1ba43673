"""Response schemas of the compute resources: what each protocol object looks like in
JSON (fields as the aggregates' `to_json` give them; meanings in specs/compute.md).

They document the OpenAPI responses and shape every answer: a field the protocol adds
must be added here too, or the dump leaves it out (a test compares the two).
"""

from __future__ import annotations

import marshmallow as ma

F = ma.fields


def _int(text: str) -> F.Integer:
    return F.Integer(required=True, metadata={"description": text})


def _str(text: str, *, allow_none: bool = False) -> F.String:
    return F.String(required=True, allow_none=allow_none, metadata={"description": text})


class UnbondingEntrySchema(ma.Schema):
    amount = _int("BLACK base units")
    release_at = _int("Unix seconds after which WithdrawUnbonded may take it")


class _StakeFields(ma.Schema):
    stake = _int("BLACK base units in the stake bucket")
    unbonding = _int("BLACK base units unbonding (still slashable)")
    unbonding_entries = F.List(F.Nested(UnbondingEntrySchema), required=True)


class StakeSchema(_StakeFields):
    address = _str("EIP-55 address")


class ProviderSchema(_StakeFields):
    address = _str("EIP-55 address")
    device = _str("Device name")
    gpus = _int("GPUs registered")
    memory_mb = _int("Memory per GPU, MB")
    benchmark_gflops = _int("Measured float32 matmul GFLOP/s")
    prices = F.Dict(
        keys=F.String(),
        values=F.Integer(),
        required=True,
        metadata={"description": "Price per step in base units, by currency"},
    )
    status = _str("active | paused | jailed")
    jailed_until = _int("Unix seconds; 0 when never jailed")
    accepted = _int("Segments accepted")
    rejected = _int("Segments found fraudulent")
    leases_lost = _int("Leases that expired in its hands")
    unverified = _int("Committed segments awaiting judgment")
    reputation_bps = _int("(accepted + 1) * 10000 / (accepted + rejected + 2)")
    leases = F.Dict(
        keys=F.String(),
        values=F.String(),
        required=True,
        metadata={"description": "Job id -> the lease it holds on that job"},
    )


class VerifierSchema(_StakeFields):
    address = _str("EIP-55 address")
    status = _str("active")
    verdicts = _int("Verdicts posted")
    upheld = _int("Accusations confirmed by a referee")
    overturned = _int("Accusations cleared by a referee")
    rulings = _int("Disputes ruled as referee")


class JobSchema(ma.Schema):
    id = _str("Job id")
    developer = _str("EIP-55 address of the submitter")
    spec_hash = _str("0x SHA-256 of the canonical spec")
    spec = F.Dict(required=True, metadata={"description": "The job spec (specs/jobspec.md)"})
    currency = _str("BLACK | USD")
    budget = _int("Escrowed at submission: total_steps x price_per_step_max")
    escrow = _int("Still in escrow: budget - paid - refunded")
    paid = _int("Released to accepted segments")
    refunded = _int("Returned to the developer")
    deadline = _int("Unix seconds")
    status = _str("submitted | running | completed | cancelled | expired")
    segments = _int("Segments in the run")
    segments_accepted = _int("Segments accepted so far")
    current_segment = _int("The segment in flight (or next)")
    segment_state = _str("queued | leased | committed | disputed | done")
    lease = _str("The open or committed lease", allow_none=True)
    commitment = _str("The commitment awaiting judgment", allow_none=True)
    checkpoint = _str("0x hash of the last accepted end checkpoint (zeros: the seed)")
    requeues = _int("Times a segment went back to the queue")


class SegmentSchema(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE

    segment = _int("Index")
    start_step = _int("First step")
    end_step = _int("One past the last step")
    state = _str("accepted | queued | leased | committed | disputed | waiting")
    lease = F.String(metadata={"description": "Accepted segments: the lease"})
    commitment = F.String(metadata={"description": "Accepted segments: the commitment"})
    provider = F.String(metadata={"description": "Accepted segments: who trained it"})
    verifier = F.String(metadata={"description": "Accepted segments: who verified it"})
    end_checkpoint = F.String(metadata={"description": "Accepted segments: its end state"})
    payment = F.Integer(metadata={"description": "Accepted segments: what it paid"})


class SegmentsSchema(ma.Schema):
    id = _str("Job id")
    segments = F.List(F.Nested(SegmentSchema), required=True)


class LeaseSchema(ma.Schema):
    id = _str("Lease id")
    job = _str("Job id")
    segment = _int("Segment index")
    provider = _str("EIP-55 address")
    verifier = _str("The verifier fixed at lease time")
    start_step = _int("First step")
    end_step = _int("One past the last step")
    start_checkpoint = _str("0x hash of the state training starts from")
    currency = _str("BLACK | USD")
    price_per_step = _int("Base units")
    payment = _int("steps x price_per_step")
    granted_at = _int("Unix seconds")
    deadline = _int("Unix seconds; heartbeats extend it")
    heartbeats = _int("Heartbeats received")
    state = _str("open | committed | expired | revoked")


class VerdictSchema(ma.Schema):
    verifier = _str("EIP-55 address")
    accepted = F.Boolean(required=True)
    samples = F.List(F.Integer(), required=True)
    failed_step = _int("The accused transition (0 when accepted)")
    reason = _str("Free text")


class CommitmentSchema(ma.Schema):
    id = _str("Commitment id")
    lease = _str("Lease id")
    job = _str("Job id")
    segment = _int("Segment index")
    provider = _str("EIP-55 address")
    verifier = _str("The assigned verifier")
    start_step = _int("First step")
    start_checkpoint = _str("0x hash")
    end_checkpoint = _str("0x hash")
    root = _str("0x Merkle root of the per-step state hashes")
    steps = _int("Steps committed")
    loss_trace = _str("0x float32 big-endian losses, one per step")
    salt = _str("0x 32 bytes drawn by the gateway after acceptance")
    samples = _int("Transitions the verifier re-executes")
    verdict_deadline = _int("Unix seconds")
    opening_deadline = _int("Unix seconds by which the provider must publish its openings")
    openings = _str("0x SHA-256 of the openings manifest blob", allow_none=True)
    opened_at = _int("Unix seconds (0 until opened)")
    status = _str("pending | accepted | disputed | fraud")
    verdict = F.Nested(VerdictSchema, required=True, allow_none=True)
    dispute = _str("Dispute id", allow_none=True)


class CommitmentDetailSchema(CommitmentSchema):
    beacon = _str("0x log root just after the commitment's event")
    sample_indices = F.List(F.Integer(), required=True)


class DisputeSchema(ma.Schema):
    id = _str("Dispute id")
    commitment = _str("Commitment id")
    job = _str("Job id")
    provider = _str("The accused")
    accuser = _str("The verifier whose verdict failed the commitment")
    referee = _str("The second verifier ('' until one is assigned)")
    step = _int("The accused transition")
    deadline = _int("Unix seconds")
    status = _str("open | fraud | cleared")
    reason = _str("The referee's reason")
    slashed = _int("BLACK base units slashed by the ruling")


class TasksSchema(ma.Schema):
    verifier = _str("EIP-55 address")
    verdicts = F.List(F.Nested(CommitmentSchema), required=True)
    rulings = F.List(F.Nested(DisputeSchema), required=True)
