"""chain.merkle against OpenZeppelin's JS StandardMerkleTree, byte for byte.

Expected values come from the JS library itself: `chain/merkle_vectors.js` writes
`fixtures/merkle_vectors.json` (roots, leaf hashes, every proof, multiproofs and dumps),
and one test re-runs it to show the committed file is what the pinned library produces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st
from sha3 import keccak_256

from chain.errors import ChainError
from chain.merkle import (
    DuplicateLeaf,
    EmptyTree,
    InvalidDump,
    InvalidLeafEncoding,
    InvalidLeafValue,
    LeafIndexOutOfRange,
    LeafNotInTree,
    MalformedProof,
    MerkleError,
    MultiProof,
    StandardMerkleTree,
    proof_hashes_max,
)
from protocol.keys import to_checksum_address
from tests.chain.hardhat_fixture import toolchain_unavailable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "merkle_vectors.json"
GENERATOR = PROJECT_ROOT / "chain" / "merkle_vectors.js"
SETTLEMENT = ("address", "address", "uint256")
generator_timeout_seconds = 60


@cache
def _fixture() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text())
    return loaded


VECTORS = _fixture()["vectors"]


def _tree(vector: dict[str, Any]) -> StandardMerkleTree:
    return StandardMerkleTree.of(
        vector["values"], vector["leafEncoding"], sort_leaves=vector["sortLeaves"]
    )


def _keccak(data: bytes) -> bytes:
    digest: bytes = keccak_256(data).digest()
    return digest


def _flip(hex_hash: str) -> str:
    """The same hash with its last bit flipped."""
    raw = bytearray(bytes.fromhex(hex_hash[2:]))
    raw[-1] ^= 1
    return "0x" + raw.hex()


def _settlement_tree(count: int = 8) -> StandardMerkleTree:
    token = to_checksum_address("0x" + "ab" * 20)
    values = [[to_checksum_address(bytes([i + 1]) * 20), token, 10**6 * i] for i in range(count)]
    return StandardMerkleTree.of(values, SETTLEMENT)


# --- Known answers from the JS library ---------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_tree_matches_the_js_library(vector: dict[str, Any]) -> None:
    """Root, leaf hashes, every proof and the dump equal what @openzeppelin/merkle-tree wrote."""
    tree = _tree(vector)
    assert tree.root == vector["root"]
    assert [tree.leaf_hash(value) for value in vector["values"]] == vector["leafHashes"]
    assert [tree.get_proof(i) for i in range(len(tree))] == vector["proofs"]
    assert tree.dump() == vector["dump"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_multiproofs_match_the_js_library(vector: dict[str, Any]) -> None:
    """Multiproofs (none, one and most leaves) equal the JS library's and verify."""
    tree = _tree(vector)
    for expected in vector["multiProofs"]:
        multi_proof = tree.get_multi_proof(expected["indices"])
        assert multi_proof.to_json() == {
            key: expected[key] for key in ("leaves", "proof", "proofFlags")
        }
        assert tree.verify_multi(multi_proof)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_js_dump_loads_and_round_trips(vector: dict[str, Any]) -> None:
    """A dump written by the JS library loads, keeps its root and proofs, and dumps back."""
    tree = StandardMerkleTree.load(vector["dump"])
    assert tree.root == vector["root"]
    assert [tree.get_proof(i) for i in range(len(tree))] == vector["proofs"]
    assert tree.dump() == vector["dump"]
    assert StandardMerkleTree.load(tree.dump()).values == tree.values


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_verify_accepts_every_proof_by_index_value_and_root(vector: dict[str, Any]) -> None:
    """Each proof verifies by value index, by value, and statically against the root."""
    tree = _tree(vector)
    for index, (value, proof) in enumerate(zip(vector["values"], vector["proofs"], strict=True)):
        assert tree.verify(index, proof)
        assert tree.verify(value, proof)
        assert StandardMerkleTree.verify_proof(vector["root"], vector["leafEncoding"], value, proof)
        assert tree.get_proof(value) == proof


