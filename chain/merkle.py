"""OpenZeppelin's `StandardMerkleTree` (@openzeppelin/merkle-tree 1.0.8), byte for byte.

The settlement contract checks claims with OpenZeppelin's `MerkleProof`, so the trees the
settler builds must be exactly the ones the JS library builds, and a dump written by one
must load in the other. The rules, as in the library:

- A leaf is `keccak256(keccak256(abi.encode(leaf_encoding, value)))`. Hashing twice makes
  a leaf's preimage 32 bytes, never 64, so no leaf can pass for an interior node.
- An interior node is `keccak256(min(a, b) ‖ max(a, b))`: the pair is sorted, so a proof
  is a plain list of siblings with no left/right flags.
- The leaves are sorted by hash (unless `sort_leaves=False`) and laid out as a complete
  binary tree in one array: node `i` has children `2i + 1` and `2i + 2`, the root is node
  0, and leaf `k` of the sorted order is node `len(tree) - 1 - k`.
- `values` keep the caller's order; a value's proof is found by its index in that order
  or by the value itself (through its leaf hash).

Where this module is stricter than the JS library, it is on purpose: a duplicated value is
refused (the library accepts it; in a claims tree it can only mean two claims for one
account), values are read strictly per ABI type and kept in one canonical Python form
(ints, EIP-55 addresses, `bytes`, tuples), and `load` checks that every leaf of the dumped
tree belongs to exactly one value. For every tree the library accepts that has no
duplicated value, roots, proofs, multiproofs and dumps are identical; a dump's values are
written in a JSON-safe form the library reads back (integers as decimal strings, bytes as
0x-hex), so a dump of ints differs in text, not in meaning, from one the library writes
from JS numbers.

Hashes are `bytes` inside and lowercase `0x`-hex outside, as in the JS library.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import ABITypeError, EncodingError, ParseError
from eth_abi.grammar import ABIType, BasicType, TupleType, normalize, parse
from sha3 import keccak_256

from chain.errors import ChainError
from protocol.errors import InvalidInput
from protocol.keys import parse_address

DUMP_FORMAT = "standard-v1"
HASH_BYTES = 32
WORD_BYTES = 32
# A tree is held as Python objects, about 450 bytes a leaf for the settlement's (account,
# token, amount) leaves; 2**22 leaves is about 2 GB, beyond which a caller should split
# its trees rather than swap.
leaves_max = 1 << 22
# In the array layout a tree of n leaves is floor(log2(2n - 1)) deep, so no tree of fewer
# than 2**64 leaves has a longer proof; a longer one proves nothing and is not hashed.
proof_hashes_max = 64
leaf_encoding_types_max = 64

# Types whose values `_normalize_item` knows how to read; ABI's fixed-point and function
# types are left out (neither the settlement nor the JS library's usual callers use them).
_ELEMENTARY_BASES = frozenset({"address", "bool", "bytes", "int", "string", "uint"})
# Numbers as the JS library reads them from strings; written out so that Python's extras
# (underscores, spaces, non-ASCII digits) are refused rather than read differently.
_DECIMAL_NUMBER = re.compile(r"-?[0-9]+")
_HEX_NUMBER = re.compile(r"-?0x[0-9a-fA-F]+")
_HEX_BYTES = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_HEX_HASH = re.compile(rf"0x[0-9a-fA-F]{{{2 * HASH_BYTES}}}")


class MerkleError(ChainError, ValueError):
    """Root of every error `chain.merkle` raises on purpose: all are bad input (a value, an
    encoding, a proof or a dump), so all are also `ValueError`s."""


class InvalidLeafEncoding(MerkleError):
    """A leaf encoding is not a list of ABI types this module can encode."""

    def __init__(self, message: str, *, abi_type: str | None = None) -> None:
        super().__init__(message)
        self.abi_type = abi_type


class InvalidLeafValue(MerkleError):
    """A value does not fit the leaf encoding: wrong arity, wrong kind, out of range."""

    def __init__(
        self, message: str, *, value_index: int | None = None, position: int | None = None
    ) -> None:
        super().__init__(message)
        self.value_index = value_index
        self.position = position


class EmptyTree(MerkleError):
    """A tree needs at least one value."""


class TooManyLeaves(MerkleError):
    """A tree would have more than `leaves_max` leaves."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} leaves is more than the {leaves_max} a tree may hold")
        self.count = count


class DuplicateLeaf(MerkleError):
    """Two values of one tree encode to the same leaf."""

    def __init__(self, first: int, second: int) -> None:
        super().__init__(f"values {first} and {second} are the same leaf")
        self.first = first
        self.second = second


