"""The compute protocol end to end on a real Network: stake, escrow, leases, commitments,
verdicts, disputes, cancellation and sweeps, with every balance checked to the base unit
against protocol.fees, and random histories that must keep the ledger's invariants."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import canonical
from protocol.application import Network, Unauthorized
from protocol.assets import Asset
from protocol.audit import Replayer, audit_lines
from protocol.compute import ComputeParams, UnauthorizedActor
from protocol.errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseExpired,
    ProtocolError,
)
from protocol.fees import settle_segment, slash_split, stake_min
from protocol.jobs import (
    CANCELLED,
    COMMITTED,
    COMPLETED,
    DISPUTED,
    DONE,
    EXPIRED,
    LEASED,
    QUEUED,
    SEED_CHECKPOINT,
    Job,
    dispute_key,
)
from protocol.keys import PrivateKey
from protocol.ledger import (
    RESERVE,
    STAKE,
    TREASURY,
    TREASURY_ACCOUNT,
    UNBONDING,
    VAULT_ACCOUNT,
    escrow_bucket,
)
from protocol.log import EventLog, export_line, split_export_line, write_export
from protocol.participants import ACTIVE, JAILED
from protocol.sampling import detection_probability
from protocol.storage import Storage, memory_storage
from tests.protocol.compute_world import BLACK, World, end_checkpoint, small_spec

PARAMS = ComputeParams()
# The World's providers ask this much per step; small_spec's ceiling is CEILING.
PRICE = 5 * 10**13
CEILING = 10**14
STAKED = 20 * BLACK
FUNDED = 10 * BLACK
# small_spec(): four steps in two segments of two.
BUDGET = 4 * CEILING
PAYMENT = 2 * PRICE
SPLIT = settle_segment(PAYMENT, Asset.BLACK, PARAMS.fees)


@pytest.fixture
def world() -> Iterator[World]:
    app = Network(memory_storage())
    yield World(app)
    app.close()


def refused(
    w: World, error: type[ProtocolError], signer: PrivateKey, kind: str, **fields: Any
) -> ProtocolError:
    """Submit a command that must be refused with `error`, and check it recorded nothing."""
    before = w.log_size()
    with pytest.raises(error) as caught:
        w.submit(signer, kind, **fields)
    assert w.log_size() == before
    return caught.value


def treasury(w: World, asset: str = "BLACK") -> int:
    return w.balance(TREASURY_ACCOUNT, TREASURY, asset)


def export(w: World) -> list[bytes]:
    handle = io.BytesIO()
    write_export(w.app, w.operator, handle)
    return handle.getvalue().splitlines()


# -- the whole lifecycle -----------------------------------------------------------------


def test_job_lifecycle_pays_every_segment_refunds_the_rest_and_audits(storage: Storage) -> None:
    """Registration stakes, submission escrows the budget, each accepted segment pays the
    settle_segment split, the last refunds the unearned rest, and the export audits clean."""
    app = Network(storage)
    try:
        w = World(app)
        w.setup()
        for who in (*w.providers[:2], *w.verifiers[:2]):
            assert (w.balance(who), w.balance(who, STAKE)) == (0, STAKED)
        spec = small_spec()
        job = w.submit_job(spec)
        assert spec.total_steps * spec.payment.price_per_step_max == BUDGET
        assert w.balance(w.developer) == FUNDED - BUDGET
        assert w.balance(w.developer, escrow_bucket(job)) == BUDGET

        earned: Counter[str] = Counter()
        checkpoint = SEED_CHECKPOINT
        for segment, provider in enumerate(w.providers[:2]):
            lease = w.lease(provider, job)
            assert (lease["segment"], lease["start_checkpoint"]) == (segment, checkpoint)
            assert lease["verifier"] in {v.address for v in w.verifiers[:2]}
            commitment = w.commit(provider, lease["lease"])
            verdict = w.verdict(commitment).outcome
            last = segment == 1
            assert verdict == {
                "commitment": commitment,
                "payment": PAYMENT,
                "provider_share": SPLIT.provider,
                "verifier_share": SPLIT.verifier,
                "platform_fee": SPLIT.platform,
                "refund": BUDGET - 2 * PAYMENT if last else 0,
            }
            earned[provider.address] += SPLIT.provider
            earned[lease["verifier"]] += SPLIT.verifier
            checkpoint = end_checkpoint(lease["end_step"])
            if not last:
                assert w.balance(w.developer, escrow_bucket(job)) == BUDGET - PAYMENT

        for who in (*w.providers[:2], *w.verifiers[:2]):
            assert w.balance(who) == earned[who.address]
            assert w.balance(who, STAKE) == STAKED
        assert treasury(w) == 2 * SPLIT.platform
        assert w.balance(w.developer, escrow_bucket(job)) == 0
        assert w.balance(w.developer) == FUNDED - 2 * PAYMENT
        state = w.get_job(job)
        assert (state.status, state.segment_state, state.checkpoint) == (
            COMPLETED,
            DONE,
            checkpoint,
        )
        assert (state.paid, state.refunded, state.escrow) == (2 * PAYMENT, BUDGET - 2 * PAYMENT, 0)
        assert [w.get_provider(p).accepted for p in w.providers[:2]] == [1, 1]

        lines = list(EventLog(app).lines())
        exported = export(w)
        assert exported[:-1] == lines
        report = audit_lines(exported, workers=0)
        assert report.ok, report.error
        assert report.totals["BLACK"]["balances"] == w.deposits["BLACK"]
        assert report.totals["BLACK"]["reserve"] == w.deposits["BLACK"]
        replayer = Replayer()
        for line in lines:
            parts = split_export_line(line)
            assert parts is not None
            replayer.apply(canonical.decode(parts[0]))
        replayer.finish()
        recomputed = replayer.balances()
        assert TREASURY_ACCOUNT in recomputed and w.developer.address in recomputed
        assert recomputed == {name: app.balances(name) for name in recomputed}
    finally:
        app.close()


# -- leases ------------------------------------------------------------------------------


def test_expired_lease_refuses_its_holder_and_goes_to_another_provider(world: World) -> None:
    """Past its deadline a lease's heartbeat and late commit are refused and record nothing,
    and another provider leases the same segment from the same checkpoint under a new id."""
    w = world
    w.setup()
    job = w.submit_job()
    first = w.lease(w.providers[0], job)
    assert first["deadline"] == w.now + PARAMS.lease_seconds
    fields = w.commit_fields(first["lease"])
    w.now = first["deadline"] + 1

    refused(w, LeaseExpired, w.providers[0], "Heartbeat", lease=first["lease"])
    refused(w, LeaseExpired, w.providers[0], "Commit", **fields)

    second = w.lease(w.providers[1], job)
    assert second["lease"] != first["lease"]
    assert (second["segment"], second["start_checkpoint"]) == (0, SEED_CHECKPOINT)
    assert w.get_lease(first["lease"]).state == "expired"
    stale = w.get_provider(w.providers[0])
    assert (stale.leases, stale.leases_lost) == ({}, 1)
    state = w.get_job(job)
    assert (state.lease, state.requeues, state.segment_state) == (second["lease"], 1, LEASED)
    refused(w, LeaseExpired, w.providers[0], "Commit", **fields)

    w.verdict(w.commit(w.providers[1], second["lease"]))
    assert w.balance(w.providers[0]) == 0
    assert w.balance(w.providers[1]) == SPLIT.provider


def test_operator_sweeps_an_overdue_lease_but_not_a_running_one(world: World) -> None:
    """Sweep expires a lease past its deadline and requeues its segment; a lease still
    within its deadline is refused, and only the operator may sweep."""
    w = world
    w.setup()
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)

    refused(w, InvalidTransition, w.operator, "Sweep", target=lease["lease"], reason="early")
    refused(w, Unauthorized, w.providers[1], "Sweep", target=lease["lease"], reason="not yours")
    w.now = lease["deadline"] + 1
    assert w.sweep(lease["lease"]).outcome == {"lease": lease["lease"], "expired": True}

    assert w.get_lease(lease["lease"]).state == "expired"
    state = w.get_job(job)
    assert (state.segment_state, state.lease, state.requeues) == (QUEUED, None, 1)
    assert w.get_provider(w.providers[0]).leases == {}
    refused(w, InvalidTransition, w.operator, "Sweep", target=lease["lease"], reason="again")
    again = w.lease(w.providers[0], job)
    assert again["lease"] != lease["lease"]
    assert (again["segment"], again["start_checkpoint"]) == (0, SEED_CHECKPOINT)


def test_heartbeat_extends_the_lease_deadline(world: World) -> None:
    """A heartbeat moves the deadline to now + lease_seconds, so the holder may commit after
    the first deadline and nobody else can lease the segment meanwhile."""
    w = world
    w.setup()
    job = w.submit_job()
    granted = w.now
    lease = w.lease(w.providers[0], job)
    w.now = granted + 200
    refused(w, UnauthorizedActor, w.providers[1], "Heartbeat", lease=lease["lease"])
    extended = w.heartbeat(w.providers[0], lease["lease"]).outcome
    assert extended == {"lease": lease["lease"], "deadline": granted + 200 + PARAMS.lease_seconds}
    state = w.get_lease(lease["lease"])
    assert (state.deadline, state.heartbeats) == (extended["deadline"], 1)

    w.now = granted + PARAMS.lease_seconds + 1
    refused(w, InvalidTransition, w.providers[1], "RequestLease", job=job)
    refused(w, InvalidTransition, w.operator, "Sweep", target=lease["lease"], reason="early")
    w.verdict(w.commit(w.providers[0], lease["lease"]))
    assert w.balance(w.providers[0]) == SPLIT.provider


def test_heartbeat_never_extends_a_lease_past_the_job_deadline(world: World) -> None:
    """The lease deadline, granted or extended, is capped at the job's deadline."""
    w = world
    w.setup()
    spec = small_spec(deadline=w.now + PARAMS.lease_seconds + 100)
    job = w.submit_job(spec)
    lease = w.lease(w.providers[0], job)
    assert lease["deadline"] == w.now + PARAMS.lease_seconds
    w.now += 200
    assert w.heartbeat(w.providers[0], lease["lease"]).outcome["deadline"] == spec.deadline


