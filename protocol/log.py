"""The tamper-evident event log: every recorded event, in notification order, is a leaf of
an RFC 6962 Merkle tree over its canonical encoding; the operator signs tree heads.

A leaf is the canonical JSON of
    {"index", "type", "id", "version", "timestamp", "data"}
where `type` is "<Aggregate>.<Event>" from a closed registry (a log never names code to
import), `data` is the event's own fields and `index` its 0-based position in the log.
Putting the index in the leaf makes a dropped, inserted or reordered line fail at the
first line out of place.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, AggregateEvent, DomainEventProtocol
from eventsourcing.utils import get_topic

from protocol import canonical, merkle
from protocol.application import Genesis, Network, NonceUse, Receipt
from protocol.commands import DOMAIN_NAME, DOMAIN_VERSION
from protocol.eip712 import hash_typed_data
from protocol.errors import InvalidInput, NotFound
from protocol.hub import Hub, HubMeter, Subscription
from protocol.jobs import Commitment, Dispute, Job, Lease
from protocol.keys import PrivateKey, parse_address, verify_signer
from protocol.ledger import Account
from protocol.market import Grant, HubRoster, Listing, Review
from protocol.participants import Bond, Provider, Roster, Verifier
from protocol.settlement import Settlements

# Every event type the log may contain, and nothing else: eventsourcing also gives each
# aggregate base classes (`Account.Event`, `Account.Created`) that the domain never emits
# and that a forged line must not be able to name.
LOG_EVENT_TYPES: tuple[tuple[type[Aggregate], str], ...] = (
    (Genesis, "Created"),
    (Receipt, "Accepted"),
    (NonceUse, "Used"),
    (Account, "Opened"),
    (Account, "Posted"),
    # The compute protocol (protocol/compute.py): participants, jobs and their work.
    (Provider, "Registered"),
    (Provider, "Updated"),
    (Provider, "StatusChanged"),
    (Provider, "LeaseTaken"),
    (Provider, "LeaseReturned"),
    (Provider, "Judged"),
    (Verifier, "Registered"),
    (Verifier, "Verdicted"),
    (Verifier, "Ruled"),
    (Verifier, "Judged"),
    (Roster, "Started"),
    (Roster, "VerifierAdded"),
    (Bond, "Opened"),
    (Bond, "Unbonded"),
    (Bond, "Withdrawn"),
    (Bond, "Slashed"),
    (Job, "Submitted"),
    (Job, "SegmentLeased"),
    (Job, "SegmentCommitted"),
    (Job, "SegmentDisputed"),
    (Job, "SegmentRequeued"),
    (Job, "SegmentAccepted"),
    (Job, "SegmentDropped"),
    (Job, "Finished"),
    (Job, "Refunded"),
    (Lease, "Granted"),
    (Lease, "Extended"),
    (Lease, "Closed"),
    (Commitment, "Recorded"),
    (Commitment, "Opened"),
    (Commitment, "VerifierReassigned"),
    (Commitment, "Verdict"),
    (Commitment, "Disputed"),
    (Commitment, "Resolved"),
    (Dispute, "Opened"),
    (Dispute, "RefereeReassigned"),
    (Dispute, "Ruled"),
    # Epoch settlement (protocol/settlement.py).
    (Settlements, "Started"),
    (Settlements, "Settled"),
    # DMarket and the GenAI Hub (protocol/market.py, protocol/hub.py).
    (Listing, "Listed"),
    (Listing, "Updated"),
    (Listing, "Delisted"),
    (Listing, "Sold"),
    (Listing, "Reviewed"),
    (Grant, "Granted"),
    (Review, "Written"),
    (Review, "Revised"),
    (HubRoster, "Started"),
    (HubRoster, "ListingAdded"),
    (Hub, "Started"),
    (Hub, "PlanSet"),
    (Hub, "PoolFunded"),
    (Hub, "EpochClosed"),
    (Subscription, "Started"),
    (Subscription, "Renewed"),
    (Subscription, "Used"),
    (HubMeter, "Started"),
    (HubMeter, "Counted"),
)
COMPUTE_AGGREGATES: tuple[type[Aggregate], ...] = (
    Provider,
    Verifier,
    Roster,
    Bond,
    Job,
    Lease,
    Commitment,
    Dispute,
    Settlements,
    Listing,
    Grant,
    Review,
    HubRoster,
    Hub,
    Subscription,
    HubMeter,
)

EVENT_TYPES: dict[str, type[AggregateEvent]] = {}
# The aggregate class each event type belongs to: an event must never be applied to an
# aggregate of another class, whatever id a forged line names.
EVENT_AGGREGATES: dict[str, type[Aggregate]] = {}
_EVENT_NAMES: dict[type[AggregateEvent], str] = {}
_CREATED_TOPICS: dict[str, str] = {}
for _aggregate, _name in LOG_EVENT_TYPES:
    _value = vars(_aggregate)[_name]
    assert isinstance(_value, type) and issubclass(_value, AggregateEvent), _name
    _type_name = f"{_aggregate.__name__}.{_name}"
    EVENT_TYPES[_type_name] = _value
    EVENT_AGGREGATES[_type_name] = _aggregate
    _EVENT_NAMES[_value] = _type_name
    if "originator_topic" in getattr(_value, "__dataclass_fields__", {}):
        _CREATED_TOPICS[_type_name] = get_topic(_aggregate)

CREATION_TYPES = frozenset(_CREATED_TOPICS)

# The stored topics of those classes: the mapper resolves a stored topic by importing it,
# so a topic is checked against this list before a stored event is ever mapped.
STORED_TOPICS = frozenset(get_topic(cls) for cls in EVENT_TYPES.values())

# Fields every stored event has that the leaf carries outside `data`.
ENVELOPE_FIELDS = ("originator_id", "originator_version", "timestamp", "originator_topic")
page_events_max = 1000


def leaf_object(index: int, event: DomainEventProtocol[UUID]) -> dict[str, Any]:
    """The leaf object of `event` at log position `index`."""
    type_name = _EVENT_NAMES.get(type(event))  # type: ignore[arg-type]
    if type_name is None or not isinstance(event, AggregateEvent):
        raise InvalidInput(f"event class {type(event).__qualname__} is not in the log registry")
    data = {k: v for k, v in event.__dict__.items() if k not in ENVELOPE_FIELDS}
    return {
        "index": index,
        "type": type_name,
        "id": str(event.originator_id),
        "version": event.originator_version,
        "timestamp": event.timestamp.isoformat(),
        "data": data,
    }


def event_from_leaf(leaf: Mapping[str, Any]) -> AggregateEvent:
    """Rebuild the domain event a leaf object describes; raise InvalidInput if it cannot be."""
    shape = {"type": str, "id": str, "version": int, "timestamp": str, "data": dict}
    for name, expected in shape.items():
        value = leaf.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise InvalidInput(f"leaf field {name!r} is not a {expected.__name__}")
    try:
        type_name = leaf["type"]
        cls = EVENT_TYPES[type_name]
        kwargs = dict(leaf["data"])
        kwargs["originator_id"] = UUID(leaf["id"])
        kwargs["originator_version"] = leaf["version"]
        kwargs["timestamp"] = datetime.fromisoformat(leaf["timestamp"])
        if type_name in _CREATED_TOPICS:
            kwargs["originator_topic"] = _CREATED_TOPICS[type_name]
        event = cls(**kwargs)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInput(f"leaf does not describe a known event: {error}") from None
    return event


class EventLog:
    """Follows an application's notifications and keeps the Merkle tree over them.

    The tree grows in O(log n) per event (a frontier of perfect subtrees); the list of
    leaf hashes is kept so that proofs can be served without re-reading the store.
    """

    def __init__(self, app: Application[UUID]) -> None:
        self.app = app
        self.accumulator = merkle.MerkleAccumulator()
        self.leaf_hashes: list[bytes] = []
        # Log position of each commitment: its beacon is the root just after it.
        self.commitment_positions: dict[UUID, int] = {}
        # Read models (protocol/catalog.py) fed each new leaf, in order, as it is synced.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        # The store's notification id of every synced position (8 bytes each), so that
        # `leaves(start)` reads from `start` instead of from the first event.
        self._notification_ids = array("q")
        self._last_notification_id = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.accumulator.size

    def root(self) -> bytes:
        return self.accumulator.root()

    def sync(self) -> int:
        """Append every event recorded since the last sync; return the log size."""
        with self._lock:
            for notification_id, leaf in self._read(
                self._last_notification_id, len(self.leaf_hashes)
            ):
                digest = merkle.leaf_hash(canonical.encode(leaf))
                self.accumulator.append_hash(digest)
                self.leaf_hashes.append(digest)
                self._notification_ids.append(notification_id)
                self._last_notification_id = notification_id
                if leaf["type"] == "Commitment.Recorded":
                    self.commitment_positions[UUID(leaf["id"])] = leaf["index"]
                for listener in self.listeners:
                    listener(leaf)
            return self.accumulator.size

    def root_at(self, size: int) -> bytes:
        """The tree root when the log had `size` leaves (size <= the synced size)."""
        if not 0 <= size <= len(self.leaf_hashes):
            raise InvalidInput(f"size: {size} is beyond the synced log of {len(self.leaf_hashes)}")
        if size == len(self.leaf_hashes):
            return self.accumulator.root()
        return merkle.root_from_hashes(self.leaf_hashes[:size])

    def beacon(self, commitment: UUID) -> bytes:
        """The sampling beacon of a commitment: the log root just after its event
        (specs/compute_sampling_fees.md §3). Syncs first; NotFound if not recorded."""
        position = self.commitment_positions.get(commitment)
        if position is None:
            self.sync()
            position = self.commitment_positions.get(commitment)
        if position is None:
            raise NotFound("recorded commitment", str(commitment))
        return self.root_at(position + 1)

    def leaves(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """The leaf objects from position `start` on, read from the store: from `start`
        itself when that position has been synced, else from the first event."""
        # The array only grows, so an entry read without the lock stays valid.
        if 0 < start <= len(self._notification_ids):
            after_id = self._notification_ids[start - 1]
            for _notification_id, leaf in self._read(after_id, start):
                yield leaf
            return
        for _notification_id, leaf in self._read(0, 0):
            if leaf["index"] >= start:
                yield leaf

    def _read(self, after_id: int, first_index: int) -> Iterator[tuple[int, dict[str, Any]]]:
        # Notification ids may have gaps (PostgreSQL sequences skip on rollback); log
        # positions never do, so positions are counted here rather than taken from ids.
        index = first_index
        recorder = self.app.recorder
        while True:
            page = recorder.select_notifications(
                after_id, page_events_max, inclusive_of_start=False
            )
            for notification in page:
                if notification.topic not in STORED_TOPICS:
                    raise InvalidInput(
                        f"log position {index}: stored topic {notification.topic!r} is not a "
                        "ledger event; refusing to resolve it"
                    )
                event = self.app.mapper.to_domain_event(notification)
                yield notification.id, leaf_object(index, event)
                index += 1
                after_id = notification.id
            if len(page) < page_events_max:
                return

    def lines(self) -> Iterator[bytes]:
        """The export lines of every event, read from the store (without a tree head)."""
        for leaf in self.leaves():
            yield export_line(leaf)[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        return merkle.inclusion_proof_from_hashes(index, self.leaf_hashes[:size])

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        return merkle.consistency_proof_from_hashes(old_size, self.leaf_hashes[:size])


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """The operator's statement that the log had `size` leaves with `root` at `timestamp` (ms)."""

    size: int
    root: bytes
    timestamp: int
    chain_id: int
    operator: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": "0x" + self.root.hex(),
            "timestamp": self.timestamp,
            "chain_id": self.chain_id,
            "operator": self.operator,
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> SignedTreeHead:
        if not isinstance(data, Mapping) or set(data) != {
            "size",
            "root",
            "timestamp",
            "chain_id",
            "operator",
            "signature",
        }:
            raise InvalidInput(
                "tree head: expected size, root, timestamp, chain_id, operator, signature"
            )
        try:
            root = _hex_bytes(data["root"], 32)
            signature = _hex_bytes(data["signature"], 65)
        except ValueError as error:
            raise InvalidInput(f"tree head: {error}") from None
        for name in ("size", "timestamp", "chain_id"):
            if isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 0:
                raise InvalidInput(f"tree head: {name} is not a non-negative integer")
        operator = parse_address(data["operator"], "tree_head.operator")
        return cls(data["size"], root, data["timestamp"], data["chain_id"], operator, signature)

    def verify(self, operator: str, chain_id: int) -> None:
        """Raise unless this head was signed by `operator` for `chain_id`."""
        if self.operator != operator:
            raise InvalidInput(f"tree head names operator {self.operator}, the log's is {operator}")
        if self.chain_id != chain_id:
            raise InvalidInput(f"tree head is for chain {self.chain_id}, the log's is {chain_id}")
        digest = hash_typed_data(
            tree_head_typed_data(self.chain_id, self.size, self.root, self.timestamp)
        )
        verify_signer(digest, self.signature, operator)


