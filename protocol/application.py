"""The `Network` application: the ledger's commands, saved atomically with their receipts.

Each accepted command records, in one transaction: a `Receipt` (the signed command and
the posting set it caused; its id is derived from the signer and client id, so a second
receipt for the same id cannot be saved), a `NonceUse` (likewise unique per signer and
nonce) and one `Account.Posted` event per account touched. Optimistic concurrency on
those aggregates' versions is what stops two writers, threads or processes, from both
spending the same funds: the loser's save raises IntegrityError and is retried on fresh
state.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.persistence import IntegrityError

from protocol.assets import Asset
from protocol.commands import SignedCommand, VerifiedCommand, verify_command
from protocol.compute import ComputeParams, Context, decide
from protocol.errors import (
    CommandExpired,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    NonceReplayed,
    ProtocolError,
)
from protocol.jobs import Job
from protocol.jobspec import JobSpec
from protocol.keys import parse_address
from protocol.ledger import (
    SYSTEM_ACCOUNTS,
    Account,
    Leg,
    account_id,
    check_balanced,
    group_by_account,
    namespaced_id,
    next_balances,
)
from protocol.participants import Provider, Verifier, provider_id, verifier_id
from protocol.storage import Storage, memory_storage

PROTOCOL_VERSION = "1"

# Retries of a command that lost an optimistic-concurrency race; each retry reads fresh
# state, so a bounded number suffices unless one account is contended by many writers.
conflict_retries_max = 64
# Commands may not be signed to stay valid for longer than this: it bounds how long a
# captured command stays replayable anywhere the nonce record could be missing.
expiry_horizon_seconds = 7 * 24 * 3600
batch_commands_max = 4096
# Whole-batch retries after a lost race, before each command is tried on its own.
batch_retries_max = 3


class NotInitialized(ProtocolError, RuntimeError):
    """The store has no genesis record: run `initialize` (or `blacktail ledger init`)."""


class GenesisMismatch(ProtocolError, ValueError):
    """The store was initialized for another chain id or operator."""


class Unauthorized(ProtocolError, PermissionError):
    """The signer may not issue this command (operator-only, or a system account)."""

    def __init__(self, signer: str, kind: str) -> None:
        super().__init__(f"{signer} may not issue {kind}")
        self.signer = signer
        self.kind = kind


class ConcurrencyExhausted(ProtocolError, RuntimeError):
    """A command lost the optimistic-concurrency race more than the retry bound allows."""


class Genesis(Aggregate):
    """The network's identity: the chain id its commands are signed for and its operator."""

    @staticmethod
    def create_id() -> UUID:
        return namespaced_id("genesis")

    @event("Created")
    def __init__(self, chain_id: int, operator: str, protocol_version: str) -> None:
        self.chain_id = chain_id
        self.operator = operator
        self.protocol_version = protocol_version


class Receipt(Aggregate):
    """An accepted command: the signed message and the posting set it caused."""

    @staticmethod
    def create_id(signer: str, client_id: str) -> UUID:
        return receipt_id(signer, client_id)

    @event("Accepted")
    def __init__(
        self,
        signer: str,
        client_id: str,
        kind: str,
        chain_id: int,
        message: dict[str, Any],
        signature: str,
        payload_digest: str,
        legs: list[list[Any]],
        outcome: dict[str, Any],
    ) -> None:
        self.signer = signer
        self.client_id = client_id
        self.kind = kind
        self.chain_id = chain_id
        self.message = message
        self.signature = signature
        self.payload_digest = payload_digest
        self.legs = legs
        # What a compute command did (the job, lease or commitment it made, the amounts
        # it moved): recorded so that a retry gets the same answer.
        self.outcome = outcome

    def result(self, *, duplicate: bool = False) -> CommandResult:
        return CommandResult(
            str(self.id),
            self.kind,
            self.signer,
            self.client_id,
            self.legs,
            duplicate,
            self.outcome,
        )


class NonceUse(Aggregate):
    """The record that a signer's nonce has been spent."""

    @staticmethod
    def create_id(signer: str, nonce: int) -> UUID:
        return nonce_id(signer, nonce)

    @event("Used")
    def __init__(self, signer: str, nonce: int, client_id: str) -> None:
        self.signer = signer
        self.nonce = nonce
        self.client_id = client_id


# A command's record ids are derived several times while it is staged and saved (by us
# and by eventsourcing's create_id); a small cache makes that one SHA-1 each.
@functools.lru_cache(maxsize=4096)
def receipt_id(signer: str, client_id: str) -> UUID:
    return namespaced_id("receipt", signer, client_id)


