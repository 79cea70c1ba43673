"""A small world for compute-protocol tests: keys for every role, a clock the test moves,
and one method per command, applied to a real Network in process."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

from protocol.application import CommandContext, CommandResult, Network
from protocol.commands import sign_command
from protocol.compute import expected_samples
from protocol.jobs import Commitment, Dispute, Job, Lease
from protocol.jobspec import JobSpec, parse_job_spec
from protocol.keys import PrivateKey
from protocol.participants import Bond, Provider, Verifier

CHAIN_ID = 31337
BLACK = 10**18
FIXTURE = Path(__file__).parent / "fixtures" / "jobspec_digits.yaml"
_counter = itertools.count(1)


def key(number: int) -> PrivateKey:
    return PrivateKey.from_bytes(number.to_bytes(32, "big"))


def small_spec(
    total_steps: int = 4, segment_steps: int = 2, deadline: int | None = None, **payment: Any
) -> JobSpec:
    """The digits job of the fixture, cut short: a few steps, two per segment."""
    document = json.loads(FIXTURE.read_text())
    document = copy.deepcopy(document)
    document["total_steps"] = total_steps
    document["segment_steps"] = segment_steps
    document["deadline"] = deadline or int(time.time()) + 30 * 24 * 3600
    document["payment"].update(payment)
    return parse_job_spec(document)


def end_checkpoint(end_step: int) -> str:
    """The end checkpoint the World's providers commit for a segment ending at `end_step`."""
    return "0x" + f"{end_step:064x}"


