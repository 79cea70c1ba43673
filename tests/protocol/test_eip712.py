"""EIP-712 encoding, hashing and signing, cross-checked both ways with eth-account."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.eip712 import (
    DOMAIN_FIELDS,
    array_length_max,
    document_from_json,
    document_json_bytes_max,
    domain_separator,
    encode_data,
    encode_type,
    hash_struct,
    hash_typed_data,
    recover_typed_data_signer,
    sign_typed_data,
    type_hash,
    validate_document,
)
from protocol.errors import InvalidInput, InvalidSignature
from protocol.keys import PrivateKey, keccak256, to_checksum_address

COW_SECRET = keccak256(b"cow")
COW = PrivateKey.from_bytes(COW_SECRET)


def _domain_type(*names: str) -> list[dict[str, str]]:
    types = dict(DOMAIN_FIELDS)
    return [{"name": name, "type": types[name]} for name in names]


# The example of EIP-712 itself ("Ether Mail"), with the values the EIP prints for it.
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": _domain_type("name", "version", "chainId", "verifyingContract"),
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}

BATCH: dict[str, Any] = {
    "types": {
        "EIP712Domain": _domain_type("name", "version", "chainId", "verifyingContract", "salt"),
        "Batch": [
            {"name": "owner", "type": "Person"},
            {"name": "transfers", "type": "Transfer[]"},
            {"name": "nonce", "type": "uint64"},
        ],
        "Transfer": [
            {"name": "to", "type": "Person"},
            {"name": "amount", "type": "uint256"},
            {"name": "memo", "type": "bytes"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    },
    "primaryType": "Batch",
    "domain": {
        "name": "BlackTail",
        "version": "1",
        "chainId": "31337",
        "verifyingContract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "salt": "0x" + "ab" * 32,
    },
    "message": {
        "owner": {"name": "Ada", "wallet": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"},
        "transfers": [
            {
                "to": {"name": "Bob", "wallet": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"},
                "amount": "1000000000000000000",
                "memo": "0x",
            },
            {
                "to": {"name": "Eve", "wallet": "0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb"},
                "amount": "0xde0b6b3a7640000",
                "memo": "0xdeadBEEF",
            },
            {
                "to": {"name": "Zoë ✓", "wallet": "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"},
                "amount": 2**256 - 1,
                "memo": "0x00",
            },
        ],
        "nonce": 7,
    },
}

NUMBERS: dict[str, Any] = {
    "types": {
        "EIP712Domain": _domain_type("chainId"),
        "Numbers": [
            {"name": "delta", "type": "int256"},
            {"name": "small", "type": "int8"},
            {"name": "least", "type": "int256"},
            {"name": "id", "type": "bytes32"},
            {"name": "tiny", "type": "bytes1"},
            {"name": "triple", "type": "uint16[3]"},
            {"name": "flags", "type": "bool[2]"},
            {"name": "tags", "type": "string[]"},
            {"name": "blobs", "type": "bytes[]"},
            {"name": "grid", "type": "int64[][]"},
            {"name": "pairs", "type": "bytes32[2][]"},
            {"name": "empty", "type": "address[]"},
        ],
    },
    "primaryType": "Numbers",
    "domain": {"chainId": 1},
    "message": {
        "delta": -12345678901234567890,
        "small": "-128",
        "least": -(2**255),
        "id": "0x" + "01" * 32,
        "tiny": "0xFF",
        "triple": [0, "65535", "0x10"],
        "flags": [True, False],
        "tags": ["", "a", "snow ☃"],
        "blobs": ["0x", "0x00ff"],
        "grid": [[-1, 2], [], ["-9223372036854775808", "9223372036854775807"]],
        "pairs": [["0x" + "11" * 32, "0x" + "22" * 32], ["0x" + "33" * 32, "0x" + "44" * 32]],
        "empty": [],
    },
}

# A struct that contains itself: EIP-712 allows recursive types (a tree of people).
FAMILY: dict[str, Any] = {
    "types": {
        "EIP712Domain": _domain_type("name", "chainId"),
        "Person": [
            {"name": "name", "type": "string"},
            {"name": "children", "type": "Person[]"},
        ],
        "Family": [{"name": "root", "type": "Person"}, {"name": "motto", "type": "string"}],
    },
    "primaryType": "Family",
    "domain": {"name": "Tree", "chainId": 5},
    "message": {
        "root": {
            "name": "A",
            "children": [
                {"name": "B", "children": []},
                {"name": "C", "children": [{"name": "D", "children": []}]},
            ],
        },
        "motto": "roots",
    },
}

DOCUMENTS = {"mail": MAIL, "batch": BATCH, "numbers": NUMBERS, "family": FAMILY}


def _eth_account_digest(doc: dict[str, Any]) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=copy.deepcopy(doc))))


def test_mail_example_encodes_as_printed_in_the_eip() -> None:
    """encodeType, typeHash, domain separator and hashStruct match EIP-712's Mail example."""
    types = MAIL["types"]
    assert encode_type("Mail", types) == (
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    )
    assert type_hash("Mail", types).hex() == (
        "a0cedeb2dc280ba39b857546d74f5549c3a1d7bdc2dd96bf881f76108e23dac2"
    )
    assert domain_separator(MAIL).hex() == (
        "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    )
    assert hash_struct("Mail", MAIL["message"], types).hex() == (
        "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    )
    assert encode_data("Mail", MAIL["message"], types)[:32] == type_hash("Mail", types)


def test_mail_example_digest_and_signature_are_the_eips_known_answer() -> None:
    """The Mail digest and cow's signature of it are the ones EIP-712 prints."""
    assert COW.address == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    assert hash_typed_data(MAIL).hex() == (
        "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    )
    signature = sign_typed_data(COW, MAIL)
    assert signature.hex() == (
        "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        "1c"
    )


def test_dependencies_are_sorted_by_name_after_the_primary_type() -> None:
    """encodeType lists the primary struct first, then every referenced struct by name."""
    assert encode_type("Batch", BATCH["types"]) == (
        "Batch(Person owner,Transfer[] transfers,uint64 nonce)"
        "Person(string name,address wallet)"
        "Transfer(Person to,uint256 amount,bytes memo)"
    )


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_digest_equals_eth_accounts(name: str) -> None:
    """Our digest of each document is the one eth-account computes."""
    doc = DOCUMENTS[name]
    assert hash_typed_data(doc) == _eth_account_digest(doc)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_our_signature_recovers_in_eth_account(name: str) -> None:
    """eth-account recovers our signature of each document to our address."""
    doc = DOCUMENTS[name]
    signature = sign_typed_data(COW, doc)
    signable = encode_typed_data(full_message=copy.deepcopy(doc))
    assert Account.recover_message(signable, signature=signature) == COW.address


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_eth_account_signature_recovers_here(name: str) -> None:
    """A signature made by eth-account recovers here to the signer's address."""
    doc = DOCUMENTS[name]
    signed = Account.sign_message(encode_typed_data(full_message=copy.deepcopy(doc)), COW_SECRET)
    assert recover_typed_data_signer(doc, bytes(signed.signature)) == COW.address


def test_changing_any_message_value_changes_the_signer_recovered() -> None:
    """A signature over one message does not carry over to an edited message."""
    signature = sign_typed_data(COW, BATCH)
    edited = copy.deepcopy(BATCH)
    edited["message"]["transfers"][1]["amount"] = "0xde0b6b3a7640001"
    assert recover_typed_data_signer(edited, signature) != COW.address


def test_recovery_refuses_a_malformed_signature() -> None:
    """A truncated signature is InvalidSignature, not a wrong address."""
    with pytest.raises(InvalidSignature):
        recover_typed_data_signer(MAIL, sign_typed_data(COW, MAIL)[:64])


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """Return an edit that puts `value` at `path` inside a document."""

    def edit(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


def _swap(path: tuple[Any, ...], first: int, second: int) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        target = doc
        for key in path:
            target = target[key]
        target[first], target[second] = target[second], target[first]

    return edit


M = ("message",)
T = ("types",)

INVALID_BATCH = [
    ("negative uint", _set((*M, "transfers", 2, "amount"), -1), "message.transfers[2].amount"),
    ("uint overflow", _set((*M, "nonce"), 2**64), "message.nonce"),
    ("float amount", _set((*M, "nonce"), 1.5), "message.nonce"),
    ("bool as int", _set((*M, "nonce"), True), "message.nonce"),
    ("signed hex", _set((*M, "nonce"), "-0x1"), "message.nonce"),
    ("empty string int", _set((*M, "nonce"), ""), "message.nonce"),
    ("missing field", _delete((*M, "owner")), "message.owner"),
    ("missing nested", _delete((*M, "transfers", 0, "memo")), "message.transfers[0].memo"),
    ("extra field", _set((*M, "extra"), 1), "message.extra"),
    (
        "bad checksum",
        _set((*M, "owner", "wallet"), "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        "message.owner.wallet",
    ),
    (
        "short address",
        _set((*M, "transfers", 1, "to", "wallet"), "0x1234"),
        "message.transfers[1].to.wallet",
    ),
    ("odd hex bytes", _set((*M, "transfers", 0, "memo"), "0xabc"), "message.transfers[0].memo"),
    ("text as bytes", _set((*M, "transfers", 0, "memo"), "hello"), "message.transfers[0].memo"),
    ("struct not object", _set((*M, "owner"), "Ada"), "message.owner"),
    ("array not list", _set((*M, "transfers"), {}), "message.transfers"),
    ("name not string", _set((*M, "owner", "name"), 5), "message.owner.name"),
    ("unknown type", _set((*T, "Transfer", 1, "type"), "uint257"), "types.Transfer[1].type"),
    ("undefined struct", _set((*T, "Batch", 0, "type"), "Owner"), "types.Batch[0].type"),
    ("bad type syntax", _set((*T, "Batch", 1, "type"), "Transfer[-1]"), "types.Batch[1].type"),
    ("zero fixed length", _set((*T, "Batch", 1, "type"), "Transfer[0]"), "types.Batch[1].type"),
    ("dollar in name", _set((*T, "Batch", 0, "name"), "own$er"), "types.Batch[0].name"),
    ("duplicate field", _set((*T, "Person", 1, "name"), "name"), "types.Person[1].name"),
    ("field extra key", _set((*T, "Person", 0, "indexed"), True), "types.Person[0]"),
    ("domain as field", _set((*T, "Person", 0, "type"), "EIP712Domain"), "types.Person[0].type"),
    ("reserved name", _set((*T, "uint7"), []), "types.uint7"),
    ("no domain type", _delete((*T, "EIP712Domain")), "types.EIP712Domain"),
    ("unknown primary", _set(("primaryType",), "Letter"), "primaryType"),
    ("domain primary", _set(("primaryType",), "EIP712Domain"), "primaryType"),
    ("missing message", _delete(("message",)), "message"),
    ("unknown doc key", _set(("extra",), {}), "extra"),
    ("undeclared domain value", _set(("domain", "extra"), 1), "domain.extra"),
    ("missing domain value", _delete(("domain", "salt")), "domain.salt"),
    ("bad domain value", _set(("domain", "chainId"), "one"), "domain.chainId"),
    ("short salt", _set(("domain", "salt"), "0x01"), "domain.salt"),
    (
        "custom domain field",
        _set((*T, "EIP712Domain", 4), {"name": "fee", "type": "uint256"}),
        "types.EIP712Domain[4].name",
    ),
    (
        "domain field type",
        _set((*T, "EIP712Domain", 2, "type"), "uint64"),
        "types.EIP712Domain[2].type",
    ),
    ("domain out of order", _swap((*T, "EIP712Domain"), 0, 1), "types.EIP712Domain[1].name"),
]


@pytest.mark.parametrize(
    ("edit", "field"),
    [pytest.param(edit, field, id=case) for case, edit, field in INVALID_BATCH],
)
def test_invalid_documents_are_rejected_naming_the_field(
    edit: Callable[[dict[str, Any]], None], field: str
) -> None:
    """Each malformed part of a document is InvalidInput whose field is the part's path."""
    doc = copy.deepcopy(BATCH)
    edit(doc)
    with pytest.raises(InvalidInput) as raised:
        validate_document(doc)
    assert raised.value.field == field
    assert field in str(raised.value)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set((*M, "small"), 128), "message.small"),
        (_set((*M, "small"), "-129"), "message.small"),
        (_set((*M, "least"), -(2**255) - 1), "message.least"),
        (_set((*M, "id"), "0x" + "01" * 31), "message.id"),
        (_set((*M, "tiny"), "0x"), "message.tiny"),
        (_set((*M, "triple"), [1, 2]), "message.triple"),
        (_set((*M, "flags", 1), "false"), "message.flags[1]"),
        (_set((*M, "flags", 0), 1), "message.flags[0]"),
        (_set((*M, "grid", 2, 1), 2**63), "message.grid[2][1]"),
        (_set((*M, "pairs", 1), ["0x" + "11" * 32]), "message.pairs[1]"),
        (_set((*M, "tags", 0), None), "message.tags[0]"),
        (_set((*M, "empty"), ["0x0"] * (array_length_max + 1)), "message.empty"),
    ],
)
def test_out_of_range_and_wrong_shape_values_are_rejected(
    edit: Callable[[dict[str, Any]], None], field: str
) -> None:
    """Integer ranges, bytesN lengths, fixed array lengths and bools are enforced."""
    doc = copy.deepcopy(NUMBERS)
    edit(doc)
    with pytest.raises(InvalidInput) as raised:
        hash_typed_data(doc)
    assert raised.value.field == field


def _family_chain(depth: int) -> dict[str, Any]:
    """A Family whose root has a single line of descendants `depth` structs deep."""
    person: dict[str, Any] = {"name": "leaf", "children": []}
    for _ in range(depth - 2):
        person = {"name": "parent", "children": [person]}
    doc = copy.deepcopy(FAMILY)
    doc["message"]["root"] = person
    return doc


def test_struct_depth_of_eight_is_accepted_and_nine_is_refused() -> None:
    """Structs nest at most eight deep, counting the message itself as the first level."""
    validate_document(_family_chain(8))
    with pytest.raises(InvalidInput, match="deeper than 8") as raised:
        validate_document(_family_chain(9))
    assert raised.value.field is not None
    assert raised.value.field.startswith("message.root.children[0]")


def test_more_than_eight_array_dimensions_are_refused() -> None:
    """A type with nine array dimensions is refused where it is declared."""
    doc = copy.deepcopy(NUMBERS)
    doc["types"]["Numbers"][0]["type"] = "int256" + "[]" * 9
    with pytest.raises(InvalidInput) as raised:
        validate_document(doc)
    assert raised.value.field == "types.Numbers[0].type"


def test_document_from_json_reads_a_document() -> None:
    """A document written as JSON reads back to the same digest."""
    assert hash_typed_data(document_from_json(json.dumps(BATCH))) == hash_typed_data(BATCH)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"{" + b" " * document_json_bytes_max + b"}", "larger than"),
        (b'{"types": {}, "types": {}}', "duplicate key"),
        (b'{"x": NaN}', "not a JSON value"),
        (b"[" * 32_768 + b"]" * 32_768, "nests deeper than"),
        (b'{"a":' * 74 + b"1" + b"}" * 74, "nests deeper than"),
        (b"[1, 2]", "JSON object"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_document_from_json_refuses_oversized_ambiguous_or_malformed_text(
    text: bytes, problem: str
) -> None:
    """Oversized, duplicate-key, non-standard and malformed JSON are InvalidInput."""
    with pytest.raises(InvalidInput, match=problem):
        document_from_json(text)


# Random documents: a tree of structs with random names, fields, types and values, in
# every value form both implementations read, compared digest for digest with eth-account.

_identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,7}", fullmatch=True)
_struct_names = _identifiers.filter(
    lambda name: (
        name != "EIP712Domain"
        and not any(
            name.startswith(p) for p in ("uint", "int", "bytes", "bool", "address", "string")
        )
    )
)
_atomic_types = st.one_of(
    st.sampled_from(["bool", "address", "string", "bytes"]),
    st.integers(1, 32).map(lambda size: f"uint{size * 8}"),
    st.integers(1, 32).map(lambda size: f"int{size * 8}"),
    st.integers(1, 32).map(lambda size: f"bytes{size}"),
)
_dimensions = st.lists(st.one_of(st.just(""), st.integers(1, 3).map(str)), max_size=2)


def _with_dimensions(base: str, dims: list[str]) -> str:
    return base + "".join(f"[{dim}]" for dim in dims)


@st.composite
def _integer_values(draw: st.DrawFn, type_: str) -> Any:
    bits = int(type_.removeprefix("u").removeprefix("int"))
    if type_.startswith("u"):
        number = draw(st.integers(0, 2**bits - 1))
    else:
        number = draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    forms = [number, str(number)] + ([hex(number)] if number >= 0 else [])
    return draw(st.sampled_from(forms))


@st.composite
def _values(draw: st.DrawFn, type_: str, structs: dict[str, list[dict[str, str]]]) -> Any:
    if type_.endswith("]"):
        element, _, dim = type_[:-1].rpartition("[")
        length = int(dim) if dim else draw(st.integers(0, 3))
        return [draw(_values(element, structs)) for _ in range(length)]
    if type_ in structs:
        return {f["name"]: draw(_values(f["type"], structs)) for f in structs[type_]}
    if type_ == "bool":
        return draw(st.booleans())
    if type_ == "address":
        raw = draw(st.binary(min_size=20, max_size=20))
        return draw(st.sampled_from([to_checksum_address(raw), "0x" + raw.hex()]))
    if type_ == "string":
        return draw(st.text(max_size=12))
    if type_ == "bytes":
        # eth-account reads "0x" as the text "0x" rather than as no bytes, so the empty
        # value is passed as Python bytes, which both sides read the same way.
        data = draw(st.binary(max_size=40))
        return "0x" + data.hex() if data else b""
    if type_.startswith("bytes"):
        data = draw(st.binary(min_size=int(type_[5:]), max_size=int(type_[5:])))
        return "0x" + draw(st.sampled_from([data.hex(), data.hex().upper()]))
    return draw(_integer_values(type_))


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_struct_names, min_size=1, max_size=4, unique=True))
    structs: dict[str, list[dict[str, str]]] = {}
    # Struct i may only refer to structs after it, so there is no cycle, and each later
    # struct is referred to by an earlier one, so names[0] is the only root: eth-account
    # derives the primary type as that root rather than reading primaryType.
    for name in names:
        field_names = draw(st.lists(_identifiers, min_size=1, max_size=5, unique=True))
        structs[name] = [
            {"name": field, "type": _with_dimensions(draw(_atomic_types), draw(_dimensions))}
            for field in field_names
        ]
    for index in range(1, len(names)):
        parent = names[draw(st.integers(0, index - 1))]
        taken = frozenset(f["name"] for f in structs[parent])
        field = draw(_identifiers.filter(lambda name, taken=taken: name not in taken))
        child_type = _with_dimensions(names[index], draw(_dimensions))
        structs[parent].insert(
            draw(st.integers(0, len(structs[parent]))), {"name": field, "type": child_type}
        )
    domain_names = [name for name, _ in DOMAIN_FIELDS if draw(st.booleans())] or ["chainId"]
    domain_types = {"EIP712Domain": _domain_type(*domain_names)}
    domain = {
        field["name"]: draw(_values(field["type"], domain_types))
        for field in domain_types["EIP712Domain"]
    }
    return {
        "types": {**domain_types, **structs},
        "primaryType": names[0],
        "domain": domain,
        "message": draw(_values(names[0], structs)),
    }


@settings(
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_documents())
def test_random_documents_hash_as_in_eth_account(doc: dict[str, Any]) -> None:
    """For random struct trees, types and value forms, our digest equals eth-account's."""
    assert hash_typed_data(doc) == _eth_account_digest(doc)