class LeafNotInTree(MerkleError, LookupError):
    """A value asked for by content is not one of the tree's values."""


class LeafIndexOutOfRange(MerkleError, IndexError):
    """A value index is not in `range(len(values))`."""

    def __init__(self, index: int, count: int) -> None:
        super().__init__(f"value index {index} is out of range for a tree of {count} values")
        self.index = index
        self.count = count


class MalformedProof(MerkleError):
    """A proof is not made of 32-byte hashes, or a multiproof's parts do not fit together."""


class InvalidDump(MerkleError):
    """A dump is not a valid `standard-v1` tree: unknown format, bad shape, wrong hashes."""


# --- Hashing -----------------------------------------------------------------------------


def _keccak(data: bytes) -> bytes:
    digest: bytes = keccak_256(data).digest()
    return digest


def _node_hash(a: bytes, b: bytes) -> bytes:
    return _keccak(a + b if a < b else b + a)


def _process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    node = leaf
    for sibling in proof:
        node = _node_hash(node, sibling)
    return node


def _hex(node: bytes) -> str:
    return "0x" + node.hex()


def _read_hash(value: object, what: str) -> bytes:
    """Read a 0x-hex 32-byte hash (any case), raising MalformedProof naming `what`."""
    if isinstance(value, str) and _HEX_HASH.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise MalformedProof(f"{what} must be 0x followed by 64 hex digits, got {value!r}")


def _read_proof(proof: Sequence[str]) -> list[bytes] | None:
    """The proof's hashes, or None when it is too long to come from any tree."""
    if isinstance(proof, str | bytes):
        raise MalformedProof("a proof is a list of 0x-hex hashes, not one string")
    if len(proof) > proof_hashes_max:
        return None
    return [_read_hash(node, f"proof[{i}]") for i, node in enumerate(proof)]


# --- Reading and encoding values ---------------------------------------------------------


def _parse_type(text: object) -> ABIType:
    if not isinstance(text, str):
        raise InvalidLeafEncoding(f"an ABI type is a string, got {text!r}")
    try:
        # eth_abi's grammar module is untyped; normalize maps the aliases (uint, int, byte,
        # function) to their sized types, as the JS library reads them.
        canonical: str = normalize(text)  # type: ignore[no-untyped-call]
        abi_type: ABIType = parse(canonical)
        abi_type.validate()  # type: ignore[no-untyped-call]
    except (ParseError, ABITypeError) as error:
        raise InvalidLeafEncoding(f"not an ABI type: {text!r} ({error})", abi_type=text) from error
    _check_supported(abi_type, text)
    return abi_type


def _check_supported(abi_type: ABIType, text: str) -> None:
    if isinstance(abi_type, TupleType):
        for component in abi_type.components:
            _check_supported(component, text)
    elif isinstance(abi_type, BasicType) and abi_type.base not in _ELEMENTARY_BASES:
        raise InvalidLeafEncoding(
            f"unsupported ABI type {abi_type.base!r} in {text!r}: leaves take "
            f"{', '.join(sorted(_ELEMENTARY_BASES))}, their arrays and tuples",
            abi_type=text,
        )


def _read_int(value: object, abi_type: BasicType, where: str) -> int:
    # The JS library takes numbers as bigints, decimal strings or 0x-hex strings; JSON has
    # no bigints, so dumps carry large numbers as strings and both forms are read here.
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _HEX_NUMBER.fullmatch(value):
        number = int(value, 16)
    elif isinstance(value, str) and _DECIMAL_NUMBER.fullmatch(value):
        number = int(value, 10)
    else:
        raise InvalidLeafValue(f"{where}: expected an integer, got {value!r}")
    bits = abi_type.sub
    assert isinstance(bits, int), abi_type
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if abi_type.base == "int" else (0, 1 << bits)
    if not low <= number < high:
        raise InvalidLeafValue(f"{where}: {number} is out of range for {abi_type}")
    return number


def _read_bytes(value: object, size: int | None, where: str) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str) and _HEX_BYTES.fullmatch(value):
        data = bytes.fromhex(value[2:])
    else:
        raise InvalidLeafValue(f"{where}: expected bytes or 0x-hex, got {value!r}")
    if size is not None and len(data) != size:
        raise InvalidLeafValue(f"{where}: expected {size} bytes, got {len(data)}")
    return data


