"""Signed commands: the EIP-712 types of every ledger command and the rules that turn a
verified command into its balanced posting set.

A command is EIP-712 typed data under the domain {name: "BlackTail", version, chainId},
so any Ethereum wallet can sign it. Every command type ends with the same three fields:
`clientId` (the idempotency key), `nonce` (replay protection) and `expiry` (unix seconds).
The posting set is a pure function of (kind, signer, message): an auditor re-derives it
from the signed command and compares it with what was recorded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from protocol import canonical, eip712
from protocol.assets import Asset, parse_amount, parse_asset
from protocol.errors import InvalidInput, InvalidSignature, WrongChainId, WrongSigner
from protocol.keys import PrivateKey, keccak256, parse_address, recover_address
from protocol.ledger import (
    AVAILABLE,
    PENDING_WITHDRAWAL,
    RESERVE,
    STAKE,
    TREASURY,
    TREASURY_ACCOUNT,
    VAULT_ACCOUNT,
    Leg,
    check_balanced,
    credit,
    debit,
    escrow_bucket,
)

DOMAIN_NAME = "BlackTail"
DOMAIN_VERSION = "1"

_ENVELOPE_FIELDS = (("clientId", "string"), ("nonce", "uint256"), ("expiry", "uint64"))
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,64}")
text_chars_max = 256
payouts_max = 16

# Hex byte strings in commands (a loss trace) are bounded: 4 bytes per step of a segment
# of at most `protocol.compute.segment_steps_commit_max` steps.
hex_bytes_max = 4 * 65536
samples_list_max = 65536
_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_FIELDS = frozenset({"job", "lease", "commitment", "dispute", "target", "listing", "plan"})

_EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
_PAYOUT = [{"name": "account", "type": "address"}, {"name": "amount", "type": "uint256"}]

LegBuilder = Callable[[str, Mapping[str, Any]], list[Leg]]


@dataclass(frozen=True, slots=True)
class CommandKind:
    """One command type: its EIP-712 fields, who may sign it, and its posting rule."""

    name: str
    fields: tuple[tuple[str, str], ...]
    operator_only: bool
    build_legs: LegBuilder
    description: str
    # A compute command's posting set depends on the state it meets (a segment's price,
    # a provider's stake), so it is decided by `protocol.compute`, not by `build_legs`.
    computed: bool = False

    @property
    def all_fields(self) -> tuple[tuple[str, str], ...]:
        return self.fields + _ENVELOPE_FIELDS

    def eip712_types(self) -> dict[str, list[dict[str, str]]]:
        types: dict[str, list[dict[str, str]]] = {
            "EIP712Domain": _EIP712_DOMAIN,
            self.name: [{"name": n, "type": t} for n, t in self.all_fields],
        }
        if any(t == "Payout[]" for _, t in self.fields):
            types["Payout"] = _PAYOUT
        return types


def _asset(message: Mapping[str, Any]) -> Asset:
    return Asset(message["asset"])


def _deposit(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    return [
        debit(VAULT_ACCOUNT, a, RESERVE, m["amount"]),
        credit(m["account"], a, AVAILABLE, m["amount"]),
    ]


def _transfer(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    if m["to"] == signer:
        raise InvalidInput("to: a transfer to oneself moves nothing", field="to")
    a = _asset(m)
    return [debit(signer, a, AVAILABLE, m["amount"]), credit(m["to"], a, AVAILABLE, m["amount"])]


def _escrow_lock(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    escrow = escrow_bucket(m["job"])
    return [debit(signer, a, AVAILABLE, m["amount"]), credit(signer, a, escrow, m["amount"])]


def _escrow_release(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    escrow = escrow_bucket(m["job"])
    payouts = m["payouts"]
    legs = [credit(p["account"], a, AVAILABLE, p["amount"]) for p in payouts]
    if m["fee"]:
        legs.append(credit(TREASURY_ACCOUNT, a, TREASURY, m["fee"]))
    total = sum(p["amount"] for p in payouts) + m["fee"]
    if total == 0:
        raise InvalidInput("payouts: a release must move something", field="payouts")
    return [debit(m["payer"], a, escrow, total), *legs]


def _escrow_refund(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    escrow = escrow_bucket(m["job"])
    return [
        debit(m["payer"], a, escrow, m["amount"]),
        credit(m["payer"], a, AVAILABLE, m["amount"]),
    ]


def _stake(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    return [debit(signer, a, AVAILABLE, m["amount"]), credit(signer, a, STAKE, m["amount"])]


def _unstake(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    return [debit(signer, a, STAKE, m["amount"]), credit(signer, a, AVAILABLE, m["amount"])]


def _slash(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    amount, bounty = m["amount"], m["bounty"]
    if bounty > amount:
        raise InvalidInput(f"bounty: {bounty} exceeds the slashed {amount}", field="bounty")
    if bounty and m["beneficiary"] == m["account"]:
        raise InvalidInput(
            "beneficiary: the slashed account cannot take the bounty", field="beneficiary"
        )
    legs = [debit(m["account"], a, STAKE, amount)]
    if bounty:
        legs.append(credit(m["beneficiary"], a, AVAILABLE, bounty))
    if amount - bounty:
        legs.append(credit(TREASURY_ACCOUNT, a, TREASURY, amount - bounty))
    return legs


def _fee(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    return [
        debit(m["account"], a, AVAILABLE, m["amount"]),
        credit(TREASURY_ACCOUNT, a, TREASURY, m["amount"]),
    ]


def _withdrawal_request(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    return [
        debit(signer, a, AVAILABLE, m["amount"]),
        credit(signer, a, PENDING_WITHDRAWAL, m["amount"]),
    ]


def _withdrawal_finalize(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    a = _asset(m)
    return [
        debit(m["account"], a, PENDING_WITHDRAWAL, m["amount"]),
        credit(VAULT_ACCOUNT, a, RESERVE, m["amount"]),
    ]


_A = ("asset", "string")
_AMOUNT = ("amount", "uint256")
LEDGER_KINDS: dict[str, CommandKind] = {
    k.name: k
    for k in (
        CommandKind(
            "Deposit",
            (("account", "address"), _A, _AMOUNT, ("chainRef", "string")),
            True,
            _deposit,
            "credit an on-chain Vault deposit (operator; chainRef = chainId:txHash:logIndex)",
        ),
        CommandKind(
            "Transfer",
            (("to", "address"), _A, _AMOUNT, ("memo", "string")),
            False,
            _transfer,
            "move available funds to another account",
        ),
        CommandKind(
            "EscrowLock",
            (("job", "string"), _A, _AMOUNT),
            False,
            _escrow_lock,
            "lock available funds in a job's escrow",
        ),
        CommandKind(
            "EscrowRelease",
            (
                ("payer", "address"),
                ("job", "string"),
                _A,
                ("payouts", "Payout[]"),
                ("fee", "uint256"),
            ),
            True,
            _escrow_release,
            "pay escrowed funds out to accounts and a fee to the treasury (operator)",
        ),
        CommandKind(
            "EscrowRefund",
            (("payer", "address"), ("job", "string"), _A, _AMOUNT),
            True,
            _escrow_refund,
            "return escrowed funds to the payer (operator)",
        ),
        CommandKind("Stake", (_A, _AMOUNT), False, _stake, "move available funds into stake"),
        CommandKind(
            "Unstake", (_A, _AMOUNT), False, _unstake, "move staked funds back to available"
        ),
        CommandKind(
            "Slash",
            (
                ("account", "address"),
                _A,
                _AMOUNT,
                ("beneficiary", "address"),
                ("bounty", "uint256"),
                ("reason", "string"),
            ),
            True,
            _slash,
            "take stake: a bounty to the beneficiary, the rest to the treasury (operator)",
        ),
        CommandKind(
            "Fee",
            (("account", "address"), _A, _AMOUNT, ("reason", "string")),
            True,
            _fee,
            "charge a fee from available funds to the treasury (operator)",
        ),
        CommandKind(
            "WithdrawalRequest",
            (_A, _AMOUNT),
            False,
            _withdrawal_request,
            "set funds aside for withdrawal through the next epoch's settlement",
        ),
        CommandKind(
            "WithdrawalFinalize",
            (("account", "address"), _A, _AMOUNT, ("chainRef", "string")),
            True,
            _withdrawal_finalize,
            "record a withdrawal paid out on-chain (operator)",
        ),
    )
}


# uint256 fields that may be 0: a price of 0 is a free offer (a model anyone may download,
# a hub model offered to subscribers only), a stake of 0 adds nothing.
_ZERO_ALLOWED = frozenset(
    {"nonce", "fee", "bounty", "priceBlack", "priceUsd", "stake", "price", "requestPrice"}
)


def _computed(signer: str, m: Mapping[str, Any]) -> list[Leg]:
    raise AssertionError("a compute command's legs come from protocol.compute")


def _compute_kind(
    name: str, fields: tuple[tuple[str, str], ...], description: str, *, operator_only: bool = False
) -> CommandKind:
    return CommandKind(name, fields, operator_only, _computed, description, computed=True)


_ID_LEASE = ("lease", "string")
# The compute protocol's commands (specs/compute.md). Their effects depend on the state
# they meet, so `protocol.compute` decides them and the receipt records the outcome.
COMPUTE_KINDS: dict[str, CommandKind] = {
    k.name: k
    for k in (
        _compute_kind(
            "RegisterProvider",
            (
                ("device", "string"),
                ("gpus", "uint64"),
                ("memoryMb", "uint64"),
                ("benchmarkGflops", "uint64"),
                ("priceBlack", "uint256"),
                ("priceUsd", "uint256"),
                ("stake", "uint256"),
            ),
            "register (or re-register) GPUs with prices per step, staking BLACK",
        ),
        _compute_kind(
            "SetProviderStatus",
            (("status", "string"),),
            "pause or resume taking leases (active | paused)",
        ),
        _compute_kind(
            "RegisterVerifier", (("stake", "uint256"),), "register as a verifier, staking BLACK"
        ),
        _compute_kind(
            "Unbond", (_AMOUNT,), "start unbonding BLACK stake (slashable until released)"
        ),
        _compute_kind(
            "WithdrawUnbonded", (), "move stake whose unbonding delay has passed to available"
        ),
        _compute_kind(
            "SubmitJob",
            (("specHash", "bytes32"),),
            "submit a training job (the spec travels beside the command); escrows its budget",
        ),
        _compute_kind("CancelJob", (("job", "string"),), "cancel a job, refunding the unearned"),
        _compute_kind("RequestLease", (("job", "string"),), "lease the job's next queued segment"),
        _compute_kind("Heartbeat", (_ID_LEASE,), "extend a held lease's deadline"),
        _compute_kind(
            "Commit",
            (
                _ID_LEASE,
                ("startCheckpoint", "bytes32"),
                ("endCheckpoint", "bytes32"),
                ("root", "bytes32"),
                ("steps", "uint64"),
                ("lossTrace", "bytes"),
            ),
            "commit a leased segment's result: checkpoints, step-state Merkle root, losses",
        ),
        _compute_kind(
            "OpenSamples",
            (("commitment", "string"), ("openings", "bytes32")),
            "publish the digest of the openings manifest of a commitment's sampled states",
        ),
        _compute_kind(
            "PostVerdict",
            (
                ("commitment", "string"),
                ("accepted", "bool"),
                ("samples", "uint32[]"),
                ("failedStep", "uint64"),
                ("reason", "string"),
            ),
            "the assigned verifier's verdict on a commitment's sampled steps",
        ),
        _compute_kind(
            "RuleDispute",
            (("dispute", "string"), ("fraud", "bool"), ("reason", "string")),
            "the referee's ruling on a disputed commitment",
        ),
        _compute_kind(
            "Sweep",
            (("target", "string"), ("reason", "string")),
            "expire what is overdue: a lease, a job, a verification (operator)",
            operator_only=True,
        ),
        _compute_kind(
            "SettleEpoch",
            (
                ("epoch", "uint64"),
                ("root", "bytes32"),
                ("logSize", "uint64"),
                ("logRoot", "bytes32"),
                ("blackToken", "address"),
                ("usdToken", "address"),
                ("chainRef", "string"),
            ),
            "record an epoch's settlement root, posted on-chain with the log's tree head "
            "(operator)",
            operator_only=True,
        ),
    )
}
_LISTING = ("listing", "string")
# DMarket and the GenAI Hub (specs/market.md): decided against state like the compute
# commands, by `protocol.market` and `protocol.hub`.
MARKET_KINDS: dict[str, CommandKind] = {
    k.name: k
    for k in (
        _compute_kind(
            "ListModel",
            (
                ("artifact", "bytes32"),
                ("name", "string"),
                ("task", "string"),
                ("license", "string"),
                ("licenseText", "string"),
                ("description", "string"),
                ("price", "uint256"),
                _A,
                ("royaltyBps", "uint64"),
                ("provenanceJob", "string"),
                ("hub", "bool"),
                ("requestPrice", "uint256"),
            ),
            "list a model (a safetensors blob) for sale, optionally with the job that trained it",
        ),
        _compute_kind(
            "UpdateListing",
            (
                _LISTING,
                ("price", "uint256"),
                ("description", "string"),
                ("hub", "bool"),
                ("requestPrice", "uint256"),
            ),
            "change a listing's price, description and hub offer (its creator)",
        ),
        _compute_kind("Delist", (_LISTING,), "stop selling a model; grants keep working"),
        _compute_kind(
            "BuyModel",
            (_LISTING, ("price", "uint256"), _A),
            "buy a license to a listed model at the price and currency the buyer agrees to",
        ),
        _compute_kind(
            "ReviewModel",
            (_LISTING, ("rating", "uint64"), ("text", "string")),
            "rate a bought model from 1 to 5 (its buyers only)",
        ),
        _compute_kind(
            "SetHubPlan",
            (
                ("plan", "string"),
                ("priceBlack", "uint256"),
                ("priceUsd", "uint256"),
                ("periodSeconds", "uint64"),
                ("quota", "uint64"),
                ("active", "bool"),
            ),
            "offer or change a hub subscription plan (operator)",
            operator_only=True,
        ),
        _compute_kind(
            "Subscribe",
            (("plan", "string"), _A, ("price", "uint256")),
            "subscribe to the hub for one period of a plan, paid in BLACK or USD",
        ),
        _compute_kind(
            "HubRequest",
            (_LISTING, ("inputDigest", "bytes32")),
            "one metered inference request to a hub model (the gateway submits it)",
        ),
        _compute_kind(
            "CloseHubEpoch",
            (("epoch", "uint64"),),
            "share the hub's subscription pool among creators by requests served (operator)",
            operator_only=True,
        ),
    )
}
KINDS: dict[str, CommandKind] = {**LEDGER_KINDS, **COMPUTE_KINDS, **MARKET_KINDS}


def parse_kind(name: object) -> CommandKind:
    if not isinstance(name, str) or name not in KINDS:
        raise InvalidInput(f"kind: unknown command kind {name!r}", field="kind")
    return KINDS[name]


def _parse_value(kind_name: str, field: str, type_: str, value: Any) -> Any:
    path = f"message.{field}"
    if type_ == "address":
        if not isinstance(value, str):
            raise InvalidInput(f"{path}: expected an address", field=path)
        return parse_address(value, field=path)
    if type_ == "string":
        if not isinstance(value, str):
            raise InvalidInput(f"{path}: expected a string", field=path)
        if field == "asset":
            return parse_asset(value, field=path).value
        if field == "clientId" and not _CLIENT_ID.fullmatch(value):
            raise InvalidInput(f"{path}: 1-64 printable ASCII characters, no spaces", field=path)
        if len(value) > text_chars_max:
            raise InvalidInput(f"{path}: longer than {text_chars_max} characters", field=path)
        if field == "job":
            escrow_bucket(value)
        elif field in _ID_FIELDS and not _ID.fullmatch(value):
            raise InvalidInput(f"{path}: expected an id of 1-64 [A-Za-z0-9_-]", field=path)
        return value
    if type_ == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"{path}: expected true or false", field=path)
        return value
    if type_ == "bytes32":
        if not isinstance(value, str) or not _BYTES32.fullmatch(value):
            raise InvalidInput(f"{path}: expected 0x and 32 bytes of hex", field=path)
        return value.lower()
    if type_ == "bytes":
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise InvalidInput(f"{path}: expected 0x and whole bytes of hex", field=path)
        if len(value) - 2 > 2 * hex_bytes_max:
            raise InvalidInput(f"{path}: longer than {hex_bytes_max} bytes", field=path)
        return value.lower()
    if type_ == "uint32[]":
        if not isinstance(value, list) or len(value) > samples_list_max:
            raise InvalidInput(
                f"{path}: expected a list of at most {samples_list_max} integers", field=path
            )
        numbers = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < 2**32:
                raise InvalidInput(f"{path}[{i}]: expected an integer in 0 .. 2^32 - 1", field=path)
            numbers.append(item)
        return numbers
    if type_ == "uint256":
        allow_zero = field in _ZERO_ALLOWED
        return parse_amount(value, path, allow_zero=allow_zero)
    if type_ == "uint64":
        number = parse_amount(value, path, allow_zero=True)
        if number >= 2**64:
            raise InvalidInput(f"{path}: does not fit uint64", field=path)
        return number
    if type_ == "Payout[]":
        if not isinstance(value, list) or len(value) > payouts_max:
            raise InvalidInput(
                f"{path}: expected a list of at most {payouts_max} payouts", field=path
            )
        payouts = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or set(item) != {"account", "amount"}:
                raise InvalidInput(f"{path}[{i}]: expected {{account, amount}}", field=path)
            payouts.append(
                {
                    "account": _parse_value(
                        kind_name, f"{field}[{i}].account", "address", item["account"]
                    ),
                    "amount": _parse_value(
                        kind_name, f"{field}[{i}].amount", "uint256", item["amount"]
                    ),
                }
            )
        return payouts
    raise AssertionError(f"unhandled type {type_} in {kind_name}")


def parse_message(kind: CommandKind, message: object) -> dict[str, Any]:
    """Validate `message` against `kind`'s fields and return it in normal form."""
    if not isinstance(message, Mapping):
        raise InvalidInput("message: expected an object", field="message")
    expected = {name for name, _ in kind.all_fields}
    missing = expected - set(message)
    extra = set(message) - expected
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing {sorted(missing)}" if missing else "",
                f"unexpected {sorted(extra)}" if extra else "",
            )
            if part
        )
        raise InvalidInput(
            f"message: fields of {kind.name} do not match: {detail}", field="message"
        )
    return {
        name: _parse_value(kind.name, name, type_, message[name]) for name, type_ in kind.all_fields
    }


