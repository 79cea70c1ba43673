"""Deployment and the client plumbing: wiring, the deployment record, both kinds of sender,
revert decoding and artifacts."""

from __future__ import annotations

import json

import pytest
from eth_abi.abi import encode
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCResponse

from chain.artifacts import CONTRACT_NAMES, artifact_names, load_artifact
from chain.contracts import (
    DEFAULT_ADMIN_ROLE,
    MINTER_ROLE,
    OPERATOR_ROLE,
    PAUSER_ROLE,
    Sender,
    TokenStatus,
    revert_decoder,
)
from chain.deploy import Deployment
from chain.errors import ArtifactMissing, DeploymentInvalid, revert_of
from protocol.assets import Asset
from tests.chain.conftest import World, reverts

MAX_UINT256 = 2**256 - 1


def test_deploy_network_wires_roles_tokens_and_the_distributor(world: World) -> None:
    """After deployment each role sits with its own key, both tokens are allowed, and the
    distributor, which names the Vault, has an unlimited allowance of both."""
    d = world.deployment
    assert world.distributor.vault() == d.vault
    assert world.vault.distributor() == d.distributor
    assert world.vault.tokens() == [d.black_token, d.usd_token]
    for token in (world.black, world.usd):
        assert world.vault.token_status(token.address) is TokenStatus.ALLOWED
        assert token.allowance(d.vault, d.distributor) == MAX_UINT256
        assert token.has_role(MINTER_ROLE, world.admin.address)
        assert token.has_role(DEFAULT_ADMIN_ROLE, world.admin.address)
    assert world.distributor.has_role(OPERATOR_ROLE, world.operator.address)
    assert not world.distributor.has_role(OPERATOR_ROLE, world.admin.address)
    assert world.distributor.has_role(PAUSER_ROLE, world.pauser.address)
    assert world.vault.has_role(PAUSER_ROLE, world.pauser.address)
    assert world.vault.has_role(DEFAULT_ADMIN_ROLE, world.admin.address)
    assert d.block_number >= 1
    assert d.chain_id == world.w3.eth.chain_id


