"""The auditor's replay: check an exported event log line by line and recompute everything.

Work is split in two so that both cores are busy:
- worker processes check what each line says about itself: the leaf hash, and for every
  receipt the EIP-712 signature, the signer's authority and that the recorded posting set
  is exactly what the signed message asks for;
- the main process folds every event into fresh aggregates with the domain's own apply
  code, checking order, versions, that each account event matches its receipt, that no
  bucket goes negative and that, per asset, liabilities equal the vault reserve equal
  deposits minus finalized withdrawals; it also grows the Merkle tree.
The first failure by position wins, wherever it was found.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from protocol import canonical, merkle
from protocol.application import Genesis, nonce_id, receipt_id
from protocol.commands import (
    SignedCommand,
    command_digest,
    derive_legs,
    parse_kind,
    parse_message,
    payload_digest,
)
from protocol.errors import AuditFailure, ProtocolError
from protocol.hub import HUB_ID, HUB_POOL, Hub
from protocol.jobs import Job
from protocol.keys import recover_address
from protocol.ledger import (
    ESCROW_PREFIX,
    RESERVE,
    TREASURY_ACCOUNT,
    UNBONDING,
    Account,
    Leg,
    account_id,
    balance_key,
    check_balanced,
    escrow_bucket,
)
from protocol.log import (
    COMPUTE_AGGREGATES,
    CREATION_TYPES,
    ENVELOPE_FIELDS,
    EVENT_AGGREGATES,
    EVENT_TYPES,
    SignedTreeHead,
    event_from_leaf,
    split_export_line,
)
from protocol.participants import Bond, bond_id

chunk_lines = 2000
_RECEIPT_MARK = b'"type":"Receipt.Accepted"'
_NONCE_MARK = b'"type":"NonceUse.Used"'
# The record types (created once, never changed) and the data fields each must have.
_RECORD_TYPES = {
    name: frozenset(EVENT_TYPES[name].__dataclass_fields__) - frozenset(ENVELOPE_FIELDS)
    for name in ("Receipt.Accepted", "NonceUse.Used")
}


@dataclass
class AuditReport:
    """What an audit found; `error` is None when every check held."""

    events: int = 0
    commands: int = 0
    signatures_checked: int = 0
    accounts: int = 0
    root: bytes = merkle.root([])
    tree_head: SignedTreeHead | None = None
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    error: AuditFailure | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "commands": self.commands,
            "signatures_checked": self.signatures_checked,
            "accounts": self.accounts,
            "root": "0x" + self.root.hex(),
            "tree_head": None if self.tree_head is None else self.tree_head.to_json(),
            "totals": {asset: dict(t) for asset, t in sorted(self.totals.items())},
            "error": None
            if self.error is None
            else {"position": self.error.position, "reason": self.error.reason},
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events / self.seconds) if self.seconds > 0 else None,
        }


# -- per-line checks (run in worker processes) -------------------------------------------


@dataclass(frozen=True, slots=True)
class _ChunkResult:
    first_index: int
    leaf_hashes: list[bytes]
    signatures: int
    error: tuple[int, str] | None


def check_lines(
    first_index: int, lines: Sequence[bytes], operator: str, chain_id: int
) -> _ChunkResult:
    """Check each line's leaf hash and each receipt's signature, authority and postings."""
    hashes: list[bytes] = []
    signatures = 0
    for offset, line in enumerate(lines):
        index = first_index + offset
        parts = split_export_line(line)
        if parts is None:
            return _ChunkResult(
                first_index, hashes, signatures, (index, "line is not an event line")
            )
        leaf_bytes, claimed = parts
        digest = hashlib.sha256(b"\x00" + leaf_bytes).digest()
        if digest.hex() != claimed:
            return _ChunkResult(
                first_index, hashes, signatures, (index, "leaf hash does not match the event")
            )
        hashes.append(digest)
        # A line is hostile input: anything checking it raises is a finding about the
        # line, reported at its position, never a crash of the audit.
        if _RECEIPT_MARK in leaf_bytes:
            try:
                _check_receipt(canonical.decode(leaf_bytes), operator, chain_id)
            except Exception as error:
                return _ChunkResult(first_index, hashes, signatures, (index, f"receipt: {error}"))
            signatures += 1
        elif _NONCE_MARK in leaf_bytes:
            try:
                _check_nonce_record(canonical.decode(leaf_bytes))
            except Exception as error:
                return _ChunkResult(
                    first_index, hashes, signatures, (index, f"nonce record: {error}")
                )
    return _ChunkResult(first_index, hashes, signatures, None)


def _check_receipt(leaf: dict[str, Any], operator: str, chain_id: int) -> None:
    data = leaf["data"]
    _check_record_fields(leaf, "Receipt.Accepted")
    if UUID(leaf["id"]) != receipt_id(data["signer"], data["client_id"]):
        raise ValueError("receipt id does not derive from its signer and client id")
    if data["chain_id"] != chain_id:
        raise ValueError(f"signed for chain {data['chain_id']}, the log's is {chain_id}")
    command = SignedCommand.from_json(
        {
            "kind": data["kind"],
            "chain_id": data["chain_id"],
            "signer": data["signer"],
            "message": data["message"],
            "signature": data["signature"],
        }
    )
    kind = parse_kind(command.kind)
    message = parse_message(kind, command.message)
    if message != data["message"]:
        raise ValueError("message is not in normal form")
    recovered = recover_address(command_digest(kind, chain_id, message), command.signature)
    if recovered != command.signer:
        raise ValueError(f"signature recovers to {recovered}, not the signer {command.signer}")
    if kind.operator_only and command.signer != operator:
        raise ValueError(f"{kind.name} signed by {command.signer}, who is not the operator")
    if kind.computed:
        # A compute command's posting set depends on the state it met; here it must at
        # least be well formed and balanced (the replay checks that it was posted).
        recorded = [Leg.from_json(leg) for leg in data["legs"]]
        if recorded:
            check_balanced(recorded)
        if not isinstance(data["outcome"], dict):
            raise ValueError("outcome is not an object")
    else:
        legs = [leg.to_json() for leg in derive_legs(kind, command.signer, message)]
        if legs != data["legs"]:
            raise ValueError(
                "recorded posting set differs from the one the signed message asks for"
            )
        if data["outcome"] != {}:
            raise ValueError("a ledger command records no outcome")
    if data["payload_digest"] != payload_digest(kind, chain_id, message):
        raise ValueError("payload digest differs from the signed message's")
    if data["client_id"] != message["clientId"]:
        raise ValueError("client id differs from the signed message's")


def _check_nonce_record(leaf: dict[str, Any]) -> None:
    data = leaf["data"]
    _check_record_fields(leaf, "NonceUse.Used")
    if UUID(leaf["id"]) != nonce_id(data["signer"], data["nonce"]):
        raise ValueError("nonce record id does not derive from its signer and nonce")


def _check_record_fields(leaf: dict[str, Any], type_name: str) -> None:
    if set(leaf["data"]) != _RECORD_TYPES[type_name]:
        raise ValueError(f"fields {sorted(leaf['data'])} are not those of {type_name}")


# -- the replay (main process) ----------------------------------------------------------


class Replayer:
    """Folds leaf objects, in order, into fresh aggregates with the domain's apply code."""

    def __init__(self) -> None:
        self.aggregates: dict[UUID, Aggregate] = {}
        self.genesis: Genesis | None = None
        self.commands = 0
        self.events = 0
        # The receipt whose account events are still due: account name -> its legs.
        self._pending_id: str | None = None
        self._pending: dict[str, list[list[Any]]] = {}
        self._pending_nonce: tuple[str, int] | None = None
        # Whether the latest receipt is a compute command's: only those change compute
        # aggregates (providers, jobs, leases...), right after their postings.
        self._compute_open = False
        # Jobs and unbonding stakes whose ledger side must be compared with their compute
        # side once the command that touched them is complete.
        self._dirty_jobs: set[UUID] = set()
        self._dirty_bonds: set[str] = set()
        self._dirty_hub_pool = False
        # Ids of receipts and nonce records seen: each may be created only once.
        self._records: set[UUID] = set()
        self.deposits: dict[str, int] = {}
        self.withdrawals: dict[str, int] = {}
        self.liabilities: dict[str, int] = {}
        self.reserve: dict[str, int] = {}

    def apply(self, leaf: Any) -> None:
        index = self.events
        if not isinstance(leaf, dict):
            raise AuditFailure(index, "the event is not a JSON object")
        if leaf.get("index") != index:
            raise AuditFailure(
                index, f"expected position {index}, the line says {leaf.get('index')!r}"
            )
        type_name = leaf.get("type")
        if index == 0 and type_name != "Genesis.Created":
            raise AuditFailure(0, "the log does not start with the genesis record")
        if type_name != "Account.Posted" and type_name != "Account.Opened":
            if type_name != "NonceUse.Used":
                self._close_pending(index)
            if type_name in _RECORD_TYPES:
                self._record(index, type_name, leaf)
                self.events += 1
                return
        try:
            event = event_from_leaf(leaf)
        except ProtocolError as error:
            raise AuditFailure(index, str(error)) from None
        aggregate_id = event.originator_id
        current = self.aggregates.get(aggregate_id)
        if current is None and type_name not in CREATION_TYPES:
            raise AuditFailure(index, f"{type_name} for {aggregate_id}, which does not exist")
        if current is not None and type(current) is not EVENT_AGGREGATES[leaf["type"]]:
            raise AuditFailure(index, f"{type_name} names a {type(current).__name__}")
        expected_version = 1 if current is None else current.version + 1
        if event.originator_version != expected_version or aggregate_id in self._records:
            raise AuditFailure(
                index,
                f"version {event.originator_version} of {aggregate_id}, "
                f"expected {expected_version}",
            )
        try:
            aggregate = event.mutate(current)
        except Exception as error:
            # The line is hostile input run through the domain's apply code: whatever it
            # makes that code raise is a finding about the line, not a crash of the audit.
            raise AuditFailure(index, f"{type_name} cannot be applied: {error!r}") from None
        assert aggregate is not None
        self.aggregates[aggregate_id] = aggregate
        self.events += 1
        if isinstance(aggregate, Account):
            if type_name == "Account.Posted":
                self._check_posted(index, aggregate, leaf["data"])
            elif aggregate_id != account_id(aggregate.name):
                raise AuditFailure(index, "account id does not derive from its name")
        elif isinstance(aggregate, Genesis):
            if index != 0 or aggregate_id != Genesis.create_id():
                raise AuditFailure(index, "a second or misplaced genesis record")
            self.genesis = aggregate
        elif isinstance(aggregate, COMPUTE_AGGREGATES):
            if not self._compute_open:
                raise AuditFailure(index, f"{type_name} without a compute command before it")
            if isinstance(aggregate, Job):
                self._dirty_jobs.add(aggregate_id)
            elif isinstance(aggregate, Bond):
                self._dirty_bonds.add(aggregate.address)
        else:
            raise AuditFailure(index, f"event type {type_name} does not belong in the ledger log")

    def _record(self, index: int, type_name: str, leaf: dict[str, Any]) -> None:
        """Receipts and nonce records are created once and never change, so their replay is
        a uniqueness check; the workers check their fields, ids and signatures."""
        try:
            record_id = UUID(leaf["id"])
            data = leaf["data"]
            if leaf["version"] != 1 or record_id in self._records or record_id in self.aggregates:
                raise AuditFailure(index, f"{type_name} {record_id} recorded twice")
            self._records.add(record_id)
            if type_name == "NonceUse.Used":
                if (
                    self._pending_nonce is None
                    or (data["signer"], data["nonce"]) != self._pending_nonce
                ):
                    raise AuditFailure(
                        index, "nonce record does not belong to the receipt before it"
                    )
                self._pending_nonce = None
                return
            self._check_compute(index)
            self.commands += 1
            self._compute_open = parse_kind(data["kind"]).computed
            self._pending_id = leaf["id"]
            self._pending = {}
            for leg in data["legs"]:
                self._pending.setdefault(leg[0], []).append(leg)
            self._pending_nonce = (data["signer"], data["message"]["nonce"])
            kind = data["kind"]
            if kind == "Deposit" or kind == "WithdrawalFinalize":
                totals = self.deposits if kind == "Deposit" else self.withdrawals
                for _account, asset, bucket, _side, amount in data["legs"]:
                    if bucket == RESERVE:
                        totals[asset] = totals.get(asset, 0) + amount
        except (KeyError, TypeError, ValueError) as error:
            raise AuditFailure(index, f"malformed {type_name}: {error!r}") from None

    def _check_posted(self, index: int, account: Account, data: dict[str, Any]) -> None:
        if data["posting_id"] != self._pending_id or account.name not in self._pending:
            raise AuditFailure(
                index, f"posting to {account.name} without a receipt that asks for it"
            )
        if self._pending.pop(account.name) != data["legs"]:
            raise AuditFailure(index, f"legs posted to {account.name} differ from the receipt's")
        for _name, asset, bucket, _side, _amount in data["legs"]:
            if bucket == UNBONDING:
                self._dirty_bonds.add(account.name)
            elif bucket == HUB_POOL:
                self._dirty_hub_pool = True
            elif bucket.startswith(ESCROW_PREFIX):
                with contextlib.suppress(ValueError):
                    self._dirty_jobs.add(UUID(bucket[len(ESCROW_PREFIX) :]))
            value = account.balances.get(balance_key(asset, bucket), 0)
            if value < 0:
                raise AuditFailure(
                    index, f"{account.name} {bucket} {asset} went negative ({value})"
                )
            change = _amount if (_side == "D") == (bucket == RESERVE) else -_amount
            totals = self.reserve if bucket == RESERVE else self.liabilities
            totals[asset] = totals.get(asset, 0) + change

    def _close_pending(self, index: int) -> None:
        if self._pending or self._pending_nonce is not None:
            missing = sorted(self._pending) or ["the nonce record"]
            raise AuditFailure(
                index, f"command {self._pending_id} is missing events for {', '.join(missing)}"
            )
        self._pending_id = None
        self._check_totals(index)

    def _check_totals(self, index: int) -> None:
        # Per asset: every posting set balanced, so liabilities == reserve; and the reserve
        # is exactly what came in minus what went out.
        for asset in self.liabilities.keys() | self.reserve.keys() | self.deposits.keys():
            liabilities = self.liabilities.get(asset, 0)
            reserve = self.reserve.get(asset, 0)
            net = self.deposits.get(asset, 0) - self.withdrawals.get(asset, 0)
            if not liabilities == reserve == net:
                raise AuditFailure(
                    index,
                    f"{asset}: balances {liabilities}, reserve {reserve}, "
                    f"deposits - withdrawals {net}",
                )

    def _check_compute(self, index: int) -> None:
        """The compute side and the ledger side of what the last command touched agree:
        a job's escrow bucket holds budget - paid - refunded, an address's unbonding
        bucket holds the sum of its unbonding entries, and the hub's pool what the hub
        took in and paid out."""
        for job_id in self._dirty_jobs:
            job = self.aggregates.get(job_id)
            if not isinstance(job, Job):
                continue  # The escrow of a plain ledger EscrowLock: no compute side.
            ledger = self.aggregates.get(account_id(job.developer))
            held = (
                ledger.balance(job.currency, escrow_bucket(job.key))
                if isinstance(ledger, Account)
                else 0
            )
            if held != job.escrow or job.escrow < 0:
                raise AuditFailure(
                    index, f"job {job.key}: escrow bucket holds {held}, the job says {job.escrow}"
                )
        for address in self._dirty_bonds:
            bond = self.aggregates.get(bond_id(address))
            entries = sum(amount for amount, _ in bond.entries) if isinstance(bond, Bond) else 0
            ledger = self.aggregates.get(account_id(address))
            held = ledger.balance("BLACK", UNBONDING) if isinstance(ledger, Account) else 0
            if held != entries:
                raise AuditFailure(
                    index, f"{address}: unbonding bucket holds {held}, its entries {entries}"
                )
        if self._dirty_hub_pool:
            self._check_hub_pool(index)
        self._dirty_jobs.clear()
        self._dirty_bonds.clear()
        self._dirty_hub_pool = False

    def _check_hub_pool(self, index: int) -> None:
        """The hub's subscription pool: the treasury's `escrow:hub-pool` bucket holds, per
        asset, what the Hub aggregate says subscriptions paid in and epochs paid out."""
        hub = self.aggregates.get(HUB_ID)
        ledger = self.aggregates.get(account_id(TREASURY_ACCOUNT))
        pool = hub.pool if isinstance(hub, Hub) else {}
        for asset in ("BLACK", "USD"):
            held = ledger.balance(asset, HUB_POOL) if isinstance(ledger, Account) else 0
            if held != pool.get(asset, 0):
                raise AuditFailure(
                    index, f"hub pool holds {held} {asset}, the hub says {pool.get(asset, 0)}"
                )

    def finish(self) -> None:
        if self.events == 0:
            raise AuditFailure(0, "the log is empty")
        self._close_pending(self.events)
        self._check_compute(self.events)

    def totals(self) -> dict[str, dict[str, int]]:
        assets = self.liabilities.keys() | self.reserve.keys() | self.deposits.keys()
        return {
            asset: {
                "deposits": self.deposits.get(asset, 0),
                "withdrawals_finalized": self.withdrawals.get(asset, 0),
                "balances": self.liabilities.get(asset, 0),
                "reserve": self.reserve.get(asset, 0),
            }
            for asset in assets
        }

    def balances(self) -> dict[str, dict[str, int]]:
        return {
            a.name: dict(a.balances) for a in self.aggregates.values() if isinstance(a, Account)
        }


