"""Typed clients for BlackTail's contracts over web3.py.

A transaction is sent by a `Sender`: an account whose key is held here (signed locally with
eth-account) or by the node (an unlocked account, as on a hardhat node). Every transacting
method estimates gas first, so a revert surfaces before anything is sent, then waits for the
receipt, checks its status and returns it; a revert either way raises `ContractReverted`
naming the contract's custom error. A sender with a fixed gas limit skips the estimate: a
transaction that reverts is then mined with status 0, and the error is recovered by
replaying it on the state before its block.

Amounts are integers in base units; addresses are accepted in any 0x form and returned
EIP-55 checksummed; hashes are `bytes` in and out, except transaction hashes in logs,
which are 0x-hex strings because they name things outside (the ledger's `chainRef`).
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.logs import DISCARD
from web3.types import EventData, TxParams, TxReceipt

from chain.artifacts import artifact_names, load_artifact
from chain.errors import ContractReverted, RevertDecoder, revert_of

DEFAULT_ADMIN_ROLE = bytes(32)
MINTER_ROLE = Web3.keccak(text="MINTER_ROLE")
OPERATOR_ROLE = Web3.keccak(text="OPERATOR_ROLE")
PAUSER_ROLE = Web3.keccak(text="PAUSER_ROLE")

receipt_timeout_seconds = 120
# One event query spans at most this many blocks; longer ranges are read in pages by the
# caller (public nodes refuse much wider eth_getLogs ranges anyway).
log_blocks_max = 10_000
# A Merkle proof of more than this many siblings would mean a tree of over 2^64 leaves.
proof_length_max = 64


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sends a transaction: `account` signs locally, or, when None, the node signs for
    the unlocked `address`. With `gas_limit` set, transactions use it instead of an
    estimate (tests use this to get reverting transactions mined)."""

    address: ChecksumAddress
    account: LocalAccount | None = None
    gas_limit: int | None = None

    @classmethod
    def from_key(cls, key: LocalAccount | str | bytes) -> Sender:
        """A sender that signs with this private key (or eth-account `LocalAccount`)."""
        account = key if isinstance(key, LocalAccount) else Account.from_key(key)
        return cls(account.address, account)

    @classmethod
    def unlocked(cls, address: str) -> Sender:
        """A sender whose key the node holds (`eth_sendTransaction`)."""
        return cls(Web3.to_checksum_address(address))

    def with_gas_limit(self, gas_limit: int) -> Sender:
        return replace(self, gas_limit=gas_limit)


@dataclass(frozen=True, slots=True)
class Permit:
    """An EIP-2612 permit signature: lets `spender` take `value` until `deadline`."""

    value: int
    deadline: int
    v: int
    r: bytes
    s: bytes


@dataclass(frozen=True, slots=True)
class DepositLog:
    """One `Vault.Deposited` log. `(chain_id, tx_hash, log_index)` identifies it uniquely
    and forever, so the chain watcher keys the ledger credit by `chain_ref`."""

    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    token: ChecksumAddress
    account: ChecksumAddress
    amount: int
    depositor: ChecksumAddress

    @property
    def chain_ref(self) -> str:
        """The ledger's `chainRef`: `"<chainId>:<txHash>:<logIndex>"` (specs/ledger.md)."""
        return f"{self.chain_id}:{self.tx_hash}:{self.log_index}"


@dataclass(frozen=True, slots=True)
class RootPostLog:
    """One `SettlementDistributor.RootPosted` log."""

    tx_hash: str
    log_index: int
    block_number: int
    epoch: int
    root: bytes
    log_size: int
    log_root: bytes


@dataclass(frozen=True, slots=True)
class ClaimLog:
    """One `SettlementDistributor.Claimed` log: `amount` paid, `cumulative_amount` now claimed."""

    tx_hash: str
    log_index: int
    block_number: int
    account: ChecksumAddress
    token: ChecksumAddress
    epoch: int
    amount: int
    cumulative_amount: int


@dataclass(frozen=True, slots=True)
class EpochHead:
    """The distributor's current epoch, root and event-log tree head (size, root)."""

    epoch: int
    root: bytes
    log_size: int
    log_root: bytes


class TokenStatus(enum.IntEnum):
    """`Vault.tokenStatus`: whether deposits of a token are accepted."""

    UNKNOWN = 0
    ALLOWED = 1
    DISALLOWED = 2


@functools.cache
def revert_decoder() -> RevertDecoder:
    """A decoder that knows the custom errors of every committed artifact."""
    return RevertDecoder(load_artifact(name).abi for name in artifact_names())