def test_deployment_record_round_trips_through_json(world: World) -> None:
    """`to_json` then `from_json` gives the same deployment, and assets map to tokens."""
    d = world.deployment
    assert Deployment.from_json(d.to_json()) == d
    assert d.token_of(Asset.USD) == d.usd_token
    assert d.asset_of(d.black_token.lower()) is Asset.BLACK
    with pytest.raises(ValueError, match="not a token"):
        d.asset_of(d.vault)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vault": "0x1234"}, "vault"),
        ({"chain_id": -1}, "chain_id"),
        ({"block_number": True}, "block_number"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_deployment_record_names_the_field(
    world: World, change: dict[str, object], field: str
) -> None:
    """A bad address, a negative or boolean number, or an unknown field is refused with
    DeploymentInvalid naming the field."""
    record = json.loads(world.deployment.to_json()) | change
    with pytest.raises(DeploymentInvalid) as caught:
        Deployment.from_json(json.dumps(record))
    assert caught.value.field == field


def test_a_missing_field_or_non_json_record_is_refused(world: World) -> None:
    """A record without `distributor`, or text that is not JSON, is refused."""
    record = json.loads(world.deployment.to_json())
    del record["distributor"]
    with pytest.raises(DeploymentInvalid, match="distributor"):
        Deployment.from_json(json.dumps(record))
    with pytest.raises(DeploymentInvalid, match="not JSON"):
        Deployment.from_json("{")


def test_an_unlocked_sender_transacts_through_the_node(world: World) -> None:
    """A sender whose key the node holds (eth_sendTransaction) works like a local key."""
    user = world.users[0]
    world.fund(user, world.usd, 10)
    node_signed = Sender.unlocked(user.address.lower())
    assert node_signed.account is None
    receipt = world.vault.deposit(world.usd.address, 10, user.address, sender=node_signed)
    assert receipt["status"] == 1
    assert receipt["from"] == user.address
    assert world.vault.deposits_in(receipt)[0].amount == 10


def test_an_estimated_transaction_that_would_revert_is_never_sent(world: World) -> None:
    """Without a fixed gas limit the gas estimate finds the revert: the custom error is
    raised with no transaction hash, and no block is mined."""
    user = world.users[0]
    block = world.w3.eth.block_number
    with reverts("ZeroAmount") as caught:
        world.vault.deposit(
            world.usd.address, 0, user.address, sender=world.sender(user, estimate=True)
        )
    assert caught.value.transaction_hash is None
    assert world.w3.eth.block_number == block


def test_an_estimated_transaction_is_sent_and_checked(world: World) -> None:
    """A transaction that would succeed is estimated, signed locally, mined and returned."""
    user = world.users[0]
    world.fund(user, world.usd, 10)
    receipt = world.vault.deposit(
        world.usd.address, 10, user.address, sender=world.sender(user, estimate=True)
    )
    assert receipt["status"] == 1
    assert receipt["gasUsed"] < 100_000


def test_a_node_that_mines_then_reports_a_revert_is_decoded_with_its_transaction() -> None:
    """A JSON-RPC error in hardhat's shape (revert data and txHash in the error's data) is a
    revert of that transaction; an RPC error without revert data is not a revert."""
    tx_hash = "0x" + "ab" * 32
    response: RPCResponse = {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {
            "code": -32603,
            "message": "VM Exception while processing transaction: reverted",
            "data": {"message": "reverted", "txHash": tx_hash, "data": "0x1f2a2005"},
        },
    }
    revert = revert_of(Web3RPCError("reverted", rpc_response=response))
    assert revert is not None
    decoded = revert_decoder().decode(revert.data, transaction_hash=revert.transaction_hash)
    assert (decoded.error, decoded.transaction_hash) == ("ZeroAmount", tx_hash)
    nonce_error: RPCResponse = {
        "jsonrpc": "2.0",
        "id": 2,
        "error": {"code": -32000, "message": "nonce too low"},
    }
    assert revert_of(Web3RPCError("nonce too low", rpc_response=nonce_error)) is None
    assert revert_of(ValueError("not from a provider")) is None


def test_revert_decoder_names_unknown_selectors_and_panics() -> None:
    """Data with a selector no artifact declares decodes as "unknown"; Panic(uint256) and
    Error(string) decode by Solidity's own selectors."""
    decoder = revert_decoder()
    unknown = decoder.decode(bytes.fromhex("deadbeef"))
    assert (unknown.error, unknown.error_args) == ("unknown", {})
    assert decoder.decode(b"").error == "unknown"
    panic = decoder.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert (panic.error, panic.error_args) == ("Panic", {"code": 0x11})
    message = decoder.decode(bytes.fromhex("08c379a0") + encode(["string"], ["no"]))
    assert (message.error, message.error_args) == ("Error", {"message": "no"})


def test_every_custom_error_of_the_contracts_is_decodable() -> None:
    """Each error declared in the artifacts decodes by its selector to its name and
    arguments (addresses in EIP-55 form)."""
    samples = {
        "address": "0x" + "ab" * 20,
        "bytes32": b"\x01" * 32,
        "string": "text",
        "uint64": 7,
        "uint256": 2**200,
    }
    decoder = revert_decoder()
    seen = set()
    for name in CONTRACT_NAMES:
        for element in load_artifact(name).abi:
            if element["type"] != "error":
                continue
            types = [entry["type"] for entry in element["inputs"]]
            signature = f"{element['name']}({','.join(types)})"
            data = Web3.keccak(text=signature)[:4] + encode(types, [samples[t] for t in types])
            decoded = decoder.decode(data)
            assert decoded.error == element["name"]
            expected = [
                Web3.to_checksum_address(samples[t]) if t == "address" else samples[t]
                for t in types
            ]
            assert list(decoded.error_args.values()) == expected, signature
            seen.add(element["name"])
    assert {"WrongEpoch", "InvalidProof", "NothingToClaim", "TokenNotAllowed"} <= seen


def test_artifacts_of_every_contract_load() -> None:
    """Every contract BlackTail deploys has a committed artifact; a missing one is named."""
    assert set(CONTRACT_NAMES) <= set(artifact_names())
    assert load_artifact("Vault").deployed_bytecode
    with pytest.raises(ArtifactMissing, match="NoSuchContract"):
        load_artifact("NoSuchContract")