def test_committed_vectors_are_what_the_js_library_produces_today() -> None:
    """Re-running chain/merkle_vectors.js reproduces the committed fixture exactly."""
    node = shutil.which("node")
    if node is None:
        toolchain_unavailable("node is not on PATH: cannot re-derive the Merkle vectors")
    if not (PROJECT_ROOT / "node_modules" / "@openzeppelin" / "merkle-tree").is_dir():
        toolchain_unavailable("@openzeppelin/merkle-tree is not installed (run npm ci)")
    result = subprocess.run(
        [node, str(GENERATOR)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=generator_timeout_seconds,
        check=False,
        env={**os.environ, "NODE_OPTIONS": ""},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == _fixture(), (
        "tests/chain/fixtures/merkle_vectors.json is stale: regenerate it with "
        "`node chain/merkle_vectors.js > tests/chain/fixtures/merkle_vectors.json`"
    )


def test_duplicated_value_is_refused_though_the_js_library_accepts_it() -> None:
    """A value given twice raises DuplicateLeaf, in `of` and in `load` of the JS library's dump."""
    dump = _fixture()["duplicated"]
    values = [entry["value"] for entry in dump["values"]]
    with pytest.raises(DuplicateLeaf) as raised:
        StandardMerkleTree.of(values, dump["leafEncoding"])
    assert (raised.value.first, raised.value.second) == (0, 2)
    with pytest.raises(DuplicateLeaf):
        StandardMerkleTree.load(dump)


# --- Rejections --------------------------------------------------------------------------


def test_tampered_proofs_are_rejected() -> None:
    """A flipped, dropped, added or borrowed sibling makes a proof fail to verify."""
    tree = _settlement_tree()
    for index in range(len(tree)):
        proof = tree.get_proof(index)
        for position in range(len(proof)):
            flipped = [*proof[:position], _flip(proof[position]), *proof[position + 1 :]]
            assert not tree.verify(index, flipped)
        assert not tree.verify(index, proof[:-1])
        assert not tree.verify(index, [*proof, tree.root])
        assert not tree.verify(index, tree.get_proof((index + 1) % len(tree)))


def test_tampered_value_and_wrong_root_are_rejected() -> None:
    """A proof does not verify for a changed amount, a changed account, or another root."""
    tree = _settlement_tree()
    account, token, amount = tree.values[3]
    proof = tree.get_proof(3)
    assert StandardMerkleTree.verify_proof(tree.root, SETTLEMENT, tree.values[3], proof)
    assert not tree.verify([account, token, amount + 1], proof)
    assert not tree.verify([token, token, amount], proof)
    assert not StandardMerkleTree.verify_proof(_flip(tree.root), SETTLEMENT, tree.values[3], proof)


def test_malformed_proof_raises_and_overlong_proof_is_false() -> None:
    """A proof item that is not a 32-byte hash raises; a proof deeper than any tree is false."""
    tree = _settlement_tree()
    spaced = "0x" + "00" * 30 + "  00"
    for bad in (["0x1234"], ["ab" * 32], [spaced], [b"\x00" * 32], "0x" + "00" * 32):
        with pytest.raises(MalformedProof):
            tree.verify(0, bad)  # type: ignore[arg-type]
    assert not tree.verify(0, ["0x" + "00" * 32] * (proof_hashes_max + 1))


def test_empty_tree_is_refused() -> None:
    """A tree of no values raises EmptyTree, also a ChainError and a ValueError."""
    with pytest.raises(EmptyTree) as raised:
        StandardMerkleTree.of([], SETTLEMENT)
    assert isinstance(raised.value, ChainError)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "encoding",
    [[], ["uint7"], ["bytes33"], ["fixed128x18"], ["mapping"], ["uint256 x"], "uint256", [1]],
    ids=repr,
)
def test_invalid_leaf_encoding_is_refused(encoding: Any) -> None:
    """An encoding that is not a list of supported ABI types raises InvalidLeafEncoding."""
    with pytest.raises(InvalidLeafEncoding):
        StandardMerkleTree.of([[1]], encoding)


@pytest.mark.parametrize(
    ("encoding", "value"),
    [
        (["uint256"], [-1]),
        (["uint256"], [2**256]),
        (["uint8"], [256]),
        (["int8"], [-129]),
        (["uint256"], [True]),
        (["uint256"], [1.0]),
        (["uint256"], ["1_000"]),
        (["uint256"], ["--5"]),
        (["address"], ["0x" + "ab" * 19]),
        (["address"], ["0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266".replace("F39", "f39")]),
        (["bool"], [1]),
        (["bytes32"], ["0x" + "00" * 31]),
        (["bytes32"], ["00" * 32]),
        (["bytes"], ["0x123"]),
        (["string"], [b"text"]),
        (["uint256[2]"], [[1, 2, 3]]),
        (["(address,uint256)"], [["0x" + "11" * 20]]),
        (["uint256", "uint256"], [1]),
        (["uint256"], "1"),
    ],
    ids=repr,
)
def test_invalid_leaf_value_is_refused(encoding: list[str], value: Any) -> None:
    """A value that does not fit its ABI type raises InvalidLeafValue naming the value."""
    with pytest.raises(InvalidLeafValue) as raised:
        StandardMerkleTree.of([value], encoding)
    assert raised.value.value_index == 0


def test_bad_index_or_unknown_value_is_refused() -> None:
    """Out-of-range (also negative) indices raise IndexError kinds; unknown values LookupError."""
    tree = _settlement_tree(3)
    for index in (3, -1):
        with pytest.raises(LeafIndexOutOfRange):
            tree.get_proof(index)
        with pytest.raises(IndexError):
            tree.verify(index, [])
    account, token, amount = tree.values[0]
    with pytest.raises(LeafNotInTree) as raised:
        tree.get_proof([account, token, amount + 1])
    assert isinstance(raised.value, LookupError)
    with pytest.raises(InvalidLeafValue):
        tree.get_multi_proof([0, 0])


def _dump_with(**changes: Any) -> dict[str, Any]:
    dump = _settlement_tree(4).dump()
    dump.update(changes)
    return dump


def test_load_refuses_dumps_that_do_not_check_out() -> None:
    """Unknown format, missing encoding, wrong shapes or hashes raise InvalidDump."""
    good = _settlement_tree(4).dump()
    tree, values = good["tree"], good["values"]
    bad_dumps = [
        _dump_with(format="standard-v2"),
        {key: value for key, value in good.items() if key != "leafEncoding"},
        _dump_with(tree=tree[:-1]),
        _dump_with(tree=[_flip(tree[0]), *tree[1:]]),
        _dump_with(tree=[*tree[:2], "0x00", *tree[3:]]),
        _dump_with(values=[{**values[0], "treeIndex": 0}, *values[1:]]),
        _dump_with(values=[{**values[0], "treeIndex": values[1]["treeIndex"]}, *values[1:]]),
        _dump_with(values=[{**values[0], "treeIndex": True}, *values[1:]]),
        _dump_with(
            values=[
                {"value": values[1]["value"], "treeIndex": values[0]["treeIndex"]},
                {"value": values[0]["value"], "treeIndex": values[1]["treeIndex"]},
                *values[2:],
            ]
        ),
        _dump_with(values=[{"treeIndex": values[0]["treeIndex"]}, *values[1:]]),
        _dump_with(tree="not a list"),
    ]
    for dump in bad_dumps:
        with pytest.raises(InvalidDump):
            StandardMerkleTree.load(dump)
    with pytest.raises(MerkleError):
        StandardMerkleTree.load(_dump_with(values=[]))


# --- Canonical values --------------------------------------------------------------------


def test_values_are_read_into_one_canonical_form_in_input_order() -> None:
    """Decimal and hex strings become ints, addresses EIP-55, hex bytes `bytes`; order kept."""
    lower = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    tree = StandardMerkleTree.of(
        [[lower, "0x10", "0x" + "ab" * 32], [lower.upper().replace("0X", "0x"), "7", b"\x01" * 32]],
        ["address", "uint256", "bytes32"],
        sort_leaves=True,
    )
    checksummed = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert tree.values == ((checksummed, 16, b"\xab" * 32), (checksummed, 7, b"\x01" * 32))
    assert [entry["value"] for entry in tree.dump()["values"]] == [
        [checksummed, "16", "0x" + "ab" * 32],
        [checksummed, "7", "0x" + "01" * 32],
    ]
    assert tree.get_proof([checksummed, 16, "0x" + "AB" * 32]) == tree.get_proof(0)


def test_unsorted_tree_lays_leaves_out_in_input_order() -> None:
    """With sort_leaves=False value i is leaf i, counted from the end of the node array."""
    tree = _settlement_tree(5)
    unsorted = StandardMerkleTree.of(tree.values, SETTLEMENT, sort_leaves=False)
    nodes = unsorted.dump()["tree"]
    assert [entry["treeIndex"] for entry in unsorted.dump()["values"]] == [8, 7, 6, 5, 4]
    assert nodes[8] == unsorted.leaf_hash(tree.values[0])


def test_leaf_hash_is_double_keccak_of_abi_encode() -> None:
    """A leaf is keccak256(keccak256(abi.encode(types, value))), written out independently."""
    tree = _settlement_tree(2)
    value = tree.values[1]
    expected = _keccak(_keccak(abi_encode(list(SETTLEMENT), list(value))))
    assert tree.leaf_hash(value) == "0x" + expected.hex()


def test_empty_multiproof_carries_the_root() -> None:
    """A multiproof of no values is the root alone, and it verifies."""
    tree = _settlement_tree(5)
    multi_proof = tree.get_multi_proof([])
    assert multi_proof == MultiProof(leaves=(), proof=(tree.root,), proof_flags=())
    assert tree.verify_multi(multi_proof)


def test_malformed_multiproof_raises() -> None:
    """Flags that do not fit the leaves and proof raise MalformedProof."""
    tree = _settlement_tree(5)
    good = tree.get_multi_proof([0, 2])
    for bad in (
        MultiProof(good.leaves, good.proof[:-1], good.proof_flags),
        MultiProof(good.leaves, good.proof, (*good.proof_flags, True)),
        MultiProof(good.leaves[:1], (*good.proof, tree.root), good.proof_flags),
    ):
        with pytest.raises(MalformedProof):
            tree.verify_multi(bad)


# --- Properties --------------------------------------------------------------------------

_addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
_settlement_values = st.lists(
    st.tuples(_addresses, _addresses, st.integers(0, 2**256 - 1)),
    min_size=1,
    max_size=40,
    unique=True,
)


@given(values=_settlement_values, sort_leaves=st.booleans())
def test_every_proof_verifies_and_proves_only_its_own_value(
    values: list[tuple[str, str, int]], sort_leaves: bool
) -> None:
    """Every value's proof verifies it, and verifies no other value of the tree."""
    tree = StandardMerkleTree.of(values, SETTLEMENT, sort_leaves=sort_leaves)
    proofs = [tree.get_proof(i) for i in range(len(values))]
    for index, proof in enumerate(proofs):
        assert StandardMerkleTree.verify_proof(tree.root, SETTLEMENT, values[index], proof)
        other = values[(index + 1) % len(values)]
        assert len(values) == 1 or not tree.verify(other, proof)
    assert StandardMerkleTree.load(tree.dump()).root == tree.root


@given(values=_settlement_values, data=st.data())
def test_every_multiproof_verifies(values: list[tuple[str, str, int]], data: st.DataObject) -> None:
    """A multiproof of any subset of the values verifies against the root."""
    tree = StandardMerkleTree.of(values, SETTLEMENT)
    subset = data.draw(st.lists(st.integers(0, len(values) - 1), unique=True))
    multi_proof = tree.get_multi_proof(subset)
    assert sorted(multi_proof.leaves) == sorted(tuple(values[i]) for i in subset)
    assert StandardMerkleTree.verify_multi_proof(tree.root, SETTLEMENT, multi_proof)


_STATIC_TYPES = st.sampled_from(
    ["address", "bool", "uint8", "uint64", "uint256", "int8", "int128", "int256"]
    + [f"bytes{size}" for size in (1, 4, 20, 31, 32)]
)


def _static_value(abi_type: str) -> st.SearchStrategy[Any]:
    if abi_type == "address":
        return _addresses
    if abi_type == "bool":
        return st.booleans()
    if abi_type.startswith("uint"):
        return st.integers(0, 2 ** int(abi_type[4:]) - 1)
    if abi_type.startswith("int"):
        bits = int(abi_type[3:])
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    size = int(abi_type[5:])
    return st.binary(min_size=size, max_size=size)


@given(data=st.data())
def test_fast_static_encoding_equals_eth_abi(data: st.DataObject) -> None:
    """The word-by-word encoder of static types hashes leaves exactly as eth_abi encodes them."""
    encoding = data.draw(st.lists(_STATIC_TYPES, min_size=1, max_size=5))
    value = [data.draw(_static_value(abi_type)) for abi_type in encoding]
    tree = StandardMerkleTree.of([value], encoding)
    assert tree.root == "0x" + _keccak(_keccak(abi_encode(encoding, value))).hex()
