"""Deploys BlackTail's contracts and wires them together; `Deployment` records where.

`deploy_network` deploys, in order, BlackToken, TestUSD, the Vault and the
SettlementDistributor (which names the Vault), allows both tokens in the Vault, makes the
distributor the Vault's only spender, and grants the operator, pauser and minter roles.
The admin keeps DEFAULT_ADMIN_ROLE on every contract.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3

from chain.contracts import (
    MINTER_ROLE,
    OPERATOR_ROLE,
    PAUSER_ROLE,
    BlackToken,
    Sender,
    SettlementDistributor,
    TestUSD,
    Vault,
    deploy_contract,
)
from chain.errors import DeploymentInvalid
from protocol.assets import Asset

# $BLACK's supply cap: one billion tokens of 18 decimals.
BLACK_CAP = 1_000_000_000 * 10**18

_ADDRESS_FIELDS = ("black_token", "usd_token", "vault", "distributor")
_INT_FIELDS = ("chain_id", "block_number")


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the network's contracts live. `block_number` is the block of the first
    deployment transaction: no Vault deposit can be older, so a chain watcher starts there."""

    chain_id: int
    block_number: int
    black_token: ChecksumAddress
    usd_token: ChecksumAddress
    vault: ChecksumAddress
    distributor: ChecksumAddress

    def token_of(self, asset: Asset) -> ChecksumAddress:
        """The token contract of ledger asset `asset`."""
        return {Asset.BLACK: self.black_token, Asset.USD: self.usd_token}[asset]

    def asset_of(self, token: str) -> Asset:
        """The ledger asset whose token contract is `token`."""
        address = Web3.to_checksum_address(token)
        assets = {self.black_token: Asset.BLACK, self.usd_token: Asset.USD}
        if address not in assets:
            raise ValueError(f"token: {address} is not a token of this deployment")
        return assets[address]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        """Parses `to_json`'s output strictly; a bad field raises `DeploymentInvalid`."""
        try:
            record: Any = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeploymentInvalid("(document)", f"not JSON: {error}") from error
        if not isinstance(record, dict):
            raise DeploymentInvalid("(document)", "expected a JSON object")
        expected = set(_ADDRESS_FIELDS) | set(_INT_FIELDS)
        if set(record) != expected:
            extra = sorted(set(record) - expected)
            missing = sorted(expected - set(record))
            field = (extra or missing)[0]
            raise DeploymentInvalid(field, "unknown field" if extra else "missing")
        for field in _INT_FIELDS:
            value = record[field]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DeploymentInvalid(field, f"expected a non-negative integer, got {value!r}")
        addresses: dict[str, ChecksumAddress] = {}
        for field in _ADDRESS_FIELDS:
            value = record[field]
            if not isinstance(value, str) or not Web3.is_address(value):
                raise DeploymentInvalid(field, f"expected an address, got {value!r}")
            addresses[field] = Web3.to_checksum_address(value)
        return cls(
            chain_id=record["chain_id"],
            block_number=record["block_number"],
            black_token=addresses["black_token"],
            usd_token=addresses["usd_token"],
            vault=addresses["vault"],
            distributor=addresses["distributor"],
        )


def _deployed(w3: Web3, name: str, args: list[object], sender: Sender) -> tuple[str, int]:
    receipt = deploy_contract(w3, name, args, sender)
    address = receipt["contractAddress"]
    # A successful creation receipt always names the contract; anything else is a node bug.
    assert address is not None, f"{name}: creation receipt without contractAddress"
    return address, receipt["blockNumber"]


def deploy_network(
    w3: Web3,
    admin: Sender,
    *,
    operator: str | None = None,
    pauser: str | None = None,
    minter: str | None = None,
    black_cap: int = BLACK_CAP,
) -> Deployment:
    """Deploys and wires the four contracts, sending every transaction from `admin`.

    `operator` (posts roots), `pauser` (pauses the Vault and distributor) and `minter`
    (mints both tokens) default to the admin's address.
    """
    operator = operator or admin.address
    pauser = pauser or admin.address
    minter = minter or admin.address
    black_address, first_block = _deployed(w3, "BlackToken", [admin.address, black_cap], admin)
    usd_address, _ = _deployed(w3, "TestUSD", [admin.address], admin)
    vault_address, _ = _deployed(w3, "Vault", [admin.address], admin)
    distributor_address, _ = _deployed(
        w3, "SettlementDistributor", [admin.address, vault_address], admin
    )
    black = BlackToken(w3, black_address)
    usd = TestUSD(w3, usd_address)
    vault = Vault(w3, vault_address)
    distributor = SettlementDistributor(w3, distributor_address)

    vault.set_token_allowed(black.address, True, sender=admin)
    vault.set_token_allowed(usd.address, True, sender=admin)
    vault.set_distributor(distributor.address, sender=admin)
    vault.grant_role(PAUSER_ROLE, pauser, sender=admin)
    distributor.grant_role(OPERATOR_ROLE, operator, sender=admin)
    distributor.grant_role(PAUSER_ROLE, pauser, sender=admin)
    black.grant_role(MINTER_ROLE, minter, sender=admin)
    usd.grant_role(MINTER_ROLE, minter, sender=admin)
    return Deployment(
        chain_id=w3.eth.chain_id,
        block_number=first_block,
        black_token=black.address,
        usd_token=usd.address,
        vault=vault.address,
        distributor=distributor.address,
    )