def test_a_provider_never_holds_two_leases_on_one_job(world: World) -> None:
    """A second RequestLease by the holder of the job's lease is refused and records nothing."""
    w = world
    w.setup()
    job = w.submit_job()
    first = w.lease(w.providers[0], job)
    error = refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    assert isinstance(error, InvalidTransition) and error.state == "held"
    assert w.get_provider(w.providers[0]).leases == {job: first["lease"]}


def test_a_price_above_the_job_ceiling_is_refused_and_the_ceiling_itself_leases(
    world: World,
) -> None:
    """A provider asking one base unit more per step than price_per_step_max gets no lease;
    at exactly the ceiling it does, and the segment pays steps x ceiling."""
    w = world
    w.setup(providers=0)
    w.register_provider(w.providers[0], priceBlack=CEILING + 1)
    job = w.submit_job()
    error = refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    assert isinstance(error, InvalidTransition) and error.state == "price"

    w.register_provider(w.providers[0], stake=0, priceBlack=CEILING)
    lease = w.lease(w.providers[0], job)
    commitment = w.commit(w.providers[0], lease["lease"])
    assert w.verdict(commitment).outcome["payment"] == 2 * CEILING


def test_a_lease_needs_stake_for_the_payment_at_risk(world: World) -> None:
    """A provider's stake must cover its GPUs plus stake_min(segment pay, P(detect)); one
    base unit short is refused, and topping up that unit lets it lease."""
    w = world
    steps = 100
    samples = PARAMS.samples(steps, Fraction(99, 100))
    caught = detection_probability(steps, samples, PARAMS.faked_min(steps))
    at_risk = stake_min(steps * PRICE, caught)
    assert at_risk > 0
    w.setup(providers=0)
    w.register_provider(w.providers[0], stake=PARAMS.stake_per_gpu_min + at_risk - 1)
    job = w.submit_job(small_spec(total_steps=2 * steps, segment_steps=steps))

    error = refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    assert isinstance(error, InvalidTransition) and error.state == "stake"
    w.register_provider(w.providers[0], stake=1)
    assert w.lease(w.providers[0], job)["segment"] == 0