class World:
    """Operator, developer, three providers and three verifiers on one Network."""

    def __init__(self, app: Network) -> None:
        self.app = app
        self.operator = key(0xB1AC7)
        self.developer = key(0xDE7)
        self.providers = [key(0x9001), key(0x9002), key(0x9003)]
        self.verifiers = [key(0x7001), key(0x7002), key(0x7003)]
        self.now = int(time.time())
        # Base units deposited per asset: what the vault reserve must equal.
        self.deposits: dict[str, int] = {}
        app.initialize(CHAIN_ID, self.operator.address)

    def sign(self, signer: PrivateKey, kind: str, **fields: Any) -> Any:
        number = next(_counter)
        fields.setdefault("clientId", f"w-{number}")
        fields.setdefault("nonce", number)
        fields.setdefault("expiry", self.now + 3 * 24 * 3600)
        return sign_command(signer, kind, CHAIN_ID, fields)

    def submit(
        self, signer: PrivateKey, kind: str, *, spec: JobSpec | None = None, **fields: Any
    ) -> CommandResult:
        command = self.sign(signer, kind, **fields)
        return self.app.submit(command, now=self.now, context=CommandContext(spec=spec))

    def fund(self, who: PrivateKey, amount: int, asset: str = "BLACK") -> None:
        self.submit(
            self.operator,
            "Deposit",
            account=who.address,
            asset=asset,
            amount=amount,
            chainRef=f"{CHAIN_ID}:0x{next(_counter):064x}:0",
        )
        self.deposits[asset] = self.deposits.get(asset, 0) + amount

    def register_provider(self, who: PrivateKey, stake: int = 20 * BLACK, **fields: Any) -> None:
        if stake:
            self.fund(who, stake)
        values = {
            "device": "NVIDIA H100",
            "gpus": 1,
            "memoryMb": 80_000,
            "benchmarkGflops": 51_000,
            "priceBlack": 5 * 10**13,
            "priceUsd": 50,
            "stake": stake,
        }
        values.update(fields)
        self.submit(who, "RegisterProvider", **values)

    def register_verifier(self, who: PrivateKey, stake: int = 20 * BLACK) -> None:
        if stake:
            self.fund(who, stake)
        self.submit(who, "RegisterVerifier", stake=stake)

    def setup(self, providers: int = 2, verifiers: int = 2) -> None:
        for who in self.providers[:providers]:
            self.register_provider(who)
        for who in self.verifiers[:verifiers]:
            self.register_verifier(who)

    def submit_job(self, spec: JobSpec | None = None, fund: int = 10 * BLACK) -> str:
        spec = spec or small_spec()
        self.fund(self.developer, fund, spec.payment.currency.value)
        result = self.submit(
            self.developer, "SubmitJob", spec=spec, specHash="0x" + spec.digest().hex()
        )
        return str(result.outcome["job"])

    def lease(self, who: PrivateKey, job: str) -> dict[str, Any]:
        return self.submit(who, "RequestLease", job=job).outcome

    def commit_fields(self, lease_key: str, *, root: str | None = None) -> dict[str, Any]:
        """A well-formed Commit message for a lease: its checkpoint, steps and a trace."""
        lease = self.get_lease(lease_key)
        return {
            "lease": lease_key,
            "startCheckpoint": lease.start_checkpoint,
            "endCheckpoint": end_checkpoint(lease.end_step),
            "root": root or "0x" + "ab" * 32,
            "steps": lease.steps,
            "lossTrace": "0x" + "3f800000" * lease.steps,
        }

    def commit(
        self, who: PrivateKey, lease_key: str, *, root: str | None = None, opened: bool = True
    ) -> str:
        """Commit a lease's segment and, like an honest provider, publish its openings."""
        result = self.submit(who, "Commit", **self.commit_fields(lease_key, root=root))
        commitment = str(result.outcome["commitment"])
        if opened:
            self.open_samples(who, commitment)
        return commitment

    def open_samples(self, who: PrivateKey, commitment: str) -> CommandResult:
        return self.submit(who, "OpenSamples", commitment=commitment, openings="0x" + "0e" * 32)

    def verifier_key(self, address: str) -> PrivateKey:
        return next(k for k in (*self.verifiers, self.developer) if k.address == address)

    def provider_key(self, address: str) -> PrivateKey:
        return next(k for k in self.providers if k.address == address)

    def samples(self, commitment_key: str) -> list[int]:
        commitment = self.get_commitment(commitment_key)
        return expected_samples(commitment, self.app.beacon(commitment_key))

    def verdict(self, commitment_key: str, accepted: bool = True) -> CommandResult:
        commitment = self.get_commitment(commitment_key)
        samples = self.samples(commitment_key)
        return self.submit(
            self.verifier_key(commitment.verifier),
            "PostVerdict",
            commitment=commitment_key,
            accepted=accepted,
            samples=samples,
            failedStep=0 if accepted else samples[0],
            reason="" if accepted else "state hash differs",
        )

    def run_segment(self, who: PrivateKey, job: str) -> str:
        lease = self.lease(who, job)
        commitment = self.commit(who, lease["lease"])
        self.verdict(commitment)
        return commitment

    def heartbeat(self, who: PrivateKey, lease_key: str) -> CommandResult:
        return self.submit(who, "Heartbeat", lease=lease_key)

    def cancel(self, job: str, who: PrivateKey | None = None) -> CommandResult:
        return self.submit(who or self.developer, "CancelJob", job=job)

    def sweep(self, target: str) -> CommandResult:
        return self.submit(self.operator, "Sweep", target=target, reason="overdue")

    def rule(self, dispute: str, fraud: bool, who: PrivateKey | None = None) -> CommandResult:
        referee = who or self.verifier_key(self.get_dispute(dispute).referee)
        return self.submit(referee, "RuleDispute", dispute=dispute, fraud=fraud, reason="re-ran")

    def unbond(self, who: PrivateKey, amount: int) -> CommandResult:
        return self.submit(who, "Unbond", amount=amount)

    def withdraw_unbonded(self, who: PrivateKey) -> CommandResult:
        return self.submit(who, "WithdrawUnbonded")

    def log_size(self) -> int:
        """How many events the store holds: a refused command must not change it."""
        return self.app.recorder.max_notification_id() or 0

    def get_dispute(self, dispute: str) -> Dispute:
        return self.app.get(Dispute.create_id(dispute))  # type: ignore[no-any-return]

    def get_provider(self, who: PrivateKey) -> Provider:
        return self.app.get(Provider.create_id(who.address))  # type: ignore[no-any-return]

    def get_verifier(self, who: PrivateKey) -> Verifier:
        return self.app.get(Verifier.create_id(who.address))  # type: ignore[no-any-return]

    def get_bond(self, who: PrivateKey) -> Bond | None:
        return self.app.get(Bond.create_id(who.address))  # type: ignore[no-any-return]

    def get_job(self, job: str) -> Job:
        return self.app.get(Job.create_id(job))  # type: ignore[no-any-return]

    def get_lease(self, lease: str) -> Lease:
        return self.app.get(Lease.create_id(lease))  # type: ignore[no-any-return]

    def get_commitment(self, commitment: str) -> Commitment:
        return self.app.get(Commitment.create_id(commitment))  # type: ignore[no-any-return]

    def balance(
        self, who: PrivateKey | str, bucket: str = "available", asset: str = "BLACK"
    ) -> int:
        name = who if isinstance(who, str) else who.address
        return self.app.balance(name, asset, bucket)