@contextlib.contextmanager
def _reverts_decoded() -> Iterator[None]:
    """Turns a provider's revert exception into `ContractReverted`; others pass through."""
    try:
        yield
    except Exception as error:
        revert = revert_of(error)
        if revert is None:
            raise
        raise revert_decoder().decode(
            revert.data, transaction_hash=revert.transaction_hash
        ) from error


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def send_transaction(
    w3: Web3, call: ContractFunction | ContractConstructor, sender: Sender
) -> TxReceipt:
    """Sends `call` from `sender`, waits for its receipt and returns it; raises
    `ContractReverted` if it reverts, whether before sending or once mined."""
    params: TxParams = {"from": sender.address}
    with _reverts_decoded():
        params["gas"] = (
            sender.gas_limit if sender.gas_limit is not None else call.estimate_gas(params)
        )
        if sender.account is None:
            tx_hash = call.transact(params)
        else:
            params["nonce"] = w3.eth.get_transaction_count(sender.address, "pending")
            transaction = call.build_transaction(params)
            signed = sender.account.sign_transaction(cast(dict[str, Any], transaction))
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=receipt_timeout_seconds)
    if receipt["status"] != 1:
        raise _mined_revert(w3, receipt)
    return receipt


def _mined_revert(w3: Web3, receipt: TxReceipt) -> ContractReverted:
    """The error of a mined transaction that reverted, found by replaying it as an
    `eth_call` on the state before its block (exact when it was first in its block, as
    on an automining node)."""
    tx_hash = _hex(bytes(receipt["transactionHash"]))
    transaction = w3.eth.get_transaction(receipt["transactionHash"])
    replay: TxParams = {
        "from": transaction["from"],
        "data": transaction["input"],
        "value": transaction["value"],
        "gas": transaction["gas"],
    }
    if transaction.get("to"):
        replay["to"] = transaction["to"]
    data = b""
    try:
        w3.eth.call(replay, block_identifier=receipt["blockNumber"] - 1)
    except Exception as error:
        revert = revert_of(error)
        if revert is None:
            raise
        data = revert.data
    return revert_decoder().decode(data, transaction_hash=tx_hash)