def tree_head_typed_data(chain_id: int, size: int, root: bytes, timestamp: int) -> dict[str, Any]:
    """A tree head as EIP-712 typed data, so wallets and contracts can check it too."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "TreeHead": [
                {"name": "size", "type": "uint64"},
                {"name": "root", "type": "bytes32"},
                {"name": "timestamp", "type": "uint64"},
            ],
        },
        "primaryType": "TreeHead",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": {"size": size, "root": "0x" + root.hex(), "timestamp": timestamp},
    }


def sign_tree_head(
    key: PrivateKey, chain_id: int, size: int, root: bytes, timestamp: int
) -> SignedTreeHead:
    digest = hash_typed_data(tree_head_typed_data(chain_id, size, root, timestamp))
    return SignedTreeHead(size, root, timestamp, chain_id, key.address, key.sign_digest(digest))


# -- export format: one canonical line per event, then the tree head ---------------------

_LINE_PREFIX = b'{"event":'
_LINE_SUFFIX_LEN = len(b',"leaf_hash":"0x') + 64 + len(b'"}')


def export_line(leaf: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The export line of a leaf (without newline) and the leaf hash."""
    leaf_bytes = canonical.encode(leaf)
    digest = merkle.leaf_hash(leaf_bytes)
    return _LINE_PREFIX + leaf_bytes + b',"leaf_hash":"0x' + digest.hex().encode() + b'"}', digest