def _normalize_item(abi_type: ABIType, value: object, where: str) -> Any:
    """Read one value of `abi_type` strictly into its canonical Python form."""
    if abi_type.is_array:
        if not isinstance(value, list | tuple):
            raise InvalidLeafValue(f"{where}: expected a list for {abi_type}, got {value!r}")
        dimension = abi_type.arrlist[-1]
        if dimension and len(value) != dimension[0]:
            raise InvalidLeafValue(
                f"{where}: {abi_type} takes {dimension[0]} items, got {len(value)}"
            )
        item_type = abi_type.item_type
        return tuple(
            _normalize_item(item_type, item, f"{where}[{i}]") for i, item in enumerate(value)
        )
    if isinstance(abi_type, TupleType):
        components = abi_type.components
        if not isinstance(value, list | tuple) or len(value) != len(components):
            raise InvalidLeafValue(
                f"{where}: expected {len(components)} items for {abi_type}, got {value!r}"
            )
        return tuple(
            _normalize_item(component, item, f"{where}[{i}]")
            for i, (component, item) in enumerate(zip(components, value, strict=True))
        )
    assert isinstance(abi_type, BasicType)
    base = abi_type.base
    if base in ("uint", "int"):
        return _read_int(value, abi_type, where)
    if base == "address":
        try:
            return parse_address(value, where)
        except InvalidInput as error:
            raise InvalidLeafValue(str(error)) from error
    if base == "bool":
        if not isinstance(value, bool):
            raise InvalidLeafValue(f"{where}: expected true or false, got {value!r}")
        return value
    if base == "bytes":
        return _read_bytes(value, abi_type.sub, where)
    assert base == "string", base
    if not isinstance(value, str):
        raise InvalidLeafValue(f"{where}: expected a string, got {value!r}")
    return value


def _static_word(abi_type: ABIType) -> Callable[[Any], bytes] | None:
    """The one-word ABI encoder of a normalized value of a static elementary type, or None.

    abi.encode of static elementary types is the concatenation of one 32-byte word per
    value, which is about ten times faster to write here than through eth_abi; the
    tests check these words against eth_abi's on random values.
    """
    if not isinstance(abi_type, BasicType) or abi_type.arrlist:
        return None
    base, sub = abi_type.base, abi_type.sub
    if base == "uint":
        return lambda value: int.to_bytes(value, WORD_BYTES, "big")
    if base == "int":
        return lambda value: int.to_bytes(value, WORD_BYTES, "big", signed=True)
    if base == "address":
        return lambda value: bytes(12) + bytes.fromhex(value[2:])
    if base == "bool":
        return lambda value: bytes(31) + (b"\x01" if value else b"\x00")
    if base == "bytes" and sub is not None:
        return lambda value: value + bytes(WORD_BYTES - sub)
    return None


@dataclass(frozen=True, slots=True)
class _Codec:
    """How the values of one leaf encoding are read, encoded and hashed."""

    encoding: tuple[str, ...]
    types: tuple[ABIType, ...]
    type_strings: tuple[str, ...]
    words: tuple[Callable[[Any], bytes], ...] | None

    def normalize(self, value: object, value_index: int | None = None) -> tuple[Any, ...]:
        label = "value" if value_index is None else f"value {value_index}"
        if not isinstance(value, list | tuple) or len(value) != len(self.types):
            raise InvalidLeafValue(
                f"{label}: a leaf value is a list of {len(self.types)} items "
                f"({', '.join(self.encoding)}), got {value!r}",
                value_index=value_index,
            )
        items = []
        for position, (abi_type, item) in enumerate(zip(self.types, value, strict=True)):
            try:
                items.append(_normalize_item(abi_type, item, f"{label}, item {position}"))
            except InvalidLeafValue as error:
                error.value_index, error.position = value_index, position
                raise
        return tuple(items)

    def encode(self, value: tuple[Any, ...]) -> bytes:
        if self.words is not None:
            return b"".join(word(item) for word, item in zip(self.words, value, strict=True))
        try:
            return abi_encode(self.type_strings, value)
        except EncodingError as error:  # A normalized value always encodes; say so loudly.
            raise AssertionError(f"normalized value {value!r} failed to encode") from error

    def hash(self, value: tuple[Any, ...]) -> bytes:
        """The standard leaf hash of a normalized value."""
        return _keccak(_keccak(self.encode(value)))