def deploy_contract(w3: Web3, name: str, args: Sequence[object], sender: Sender) -> TxReceipt:
    """Deploys the committed artifact `name` with constructor `args`; the receipt's
    `contractAddress` is the new contract."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=HexBytes(artifact.bytecode))
    return send_transaction(w3, factory.constructor(*args), sender)


def _check_block_range(from_block: int, to_block: int) -> None:
    if not 0 <= from_block <= to_block:
        raise ValueError(
            f"block range: expected 0 <= from_block <= to_block, got {from_block}..{to_block}"
        )
    if to_block - from_block + 1 > log_blocks_max:
        raise ValueError(
            f"block range {from_block}..{to_block}: at most {log_blocks_max} blocks per query"
        )


class _Client:
    """What every client shares: the contract at `address`, calls, transactions, roles."""

    contract_name: ClassVar[str]

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = Web3.to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(
            address=self.address, abi=load_artifact(self.contract_name).abi
        )

    def _call(self, call: ContractFunction) -> Any:
        with _reverts_decoded():
            return call.call()

    def _send(self, call: ContractFunction, sender: Sender) -> TxReceipt:
        return send_transaction(self.w3, call, sender)

    def _events(self, name: str, from_block: int, to_block: int) -> list[EventData]:
        _check_block_range(from_block, to_block)
        event = self.contract.events[name]
        logs = event.get_logs(from_block=from_block, to_block=to_block)
        return sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))

    def _receipt_events(self, name: str, receipt: TxReceipt) -> list[EventData]:
        # Logs of other contracts (the token's Transfer in a deposit) are not this event.
        event = self.contract.events[name]()
        return [
            log
            for log in event.process_receipt(receipt, errors=DISCARD)
            if log["address"] == self.address
        ]

    def has_role(self, role: bytes, account: str) -> bool:
        return bool(self._call(self.contract.functions.hasRole(role, account)))

    def grant_role(self, role: bytes, account: str, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.grantRole(role, account), sender)

    def revoke_role(self, role: bytes, account: str, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.revokeRole(role, account), sender)


class _Pausable(_Client):
    def paused(self) -> bool:
        return bool(self._call(self.contract.functions.paused()))

    def pause(self, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.pause(), sender)

    def unpause(self, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.unpause(), sender)


class _Token(_Client):
    """An ERC-20 with EIP-2612 permit and a MINTER_ROLE."""

    def name(self) -> str:
        return str(self._call(self.contract.functions.name()))

    def symbol(self) -> str:
        return str(self._call(self.contract.functions.symbol()))

    def decimals(self) -> int:
        return int(self._call(self.contract.functions.decimals()))

    def total_supply(self) -> int:
        return int(self._call(self.contract.functions.totalSupply()))

    def balance_of(self, account: str) -> int:
        return int(self._call(self.contract.functions.balanceOf(account)))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self._call(self.contract.functions.allowance(owner, spender)))

    def nonces(self, owner: str) -> int:
        return int(self._call(self.contract.functions.nonces(owner)))

    def mint(self, to: str, amount: int, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.mint(to, amount), sender)

    def transfer(self, to: str, amount: int, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.transfer(to, amount), sender)

    def approve(self, spender: str, amount: int, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.approve(spender, amount), sender)

    def permit(self, owner: str, spender: str, permit: Permit, *, sender: Sender) -> TxReceipt:
        """Submits `owner`'s signed `permit` for `spender` (anyone may submit it)."""
        call = self.contract.functions.permit(
            owner, spender, permit.value, permit.deadline, permit.v, permit.r, permit.s
        )
        return self._send(call, sender)

    def sign_permit(
        self,
        owner: LocalAccount,
        spender: str,
        value: int,
        deadline: int,
        *,
        nonce: int | None = None,
    ) -> Permit:
        """Signs an EIP-2612 permit with `owner`'s key for `spender` (the owner's next
        nonce unless `nonce` is given)."""
        message = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {
                "name": self.name(),
                "version": "1",
                "chainId": self.w3.eth.chain_id,
                "verifyingContract": self.address,
            },
            "message": {
                "owner": owner.address,
                "spender": Web3.to_checksum_address(spender),
                "value": value,
                "nonce": self.nonces(owner.address) if nonce is None else nonce,
                "deadline": deadline,
            },
        }
        signed = owner.sign_typed_data(full_message=message)
        return Permit(
            value=value,
            deadline=deadline,
            v=signed.v,
            r=signed.r.to_bytes(32, "big"),
            s=signed.s.to_bytes(32, "big"),
        )


class BlackToken(_Token):
    """$BLACK: 18 decimals, capped supply."""

    contract_name = "BlackToken"

    def cap(self) -> int:
        return int(self._call(self.contract.functions.cap()))


class TestUSD(_Token):
    """The USD stablecoin of tests and the embedded network: 6 decimals."""

    contract_name = "TestUSD"
    # Not a test class, whatever its name says.
    __test__ = False


class Vault(_Pausable):
    """Holds the deposited tokens; one `Deposited` event per deposit."""

    contract_name = "Vault"

    def deposit(self, token: str, amount: int, account: str, *, sender: Sender) -> TxReceipt:
        """Deposits `amount` of `token` from the sender (who approved the Vault), credited
        to ledger `account`."""
        return self._send(self.contract.functions.deposit(token, amount, account), sender)

    def deposit_with_permit(
        self, token: str, amount: int, account: str, permit: Permit, *, sender: Sender
    ) -> TxReceipt:
        """Deposits with an EIP-2612 `permit` signed by the sender for this Vault."""
        call = self.contract.functions.depositWithPermit(
            token, amount, account, permit.deadline, permit.v, permit.r, permit.s
        )
        return self._send(call, sender)

    def set_token_allowed(self, token: str, allowed: bool, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.setTokenAllowed(token, allowed), sender)

    def set_distributor(self, distributor: str, *, sender: Sender) -> TxReceipt:
        return self._send(self.contract.functions.setDistributor(distributor), sender)

    def token_status(self, token: str) -> TokenStatus:
        return TokenStatus(self._call(self.contract.functions.tokenStatus(token)))

    def tokens(self) -> list[ChecksumAddress]:
        return [Web3.to_checksum_address(a) for a in self._call(self.contract.functions.tokens())]

    def distributor(self) -> ChecksumAddress:
        return Web3.to_checksum_address(self._call(self.contract.functions.distributor()))

    def deposits(self, from_block: int, to_block: int) -> list[DepositLog]:
        """Every deposit in blocks `from_block..to_block` (inclusive), in chain order."""
        chain_id = self.w3.eth.chain_id
        return [
            self._deposit_log(chain_id, log)
            for log in self._events("Deposited", from_block, to_block)
        ]

    def deposits_in(self, receipt: TxReceipt) -> list[DepositLog]:
        """The deposits a transaction made, from its receipt."""
        chain_id = self.w3.eth.chain_id
        return [
            self._deposit_log(chain_id, log) for log in self._receipt_events("Deposited", receipt)
        ]

    @staticmethod
    def _deposit_log(chain_id: int, log: EventData) -> DepositLog:
        args = log["args"]
        return DepositLog(
            chain_id=chain_id,
            tx_hash=_hex(bytes(log["transactionHash"])),
            log_index=log["logIndex"],
            block_number=log["blockNumber"],
            token=Web3.to_checksum_address(args["token"]),
            account=Web3.to_checksum_address(args["account"]),
            amount=int(args["amount"]),
            depositor=Web3.to_checksum_address(args["depositor"]),
        )