def split_export_line(line: bytes) -> tuple[bytes, str] | None:
    """The leaf bytes and the claimed leaf hash hex of an event line, or None if the line
    does not have the event line's shape (a tree head line, or garbage)."""
    if not line.startswith(_LINE_PREFIX) or len(line) < len(_LINE_PREFIX) + _LINE_SUFFIX_LEN:
        return None
    suffix = line[-_LINE_SUFFIX_LEN:]
    if not suffix.startswith(b',"leaf_hash":"0x') or not suffix.endswith(b'"}'):
        return None
    return line[len(_LINE_PREFIX) : -_LINE_SUFFIX_LEN], suffix[16:-2].decode("ascii", "replace")


def tree_head_line(head: SignedTreeHead) -> bytes:
    return canonical.encode({"tree_head": head.to_json()})


class Writable(Protocol):
    """Anything bytes can be written to: a file, a pipe, an in-memory buffer."""

    def write(self, data: bytes, /) -> object: ...


def write_export(
    app: Network,
    key: PrivateKey,
    handle: Writable,
    progress: Callable[[int], None] | None = None,
) -> SignedTreeHead:
    """Write every event's line, then the tree head `key` signs over exactly those events;
    `progress` is told the number of lines written every thousand lines."""
    accumulator = merkle.MerkleAccumulator()
    for leaf in EventLog(app).leaves():
        line, digest = export_line(leaf)
        accumulator.append_hash(digest)
        handle.write(line + b"\n")
        if progress is not None and accumulator.size % 1000 == 0:
            progress(accumulator.size)
    root = accumulator.root()
    head = sign_tree_head(key, app.chain_id, accumulator.size, root, int(time.time() * 1000))
    handle.write(tree_head_line(head) + b"\n")
    return head


def _hex_bytes(value: object, length: int) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 2 + 2 * length:
        raise ValueError(f"expected 0x and {length} bytes of hex")
    return bytes.fromhex(value[2:])
