"""The errors of the `chain` package, and the decoding of contract reverts into them.

`ChainError` is the root. `ContractReverted` names the custom error a contract reverted
with, decoded by its 4-byte selector against the ABIs of the committed artifacts, whether
the revert came from `eth_call`/`eth_estimateGas` or from a mined receipt with status 0.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_typing import ABI
from eth_utils.abi import abi_to_signature, collapse_if_tuple, function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3.exceptions import ContractLogicError, Web3RPCError

# The two errors Solidity itself raises, which no ABI lists.
SOLIDITY_ERRORS: Mapping[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    bytes.fromhex("08c379a0"): ("Error", ("string",), ("message",)),
    bytes.fromhex("4e487b71"): ("Panic", ("uint256",), ("code",)),
}
UNKNOWN_ERROR = "unknown"


class ChainError(Exception):
    """Root of every error raised by the `chain` package."""


class ArtifactMissing(ChainError, FileNotFoundError):
    """No compiled artifact of that name in the build directory."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(f"no artifact for contract {name!r} at {path} (run `make contracts`)")
        self.name = name
        self.path = path


class ContractReverted(ChainError):
    """A contract call or transaction reverted.

    `error` is the custom error's name (`"WrongEpoch"`), `"Error"` or `"Panic"` for
    Solidity's own, or `"unknown"` when the selector is in no artifact or no data came
    back; `error_args` maps each of its ABI parameter names to the decoded value; `data` is
    the raw revert data; `transaction_hash` is set when the revert was a mined transaction.
    """

    def __init__(
        self,
        error: str,
        error_args: Mapping[str, Any],
        data: bytes,
        *,
        transaction_hash: str | None = None,
    ) -> None:
        shown = ", ".join(f"{name}={value!r}" for name, value in error_args.items())
        where = f" in transaction {transaction_hash}" if transaction_hash else ""
        super().__init__(f"reverted{where}: {error}({shown})")
        self.error = error
        self.error_args = dict(error_args)
        self.data = data
        self.transaction_hash = transaction_hash


class DeploymentInvalid(ChainError, ValueError):
    """A deployment record (JSON) is malformed; `field` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"deployment field {field!r}: {reason}")
        self.field = field


class RevertDecoder:
    """Maps revert data to `ContractReverted`, knowing the custom errors of some ABIs."""

    def __init__(self, abis: Iterable[ABI]) -> None:
        self._errors: dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]] = dict(
            SOLIDITY_ERRORS
        )
        for abi in abis:
            for element in abi:
                if element["type"] != "error":
                    continue
                inputs = element.get("inputs", [])
                selector = function_signature_to_4byte_selector(abi_to_signature(element))
                types = tuple(collapse_if_tuple(dict(entry)) for entry in inputs)
                names = tuple(entry.get("name", "") or f"arg{i}" for i, entry in enumerate(inputs))
                # The same error declared in two contracts has the same signature, hence the
                # same selector: keeping either is right.
                self._errors[selector] = (element["name"], types, names)

    def decode(self, data: bytes, *, transaction_hash: str | None = None) -> ContractReverted:
        """The `ContractReverted` for revert `data` (its selector and ABI-encoded args)."""
        known = self._errors.get(data[:4]) if len(data) >= 4 else None
        if known is None:
            return ContractReverted(UNKNOWN_ERROR, {}, data, transaction_hash=transaction_hash)
        name, types, names = known
        try:
            values = abi_decode(list(types), data[4:])
        except DecodingError:
            return ContractReverted(UNKNOWN_ERROR, {}, data, transaction_hash=transaction_hash)
        # Addresses in the EIP-55 form every other address of the package takes.
        shown = [
            to_checksum_address(value) if kind == "address" else value
            for kind, value in zip(types, values, strict=True)
        ]
        return ContractReverted(
            name, dict(zip(names, shown, strict=True)), data, transaction_hash=transaction_hash
        )


@dataclass(frozen=True, slots=True)
class Revert:
    """What a provider's exception says about a revert: its data, and the transaction
    hash when the node mined the reverting transaction before reporting it."""

    data: bytes
    transaction_hash: str | None = None


def revert_of(error: BaseException) -> Revert | None:
    """The revert a provider's exception reports, or None if it is not a revert.

    Three shapes reach here: web3's `ContractLogicError` (from `eth_call` and
    `eth_estimateGas`) with the data as 0x-hex, sometimes wrapped in a dict; web3's
    `Web3RPCError` from a JSON-RPC node that mines a failing transaction and then reports
    it as an error (hardhat does), with the data and the transaction hash in the error's
    `data` object; and eth-tester's own `TransactionFailed`, whose message holds the data
    as a Python bytes literal, or the decoded reason when the revert was `Error(string)`.
    """
    # Imported here: eth-tester costs a third of a second to import, and only the
    # in-process chain raises it.
    from eth_tester.exceptions import TransactionFailed

    if isinstance(error, ContractLogicError):
        data: object = error.data
        if isinstance(data, Mapping):
            data = data.get("data")
        return Revert(_hex_bytes(data))
    if isinstance(error, Web3RPCError):
        response = error.rpc_response or {}
        details = response.get("error")
        extra = details.get("data") if isinstance(details, Mapping) else None
        if isinstance(extra, Mapping) and isinstance(extra.get("data"), str):
            tx_hash = extra.get("txHash")
            return Revert(_hex_bytes(extra["data"]), tx_hash if isinstance(tx_hash, str) else None)
        return None
    if isinstance(error, TransactionFailed):
        message = str(error.args[0]) if error.args else ""
        prefix = "execution reverted: "
        reason = message[len(prefix) :] if message.startswith(prefix) else message
        if reason.startswith(("b'", 'b"')):
            literal = ast.literal_eval(reason)
            if isinstance(literal, bytes):
                return Revert(literal)
        # eth-tester has already decoded an Error(string): encode it back, so every revert
        # reaches the decoder in one form.
        return Revert(bytes.fromhex("08c379a0") + abi_encode(["string"], [reason]))
    return None


def _hex_bytes(value: object) -> bytes:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return b""
    return b""