class SettlementDistributor(_Pausable):
    """Per-epoch Merkle roots of cumulative withdrawable amounts, and claims against them."""

    contract_name = "SettlementDistributor"

    def post_root(
        self, epoch: int, root: bytes, log_size: int, log_root: bytes, *, sender: Sender
    ) -> TxReceipt:
        """Posts epoch `epoch` (the current one plus one) with its root and log head."""
        call = self.contract.functions.postRoot(epoch, root, log_size, log_root)
        return self._send(call, sender)

    def claim(
        self,
        epoch: int,
        account: str,
        token: str,
        cumulative_amount: int,
        proof: Sequence[bytes | str],
        *,
        sender: Sender,
    ) -> TxReceipt:
        """Claims for `account` what it has not yet claimed of `cumulative_amount`, with the
        Merkle `proof` (siblings as bytes or 0x-hex) against the current epoch's root."""
        if len(proof) > proof_length_max:
            raise ValueError(f"proof: at most {proof_length_max} siblings, got {len(proof)}")
        siblings = [HexBytes(sibling) for sibling in proof]
        call = self.contract.functions.claim(epoch, account, token, cumulative_amount, siblings)
        return self._send(call, sender)

    def epoch(self) -> int:
        return int(self._call(self.contract.functions.epoch()))

    def root(self) -> bytes:
        return bytes(self._call(self.contract.functions.root()))

    def head(self) -> EpochHead:
        """The current epoch, root and log head, read in one call (one consistent state)."""
        epoch, root, log_size, log_root = self._call(self.contract.functions.current())
        return EpochHead(int(epoch), bytes(root), int(log_size), bytes(log_root))

    def claimed(self, account: str, token: str) -> int:
        return int(self._call(self.contract.functions.claimed(account, token)))

    def vault(self) -> ChecksumAddress:
        return Web3.to_checksum_address(self._call(self.contract.functions.vault()))

    def root_posts(self, from_block: int, to_block: int) -> list[RootPostLog]:
        """Every root posted in blocks `from_block..to_block` (inclusive), in chain order."""
        return [
            self._root_post_log(log) for log in self._events("RootPosted", from_block, to_block)
        ]

    def claims(self, from_block: int, to_block: int) -> list[ClaimLog]:
        """Every claim paid in blocks `from_block..to_block` (inclusive), in chain order."""
        return [self._claim_log(log) for log in self._events("Claimed", from_block, to_block)]

    def claims_in(self, receipt: TxReceipt) -> list[ClaimLog]:
        """The claims a transaction paid, from its receipt."""
        return [self._claim_log(log) for log in self._receipt_events("Claimed", receipt)]

    @staticmethod
    def _root_post_log(log: EventData) -> RootPostLog:
        args = log["args"]
        return RootPostLog(
            tx_hash=_hex(bytes(log["transactionHash"])),
            log_index=log["logIndex"],
            block_number=log["blockNumber"],
            epoch=int(args["epoch"]),
            root=bytes(args["root"]),
            log_size=int(args["logSize"]),
            log_root=bytes(args["logRoot"]),
        )

    @staticmethod
    def _claim_log(log: EventData) -> ClaimLog:
        args = log["args"]
        return ClaimLog(
            tx_hash=_hex(bytes(log["transactionHash"])),
            log_index=log["logIndex"],
            block_number=log["blockNumber"],
            account=Web3.to_checksum_address(args["account"]),
            token=Web3.to_checksum_address(args["token"]),
            epoch=int(args["epoch"]),
            amount=int(args["amount"]),
            cumulative_amount=int(args["cumulativeAmount"]),
        )