@functools.lru_cache(maxsize=64)
def _codec_for(encoding: tuple[str, ...]) -> _Codec:
    if not encoding:
        raise InvalidLeafEncoding("a leaf encoding names at least one ABI type")
    if len(encoding) > leaf_encoding_types_max:
        raise InvalidLeafEncoding(
            f"a leaf encoding names at most {leaf_encoding_types_max} types, got {len(encoding)}"
        )
    types = tuple(_parse_type(text) for text in encoding)
    words = tuple(_static_word(abi_type) for abi_type in types)
    static = all(word is not None for word in words)
    type_strings = tuple(t.to_type_str() for t in types)  # type: ignore[no-untyped-call]
    return _Codec(
        encoding, types, type_strings, tuple(w for w in words if w is not None) if static else None
    )


def _read_encoding(leaf_encoding: object) -> _Codec:
    if isinstance(leaf_encoding, str | bytes) or not isinstance(leaf_encoding, Sequence):
        raise InvalidLeafEncoding(f"a leaf encoding is a list of ABI types, got {leaf_encoding!r}")
    for text in leaf_encoding:
        if not isinstance(text, str):
            raise InvalidLeafEncoding(f"an ABI type is a string, got {text!r}")
    return _codec_for(tuple(leaf_encoding))


def _render(item: Any) -> Any:
    """A normalized value in the JSON-safe form the JS library reads back."""
    if isinstance(item, tuple):
        return [_render(part) for part in item]
    if isinstance(item, bytes):
        return _hex(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    return item


# --- The tree ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MultiProof:
    """A proof for several values at once, as `MerkleProof.multiProofVerify` takes it.

    `leaves` are the proven values in the order the proof consumes them (which is not the
    order they were asked for), `proof` the sibling hashes, `proof_flags` which step takes
    its second operand from the leaves and computed nodes (true) or from `proof` (false).
    """

    leaves: tuple[tuple[Any, ...], ...]
    proof: tuple[str, ...]
    proof_flags: tuple[bool, ...]

    def to_json(self) -> dict[str, Any]:
        """The JS library's multiproof object: `{leaves, proof, proofFlags}`."""
        return {
            "leaves": [_render(value) for value in self.leaves],
            "proof": list(self.proof),
            "proofFlags": list(self.proof_flags),
        }


class StandardMerkleTree:
    """A Merkle tree over ABI-encoded values, compatible with OpenZeppelin's `MerkleProof`.

    Build one with `of(values, leaf_encoding)` or `load(dump)`; it does not change after.
    """

    __slots__ = ("_codec", "_lookup", "_tree", "_tree_indices", "leaf_encoding", "root", "values")

    def __init__(
        self,
        codec: _Codec,
        tree: list[bytes],
        values: tuple[tuple[Any, ...], ...],
        tree_indices: list[int],
        lookup: dict[bytes, int],
    ) -> None:
        # Private: `of` and `load` check everything this relies on before calling it.
        self._codec = codec
        self._tree = tree
        self._tree_indices = tree_indices
        self._lookup = lookup
        self.leaf_encoding: tuple[str, ...] = codec.encoding
        self.values: tuple[tuple[Any, ...], ...] = values
        self.root: str = _hex(tree[0])

    @classmethod
    def of(
        cls,
        values: Sequence[Sequence[Any]],
        leaf_encoding: Sequence[str],
        *,
        sort_leaves: bool = True,
    ) -> StandardMerkleTree:
        """Build the tree of `values`, each a list of items of the `leaf_encoding` types."""
        codec = _read_encoding(leaf_encoding)
        count = len(values)
        if count == 0:
            raise EmptyTree("a Merkle tree needs at least one value")
        if count > leaves_max:
            raise TooManyLeaves(count)
        normalized = tuple(codec.normalize(value, index) for index, value in enumerate(values))
        hashes = [codec.hash(value) for value in normalized]
        lookup = _lookup_of(hashes)
        order = sorted(range(count), key=hashes.__getitem__) if sort_leaves else range(count)
        size = 2 * count - 1
        tree: list[bytes] = [b""] * size
        tree_indices = [0] * count
        for position, value_index in enumerate(order):
            tree_indices[value_index] = size - 1 - position
            tree[size - 1 - position] = hashes[value_index]
        for i in range(size - 1 - count, -1, -1):
            tree[i] = _node_hash(tree[2 * i + 1], tree[2 * i + 2])
        return cls(codec, tree, normalized, tree_indices, lookup)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StandardMerkleTree:
        """Read a `standard-v1` dump (ours or the JS library's) and check every hash in it."""
        if not isinstance(data, Mapping):
            raise InvalidDump(f"a dump is a JSON object, got {type(data).__name__}")
        if data.get("format") != DUMP_FORMAT:
            raise InvalidDump(f"unknown dump format {data.get('format')!r}, expected {DUMP_FORMAT}")
        if "leafEncoding" not in data:
            raise InvalidDump("the dump has no leafEncoding")
        codec = _read_encoding(data["leafEncoding"])
        raw_tree, raw_values = data.get("tree"), data.get("values")
        if not isinstance(raw_tree, list) or not isinstance(raw_values, list):
            raise InvalidDump("a dump's tree and values are lists")
        count = len(raw_values)
        if count == 0:
            raise EmptyTree("the dump has no values")
        if count > leaves_max:
            raise TooManyLeaves(count)
        size = len(raw_tree)
        if size != 2 * count - 1:
            raise InvalidDump(f"a tree of {count} values has {2 * count - 1} nodes, not {size}")
        try:
            tree = [_read_hash(node, f"tree[{i}]") for i, node in enumerate(raw_tree)]
        except MalformedProof as error:
            raise InvalidDump(str(error)) from error
        values, tree_indices = [], []
        for index, entry in enumerate(raw_values):
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise InvalidDump(f"values[{index}] is not an object with a value")
            tree_index = entry.get("treeIndex")
            # Leaves occupy the last `count` nodes; an index elsewhere names an inner node.
            if (
                not isinstance(tree_index, int)
                or isinstance(tree_index, bool)
                or not count - 1 <= tree_index < size
            ):
                raise InvalidDump(
                    f"values[{index}].treeIndex must be a leaf index in "
                    f"[{count - 1}, {size - 1}], got {tree_index!r}"
                )
            value = codec.normalize(entry["value"], index)
            if codec.hash(value) != tree[tree_index]:
                raise InvalidDump(f"values[{index}] does not hash to tree[{tree_index}]")
            values.append(value)
            tree_indices.append(tree_index)
        # Distinct leaves (checked here) sit at distinct tree indices, so the `count` values
        # cover the `count` leaves one to one: no leaf of the tree is left unexplained.
        lookup = _lookup_of([tree[i] for i in tree_indices])
        for i in range(size - 1 - count, -1, -1):
            if tree[i] != _node_hash(tree[2 * i + 1], tree[2 * i + 2]):
                raise InvalidDump(f"tree[{i}] is not the hash of its children")
        return cls(codec, tree, tuple(values), tree_indices, lookup)

    def dump(self) -> dict[str, Any]:
        """The JS library's `standard-v1` dump: JSON-safe, loadable by `load` and by JS."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self.leaf_encoding),
            "tree": [_hex(node) for node in self._tree],
            "values": [
                {"value": _render(value), "treeIndex": tree_index}
                for value, tree_index in zip(self.values, self._tree_indices, strict=True)
            ],
        }

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        encoding = ",".join(self.leaf_encoding)
        return f"<StandardMerkleTree [{encoding}] of {len(self)} values, root {self.root}>"

    def leaf_hash(self, value: Sequence[Any]) -> str:
        """The leaf hash of `value` under this tree's encoding (whether or not in the tree)."""
        return _hex(self._codec.hash(self._codec.normalize(value)))

    def get_proof(self, i_or_value: int | Sequence[Any]) -> list[str]:
        """The sibling hashes from a value's leaf up to the root (the root not included)."""
        value_index = self._value_index(i_or_value)
        node = self._tree_indices[value_index]
        leaf = self._tree[node]
        proof = []
        while node > 0:
            sibling = node - 1 if node % 2 == 0 else node + 1
            proof.append(self._tree[sibling])
            node = (node - 1) // 2
        # The JS library checks every proof it hands out; so do we, for a few hashes.
        if _process_proof(leaf, proof) != self._tree[0]:
            raise AssertionError(f"the proof of value {value_index} does not reach the root")
        return [_hex(node) for node in proof]

    def get_multi_proof(self, items: Sequence[int | Sequence[Any]]) -> MultiProof:
        """One proof for several values (each by index or by content), as the JS library."""
        indices = [self._tree_indices[self._value_index(item)] for item in items]
        indices.sort(reverse=True)
        for a, b in itertools.pairwise(indices):
            if a == b:
                raise InvalidLeafValue("cannot prove one value twice in a multiproof")
        stack = deque(indices)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            node = stack.popleft()
            sibling = node - 1 if node % 2 == 0 else node + 1
            if stack and stack[0] == sibling:
                flags.append(True)
                stack.popleft()
            else:
                flags.append(False)
                proof.append(self._tree[sibling])
            stack.append((node - 1) // 2)
        if not indices:
            proof.append(self._tree[0])
        leaves = [self._tree[i] for i in indices]
        if _process_multi_proof(leaves, proof, flags) != self._tree[0]:
            raise AssertionError("a multiproof this tree made does not reach its root")
        return MultiProof(
            leaves=tuple(self.values[self._lookup[leaf]] for leaf in leaves),
            proof=tuple(_hex(node) for node in proof),
            proof_flags=tuple(flags),
        )

    def verify(self, i_or_value: int | Sequence[Any], proof: Sequence[str]) -> bool:
        """Whether `proof` takes the value (one of ours by index, or any value) to our root."""
        if isinstance(i_or_value, int) and not isinstance(i_or_value, bool):
            leaf = self._tree[self._tree_indices[self._check_index(i_or_value)]]
        else:
            leaf = self._codec.hash(self._codec.normalize(i_or_value))
        hashes = _read_proof(proof)
        return hashes is not None and _process_proof(leaf, hashes) == self._tree[0]

    def verify_multi(self, multi_proof: MultiProof) -> bool:
        """Whether `multi_proof` proves all its leaves against this tree's root."""
        return StandardMerkleTree.verify_multi_proof(self.root, self.leaf_encoding, multi_proof)

    @staticmethod
    def verify_proof(
        root: str, leaf_encoding: Sequence[str], value: Sequence[Any], proof: Sequence[str]
    ) -> bool:
        """Whether `proof` takes `value` to `root`, as `MerkleProof.verify` would on-chain."""
        codec = _read_encoding(leaf_encoding)
        expected = _read_hash(root, "root")
        hashes = _read_proof(proof)
        leaf = codec.hash(codec.normalize(value))
        return hashes is not None and _process_proof(leaf, hashes) == expected

    @staticmethod
    def verify_multi_proof(
        root: str, leaf_encoding: Sequence[str], multi_proof: MultiProof
    ) -> bool:
        """Whether `multi_proof` proves all its leaves against `root`."""
        codec = _read_encoding(leaf_encoding)
        expected = _read_hash(root, "root")
        leaves = [codec.hash(codec.normalize(value)) for value in multi_proof.leaves]
        hashes = _read_proof(multi_proof.proof)
        if hashes is None:
            return False
        return _process_multi_proof(leaves, hashes, list(multi_proof.proof_flags)) == expected

    def _check_index(self, index: int) -> int:
        # Negative indices are refused rather than counted from the end: a claim for value
        # -1 is a bug, not a request for the last account.
        if not 0 <= index < len(self.values):
            raise LeafIndexOutOfRange(index, len(self.values))
        return index

    def _value_index(self, i_or_value: int | Sequence[Any]) -> int:
        if isinstance(i_or_value, int) and not isinstance(i_or_value, bool):
            return self._check_index(i_or_value)
        leaf = self._codec.hash(self._codec.normalize(i_or_value))
        value_index = self._lookup.get(leaf)
        if value_index is None:
            raise LeafNotInTree(f"{i_or_value!r} is not a value of this tree")
        return value_index


def _lookup_of(hashes: Sequence[bytes]) -> dict[bytes, int]:
    """Leaf hash to value index, refusing two values with one leaf."""
    lookup: dict[bytes, int] = {}
    for value_index, leaf in enumerate(hashes):
        first = lookup.setdefault(leaf, value_index)
        if first != value_index:
            raise DuplicateLeaf(first, value_index)
    return lookup


def _process_multi_proof(leaves: list[bytes], proof: list[bytes], flags: list[bool]) -> bytes:
    """The root a multiproof computes, as `MerkleProof.processMultiProof` does on-chain."""
    if len(proof) < flags.count(False):
        raise MalformedProof("a multiproof has fewer proof hashes than false flags")
    if len(leaves) + len(proof) != len(flags) + 1:
        raise MalformedProof("a multiproof's leaves, proof and flags do not fit together")
    stack = deque(leaves)
    siblings = deque(proof)
    for flag in flags:
        if not stack or (flag and len(stack) < 2):
            raise MalformedProof("a multiproof's flags ask for more leaves than there are")
        a = stack.popleft()
        b = stack.popleft() if flag else siblings.popleft()
        stack.append(_node_hash(a, b))
    if len(stack) + len(siblings) != 1:
        raise MalformedProof("a multiproof does not end with exactly one root")
    return stack.pop() if stack else siblings.popleft()
