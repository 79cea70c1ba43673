"""The compute protocol's state machine: what each compute command does to the state it
meets, and the posting set it causes (specs/compute.md).

`decide` checks a verified command against the current state and returns a `Decision`:
the legs to post and a closure that triggers the events. The application checks the legs
(no bucket below zero) before it runs the closure, so a refused command never leaves a
half-changed aggregate behind, even inside a batch.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate

from protocol.assets import Asset
from protocol.commands import MARKET_KINDS, VerifiedCommand
from protocol.errors import (
    InvalidInput,
    InvalidTransition,
    LeaseExpired,
    NotFound,
    ProtocolError,
)
from protocol.fees import FeeSchedule, settle_segment, slash_split, stake_min
from protocol.jobs import (
    CANCELLED,
    COMMITTED,
    COMPLETED,
    DISPUTED,
    EXPIRED,
    LEASED,
    QUEUED,
    Commitment,
    Dispute,
    Job,
    Lease,
    commitment_key,
    dispute_key,
    job_key,
    lease_key,
)
from protocol.jobspec import JobSpec, parse_decimal
from protocol.ledger import (
    AVAILABLE,
    STAKE,
    TREASURY,
    TREASURY_ACCOUNT,
    UNBONDING,
    Account,
    Leg,
    credit,
    debit,
    escrow_bucket,
)
from protocol.participants import (
    ACTIVE,
    JAILED,
    PAUSED,
    ROSTER_ID,
    Bond,
    Provider,
    Roster,
    Verifier,
    bond_id,
    provider_id,
    verifier_id,
)
from protocol.sampling import detection_probability, sample_indices, samples_needed
from protocol.settlement import SETTLEMENTS_ID, Settlements

BLACK_UNIT = 10**18
# A commitment carries its loss trace inline (4 bytes per step), which bounds a segment.
segment_steps_commit_max = 65536
device_chars_max = 64
gpus_max = 1024


class UnauthorizedActor(ProtocolError, PermissionError):
    """The signer is not the party this command is reserved for (the lease's provider,
    the assigned verifier, the referee, the job's developer)."""

    def __init__(self, signer: str, role: str) -> None:
        super().__init__(f"{signer} is not the {role}")
        self.signer = signer
        self.role = role


@dataclass(frozen=True, slots=True)
class ComputeParams:
    """The protocol's tunables; the defaults are those of specs/compute.md."""

    stake_per_gpu_min: int = 10 * BLACK_UNIT
    verifier_stake_min: int = 10 * BLACK_UNIT
    lease_seconds: int = 300
    # Time a provider has, after committing, to publish the openings of its sampled states.
    opening_seconds: int = 300
    verdict_seconds: int = 600
    dispute_seconds: int = 600
    unbonding_seconds: int = 7 * 24 * 3600
    jail_seconds: int = 24 * 3600
    # The smallest fake a job's detection probability is sized for, as a share of a
    # segment's steps (specs/compute_sampling_fees.md §1: k_min).
    faked_min_bps: int = 1000
    fraud_slash_bps: int = 5000
    false_accusation_slash_bps: int = 5000
    bounty_bps: int = 5000
    fees: FeeSchedule = field(default_factory=FeeSchedule)

    def faked_min(self, segment_steps: int) -> int:
        return max(1, -(-segment_steps * self.faked_min_bps // 10_000))

    def samples(self, segment_steps: int, probability: Fraction) -> int:
        return samples_needed(segment_steps, probability, self.faked_min(segment_steps))


class StateAccess(Protocol):
    """What `decide` reads: aggregates by id (None when absent) and ledger accounts."""

    def get(self, aggregate_id: UUID) -> Any: ...

    def account(self, name: str) -> Account: ...


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a compute command's outcome may depend on besides the command."""

    state: StateAccess
    now: int
    params: ComputeParams
    beacon: Callable[[str], bytes]
    spec: JobSpec | None = None
    salt: bytes | None = None


@dataclass(slots=True)
class Decision:
    """A checked command's effects: legs to post, then events (via `apply`)."""

    legs: list[Leg]
    apply: Callable[[], list[Aggregate]]
    outcome: dict[str, Any]


Handler = Callable[[Context, VerifiedCommand], Decision]


def decide(context: Context, command: VerifiedCommand) -> Decision:
    """Check `command` against the state in `context`; raise the narrow error if refused."""
    return _HANDLERS[command.kind.name](context, command)


# -- reading state ---------------------------------------------------------------------


def _get(state: StateAccess, cls: type[Any], aggregate_id: UUID, what: str, key: str) -> Any:
    aggregate = state.get(aggregate_id)
    if aggregate is None:
        raise NotFound(what, key)
    if not isinstance(aggregate, cls):
        raise NotFound(what, key)
    return aggregate


def _job(state: StateAccess, key: str) -> Job:
    return _get(state, Job, _uuid(key, "job"), "job", key)  # type: ignore[no-any-return]


def _lease(state: StateAccess, key: str) -> Lease:
    return _get(state, Lease, _uuid(key, "lease"), "lease", key)  # type: ignore[no-any-return]


def _commitment(state: StateAccess, key: str) -> Commitment:
    aggregate = _get(state, Commitment, _uuid(key, "commitment"), "commitment", key)
    return aggregate  # type: ignore[no-any-return]


def _uuid(key: str, what: str) -> UUID:
    try:
        return UUID(key)
    except ValueError:
        raise NotFound(what, key) from None


def stake_of(state: StateAccess, address: str) -> int:
    return state.account(address).balance(Asset.BLACK, STAKE)


def stake_required(state: StateAccess, params: ComputeParams, address: str) -> int:
    """The least stake an address must keep for the roles it holds."""
    need = 0
    provider = state.get(provider_id(address))
    if isinstance(provider, Provider):
        need += provider.gpus * params.stake_per_gpu_min
    if isinstance(state.get(verifier_id(address)), Verifier):
        need += params.verifier_stake_min
    return need


def _eligible_verifiers(context: Context, exclude: set[str]) -> list[str]:
    roster = context.state.get(ROSTER_ID)
    if not isinstance(roster, Roster):
        return []
    eligible = []
    for address in roster.verifiers:
        if address in exclude:
            continue
        verifier = context.state.get(verifier_id(address))
        if not isinstance(verifier, Verifier) or verifier.status != ACTIVE:
            continue
        if stake_of(context.state, address) < stake_required(
            context.state, context.params, address
        ):
            continue
        eligible.append(address)
    return eligible


def _pick(candidates: list[str], *seed_parts: str) -> str:
    """A deterministic, unbiased-enough pick: SHA-256 of the seed modulo the pool size."""
    digest = hashlib.sha256(":".join(seed_parts).encode()).digest()
    return candidates[int.from_bytes(digest, "big") % len(candidates)]


def _probability(job: Job) -> Fraction:
    return parse_decimal(job.spec["verification"]["detection_probability"]).value


def samples_for(params: ComputeParams, job: Job, steps: int) -> int:
    """How many transitions of a segment of `steps` steps of `job` are re-executed."""
    return params.samples(steps, _probability(job))


# -- participants ------------------------------------------------------------------------


def _register_provider(context: Context, command: VerifiedCommand) -> Decision:
    m, signer, state, params = command.message, command.signer, context.state, context.params
    device = m["device"]
    if not device or len(device) > device_chars_max:
        raise InvalidInput(f"device: 1-{device_chars_max} characters", field="message.device")
    if not 1 <= m["gpus"] <= gpus_max:
        raise InvalidInput(f"gpus: 1-{gpus_max}", field="message.gpus")
    if m["memoryMb"] < 1:
        raise InvalidInput("memoryMb: at least 1", field="message.memoryMb")
    prices = {Asset.BLACK.value: m["priceBlack"], Asset.USD.value: m["priceUsd"]}
    existing = state.get(provider_id(signer))
    verifier_need = (
        params.verifier_stake_min if isinstance(state.get(verifier_id(signer)), Verifier) else 0
    )
    need = m["gpus"] * params.stake_per_gpu_min + verifier_need
    _check_stake(state, signer, m["stake"], need)
    legs = _stake_legs(signer, m["stake"])

    def apply() -> list[Aggregate]:
        if isinstance(existing, Provider):
            existing.update(device, m["gpus"], m["memoryMb"], m["benchmarkGflops"], prices)
            return [existing]
        return [
            Provider(
                address=signer,
                device=device,
                gpus=m["gpus"],
                memory_mb=m["memoryMb"],
                benchmark_gflops=m["benchmarkGflops"],
                prices=prices,
            )
        ]

    return Decision(legs, apply, {"provider": signer})


def _check_stake(state: StateAccess, signer: str, adding: int, need: int) -> None:
    have = stake_of(state, signer) + adding
    if have < need:
        raise InvalidInput(
            f"stake: {have} BLACK base units staked, these roles need at least {need}",
            field="message.stake",
        )


def _stake_legs(signer: str, amount: int) -> list[Leg]:
    if not amount:
        return []
    return [
        debit(signer, Asset.BLACK, AVAILABLE, amount),
        credit(signer, Asset.BLACK, STAKE, amount),
    ]


def _set_provider_status(context: Context, command: VerifiedCommand) -> Decision:
    status, signer = command.message["status"], command.signer
    if status not in (ACTIVE, PAUSED):
        raise InvalidInput("status: active or paused", field="message.status")
    provider = _get(context.state, Provider, provider_id(signer), "provider", signer)
    if provider.status == JAILED and provider.jailed_until > context.now:
        raise InvalidTransition(
            f"provider {signer} is jailed until {provider.jailed_until}",
            entity="provider",
            state=JAILED,
        )
    if status == ACTIVE:
        need = stake_required(context.state, context.params, signer)
        _check_stake(context.state, signer, 0, need)

    def apply() -> list[Aggregate]:
        provider.set_status(status, "by the provider", 0)
        return [provider]

    return Decision([], apply, {"provider": signer, "status": status})


def _register_verifier(context: Context, command: VerifiedCommand) -> Decision:
    signer, state, params = command.signer, context.state, context.params
    if isinstance(state.get(verifier_id(signer)), Verifier):
        raise InvalidTransition(f"{signer} is already a verifier", entity="verifier")
    provider = state.get(provider_id(signer))
    provider_need = (
        provider.gpus * params.stake_per_gpu_min if isinstance(provider, Provider) else 0
    )
    _check_stake(state, signer, command.message["stake"], provider_need + params.verifier_stake_min)
    legs = _stake_legs(signer, command.message["stake"])
    roster = state.get(ROSTER_ID)

    def apply() -> list[Aggregate]:
        nonlocal roster
        if not isinstance(roster, Roster):
            roster = Roster()
        roster.add(signer)
        return [Verifier(address=signer), roster]

    return Decision(legs, apply, {"verifier": signer})


def _unbond(context: Context, command: VerifiedCommand) -> Decision:
    # The Unbond message has no asset field (protocol.commands): stake is held in BLACK.
    signer, amount = command.signer, command.message["amount"]
    bond = context.state.get(bond_id(signer))
    release_at = context.now + context.params.unbonding_seconds
    legs = [
        debit(signer, Asset.BLACK, STAKE, amount),
        credit(signer, Asset.BLACK, UNBONDING, amount),
    ]

    def apply() -> list[Aggregate]:
        target = bond if isinstance(bond, Bond) else Bond(address=signer)
        target.unbond(amount, release_at)
        return [target]

    return Decision(legs, apply, {"amount": amount, "release_at": release_at})


def _withdraw_unbonded(context: Context, command: VerifiedCommand) -> Decision:
    signer = command.signer
    bond = context.state.get(bond_id(signer))
    released = bond.released(context.now) if isinstance(bond, Bond) else 0
    if not released:
        raise InvalidTransition(
            f"{signer} has no unbonded stake past its release time", entity="bond"
        )
    assert isinstance(bond, Bond)
    legs = [
        debit(signer, Asset.BLACK, UNBONDING, released),
        credit(signer, Asset.BLACK, AVAILABLE, released),
    ]

    def apply() -> list[Aggregate]:
        bond.withdraw(released, context.now)
        return [bond]

    return Decision(legs, apply, {"amount": released})


def _slash_legs(
    context: Context, account: str, bps: int, beneficiary: str
) -> tuple[list[Leg], int, int, Bond | None]:
    """Take `bps` of an account's stake (stake first, then unbonding): a bounty to the
    beneficiary, the rest to the treasury. Returns (legs, slashed, from unbonding, bond)."""
    ledger = context.state.account(account)
    staked = ledger.balance(Asset.BLACK, STAKE)
    unbonding = ledger.balance(Asset.BLACK, UNBONDING)
    total = (staked + unbonding) * bps // 10_000
    from_stake = min(total, staked)
    from_unbonding = total - from_stake
    if not total:
        return [], 0, 0, None
    split = slash_split(total, context.params.bounty_bps)
    legs = []
    if from_stake:
        legs.append(debit(account, Asset.BLACK, STAKE, from_stake))
    if from_unbonding:
        legs.append(debit(account, Asset.BLACK, UNBONDING, from_unbonding))
    if split.bounty:
        legs.append(credit(beneficiary, Asset.BLACK, AVAILABLE, split.bounty))
    if split.treasury:
        legs.append(credit(TREASURY_ACCOUNT, Asset.BLACK, TREASURY, split.treasury))
    bond = context.state.get(bond_id(account)) if from_unbonding else None
    return legs, total, from_unbonding, bond if isinstance(bond, Bond) else None


# -- jobs ---------------------------------------------------------------------------------


def _submit_job(context: Context, command: VerifiedCommand) -> Decision:
    spec, signer = context.spec, command.signer
    if spec is None:
        raise InvalidInput("spec: a SubmitJob command travels with its job spec", field="spec")
    spec_hash = "0x" + spec.digest().hex()
    if spec_hash != command.message["specHash"]:
        raise InvalidInput(f"specHash: the spec's digest is {spec_hash}", field="message.specHash")
    if spec.deadline <= context.now:
        raise InvalidInput(f"deadline: {spec.deadline} has passed", field="spec.deadline")
    if spec.segment_steps > segment_steps_commit_max:
        raise InvalidInput(
            f"segment_steps: at most {segment_steps_commit_max} (the loss trace travels "
            "inside the commitment)",
            field="spec.segment_steps",
        )
    key = job_key(signer, command.client_id)
    budget = spec.budget_max()
    currency = spec.payment.currency
    legs = [
        debit(signer, currency, AVAILABLE, budget),
        credit(signer, currency, escrow_bucket(key), budget),
    ]

    def apply() -> list[Aggregate]:
        return [
            Job(
                key=key,
                developer=signer,
                spec=spec.to_json(),
                spec_hash=spec_hash,
                currency=currency.value,
                budget=budget,
                segments=[[start, end] for start, end in spec.segments()],
                deadline=spec.deadline,
            )
        ]

    return Decision(legs, apply, {"job": key, "budget": budget, "currency": currency.value})


def _refund_legs(job: Job, amount: int) -> list[Leg]:
    if not amount:
        return []
    asset = Asset(job.currency)
    return [
        debit(job.developer, asset, escrow_bucket(job.key), amount),
        credit(job.developer, asset, AVAILABLE, amount),
    ]


def _end_job(context: Context, job: Job, status: str, reason: str) -> Decision:
    """Cancel or expire a job: revoke an open lease, keep the payment of a committed
    segment in escrow until it is judged, refund the rest."""
    state = context.state
    touched: list[Aggregate] = []
    lease = _lease(state, job.lease) if job.lease and job.segment_state == LEASED else None
    reserved = 0
    if job.segment_state in (COMMITTED, DISPUTED) and job.lease:
        reserved = _lease(state, job.lease).payment
    refund = job.escrow - reserved
    provider = state.get(provider_id(lease.provider)) if lease else None

    def apply() -> list[Aggregate]:
        if lease is not None:
            lease.close("revoked")
            touched.append(lease)
            job.segment_dropped(lease.segment, lease.key, reason)
            if isinstance(provider, Provider):
                provider.return_lease(job.key, lease.key, "revoked")
                touched.append(provider)
        job.finish(status, reason)
        if refund:
            job.refund(refund)
        return [*touched, job]

    return Decision(_refund_legs(job, refund), apply, {"job": job.key, "refund": refund})


def _cancel_job(context: Context, command: VerifiedCommand) -> Decision:
    job = _job(context.state, command.message["job"])
    if command.signer != job.developer:
        raise UnauthorizedActor(command.signer, f"developer of job {job.key}")
    if job.finished:
        raise InvalidTransition(f"job {job.key} is {job.status}", entity="job", state=job.status)
    return _end_job(context, job, CANCELLED, "cancelled by the developer")


def _request_lease(context: Context, command: VerifiedCommand) -> Decision:
    state, params, now, signer = context.state, context.params, context.now, command.signer
    job = _job(state, command.message["job"])
    provider = _get(state, Provider, provider_id(signer), "provider", signer)
    if job.finished:
        raise InvalidTransition(f"job {job.key} is {job.status}", entity="job", state=job.status)
    if now > job.deadline:
        raise InvalidTransition(
            f"job {job.key} passed its deadline {job.deadline}", entity="job", state="overdue"
        )
    if provider.status != ACTIVE:
        raise InvalidTransition(
            f"provider {signer} is {provider.status}", entity="provider", state=provider.status
        )
    held = provider.leases.get(job.key)
    # Its own lease on this job, if lapsed, is expired below like anyone's.
    if held is not None and not (held == job.lease and now > _lease(state, held).deadline):
        raise InvalidTransition(
            f"provider {signer} already holds lease {provider.leases[job.key]} on this job",
            entity="lease",
            state="held",
        )
    expired: Lease | None = None
    if job.segment_state == LEASED and job.lease:
        current = _lease(state, job.lease)
        if now <= current.deadline:
            raise InvalidTransition(
                f"segment {job.current} of job {job.key} is leased until {current.deadline}",
                entity="segment",
                state=LEASED,
            )
        expired = current
    elif job.segment_state != QUEUED:
        raise InvalidTransition(
            f"segment {job.current} of job {job.key} is {job.segment_state}",
            entity="segment",
            state=job.segment_state,
        )
    currency = Asset(job.currency)
    price = provider.prices[currency.value]
    ceiling = job.spec["payment"]["price_per_step_max"]
    if price > ceiling:
        raise InvalidTransition(
            f"provider's price {price} per step is above the job's ceiling {ceiling}",
            entity="provider",
            state="price",
        )
    # Parameters, gradients and two optimizer moments, in float32.
    needed_mb = -(-16 * _parameter_count(job) // 2**20)
    if provider.memory_mb < needed_mb:
        raise InvalidTransition(
            f"the model needs {needed_mb} MB, the provider offers {provider.memory_mb}",
            entity="provider",
            state="memory",
        )
    start, end = job.segments[job.current]
    steps = end - start
    probability = _probability(job)
    samples = params.samples(steps, probability)
    caught = detection_probability(steps, samples, params.faked_min(steps))
    # One stake backs every segment the provider holds unverified at once (§6 of the
    # sampling spec): open leases, committed segments awaiting judgment, and this one.
    held_unverified = len(provider.leases) - (1 if held is not None else 0) + provider.unverified
    at_risk_stake = stake_min(steps * price, caught) * (held_unverified + 1)
    need = stake_required(state, params, signer) + at_risk_stake
    have = stake_of(state, signer)
    if have < need:
        raise InvalidTransition(
            f"stake {have} is below the {need} this lease needs (roles and payment at risk)",
            entity="provider",
            state="stake",
        )
    verifiers = _eligible_verifiers(context, {signer, job.developer})
    if not verifiers:
        raise InvalidTransition(
            "no eligible verifier is registered", entity="verifier", state="none"
        )
    # Leases of one segment are numbered: a re-lease after expiry or fraud gets a new id.
    key = lease_key(job.key, job.current, job.attempts)
    verifier = _pick(verifiers, "verifier", key)
    deadline = min(now + params.lease_seconds, job.deadline)
    old_provider = state.get(provider_id(expired.provider)) if expired else None
    segment = job.current

    def apply() -> list[Aggregate]:
        touched: list[Aggregate] = []
        if expired is not None:
            touched += _expire_lease(job, expired, old_provider)
        lease = Lease(
            key=key,
            job=job.key,
            segment=segment,
            provider=signer,
            verifier=verifier,
            start_step=start,
            end_step=end,
            start_checkpoint=job.checkpoint,
            currency=currency.value,
            price_per_step=price,
            granted_at=now,
            deadline=deadline,
        )
        job.segment_leased(segment, key, signer)
        provider.take_lease(job.key, key)
        return [*touched, lease, job, provider]

    return Decision(
        [],
        apply,
        {
            "lease": key,
            "job": job.key,
            "segment": segment,
            "start_step": start,
            "end_step": end,
            "start_checkpoint": job.checkpoint,
            "deadline": deadline,
            "verifier": verifier,
        },
    )


def _parameter_count(job: Job) -> int:
    model = job.spec["model"]
    widths = [model["input"], *model["hidden"], model["classes"]]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def _expire_lease(job: Job, lease: Lease, provider: Any) -> list[Aggregate]:
    lease.close("expired")
    job.segment_requeued(lease.segment, lease.key, "lease expired")
    touched: list[Aggregate] = [lease]
    if isinstance(provider, Provider):
        provider.return_lease(job.key, lease.key, "expired")
        touched.append(provider)
    return touched


def _open_lease(context: Context, command: VerifiedCommand) -> Lease:
    lease = _lease(context.state, command.message["lease"])
    if command.signer != lease.provider:
        raise UnauthorizedActor(command.signer, f"provider of lease {lease.key}")
    if lease.state != "open" or context.now > lease.deadline:
        raise LeaseExpired(lease.key, lease.deadline, context.now)
    return lease


def _heartbeat(context: Context, command: VerifiedCommand) -> Decision:
    lease = _open_lease(context, command)
    job = _job(context.state, lease.job)
    deadline = min(context.now + context.params.lease_seconds, job.deadline)

    def apply() -> list[Aggregate]:
        lease.extend(deadline)
        return [lease]

    return Decision([], apply, {"lease": lease.key, "deadline": deadline})


def _commit(context: Context, command: VerifiedCommand) -> Decision:
    m, state, params = command.message, context.state, context.params
    lease = _open_lease(context, command)
    job = _job(state, lease.job)
    provider = state.get(provider_id(lease.provider))
    if isinstance(provider, Provider) and provider.status == JAILED:
        raise InvalidTransition(
            f"provider {lease.provider} is jailed: its results are not taken",
            entity="provider",
            state=JAILED,
        )
    if job.lease != lease.key or job.segment_state != LEASED:
        raise LeaseExpired(lease.key, lease.deadline, context.now)
    if m["startCheckpoint"] != lease.start_checkpoint:
        raise InvalidInput(
            f"startCheckpoint: the lease starts from {lease.start_checkpoint}",
            field="message.startCheckpoint",
        )
    if m["steps"] != lease.steps:
        raise InvalidInput(f"steps: the segment has {lease.steps} steps", field="message.steps")
    if len(m["lossTrace"]) != 2 + 8 * lease.steps:
        raise InvalidInput(
            f"lossTrace: 4 bytes (float32, big-endian) per step, {4 * lease.steps} bytes",
            field="message.lossTrace",
        )
    key = commitment_key(lease.key)
    salt = context.salt if context.salt is not None else secrets.token_bytes(32)
    samples = samples_for(params, job, lease.steps)
    verdict_deadline = context.now + params.verdict_seconds
    opening_deadline = context.now + params.opening_seconds

    def apply() -> list[Aggregate]:
        commitment = Commitment(
            key=key,
            lease=lease.key,
            job=job.key,
            segment=lease.segment,
            provider=lease.provider,
            verifier=lease.verifier,
            start_step=lease.start_step,
            start_checkpoint=lease.start_checkpoint,
            end_checkpoint=m["endCheckpoint"],
            root=m["root"],
            steps=lease.steps,
            loss_trace=m["lossTrace"],
            salt="0x" + salt.hex(),
            samples=samples,
            verdict_deadline=verdict_deadline,
            opening_deadline=opening_deadline,
        )
        lease.close("committed")
        job.segment_committed(lease.segment, lease.key, key)
        touched: list[Aggregate] = [commitment, lease, job]
        if isinstance(provider, Provider):
            provider.return_lease(job.key, lease.key, "committed")
            touched.append(provider)
        return touched

    return Decision(
        [],
        apply,
        {"commitment": key, "lease": lease.key, "samples": samples, "verifier": lease.verifier},
    )


# -- verification, disputes and settlement ---------------------------------------------


def expected_samples(commitment: Commitment, beacon: bytes) -> list[int]:
    """The transitions the assigned verifier must re-execute (specs/compute_sampling_fees.md)."""
    return sample_indices(
        bytes.fromhex(commitment.root[2:]),
        beacon,
        commitment.verifier,
        commitment.steps,
        commitment.samples,
    )


def _settle(
    context: Context, job: Job, commitment: Commitment, verifier: str
) -> tuple[list[Leg], Callable[[], list[Aggregate]], dict[str, Any]]:
    """Pay an accepted segment from escrow, advance the job, finish it after the last."""
    lease = _lease(context.state, commitment.lease)
    payment = lease.payment
    currency = Asset(job.currency)
    split = settle_segment(payment, currency, context.params.fees)
    escrow = escrow_bucket(job.key)
    legs: list[Leg] = []
    if payment:
        legs.append(debit(job.developer, currency, escrow, payment))
        for account, amount in ((commitment.provider, split.provider), (verifier, split.verifier)):
            if amount:
                legs.append(credit(account, currency, AVAILABLE, amount))
        if split.platform:
            legs.append(credit(TREASURY_ACCOUNT, currency, TREASURY, split.platform))
    last = commitment.segment + 1 == len(job.segments)
    ends = last or job.finished
    refund = job.escrow - payment if ends else 0
    legs += _refund_legs(job, refund)
    provider = context.state.get(provider_id(commitment.provider))
    was_finished = job.finished

    def apply() -> list[Aggregate]:
        touched: list[Aggregate] = []
        job.segment_accepted(
            commitment.segment,
            lease.key,
            commitment.key,
            commitment.provider,
            verifier,
            commitment.end_checkpoint,
            payment,
        )
        if was_finished:
            # After acceptance, which queues the next segment: a finished job has none.
            job.segment_dropped(commitment.segment, lease.key, "paid after the job ended")
        if last and not was_finished:
            job.finish(COMPLETED, "every segment accepted")
        if refund:
            job.refund(refund)
        if isinstance(provider, Provider):
            provider.judged(commitment.key, True)
            touched.append(provider)
        return [job, *touched]

    outcome = {
        "payment": payment,
        "provider_share": split.provider,
        "verifier_share": split.verifier,
        "platform_fee": split.platform,
        "refund": refund,
    }
    return legs, apply, outcome


def _post_verdict(context: Context, command: VerifiedCommand) -> Decision:
    m, state, signer = command.message, context.state, command.signer
    commitment = _commitment(state, m["commitment"])
    if signer != commitment.verifier:
        raise UnauthorizedActor(signer, f"verifier assigned to commitment {commitment.key}")
    if commitment.status != "pending":
        raise InvalidTransition(
            f"commitment {commitment.key} is {commitment.status}",
            entity="commitment",
            state=commitment.status,
        )
    expected = expected_samples(commitment, context.beacon(commitment.key))
    if m["samples"] != expected:
        raise InvalidInput(
            "samples: not the transitions the beacon selects for this verifier",
            field="message.samples",
        )
    if not m["accepted"] and commitment.openings is None:
        # The provider has until its opening deadline to publish; after it, the sweep
        # punishes the missing openings. A rejection before would let a verifier get an
        # honest provider slashed for openings it was still allowed to publish.
        raise InvalidTransition(
            f"commitment {commitment.key} is not opened yet: reject it on its openings",
            entity="commitment",
            state="unopened",
        )
    if not m["accepted"] and m["failedStep"] not in expected:
        raise InvalidInput(
            "failedStep: a rejection names one of the sampled transitions",
            field="message.failedStep",
        )
    job = _job(state, commitment.job)
    verifier = _get(state, Verifier, verifier_id(signer), "verifier", signer)

    def record() -> None:
        commitment.record_verdict(signer, m["accepted"], m["samples"], m["failedStep"], m["reason"])
        verifier.verdicted(commitment.key, m["accepted"])

    if m["accepted"]:
        legs, settle, outcome = _settle(context, job, commitment, signer)

        def apply_accept() -> list[Aggregate]:
            record()
            return [commitment, verifier, *settle()]

        return Decision(legs, apply_accept, {"commitment": commitment.key, **outcome})

    dispute = dispute_key(commitment.key)
    referees = _eligible_verifiers(context, {signer, commitment.provider, job.developer})
    referee = _pick(referees, "referee", dispute) if referees else ""
    deadline = context.now + context.params.dispute_seconds

    def apply_reject() -> list[Aggregate]:
        record()
        opened = Dispute(
            key=dispute,
            commitment=commitment.key,
            job=job.key,
            provider=commitment.provider,
            accuser=signer,
            referee=referee,
            step=m["failedStep"],
            deadline=deadline,
        )
        commitment.disputed(dispute)
        job.segment_disputed(commitment.segment, commitment.key, dispute)
        return [commitment, verifier, opened, job]

    return Decision(
        [], apply_reject, {"commitment": commitment.key, "dispute": dispute, "referee": referee}
    )


def _confirm_fraud(
    context: Context, commitment: Commitment, job: Job, beneficiary: str
) -> tuple[list[Leg], int, Callable[[str], list[Aggregate]]]:
    """What confirmed fraud (or an unopened sample, which costs the same) does: slash the
    provider (a bounty to `beneficiary`, the rest to the treasury), jail it, and requeue
    the segment unpaid, or drop it and refund the escrow held for it if the job ended."""
    state, params = context.state, context.params
    legs, slashed, from_unbonding, bond = _slash_legs(
        context, commitment.provider, params.fraud_slash_bps, beneficiary
    )
    lease = _lease(state, commitment.lease)
    provider = state.get(provider_id(commitment.provider))
    jailed_until = context.now + params.jail_seconds
    refund = job.escrow if job.finished else 0
    legs += _refund_legs(job, refund)

    def punish(reason: str) -> list[Aggregate]:
        touched: list[Aggregate] = [commitment, job]
        commitment.resolve("fraud")
        if job.finished:
            job.segment_dropped(commitment.segment, lease.key, f"{reason} after the job ended")
            if refund:
                job.refund(refund)
        else:
            job.segment_requeued(commitment.segment, lease.key, reason)
        if isinstance(provider, Provider):
            provider.judged(commitment.key, False)
            provider.set_status(JAILED, reason, jailed_until)
            touched.append(provider)
        if bond is not None and from_unbonding:
            bond.slashed(from_unbonding)
            touched.append(bond)
        return touched

    return legs, slashed, punish


def _open_samples(context: Context, command: VerifiedCommand) -> Decision:
    """The provider publishes the digest of its openings manifest (a blob holding the
    sampled states and their inclusion proofs) once, before the opening deadline."""
    m, signer = command.message, command.signer
    commitment = _commitment(context.state, m["commitment"])
    if signer != commitment.provider:
        raise UnauthorizedActor(signer, f"provider of commitment {commitment.key}")
    if commitment.openings is not None or commitment.status != "pending":
        raise InvalidTransition(
            f"commitment {commitment.key} is {commitment.status}"
            + (" and already opened" if commitment.openings else ""),
            entity="commitment",
            state=commitment.status,
        )
    # Past the opening deadline the openings still count until a Sweep has punished the
    # commitment (as verdicts and rulings do): a provider cut off by an outage of the
    # operator's gateway opens when it is back, before the restarted sweeper's first pass.

    def apply() -> list[Aggregate]:
        commitment.open(m["openings"], context.now)
        return [commitment]

    return Decision([], apply, {"commitment": commitment.key, "openings": m["openings"]})


def _rule_dispute(context: Context, command: VerifiedCommand) -> Decision:
    m, state, signer, params = command.message, context.state, command.signer, context.params
    dispute = _get(state, Dispute, _uuid(m["dispute"], "dispute"), "dispute", m["dispute"])
    if dispute.status != "open":
        raise InvalidTransition(
            f"dispute {dispute.key} is {dispute.status}", entity="dispute", state=dispute.status
        )
    if signer != dispute.referee:
        raise UnauthorizedActor(signer, f"referee of dispute {dispute.key}")
    commitment = _commitment(state, dispute.commitment)
    job = _job(state, dispute.job)
    referee = _get(state, Verifier, verifier_id(signer), "verifier", signer)
    accuser = state.get(verifier_id(dispute.accuser))
    if m["fraud"]:
        legs, slashed, punish = _confirm_fraud(context, commitment, job, dispute.accuser)

        def apply_fraud() -> list[Aggregate]:
            touched: list[Aggregate] = [dispute, referee]
            dispute.rule(True, m["reason"], slashed)
            referee.ruled(dispute.key, True)
            if isinstance(accuser, Verifier):
                accuser.judged(dispute.key, True)
                touched.append(accuser)
            return [*touched, *punish("fraud confirmed")]

        return Decision(
            legs, apply_fraud, {"dispute": dispute.key, "fraud": True, "slashed": slashed}
        )

    slash, slashed, from_unbonding, bond = _slash_legs(
        context, dispute.accuser, params.false_accusation_slash_bps, dispute.provider
    )
    settle_legs, settle, outcome = _settle(context, job, commitment, signer)

    def apply_cleared() -> list[Aggregate]:
        touched: list[Aggregate] = [dispute, commitment, referee]
        dispute.rule(False, m["reason"], slashed)
        commitment.resolve("accepted")
        referee.ruled(dispute.key, False)
        if isinstance(accuser, Verifier):
            accuser.judged(dispute.key, False)
            touched.append(accuser)
        if bond is not None and from_unbonding:
            bond.slashed(from_unbonding)
            touched.append(bond)
        return [*touched, *settle()]

    return Decision(
        slash + settle_legs,
        apply_cleared,
        {"dispute": dispute.key, "fraud": False, "slashed": slashed, **outcome},
    )


def _sweep(context: Context, command: VerifiedCommand) -> Decision:
    """Expire what is overdue; the operator's gateway issues these on a timer."""
    target, state, now, params = (
        command.message["target"],
        context.state,
        context.now,
        context.params,
    )
    aggregate = state.get(_uuid(target, "target"))
    if isinstance(aggregate, Job):
        job = aggregate
        if job.finished or now <= job.deadline:
            raise InvalidTransition(f"job {job.key} is not overdue", entity="job", state=job.status)
        return _end_job(context, job, EXPIRED, "deadline passed")
    if isinstance(aggregate, Lease):
        lease = aggregate
        job = _job(state, lease.job)
        if lease.state != "open" or now <= lease.deadline or job.lease != lease.key:
            raise InvalidTransition(
                f"lease {lease.key} is not overdue", entity="lease", state=lease.state
            )
        provider = state.get(provider_id(lease.provider))

        def apply_lease() -> list[Aggregate]:
            return [*_expire_lease(job, lease, provider), job]

        return Decision([], apply_lease, {"lease": lease.key, "expired": True})
    if isinstance(aggregate, Commitment):
        commitment = aggregate
        if (
            commitment.status == "pending"
            and commitment.openings is None
            and now > commitment.opening_deadline
        ):
            # Sampling rule 4: not opening the sampled states costs what fraud costs; the
            # bounty goes to the verifier who was kept waiting.
            job = _job(state, commitment.job)
            legs, slashed, punish = _confirm_fraud(context, commitment, job, commitment.verifier)

            def apply_unopened() -> list[Aggregate]:
                return punish("sampled states not opened")

            return Decision(
                legs, apply_unopened, {"commitment": commitment.key, "slashed": slashed}
            )
        if commitment.status != "pending" or now <= commitment.verdict_deadline:
            raise InvalidTransition(
                f"commitment {commitment.key} is not overdue",
                entity="commitment",
                state=commitment.status,
            )
        job = _job(state, commitment.job)
        pool = _eligible_verifiers(
            context, {commitment.provider, commitment.verifier, job.developer}
        )
        if not pool:
            raise InvalidTransition(
                "no other verifier to reassign to", entity="verifier", state="none"
            )
        verifier = _pick(pool, "reassign", commitment.key, str(now))
        deadline = now + params.verdict_seconds

        def apply_commitment() -> list[Aggregate]:
            commitment.reassign(verifier, deadline)
            return [commitment]

        return Decision([], apply_commitment, {"commitment": commitment.key, "verifier": verifier})
    if isinstance(aggregate, Dispute):
        dispute = aggregate
        if dispute.status != "open" or (dispute.referee and now <= dispute.deadline):
            raise InvalidTransition(
                f"dispute {dispute.key} is not overdue", entity="dispute", state=dispute.status
            )
        # The same exclusions as the first draw (_post_verdict): never the job's developer.
        developer = _job(state, dispute.job).developer
        pool = _eligible_verifiers(
            context, {dispute.provider, dispute.accuser, dispute.referee, developer}
        )
        if not pool:
            raise InvalidTransition(
                "no other referee to reassign to", entity="verifier", state="none"
            )
        referee = _pick(pool, "referee", dispute.key, str(now))
        deadline = now + params.dispute_seconds

        def apply_dispute() -> list[Aggregate]:
            dispute.reassign(referee, deadline)
            return [dispute]

        return Decision([], apply_dispute, {"dispute": dispute.key, "referee": referee})
    raise NotFound("job, lease, commitment or dispute", target)


def _settle_epoch(context: Context, command: VerifiedCommand) -> Decision:
    m = command.message
    settlements = context.state.get(SETTLEMENTS_ID)
    last = settlements.last_epoch if isinstance(settlements, Settlements) else 0
    if m["epoch"] != last + 1:
        raise InvalidTransition(
            f"epoch {m['epoch']}: the next epoch to settle is {last + 1}", entity="settlement"
        )
    tokens = {Asset.BLACK.value: m["blackToken"], Asset.USD.value: m["usdToken"]}

    def apply() -> list[Aggregate]:
        nonlocal settlements
        if not isinstance(settlements, Settlements):
            settlements = Settlements()
        settlements.settled(
            m["epoch"], m["root"], m["logSize"], m["logRoot"], tokens, m["chainRef"]
        )
        return [settlements]

    return Decision([], apply, {"epoch": m["epoch"], "root": m["root"]})


def _market(context: Context, command: VerifiedCommand) -> Decision:
    # DMarket and the GenAI Hub (specs/market.md) build on this module's Context and
    # Decision, so they are imported on first use: at the top they would import in a circle.
    from protocol import hub, market

    handler = market.HANDLERS.get(command.kind.name) or hub.HANDLERS[command.kind.name]
    return handler(context, command)


_HANDLERS: Mapping[str, Handler] = {
    "RegisterProvider": _register_provider,
    "SetProviderStatus": _set_provider_status,
    "RegisterVerifier": _register_verifier,
    "Unbond": _unbond,
    "WithdrawUnbonded": _withdraw_unbonded,
    "SubmitJob": _submit_job,
    "CancelJob": _cancel_job,
    "RequestLease": _request_lease,
    "Heartbeat": _heartbeat,
    "Commit": _commit,
    "OpenSamples": _open_samples,
    "PostVerdict": _post_verdict,
    "RuleDispute": _rule_dispute,
    "Sweep": _sweep,
    "SettleEpoch": _settle_epoch,
    **dict.fromkeys(MARKET_KINDS, _market),
}