def test_no_lease_without_an_eligible_verifier(world: World) -> None:
    """With no verifier, or only the provider itself as one, a lease is refused."""
    w = world
    w.setup(providers=1, verifiers=0)
    job = w.submit_job()
    error = refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    assert isinstance(error, InvalidTransition) and error.state == "none"
    w.register_verifier(w.providers[0])
    refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    w.register_verifier(w.verifiers[0])
    assert w.lease(w.providers[0], job)["verifier"] == w.verifiers[0].address


def test_an_overdue_job_is_not_leased_and_its_sweep_refunds_the_budget(world: World) -> None:
    """After its deadline a job refuses leases, and the operator's Sweep expires it and
    refunds the whole escrow; before the deadline that Sweep is refused."""
    w = world
    w.setup()
    spec = small_spec(deadline=w.now + 1000)
    job = w.submit_job(spec)
    refused(w, InvalidTransition, w.operator, "Sweep", target=job, reason="early")
    w.now = spec.deadline + 1
    error = refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    assert isinstance(error, InvalidTransition) and error.state == "overdue"

    assert w.sweep(job).outcome == {"job": job, "refund": BUDGET}
    state = w.get_job(job)
    assert (state.status, state.escrow, state.refunded) == (EXPIRED, 0, BUDGET)
    assert w.balance(w.developer, escrow_bucket(job)) == 0
    assert w.balance(w.developer) == FUNDED
    refused(w, InvalidTransition, w.operator, "Sweep", target=job, reason="again")


def test_a_retried_command_returns_its_first_outcome(world: World) -> None:
    """Re-signing a RequestLease or Commit with the same clientId and a new nonce returns
    the first result (same lease, same commitment) and records nothing, even once the
    state would refuse it; the same clientId asking for something else is a conflict."""
    w = world
    w.setup()
    job = w.submit_job()
    first = w.submit(w.providers[0], "RequestLease", job=job, clientId="lease-once")
    size = w.log_size()
    again = w.submit(w.providers[0], "RequestLease", job=job, clientId="lease-once")
    assert again.duplicate and again.outcome == first.outcome
    assert again.command_id == first.command_id
    assert w.log_size() == size

    fields = w.commit_fields(first.outcome["lease"])
    committed = w.submit(w.providers[0], "Commit", clientId="commit-once", **fields)
    size = w.log_size()
    for client_id, result in (("lease-once", first), ("commit-once", committed)):
        kind = "RequestLease" if client_id == "lease-once" else "Commit"
        message = {"job": job} if kind == "RequestLease" else fields
        retried = w.submit(w.providers[0], kind, clientId=client_id, **message)
        assert retried.duplicate and retried.outcome == result.outcome
    assert w.log_size() == size
    other = w.submit_job()
    refused(
        w, IdempotencyConflict, w.providers[0], "RequestLease", job=other, clientId="lease-once"
    )


# -- verdicts and disputes ---------------------------------------------------------------


def test_verdicts_come_only_from_the_assigned_verifier_with_the_beacon_samples(
    world: World,
) -> None:
    """Only the assigned verifier may post a verdict, its samples must be exactly the
    beacon's, a rejection must name a sampled step, and a commitment is judged once."""
    w = world
    w.setup(providers=1, verifiers=2)
    job = w.submit_job(small_spec(total_steps=40, segment_steps=20))
    lease = w.lease(w.providers[0], job)
    commitment = w.commit(w.providers[0], lease["lease"])
    samples = w.samples(commitment)
    assert len(samples) == w.get_commitment(commitment).samples < 20
    assigned = w.verifier_key(lease["verifier"])
    other = next(v for v in w.verifiers[:2] if v is not assigned)

    def verdict(**changes: Any) -> dict[str, Any]:
        fields = {
            "commitment": commitment,
            "accepted": True,
            "samples": samples,
            "failedStep": 0,
            "reason": "",
        }
        return {**fields, **changes}

    refused(w, UnauthorizedActor, other, "PostVerdict", **verdict())
    refused(w, UnauthorizedActor, w.providers[0], "PostVerdict", **verdict())
    refused(w, InvalidInput, assigned, "PostVerdict", **verdict(samples=samples[:-1]))
    refused(w, InvalidInput, assigned, "PostVerdict", **verdict(samples=samples[::-1]))
    unsampled = min(set(range(20)) - set(samples))
    refused(
        w,
        InvalidInput,
        assigned,
        "PostVerdict",
        **verdict(accepted=False, failedStep=unsampled, reason="differs"),
    )
    w.submit(assigned, "PostVerdict", **verdict())
    refused(w, InvalidTransition, assigned, "PostVerdict", **verdict())