# -- the pipeline ------------------------------------------------------------------------


def audit_lines(
    lines: Iterable[bytes], *, workers: int | None = None, require_tree_head: bool = True
) -> AuditReport:
    """Audit an export given as lines (bytes, without newlines); never raises on bad input.

    `workers` processes check signatures and hashes (default: one per core; 0 checks
    them in this process).
    """
    started = time.perf_counter()
    workers = (os.cpu_count() or 1) if workers is None else workers
    report = AuditReport()
    replayer = Replayer()
    accumulator = merkle.MerkleAccumulator()
    errors: list[AuditFailure] = []
    tree_head_data: Any = None
    pool = ProcessPoolExecutor(workers) if workers > 0 else None
    in_flight: deque[Future[_ChunkResult]] = deque()
    in_flight_max = 2 * max(workers, 1) + 2

    def collect(result: _ChunkResult) -> None:
        for digest in result.leaf_hashes:
            accumulator.append_hash(digest)
        report.signatures_checked += result.signatures
        if result.error is not None:
            errors.append(AuditFailure(*result.error))

    def dispatch(first: int, chunk: list[bytes]) -> None:
        genesis = replayer.genesis
        operator, chain_id = (genesis.operator, genesis.chain_id) if genesis else ("", 0)
        if pool is None:
            collect(check_lines(first, chunk, operator, chain_id))
            return
        in_flight.append(pool.submit(check_lines, first, chunk, operator, chain_id))
        while len(in_flight) >= in_flight_max or (in_flight and in_flight[0].done()):
            collect(in_flight.popleft().result())

    try:
        chunk: list[bytes] = []
        chunk_first = 0
        for position, line in enumerate(lines):
            if errors:
                break  # A worker found an earlier bad line: nothing later can come first.
            if tree_head_data is not None:
                errors.append(AuditFailure(position, "a line after the tree head"))
                break
            if line.startswith(b'{"tree_head":'):
                try:
                    tree_head_data = canonical.decode(line)["tree_head"]
                except (ProtocolError, ValueError, KeyError, TypeError) as error:
                    errors.append(AuditFailure(position, f"unreadable tree head: {error}"))
                    break
                continue
            failure: AuditFailure | None = None
            try:
                parts = split_export_line(line)
                if parts is None:
                    raise AuditFailure(position, "line is neither an event nor a tree head")
                replayer.apply(canonical.decode(parts[0]))
            except AuditFailure as error:
                failure = error
            except Exception as error:
                # Hostile input run through the replay: a finding, never a crash.
                failure = AuditFailure(position, f"unreadable event: {error!r}")
            chunk.append(line)
            if failure is not None:
                # Lines before this one may still hide an earlier failure only the
                # workers can see (a forged signature): check them, then stop.
                errors.append(failure)
                break
            # The genesis line must be replayed before workers can check authority.
            if len(chunk) >= chunk_lines or position == 0:
                dispatch(chunk_first, chunk)
                chunk_first, chunk = position + 1, []
        if chunk:
            dispatch(chunk_first, chunk)
        while in_flight:
            collect(in_flight.popleft().result())
        if not errors:
            try:
                replayer.finish()
            except AuditFailure as failure:
                errors.append(failure)
        report.root = accumulator.root()
        if not errors and (require_tree_head or tree_head_data is not None):
            _check_tree_head(report, replayer, accumulator, tree_head_data, errors)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report.events = replayer.events
    report.commands = replayer.commands
    report.accounts = sum(1 for a in replayer.aggregates.values() if isinstance(a, Account))
    report.totals = replayer.totals()
    report.error = min(errors, key=lambda e: e.position) if errors else None
    report.seconds = time.perf_counter() - started
    return report


def _check_tree_head(
    report: AuditReport,
    replayer: Replayer,
    accumulator: merkle.MerkleAccumulator,
    data: Any,
    errors: list[AuditFailure],
) -> None:
    size = accumulator.size
    if data is None:
        errors.append(AuditFailure(size, "the export ends without a signed tree head"))
        return
    try:
        head = SignedTreeHead.from_json(data)
        assert replayer.genesis is not None
        head.verify(replayer.genesis.operator, replayer.genesis.chain_id)
    except ProtocolError as error:
        errors.append(AuditFailure(size, f"tree head: {error}"))
        return
    report.tree_head = head
    if head.size != size:
        errors.append(
            AuditFailure(
                min(size, head.size), f"tree head covers {head.size} events, the log has {size}"
            )
        )
    elif head.root != accumulator.root():
        errors.append(
            AuditFailure(size, "tree head root differs from the root of the replayed log")
        )


def read_lines(path: str) -> Iterator[bytes]:
    """Lines of an export file, without their newline; blank trailing lines ignored."""
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line:
                yield line