@functools.lru_cache(maxsize=4096)
def nonce_id(signer: str, nonce: int) -> UUID:
    return namespaced_id("nonce", signer, str(nonce))


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command carries beside its signed message (a SubmitJob's spec)."""

    spec: JobSpec | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command returns; a retry with the same client id returns the same facts."""

    command_id: str
    kind: str
    signer: str
    client_id: str
    legs: list[list[Any]]
    duplicate: bool = False
    outcome: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "kind": self.kind,
            "signer": self.signer,
            "client_id": self.client_id,
            "legs": self.legs,
            "outcome": self.outcome,
        }


class _Staging:
    """Aggregates loaded and changed by one transaction (one command, or one batch)."""

    def __init__(self, app: Network) -> None:
        self.app = app
        self.aggregates: dict[UUID, Aggregate] = {}
        self.receipts: dict[UUID, Receipt] = {}
        self.nonces: set[UUID] = set()
        # Events in command order: a batch must record each command's events contiguously
        # (receipt, nonce, postings), which saving aggregate by aggregate would not.
        self.events: list[DomainEventProtocol[UUID]] = []

    def get(self, aggregate_id: UUID) -> Any:
        if aggregate_id in self.aggregates:
            return self.aggregates[aggregate_id]
        try:
            aggregate: Aggregate = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        self.aggregates[aggregate_id] = aggregate
        return aggregate

    def add(self, aggregate: Aggregate) -> None:
        self.aggregates.setdefault(aggregate.id, aggregate)
        self.events.extend(aggregate.collect_events())

    def account(self, name: str) -> Account:
        existing = self.get(account_id(name))
        if existing is not None:
            assert isinstance(existing, Account), f"aggregate of {name} is not an Account"
            return existing
        opened = Account(name=name)
        self.aggregates[opened.id] = opened
        return opened


class Network(Application[UUID]):
    """The BlackTail ledger: signed commands in, balanced posting sets recorded."""

    name = "BlackTail"
    # Notification log sections large enough for exports and audits to read in bulk.
    log_section_size = 1000
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": "100000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }

    def __init__(self, storage: Storage | None = None, params: ComputeParams | None = None) -> None:
        self.storage = storage or memory_storage()
        super().__init__(env=self.storage.env)
        self.params = params or ComputeParams()
        self._genesis: Genesis | None = None
        self._event_log: Any = None

    # -- identity ---------------------------------------------------------------------

    def initialize(self, chain_id: int, operator: str) -> Genesis:
        """Record the network's genesis, or check that the recorded one matches."""
        operator = parse_address(operator, "operator")
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
            raise InvalidInput("chain_id: expected a positive integer", field="chain_id")
        try:
            existing = self.genesis
        except NotInitialized:
            genesis = Genesis(
                chain_id=chain_id, operator=operator, protocol_version=PROTOCOL_VERSION
            )
            # Another process may initialize it at the same moment: compare below.
            with contextlib.suppress(IntegrityError):
                self.save(genesis)
            self._genesis = None
            existing = self.genesis
        if (existing.chain_id, existing.operator) != (chain_id, operator):
            raise GenesisMismatch(
                f"store belongs to chain {existing.chain_id} with operator {existing.operator}"
            )
        return existing

    @property
    def genesis(self) -> Genesis:
        if self._genesis is None:
            try:
                genesis: Genesis = self.repository.get(Genesis.create_id())
            except AggregateNotFoundError:
                raise NotInitialized(
                    "the ledger has no genesis record; initialize it first"
                ) from None
            assert isinstance(genesis, Genesis)
            self._genesis = genesis
        return self._genesis

    @property
    def chain_id(self) -> int:
        return self.genesis.chain_id

    @property
    def operator(self) -> str:
        return self.genesis.operator

    # -- commands ---------------------------------------------------------------------

    def submit(
        self,
        command: SignedCommand,
        *,
        now: int | None = None,
        context: CommandContext | None = None,
    ) -> CommandResult:
        """Verify and apply one signed command, atomically; retry lost races.

        `context` carries what a compute command needs beside its signed message: the
        job spec of a SubmitJob (whose digest the message signs).
        """
        return self._submit_verified(
            verify_command(command, self.chain_id), _now(now), context or CommandContext()
        )

    def _submit_verified(
        self, verified: VerifiedCommand, moment: int, context: CommandContext | None = None
    ) -> CommandResult:
        context = context or CommandContext()
        for attempt in range(conflict_retries_max):
            staging = _Staging(self)
            try:
                result = self._stage(staging, verified, moment, context)
                self._save_staged(staging)
                return result
            except IntegrityError:
                # Either this command (or its nonce) was recorded before, or another
                # writer moved an account first: only the first two end the retries.
                prior = self._prior_result(verified)
                if prior is not None:
                    return prior
                if self._exists(nonce_id(verified.signer, verified.nonce)):
                    raise NonceReplayed(verified.signer, verified.nonce) from None
                _backoff(attempt)
            except ProtocolError:
                # A retry of an accepted command must get its first answer even when
                # it could not be accepted now (expired since, funds spent since).
                prior = self._prior_result(verified)
                if prior is not None:
                    return prior
                raise
        raise ConcurrencyExhausted(
            f"command {verified.client_id} lost {conflict_retries_max} races"
        )

    def submit_many(
        self, commands: Sequence[SignedCommand], *, now: int | None = None
    ) -> list[CommandResult | ProtocolError]:
        """Verify and apply many commands in one transaction (group commit).

        Each command is checked and applied in order on the batch's state; a command that
        fails is reported in its slot and changes nothing. If the batch loses a race (or
        holds a retry of a recorded command), it falls back to one transaction per
        command, so one contended account does not stall the rest.
        """
        if len(commands) > batch_commands_max:
            raise InvalidInput(f"batch of {len(commands)} commands exceeds {batch_commands_max}")
        verified: list[VerifiedCommand | ProtocolError] = []
        for command in commands:
            try:
                verified.append(verify_command(command, self.chain_id))
            except ProtocolError as error:
                verified.append(error)
        return self.submit_verified_many(verified, _now(now))

    def submit_verified_many(
        self,
        items: Sequence[VerifiedCommand | ProtocolError],
        moment: int,
        contexts: Sequence[CommandContext | None] | None = None,
    ) -> list[CommandResult | ProtocolError]:
        """Stage every item on one state and save them in one transaction.

        A batch that loses a race is staged again on fresh state a few times (another
        writer moved an account it touches); if it keeps losing, or holds a retry of a
        command recorded before, each command goes on its own.
        """
        contexts = contexts or [None] * len(items)
        for attempt in range(batch_retries_max + 1):
            results: list[CommandResult | ProtocolError] = []
            staging = _Staging(self)
            for item, context in zip(items, contexts, strict=True):
                if isinstance(item, ProtocolError):
                    results.append(item)
                    continue
                try:
                    results.append(self._stage(staging, item, moment, context))
                except ProtocolError as error:
                    prior = self._prior_result(item)
                    results.append(error if prior is None else prior)
            try:
                if staging.events:
                    self._save_staged(staging)
                return results
            except IntegrityError:
                if attempt < batch_retries_max:
                    _backoff(attempt)
        for i, (item, context) in enumerate(zip(items, contexts, strict=True)):
            if isinstance(results[i], CommandResult) and isinstance(item, VerifiedCommand):
                try:
                    results[i] = self._submit_verified(item, moment, context)
                except ProtocolError as error:
                    results[i] = error
        return results

    def _stage(
        self,
        staging: _Staging,
        command: VerifiedCommand,
        now: int,
        context: CommandContext | None = None,
    ) -> CommandResult:
        """Check one verified command against state and stage its events.

        Nothing is triggered until every check has passed, so a refused command leaves the
        staging untouched. Uniqueness of the receipt and nonce is not read here: the
        store refuses a second record with the same id at save time (IntegrityError),
        which keeps the common path free of reads.
        """
        signer = command.signer
        staged = staging.receipts.get(receipt_id(signer, command.client_id))
        if staged is not None:
            if staged.payload_digest != command.payload_digest:
                raise IdempotencyConflict(signer, command.client_id)
            return staged.result(duplicate=True)
        if command.expiry < now:
            raise CommandExpired(command.expiry, now)
        if command.expiry > now + expiry_horizon_seconds:
            raise InvalidInput(
                f"message.expiry: more than {expiry_horizon_seconds} s ahead",
                field="message.expiry",
            )
        if nonce_id(signer, command.nonce) in staging.nonces:
            raise NonceReplayed(signer, command.nonce)
        if signer in SYSTEM_ACCOUNTS or (command.kind.operator_only and signer != self.operator):
            raise Unauthorized(signer, command.kind.name)
        legs: tuple[Leg, ...] | list[Leg] = command.legs
        apply_compute = None
        outcome: dict[str, Any] = {}
        if command.kind.computed:
            decision = decide(
                Context(
                    staging,
                    now,
                    self.params,
                    self.beacon,
                    spec=(context or CommandContext()).spec,
                ),
                command,
            )
            legs, apply_compute, outcome = decision.legs, decision.apply, decision.outcome
            if legs:
                check_balanced(legs)
        elif command.kind.name == "Unstake":
            self._check_unbonded_roles(staging, signer)
        elif "job" in command.message:
            self._check_not_compute_escrow(staging, command.message["job"])
        grouped = group_by_account(legs)
        accounts = [(staging.account(name), legs) for name, legs in grouped.items()]
        for account, account_legs in accounts:
            next_balances(account.name, account.balances, account_legs)
        receipt = Receipt(
            signer=signer,
            client_id=command.client_id,
            kind=command.kind.name,
            chain_id=command.chain_id,
            message=command.message,
            signature="0x" + command.signature.hex(),
            payload_digest=command.payload_digest,
            legs=[leg.to_json() for leg in legs],
            outcome=outcome,
        )
        nonce = NonceUse(signer=signer, nonce=command.nonce, client_id=command.client_id)
        staging.receipts[receipt.id] = receipt
        staging.nonces.add(nonce.id)
        staging.add(receipt)
        staging.add(nonce)
        for account, account_legs in accounts:
            account.post(str(receipt.id), account_legs)
            staging.add(account)
        # Compute events come after the postings: an auditor closes a command's posting
        # set at the first event that is not a posting.
        if apply_compute is not None:
            for aggregate in apply_compute():
                staging.add(aggregate)
        return receipt.result()

    def _check_unbonded_roles(self, staging: _Staging, signer: str) -> None:
        # A provider's or verifier's stake backs its work: it leaves through Unbond, whose
        # delay keeps it slashable, never through a plain Unstake.
        if isinstance(staging.get(provider_id(signer)), Provider) or isinstance(
            staging.get(verifier_id(signer)), Verifier
        ):
            raise InvalidTransition(
                f"{signer} holds a compute role: its stake leaves through Unbond",
                entity="stake",
                state="bonded",
            )

    def _check_not_compute_escrow(self, staging: _Staging, job: str) -> None:
        # A compute job's escrow is the Job's accounting (budget - paid - refunded): only
        # compute commands may move it, or settlement would find the money gone.
        try:
            job_id = UUID(job)
        except ValueError:
            return
        if isinstance(staging.get(job_id), Job):
            raise InvalidTransition(
                f"escrow of compute job {job} moves only through compute commands",
                entity="escrow",
                state="compute",
            )

    # -- compute reads --------------------------------------------------------------------

    @property
    def event_log(self) -> Any:
        """This application's event log (protocol.log.EventLog), made on first use."""
        if self._event_log is None:
            from protocol.log import EventLog

            self._event_log = EventLog(self)
        return self._event_log

    def beacon(self, commitment: str) -> bytes:
        """The sampling beacon of a recorded commitment (specs/compute.md)."""
        return bytes(self.event_log.beacon(UUID(commitment)))

    def get(self, aggregate_id: UUID) -> Any:
        """The current state of any aggregate, or None."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _save_staged(self, staging: _Staging) -> None:
        """Record a staging's events in one transaction, then cache its aggregates.

        This is `Application.save` for events in a given order, minus its per-object
        protocol isinstance checks (slow on Python 3.11) and plus caching: with
        fast-forwarding on, eventsourcing caches nothing it saves, so the next read of a
        busy account would re-read every event since it was last read. The staged
        aggregates are exactly what was stored; the next read fast-forwards from them.
        """
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        processing.events.extend(staging.events)
        self._notify(self._record(processing))
        cache = self.repository.cache
        if cache is not None:
            for aggregate in staging.aggregates.values():
                cache.put(aggregate.id, aggregate)

    def _prior_result(self, command: VerifiedCommand) -> CommandResult | None:
        """The first result of a command with this signer and client id, if recorded;
        IdempotencyConflict if that command asked for something else."""
        try:
            receipt: Receipt = self.repository.get(receipt_id(command.signer, command.client_id))
        except AggregateNotFoundError:
            return None
        assert isinstance(receipt, Receipt)
        if receipt.payload_digest != command.payload_digest:
            raise IdempotencyConflict(command.signer, command.client_id)
        return receipt.result(duplicate=True)

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, limit=1))

    # -- queries ----------------------------------------------------------------------

    def account(self, name: str) -> Account | None:
        try:
            account: Account = self.repository.get(account_id(name))
        except AggregateNotFoundError:
            return None
        assert isinstance(account, Account)
        return account

    def balance(self, name: str, asset: Asset | str, bucket: str = "available") -> int:
        account = self.account(name)
        return 0 if account is None else account.balance(asset, bucket)

    def balances(self, name: str) -> dict[str, int]:
        account = self.account(name)
        return {} if account is None else dict(account.balances)


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def _backoff(attempt: int) -> None:
    # Jittered, growing sleeps keep two losers from colliding again in lockstep.
    time.sleep(random.uniform(0, 0.0005 * (1 + min(attempt, 20))))