def typed_data(kind: CommandKind, chain_id: int, message: Mapping[str, Any]) -> dict[str, Any]:
    """The command as an eth_signTypedData_v4 document."""
    return {
        "types": kind.eip712_types(),
        "primaryType": kind.name,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": dict(message),
    }


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """A command as it travels: who claims to sign it, for which chain, and the signature."""

    kind: str
    chain_id: int
    signer: str
    message: Mapping[str, Any]
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "chain_id": self.chain_id,
            "signer": self.signer,
            "message": canonical.normalize(self.message),
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> SignedCommand:
        if not isinstance(data, Mapping):
            raise InvalidInput("command: expected an object")
        extra = set(data) - {"kind", "chain_id", "signer", "message", "signature"}
        if extra:
            raise InvalidInput(f"command: unexpected fields {sorted(extra)}")
        chain_id = data.get("chain_id")
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
            raise InvalidInput("chain_id: expected a positive integer", field="chain_id")
        signer = data.get("signer")
        if not isinstance(signer, str):
            raise InvalidInput("signer: expected an address", field="signer")
        signature = data.get("signature")
        if not isinstance(signature, str) or not re.fullmatch(r"0x[0-9a-fA-F]{130}", signature):
            raise InvalidInput("signature: expected 0x and 65 bytes of hex", field="signature")
        message = data.get("message")
        if not isinstance(message, Mapping):
            raise InvalidInput("message: expected an object", field="message")
        return cls(
            str(data.get("kind")),
            chain_id,
            parse_address(signer, "signer"),
            message,
            bytes.fromhex(signature[2:]),
        )


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A command whose fields, chain and signature have been checked."""

    kind: CommandKind
    chain_id: int
    signer: str
    message: dict[str, Any]
    signature: bytes
    digest: bytes
    legs: tuple[Leg, ...]
    payload_digest: str

    @property
    def client_id(self) -> str:
        return str(self.message["clientId"])

    @property
    def nonce(self) -> int:
        return int(self.message["nonce"])

    @property
    def expiry(self) -> int:
        return int(self.message["expiry"])


def payload_digest(kind: CommandKind, chain_id: int, message: Mapping[str, Any]) -> str:
    """What idempotency compares: the command without its nonce and expiry, so that a
    client re-signing the same request after a timeout gets the first answer back."""
    payload = {k: v for k, v in message.items() if k not in ("nonce", "expiry")}
    body = canonical.encode_normal({"kind": kind.name, "chain_id": chain_id, "message": payload})
    return "0x" + hashlib.sha256(body).hexdigest()


def derive_legs(kind: CommandKind, signer: str, message: Mapping[str, Any]) -> tuple[Leg, ...]:
    """The posting set `message` asks for, checked to balance; () for a compute command,
    whose posting set the compute state machine decides."""
    if kind.computed:
        return ()
    legs = kind.build_legs(signer, message)
    check_balanced(legs)
    return tuple(legs)


def command_digest(kind: CommandKind, chain_id: int, message: Mapping[str, Any]) -> bytes:
    """The EIP-712 digest of a command whose message is in normal form (see parse_message).

    Commands have fixed types, so their encoding is compiled here once per kind instead
    of interpreting a typed-data document per call; a test pins it to the generic encoder
    (`eip712.hash_typed_data`) for every kind.
    """
    encoded = [_type_hash(kind.name)]
    for name, type_ in kind.all_fields:
        value = message[name]
        if type_ == "address":
            encoded.append(_ADDRESS_PAD + bytes.fromhex(value[2:]))
        elif type_ == "string":
            encoded.append(keccak256(value.encode()))
        elif type_ == "Payout[]":
            encoded.append(
                keccak256(
                    b"".join(
                        keccak256(
                            _PAYOUT_TYPE_HASH
                            + _ADDRESS_PAD
                            + bytes.fromhex(p["account"][2:])
                            + p["amount"].to_bytes(32, "big")
                        )
                        for p in value
                    )
                )
            )
        elif type_ == "bytes32":
            encoded.append(bytes.fromhex(value[2:]))
        elif type_ == "bytes":
            encoded.append(keccak256(bytes.fromhex(value[2:])))
        elif type_ == "bool":
            encoded.append(int(value).to_bytes(32, "big"))
        elif type_ == "uint32[]":
            encoded.append(keccak256(b"".join(n.to_bytes(32, "big") for n in value)))
        else:  # uint256 and uint64: parse_message has range-checked them.
            encoded.append(value.to_bytes(32, "big"))
    struct_hash = keccak256(b"".join(encoded))
    return keccak256(b"\x19\x01" + _domain_separator(chain_id) + struct_hash)


_ADDRESS_PAD = bytes(12)


@lru_cache(maxsize=64)
def _type_hash(kind_name: str) -> bytes:
    return eip712.type_hash(kind_name, KINDS[kind_name].eip712_types())


@lru_cache(maxsize=64)
def _domain_separator(chain_id: int) -> bytes:
    return eip712.domain_separator(typed_data(KINDS["Stake"], chain_id, {}))


_PAYOUT_TYPE_HASH = eip712.type_hash("Payout", {"Payout": _PAYOUT})


def verify_command(command: SignedCommand, chain_id: int) -> VerifiedCommand:
    """Check fields, chain id and signature; raise the narrow error for each failure.

    State-dependent checks (idempotency, expiry, nonce, authorization, funds) belong to
    the application, which knows the store and the clock.
    """
    kind = parse_kind(command.kind)
    message = parse_message(kind, command.message)
    if command.chain_id != chain_id:
        raise WrongChainId(chain_id, command.chain_id)
    digest = command_digest(kind, chain_id, message)
    recovered = recover_address(digest, command.signature)
    if recovered != command.signer:
        raise WrongSigner(command.signer, recovered)
    return VerifiedCommand(
        kind,
        chain_id,
        command.signer,
        message,
        command.signature,
        digest,
        derive_legs(kind, command.signer, message),
        payload_digest(kind, chain_id, message),
    )


def sign_command(
    key: PrivateKey, kind: str, chain_id: int, message: Mapping[str, Any]
) -> SignedCommand:
    """Sign `message` as a command of `kind` (validating it first, as a client should)."""
    parsed_kind = parse_kind(kind)
    normal = parse_message(parsed_kind, message)
    signature = key.sign_digest(command_digest(parsed_kind, chain_id, normal))
    if len(signature) != 65:
        raise InvalidSignature("signer produced a signature that is not 65 bytes")
    return SignedCommand(kind, chain_id, key.address, normal, signature)