def test_confirmed_fraud_slashes_jails_and_requeues_the_segment(world: World) -> None:
    """A fraud ruling slashes fraud_slash_bps of the provider's stake (bounty to the
    accuser, the rest to the treasury), jails it, and requeues the segment unpaid for
    another provider, which completes the job."""
    w = world
    w.setup(providers=2, verifiers=3)
    cheat, honest = w.providers[:2]
    job = w.submit_job()
    lease = w.lease(cheat, job)
    commitment = w.commit(cheat, lease["lease"])
    opened = w.verdict(commitment, accepted=False).outcome
    dispute = w.get_dispute(opened["dispute"])
    accuser = lease["verifier"]
    assert (dispute.accuser, dispute.referee, dispute.status) == (
        accuser,
        opened["referee"],
        "open",
    )
    assert len({dispute.referee, accuser, cheat.address}) == 3
    assert dispute.referee in {v.address for v in w.verifiers}
    assert w.get_commitment(commitment).status == "disputed"
    assert w.get_job(job).segment_state == DISPUTED

    ruling = {"dispute": dispute.key, "fraud": True, "reason": "state differs"}
    for outsider in (*(v for v in w.verifiers if v.address != dispute.referee), cheat):
        refused(w, UnauthorizedActor, outsider, "RuleDispute", **ruling)
    slashed = STAKED * PARAMS.fraud_slash_bps // 10_000
    slash = slash_split(slashed, PARAMS.bounty_bps)
    assert w.rule(dispute.key, fraud=True).outcome == {
        "dispute": dispute.key,
        "fraud": True,
        "slashed": slashed,
    }
    assert (w.balance(cheat, STAKE), w.balance(cheat)) == (STAKED - slashed, 0)
    assert w.balance(accuser) == slash.bounty
    assert treasury(w) == slash.treasury
    provider = w.get_provider(cheat)
    assert (provider.status, provider.jailed_until) == (JAILED, w.now + PARAMS.jail_seconds)
    assert (provider.accepted, provider.rejected) == (0, 1)
    assert w.get_verifier(w.verifier_key(accuser)).upheld == 1
    refused(w, InvalidTransition, w.verifier_key(dispute.referee), "RuleDispute", **ruling)
    refused(w, InvalidTransition, cheat, "RequestLease", job=job)
    refused(w, InvalidTransition, cheat, "SetProviderStatus", status=ACTIVE)
    state = w.get_job(job)
    assert (state.segment_state, state.escrow, state.requeues) == (QUEUED, BUDGET, 1)

    earned: Counter[str] = Counter({accuser: slash.bounty})
    retry = w.lease(honest, job)
    assert retry["lease"] != lease["lease"]
    assert (retry["segment"], retry["start_checkpoint"]) == (0, SEED_CHECKPOINT)
    w.verdict(w.commit(honest, retry["lease"]))
    earned[retry["verifier"]] += SPLIT.verifier
    last = w.lease(honest, job)
    w.verdict(w.commit(honest, last["lease"]))
    earned[last["verifier"]] += SPLIT.verifier
    state = w.get_job(job)
    assert (state.status, state.escrow, state.paid) == (COMPLETED, 0, 2 * PAYMENT)
    assert w.balance(honest) == 2 * SPLIT.provider
    assert w.balance(w.developer) == FUNDED - 2 * PAYMENT
    assert treasury(w) == slash.treasury + 2 * SPLIT.platform
    for verifier in w.verifiers:
        assert w.balance(verifier) == earned[verifier.address]

    w.now += PARAMS.jail_seconds
    w.submit(cheat, "SetProviderStatus", status=ACTIVE)
    assert w.get_provider(cheat).status == ACTIVE


def test_cleared_accusation_slashes_the_accuser_and_pays_the_referee(world: World) -> None:
    """A ruling of no fraud slashes false_accusation_slash_bps of the accuser's stake
    (bounty to the provider) and settles the segment with the verifier fee to the referee."""
    w = world
    w.setup(providers=1, verifiers=2)
    provider = w.providers[0]
    job = w.submit_job()
    lease = w.lease(provider, job)
    commitment = w.commit(provider, lease["lease"])
    opened = w.verdict(commitment, accepted=False).outcome
    accuser, referee = lease["verifier"], opened["referee"]
    assert referee and referee not in {accuser, provider.address}

    slashed = STAKED * PARAMS.false_accusation_slash_bps // 10_000
    slash = slash_split(slashed, PARAMS.bounty_bps)
    assert w.rule(opened["dispute"], fraud=False).outcome == {
        "dispute": opened["dispute"],
        "fraud": False,
        "slashed": slashed,
        "payment": PAYMENT,
        "provider_share": SPLIT.provider,
        "verifier_share": SPLIT.verifier,
        "platform_fee": SPLIT.platform,
        "refund": 0,
    }
    assert w.balance(provider) == slash.bounty + SPLIT.provider
    assert w.balance(provider, STAKE) == STAKED
    assert (w.balance(accuser), w.balance(accuser, STAKE)) == (0, STAKED - slashed)
    assert (w.balance(referee), w.balance(referee, STAKE)) == (SPLIT.verifier, STAKED)
    assert treasury(w) == slash.treasury + SPLIT.platform
    assert w.balance(w.developer, escrow_bucket(job)) == BUDGET - PAYMENT
    state = w.get_job(job)
    assert (state.current, state.segment_state, state.paid) == (1, QUEUED, PAYMENT)
    assert state.accepted[0]["verifier"] == referee
    assert w.get_dispute(opened["dispute"]).status == "cleared"
    assert w.get_commitment(commitment).status == "accepted"
    assert w.get_verifier(w.verifier_key(accuser)).overturned == 1
    assert (w.get_provider(provider).accepted, w.get_provider(provider).status) == (1, ACTIVE)


def test_an_overdue_verdict_is_reassigned_to_another_verifier(world: World) -> None:
    """Sweep of a commitment past its verdict deadline (refused before it) hands it to
    another verifier, whose verdict and fee then count while the first one's is refused."""
    w = world
    w.setup(providers=1, verifiers=3)
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)
    commitment = w.commit(w.providers[0], lease["lease"])
    refused(w, InvalidTransition, w.operator, "Sweep", target=commitment, reason="early")
    w.now += PARAMS.verdict_seconds + 1
    moved = w.sweep(commitment).outcome["verifier"]
    assert moved not in {lease["verifier"], w.providers[0].address}
    late = w.verifier_key(lease["verifier"])
    refused(
        w,
        UnauthorizedActor,
        late,
        "PostVerdict",
        commitment=commitment,
        accepted=True,
        samples=w.samples(commitment),
        failedStep=0,
        reason="",
    )
    w.verdict(commitment)
    assert (w.balance(moved), w.balance(late)) == (SPLIT.verifier, 0)


def test_a_reassigned_referee_is_never_the_jobs_developer(world: World) -> None:
    """A dispute with no eligible referee stays unassigned rather than going to the job's
    developer (who may be a verifier); Sweep assigns one once another verifier exists."""
    w = world
    w.setup(providers=1, verifiers=1)
    w.register_verifier(w.developer)
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)
    assert lease["verifier"] == w.verifiers[0].address
    opened = w.verdict(w.commit(w.providers[0], lease["lease"]), accepted=False).outcome
    assert opened["referee"] == ""
    refused(w, InvalidTransition, w.operator, "Sweep", target=opened["dispute"], reason="none")
    w.register_verifier(w.verifiers[1])
    assert w.sweep(opened["dispute"]).outcome["referee"] == w.verifiers[1].address


# -- stake and unbonding -----------------------------------------------------------------


def test_unbonded_stake_is_withdrawable_only_after_the_delay(world: World) -> None:
    """Unbond moves stake to unbonding; WithdrawUnbonded is refused until the release time
    and then moves exactly the released amount to available."""
    w = world
    w.setup(providers=0, verifiers=1)
    verifier = w.verifiers[0]
    release = w.now + PARAMS.unbonding_seconds
    assert w.unbond(verifier, 5 * BLACK).outcome == {"amount": 5 * BLACK, "release_at": release}
    assert (w.balance(verifier, STAKE), w.balance(verifier, UNBONDING)) == (15 * BLACK, 5 * BLACK)
    bond = w.get_bond(verifier)
    assert bond is not None and bond.entries == [[5 * BLACK, release]]
    refused(w, InvalidTransition, verifier, "WithdrawUnbonded")
    w.now = release - 1
    refused(w, InvalidTransition, verifier, "WithdrawUnbonded")
    w.now = release
    assert w.withdraw_unbonded(verifier).outcome == {"amount": 5 * BLACK}
    assert (w.balance(verifier), w.balance(verifier, UNBONDING)) == (5 * BLACK, 0)
    bond = w.get_bond(verifier)
    assert bond is not None and bond.entries == []
    refused(w, InvalidTransition, verifier, "WithdrawUnbonded")


def test_fraud_slashes_unbonding_stake_after_the_stake(world: World) -> None:
    """Stake on its way out is still slashable: a fraud ruling takes from stake first, then
    from unbonding, newest entry first, and the Bond's entries shrink to match."""
    w = world
    w.setup(providers=1, verifiers=2)
    cheat = w.providers[0]
    job = w.submit_job()
    lease = w.lease(cheat, job)
    commitment = w.commit(cheat, lease["lease"])
    w.unbond(cheat, 8 * BLACK)
    first_release = w.now + PARAMS.unbonding_seconds
    w.now += 1
    w.unbond(cheat, 7 * BLACK)
    second_release = w.now + PARAMS.unbonding_seconds
    assert (w.balance(cheat, STAKE), w.balance(cheat, UNBONDING)) == (5 * BLACK, 15 * BLACK)

    opened = w.verdict(commitment, accepted=False).outcome
    slashed = STAKED * PARAMS.fraud_slash_bps // 10_000
    slash = slash_split(slashed, PARAMS.bounty_bps)
    assert w.rule(opened["dispute"], fraud=True).outcome["slashed"] == slashed == 10 * BLACK
    assert (w.balance(cheat, STAKE), w.balance(cheat, UNBONDING)) == (0, 10 * BLACK)
    bond = w.get_bond(cheat)
    assert bond is not None
    assert bond.entries == [[8 * BLACK, first_release], [2 * BLACK, second_release]]
    assert w.balance(lease["verifier"]) == slash.bounty
    assert treasury(w) == slash.treasury


def test_plain_unstake_is_refused_for_compute_roles(world: World) -> None:
    """A provider's or verifier's stake leaves only through Unbond; an address without a
    compute role may still Unstake."""
    w = world
    w.setup(providers=1, verifiers=1)
    for who in (w.providers[0], w.verifiers[0]):
        refused(w, InvalidTransition, who, "Unstake", asset="BLACK", amount=1)
        assert w.balance(who, STAKE) == STAKED
    w.fund(w.developer, 3)
    w.submit(w.developer, "Stake", asset="BLACK", amount=3)
    w.submit(w.developer, "Unstake", asset="BLACK", amount=3)
    assert w.balance(w.developer) == 3


# -- ending a job ------------------------------------------------------------------------


def test_cancelling_a_leased_job_revokes_the_lease_and_refunds_the_escrow(world: World) -> None:
    """Cancel with a segment in training revokes the lease unpaid and refunds the whole
    escrow; the holder's commit, a second cancel and new leases are refused."""
    w = world
    w.setup()
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)
    fields = w.commit_fields(lease["lease"])
    refused(w, UnauthorizedActor, w.providers[0], "CancelJob", job=job)
    assert w.cancel(job).outcome == {"job": job, "refund": BUDGET}

    assert w.get_lease(lease["lease"]).state == "revoked"
    state = w.get_job(job)
    assert (state.status, state.segment_state, state.escrow) == (CANCELLED, DONE, 0)
    assert w.balance(w.developer, escrow_bucket(job)) == 0
    assert w.balance(w.developer) == FUNDED
    provider = w.get_provider(w.providers[0])
    assert (provider.leases, provider.leases_lost) == ({}, 0)
    refused(w, LeaseExpired, w.providers[0], "Commit", **fields)
    refused(w, InvalidTransition, w.developer, "CancelJob", job=job)
    refused(w, InvalidTransition, w.providers[1], "RequestLease", job=job)


def test_cancelling_with_a_commitment_pending_holds_its_payment_until_the_verdict(
    world: World,
) -> None:
    """Cancel while a segment awaits its verdict refunds all but that segment's payment;
    the later accepted verdict pays it, and the job ends cancelled with escrow 0."""
    w = world
    w.setup()
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)
    commitment = w.commit(w.providers[0], lease["lease"])
    assert w.cancel(job).outcome == {"job": job, "refund": BUDGET - PAYMENT}
    assert w.balance(w.developer, escrow_bucket(job)) == PAYMENT
    assert w.balance(w.developer) == FUNDED - PAYMENT

    verdict = w.verdict(commitment).outcome
    assert (verdict["payment"], verdict["refund"]) == (PAYMENT, 0)
    assert w.balance(w.providers[0]) == SPLIT.provider
    assert w.balance(lease["verifier"]) == SPLIT.verifier
    assert treasury(w) == SPLIT.platform
    assert w.balance(w.developer, escrow_bucket(job)) == 0
    state = w.get_job(job)
    assert (state.status, state.segment_state) == (CANCELLED, DONE)
    assert (state.paid, state.refunded, state.escrow) == (PAYMENT, BUDGET - PAYMENT, 0)
    refused(w, InvalidTransition, w.providers[1], "RequestLease", job=job)


def test_fraud_confirmed_after_a_cancel_refunds_the_held_payment(world: World) -> None:
    """A segment disputed when its job is cancelled keeps its payment in escrow; a fraud
    ruling then refunds it to the developer instead of requeueing the segment."""
    w = world
    w.setup(providers=1, verifiers=2)
    job = w.submit_job()
    lease = w.lease(w.providers[0], job)
    opened = w.verdict(w.commit(w.providers[0], lease["lease"]), accepted=False).outcome
    assert w.cancel(job).outcome["refund"] == BUDGET - PAYMENT
    w.rule(opened["dispute"], fraud=True)
    state = w.get_job(job)
    assert (state.status, state.segment_state) == (CANCELLED, DONE)
    assert (state.paid, state.refunded, state.escrow) == (0, BUDGET, 0)
    assert w.balance(w.developer, escrow_bucket(job)) == 0
    assert w.balance(w.developer) == FUNDED


# -- random histories --------------------------------------------------------------------

# "progress" takes a job's next natural step; listed several times so that histories get
# deep (leased, committed, judged, disputed) instead of stalling at refusals.
ACTIONS = (
    *["progress"] * 8,
    "submit",
    "lease",
    "heartbeat",
    "commit",
    "accept",
    "reject",
    "rule",
    "cancel",
    "sweep",
    "advance",
    "unbond",
    "withdraw",
    "status",
)
# Short delays so that unbonding releases and jails end within a history.
PROPERTY_PARAMS = ComputeParams(unbonding_seconds=900, jail_seconds=900)


def _specs(w: World, choice: int) -> Any:
    if choice == 0:
        return small_spec()
    if choice == 1:
        return small_spec(6, 2, currency="USD", price_per_step_max=80)
    return small_spec(deadline=w.now + 1500)


def _next_step(w: World, job: Job, i: int) -> str:
    """The action that moves `job` on: the next command of its segment, or a sweep of
    whatever is overdue (every other time, so that overdue work is also done late)."""
    if job.finished and job.segment_state not in (COMMITTED, DISPUTED):
        return "submit"
    if not job.finished and w.now > job.deadline:
        return "sweep-job"
    if job.segment_state == QUEUED:
        return "lease"
    if job.segment_state == LEASED:
        assert job.lease is not None
        overdue = w.now > w.get_lease(job.lease).deadline
        return ("sweep-lease", "lease")[i % 2] if overdue else "commit"
    if job.segment_state == COMMITTED:
        assert job.commitment is not None
        overdue = w.now > w.get_commitment(job.commitment).verdict_deadline
        if overdue and i % 2:
            return "sweep-commitment"
        return "reject" if i % 3 == 0 else "accept"
    return "rule"


def _act(w: World, jobs: list[str], action: str, i: int, j: int) -> None:
    """Issue one command (or move the clock); the state may well refuse it."""
    stakers = [*w.providers, *w.verifiers]
    if action == "submit":
        jobs.append(w.submit_job(_specs(w, i % 3)))
        return
    if action == "advance":
        w.now += (100, 400, 1000)[i % 3]
        return
    if action == "unbond":
        w.unbond(stakers[(i + 3 * j) % 6], (1, 5, 12)[j % 3] * BLACK)
        return
    if action == "withdraw":
        w.withdraw_unbonded(stakers[(i + 3 * j) % 6])
        return
    if action == "status":
        w.submit(w.providers[i % 3], "SetProviderStatus", status=("active", "paused")[j % 5 // 4])
        return
    if not jobs:
        return
    job = w.get_job(jobs[j % len(jobs)])
    if action == "progress":
        action = _next_step(w, job, i)
        if action == "submit":
            jobs.append(w.submit_job(_specs(w, i % 3)))
            return
    if action == "lease":
        w.lease(w.providers[i % 3], job.key)
    elif action == "cancel":
        w.cancel(job.key)
    elif action == "heartbeat" and job.lease:
        w.heartbeat(w.provider_key(w.get_lease(job.lease).provider), job.lease)
    elif action == "commit" and job.lease:
        w.commit(w.provider_key(w.get_lease(job.lease).provider), job.lease)
    elif action in ("accept", "reject") and job.commitment and job.segment_state == COMMITTED:
        w.verdict(job.commitment, accepted=action == "accept")
    elif action == "rule" and job.commitment and job.segment_state == DISPUTED:
        dispute = w.get_dispute(dispute_key(job.commitment))
        if dispute.referee:
            w.rule(dispute.key, fraud=i % 2 == 0)
        else:
            w.sweep(dispute.key)
    elif action.startswith("sweep"):
        dispute = dispute_key(job.commitment) if job.commitment else None
        targets = {
            "sweep-lease": job.lease,
            "sweep-job": job.key,
            "sweep-commitment": job.commitment,
        }
        target = targets.get(action, [job.lease, job.key, job.commitment, dispute][i % 4])
        if target:
            w.sweep(target)


def _check_invariants(w: World, jobs: list[str]) -> None:
    # Each aggregate is read once: a read deep-copies it, and a job carries its whole spec.
    names = [k.address for k in (w.operator, w.developer, *w.providers, *w.verifiers)]
    balances = {name: w.app.balances(name) for name in (*names, TREASURY_ACCOUNT, VAULT_ACCOUNT)}
    liabilities: Counter[str] = Counter()
    reserve: Counter[str] = Counter()
    for name, buckets in balances.items():
        for key, value in buckets.items():
            assert value >= 0, (name, key, value)
            asset, bucket = key.split("/", 1)
            (reserve if bucket == RESERVE else liabilities)[asset] += value
    for asset, deposited in w.deposits.items():
        assert liabilities[asset] == reserve[asset] == deposited, asset
    leases: dict[str, str | None] = {}
    for key in jobs:
        job = w.get_job(key)
        leases[key] = job.lease
        escrow = balances[job.developer].get(f"{job.currency}/{escrow_bucket(key)}", 0)
        assert escrow == job.escrow == job.budget - job.paid - job.refunded >= 0
        if job.finished and job.segment_state not in (COMMITTED, DISPUTED):
            assert escrow == 0 and job.segment_state == DONE, job.to_json()
    for who in (*w.providers, *w.verifiers):
        bond = w.get_bond(who)
        unbonding = sum(amount for amount, _ in bond.entries) if bond is not None else 0
        assert unbonding == balances[who.address].get(f"BLACK/{UNBONDING}", 0)
    for who in w.providers:
        for job_key, lease_key in w.get_provider(who).leases.items():
            assert leases[job_key] == lease_key
            assert w.get_lease(lease_key).state == "open"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=st.lists(
        st.tuples(st.sampled_from(ACTIONS), st.integers(0, 5), st.integers(0, 5)),
        min_size=10,
        max_size=40,
    )
)
def test_random_compute_histories_keep_the_ledger_invariants(
    actions: list[tuple[str, int, int]],
) -> None:
    """Any interleaving of compute commands and clock moves, refused ones included, keeps
    every bucket non-negative, liabilities == reserve == deposits per asset, each job's
    escrow == budget - paid - refunded (0 once finished with nothing in flight), bonds in
    step with unbonding balances, and an export that audits clean."""
    app = Network(memory_storage(), params=PROPERTY_PARAMS)
    try:
        w = World(app)
        w.setup(providers=3, verifiers=3)
        jobs = [w.submit_job()]
        for action, i, j in actions:
            before = w.log_size()
            try:
                _act(w, jobs, action, i, j)
            except ProtocolError:
                assert w.log_size() == before
            _check_invariants(w, jobs)
        report = audit_lines(export(w), workers=0)
        assert report.ok, report.error
        for asset, deposited in w.deposits.items():
            assert report.totals[asset]["balances"] == deposited
    finally:
        app.close()


def test_a_provider_may_release_its_own_lapsed_lease(world: World) -> None:
    """A provider whose lease on a job lapsed can lease the segment again itself: the old
    lease is expired in the same transaction and a new one granted."""
    w = world
    w.setup()
    job = w.submit_job()
    first = w.lease(w.providers[0], job)
    refused(w, InvalidTransition, w.providers[0], "RequestLease", job=job)
    w.now = first["deadline"] + 1
    second = w.lease(w.providers[0], job)
    assert second["lease"] != first["lease"]
    assert w.get_lease(first["lease"]).state == "expired"
    assert w.get_provider(w.providers[0]).leases == {job: second["lease"]}


def test_ledger_escrow_commands_cannot_touch_a_compute_jobs_escrow(world: World) -> None:
    """EscrowLock, EscrowRelease and EscrowRefund naming a compute job are refused, so the
    job's escrow bucket always equals its own accounting."""
    w = world
    w.setup()
    job = w.submit_job()
    refused(w, InvalidTransition, w.developer, "EscrowLock", job=job, asset="BLACK", amount=1)
    refused(
        w,
        InvalidTransition,
        w.operator,
        "EscrowRefund",
        payer=w.developer.address,
        job=job,
        asset="BLACK",
        amount=1,
    )
    refused(
        w,
        InvalidTransition,
        w.operator,
        "EscrowRelease",
        payer=w.developer.address,
        job=job,
        asset="BLACK",
        payouts=[{"account": w.providers[0].address, "amount": 1}],
        fee=0,
    )
    assert w.balance(w.developer, escrow_bucket(job)) == BUDGET


def test_a_jailed_providers_results_are_refused_on_its_other_jobs(world: World) -> None:
    """Once jailed for fraud on one job, a provider's commitment on another job is
    refused and records nothing."""
    w = world
    w.setup(providers=2, verifiers=3)
    cheat = w.providers[0]
    first, second = w.submit_job(), w.submit_job()
    other = w.lease(cheat, second)
    commitment = w.commit(cheat, w.lease(cheat, first)["lease"])
    dispute = w.verdict(commitment, accepted=False).outcome
    w.rule(dispute["dispute"], fraud=True)
    assert w.get_provider(cheat).status == JAILED
    refused(w, InvalidTransition, cheat, "Commit", **w.commit_fields(other["lease"]))


def test_committed_segments_awaiting_judgment_count_against_the_stake(world: World) -> None:
    """A provider's committed-but-unjudged segment stays backed by its stake: with stake
    for exactly one segment at risk, it leases once, commits, and is refused a second
    lease until the first is judged."""
    w = world
    spec = small_spec(total_steps=40, segment_steps=20)
    samples = PARAMS.samples(20, Fraction(99, 100))
    caught = detection_probability(20, samples, PARAMS.faked_min(20))
    at_risk = stake_min(20 * PRICE, caught)
    assert at_risk > 0
    provider = w.providers[0]
    w.register_provider(provider, stake=PARAMS.stake_per_gpu_min + at_risk)
    w.register_verifier(w.verifiers[0])
    first, second = w.submit_job(spec), w.submit_job(spec)
    commitment = w.commit(provider, w.lease(provider, first)["lease"])
    assert w.get_provider(provider).unverified == 1
    refused(w, InvalidTransition, provider, "RequestLease", job=second)
    w.verdict(commitment)
    assert w.get_provider(provider).unverified == 0
    w.lease(provider, second)


def test_audit_catches_a_job_whose_accounting_disagrees_with_its_escrow(world: World) -> None:
    """A log whose Job event claims a payment its escrow postings never made (line and
    leaf hash rewritten to match) fails the audit at the next command, naming the job."""
    w = world
    w.setup()
    job = w.submit_job()
    w.run_segment(w.providers[0], job)
    w.fund(w.developer, 1)
    lines = export(w)
    forged = []
    for line in lines:
        parts = split_export_line(line)
        if parts is not None:
            leaf = canonical.decode(parts[0])
            if leaf["type"] == "Job.SegmentAccepted":
                leaf["data"]["payment"] += 1
                line = export_line(leaf)[0]
        forged.append(line)
    assert audit_lines(lines, workers=0).ok
    report = audit_lines(forged, workers=0)
    assert report.error is not None
    assert f"job {job}: escrow bucket holds" in report.error.reason


def test_a_commitment_whose_samples_are_not_opened_costs_what_fraud_costs(world: World) -> None:
    """Past the opening deadline with no openings published, the operator's sweep slashes
    the provider as for fraud (bounty to the waiting verifier), jails it and requeues the
    segment unpaid; openings after that sweep are refused."""
    w = world
    w.setup()
    job = w.submit_job()
    provider = w.providers[0]
    lease = w.lease(provider, job)
    commitment = w.commit(provider, lease["lease"], opened=False)
    refused(w, InvalidTransition, w.operator, "Sweep", target=commitment, reason="early")
    w.now = w.get_commitment(commitment).opening_deadline + 1
    verifier = lease["verifier"]
    before = w.balance(verifier)
    w.sweep(commitment)
    slashed = STAKED * PARAMS.fraud_slash_bps // 10_000
    split = slash_split(slashed, PARAMS.bounty_bps)
    assert w.balance(verifier) == before + split.bounty
    assert w.balance(provider, STAKE) == STAKED - slashed
    assert w.get_provider(provider).status == JAILED
    assert w.get_commitment(commitment).status == "fraud"
    assert (w.get_job(job).segment_state, w.get_job(job).current) == (QUEUED, 0)
    refused(
        w,
        InvalidTransition,
        provider,
        "OpenSamples",
        commitment=commitment,
        openings="0x" + "0e" * 32,
    )


def test_openings_past_the_deadline_count_until_the_sweep(world: World) -> None:
    """A provider that opens after the opening deadline but before any sweep (cut off by
    an outage of the gateway, say) is opened: the sweep then finds nothing to punish, and
    the verifier judges as usual."""
    w = world
    w.setup()
    job = w.submit_job()
    provider = w.providers[0]
    commitment = w.commit(provider, w.lease(provider, job)["lease"], opened=False)
    w.now = w.get_commitment(commitment).opening_deadline + 30
    w.open_samples(provider, commitment)
    assert w.get_commitment(commitment).openings is not None
    refused(w, InvalidTransition, w.operator, "Sweep", target=commitment, reason="late")
    assert w.get_provider(provider).status != JAILED
    w.verdict(commitment, accepted=True)
    assert w.get_commitment(commitment).status == "accepted"


def test_only_the_provider_opens_its_commitment_and_only_once(world: World) -> None:
    """OpenSamples from anyone but the commitment's provider, or a second time, is refused
    and records nothing."""
    w = world
    w.setup()
    job = w.submit_job()
    provider = w.providers[0]
    commitment = w.commit(provider, w.lease(provider, job)["lease"], opened=False)
    digest = "0x" + "0e" * 32
    refused(
        w, UnauthorizedActor, w.providers[1], "OpenSamples", commitment=commitment, openings=digest
    )
    w.open_samples(provider, commitment)
    assert w.get_commitment(commitment).openings == digest
    refused(w, InvalidTransition, provider, "OpenSamples", commitment=commitment, openings=digest)


def test_an_unopened_commitment_cannot_be_rejected(world: World) -> None:
    """A verifier may not reject a commitment whose openings are not published: before
    the deadline the provider may still open it, after it the sweep punishes it."""
    w = world
    w.setup()
    job = w.submit_job()
    provider = w.providers[0]
    commitment = w.commit(provider, w.lease(provider, job)["lease"], opened=False)
    verifier = w.verifier_key(w.get_commitment(commitment).verifier)
    samples = w.samples(commitment)
    refused(
        w,
        InvalidTransition,
        verifier,
        "PostVerdict",
        commitment=commitment,
        accepted=False,
        samples=samples,
        failedStep=samples[0],
        reason="not opened",
    )
    w.open_samples(provider, commitment)
    assert w.verdict(commitment, accepted=False).outcome["dispute"]
