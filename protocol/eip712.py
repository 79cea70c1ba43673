"""EIP-712 typed structured data: our own encoder, hashes and signatures.

Commands are EIP-712 documents so that any Ethereum wallet can sign them
(`eth_signTypedData_v4`). The protocol owns this encoding rather than borrowing a
wallet library's: a signature's meaning must not change with a dependency upgrade, and
the protocol package imports nothing that is not the domain. The tests cross-check every
rule here with `eth-account`. `specs/signing_eip712.md` is the normative text.

A document has exactly the `eth_signTypedData_v4` JSON shape::

    {"types": {"EIP712Domain": [...], "Mail": [...]}, "primaryType": "Mail",
     "domain": {...}, "message": {...}}

Everything is checked strictly while it is encoded, and every error is an InvalidInput
whose `field` is the path of the offending part, such as `message.transfers[2].amount`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from protocol.errors import InvalidInput
from protocol.keys import PrivateKey, address_to_bytes, keccak256, recover_address

# The JSON shape of `types`: struct name -> ordered list of {"name": ..., "type": ...}.
Types = Mapping[str, Sequence[Mapping[str, str]]]
# A whole document as parsed from JSON; its parts are checked as they are read.
Document = Mapping[str, Any]

# Limits, so that a hostile document costs bounded memory, time and stack.
document_json_bytes_max = 64 * 1024
struct_depth_max = 8
array_length_max = 1024
array_dimensions_max = 8
struct_types_max = 64
struct_fields_max = 64
identifier_chars_max = 64
dynamic_value_bytes_max = 64 * 1024
# The deepest JSON a valid document can have: the document object, then per struct level
# one object and up to `array_dimensions_max` arrays. Deeper text is refused before it is
# parsed, because Python's JSON parser recurses once per level and 64 KiB of brackets
# would reach the interpreter's recursion limit (or, with a raised limit, the C stack).
json_nesting_max = 1 + struct_depth_max * (1 + array_dimensions_max)

DOMAIN_TYPE = "EIP712Domain"

# The fields an EIP712Domain may have, with their types, in the only order allowed.
# EIP-712 lists them in this order, and eth-account and ethers rebuild the domain type
# from the domain's keys in this order: a document declaring another order would be
# signed over different digests by different wallets, so it is refused.
DOMAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)

_DOCUMENT_KEYS = frozenset({"types", "primaryType", "domain", "message"})
# No "$", though Solidity allows it: MetaMask finds a field's struct type with /^\w*/,
# which stops at "$", so a struct named with one would encode differently there.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A struct named like an atomic type (even a nonexistent one, like uint7) would make
# type strings ambiguous to a human reading the document in a wallet.
_RESERVED_NAME = re.compile(r"(u?int|bytes)[0-9]*|bool|address|string")
_TYPE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[(?:0|[1-9][0-9]*)?\])*)")
_DIMENSION = re.compile(r"\[([0-9]*)\]")
_SIZED = re.compile(r"(uint|int|bytes)([1-9][0-9]*)")
# 2**256 has 78 decimal digits; the bound keeps int() on hostile strings cheap.
_DECIMAL = re.compile(r"-?[0-9]{1,78}")
_HEX_INT = re.compile(r"0x[0-9a-fA-F]{1,64}")
_HEX_BYTES = re.compile(r"0x(?:[0-9a-fA-F]{2})*")

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_NOT_BRACKET = re.compile(r"[^\[\]{}]+")

_WORD_BYTES = 32
_EIP191_TYPED_DATA_PREFIX = b"\x19\x01"


@dataclass(frozen=True, slots=True)
class _Atomic:
    """A 32-byte value type (bool, address, uintN, intN, bytesN) or string/bytes."""

    kind: str  # "bool", "address", "uint", "int", "bytesN", "string" or "bytes"
    bits: int = 0  # uintN/intN: N; bytesN: the byte length N


@dataclass(frozen=True, slots=True)
class _Struct:
    name: str


@dataclass(frozen=True, slots=True)
class _Array:
    element: _FieldType
    length: int | None  # None for a dynamic array T[]


_FieldType = _Atomic | _Struct | _Array


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    declared: str  # the type string as written, which is what encodeType hashes
    parsed: _FieldType


def _atomic(base: str) -> _Atomic | None:
    """Return the atomic type named `base`, or None if it is not an atomic type name."""
    if base in ("bool", "address", "string", "bytes"):
        return _Atomic(base)
    sized = _SIZED.fullmatch(base)
    if sized is None:
        return None
    prefix, size = sized.group(1), int(sized.group(2))
    if prefix == "bytes":
        return _Atomic("bytesN", size) if size <= _WORD_BYTES else None
    return _Atomic(prefix, size) if size % 8 == 0 and size <= 256 else None


class _Schema:
    """The checked `types` of a document: structs, their fields and their type hashes."""

    __slots__ = ("_structs", "_type_hashes")

    def __init__(self, structs: dict[str, tuple[_Field, ...]]) -> None:
        self._structs = structs
        self._type_hashes: dict[str, bytes] = {}

    @classmethod
    def parse(cls, types: object) -> _Schema:
        if not isinstance(types, Mapping):
            raise InvalidInput("types must be an object of struct definitions", field="types")
        if len(types) > struct_types_max:
            raise InvalidInput(
                f"types defines {len(types)} structs, at most {struct_types_max} allowed",
                field="types",
            )
        for name in types:
            path = f"types.{name}"
            if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
                raise InvalidInput(f"{path}: a struct name must be an identifier", field=path)
            if len(name) > identifier_chars_max or _RESERVED_NAME.fullmatch(name):
                raise InvalidInput(f"{path}: {name!r} cannot name a struct", field=path)
        names = set(types)
        structs = {name: cls._parse_fields(name, types[name], names) for name in types}
        return cls(structs)

    @staticmethod
    def _parse_fields(struct: str, fields: object, names: set[str]) -> tuple[_Field, ...]:
        path = f"types.{struct}"
        if not isinstance(fields, Sequence) or isinstance(fields, str | bytes):
            raise InvalidInput(f"{path} must be a list of fields", field=path)
        if len(fields) > struct_fields_max:
            raise InvalidInput(
                f"{path} has {len(fields)} fields, at most {struct_fields_max} allowed",
                field=path,
            )
        parsed: list[_Field] = []
        seen: set[str] = set()
        for index, field in enumerate(fields):
            field_path = f"{path}[{index}]"
            if not isinstance(field, Mapping) or set(field) != {"name", "type"}:
                raise InvalidInput(
                    f'{field_path} must be an object with exactly "name" and "type"',
                    field=field_path,
                )
            name, declared = field["name"], field["type"]
            if (
                not isinstance(name, str)
                or not _IDENTIFIER.fullmatch(name)
                or len(name) > identifier_chars_max
            ):
                raise InvalidInput(
                    f"{field_path}.name: {name!r} is not an identifier", field=f"{field_path}.name"
                )
            if name in seen:
                raise InvalidInput(
                    f"{field_path}.name: {name!r} appears twice in {struct}",
                    field=f"{field_path}.name",
                )
            seen.add(name)
            type_path = f"{field_path}.type"
            parsed.append(_Field(name, declared, _parse_type(declared, names, type_path)))
        return tuple(parsed)

    def fields(self, struct: str) -> tuple[_Field, ...]:
        return self._structs[struct]

    def require_struct(self, name: object, path: str) -> str:
        if not isinstance(name, str) or name not in self._structs:
            raise InvalidInput(f"{path}: {name!r} is not a struct defined in types", field=path)
        return name

    def encode_type(self, primary: str) -> str:
        """`primary(fields)` followed by every struct it references, sorted by name."""
        dependencies: set[str] = set()
        pending = [primary]
        # Iterative, with a seen set, because struct types may refer to themselves
        # (a Person with Person[] children) and recursion would never end.
        while pending:
            for field in self._structs[pending.pop()]:
                name = _core_struct(field.parsed)
                if name is not None and name != primary and name not in dependencies:
                    dependencies.add(name)
                    pending.append(name)
        return "".join(
            name + "(" + ",".join(f"{f.declared} {f.name}" for f in self._structs[name]) + ")"
            for name in [primary, *sorted(dependencies)]
        )

    def type_hash(self, struct: str) -> bytes:
        cached = self._type_hashes.get(struct)
        if cached is None:
            cached = keccak256(self.encode_type(struct).encode("utf-8"))
            self._type_hashes[struct] = cached
        return cached

    def encode_data(self, struct: str, value: object, path: str, depth: int) -> bytes:
        """typeHash ‖ enc(field 1) ‖ ... ‖ enc(field n), each 32 bytes."""
        if depth > struct_depth_max:
            raise InvalidInput(
                f"{path}: structs nest deeper than {struct_depth_max} levels", field=path
            )
        if not isinstance(value, Mapping):
            raise InvalidInput(f"{path} must be an object ({struct})", field=path)
        fields = self._structs[struct]
        declared = {field.name for field in fields}
        for key in value:
            if key not in declared:
                extra = f"{path}.{key}"
                raise InvalidInput(f"{extra} is not a field of {struct}", field=extra)
        words = [self.type_hash(struct)]
        for field in fields:
            field_path = f"{path}.{field.name}"
            if field.name not in value:
                raise InvalidInput(f"{field_path} is missing", field=field_path)
            words.append(self._encode_value(field.parsed, value[field.name], field_path, depth))
        return b"".join(words)

    def hash_struct(self, struct: str, value: object, path: str, depth: int) -> bytes:
        return keccak256(self.encode_data(struct, value, path, depth))

    def _encode_value(self, kind: _FieldType, value: object, path: str, depth: int) -> bytes:
        if isinstance(kind, _Atomic):
            return _encode_atomic(kind, value, path)
        if isinstance(kind, _Struct):
            return self.hash_struct(kind.name, value, path, depth + 1)
        if not isinstance(value, list | tuple):
            raise InvalidInput(f"{path} must be an array", field=path)
        if len(value) > array_length_max:
            raise InvalidInput(
                f"{path} has {len(value)} elements, at most {array_length_max} allowed",
                field=path,
            )
        if kind.length is not None and len(value) != kind.length:
            raise InvalidInput(
                f"{path} must have exactly {kind.length} elements, got {len(value)}", field=path
            )
        # eth_signTypedData_v4: an array is the keccak of its elements' encodings joined,
        # whatever their type (atomic words, struct hashes or inner arrays' hashes).
        return keccak256(
            b"".join(
                self._encode_value(kind.element, item, f"{path}[{index}]", depth)
                for index, item in enumerate(value)
            )
        )


# The hashable form of a well-shaped `types`: ((struct, ((field, type), ...)), ...).
_TypesKey = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def _schema(types: object) -> _Schema:
    """Return the checked schema of `types`, reusing it when the same types come again.

    A network signs a handful of command types over and over; parsing them and hashing
    their encodeType once per process, not once per command, more than halves the cost of
    hashing a small command. Only well-shaped types get a key; anything else is parsed
    afresh, so the parser is the one place that explains what is wrong.
    """
    key = _types_key(types)
    return _Schema.parse(types) if key is None else _cached_schema(key)


def _types_key(types: object) -> _TypesKey | None:
    if not isinstance(types, Mapping) or len(types) > struct_types_max:
        return None
    structs = []
    for name, fields in types.items():
        if not isinstance(fields, list | tuple) or len(fields) > struct_fields_max:
            return None
        pairs = []
        for field in fields:
            if not isinstance(field, Mapping) or len(field) != 2:
                return None
            field_name, field_type = field.get("name"), field.get("type")
            if not isinstance(field_name, str) or not isinstance(field_type, str):
                return None
            pairs.append((field_name, field_type))
        structs.append((name, tuple(pairs)))
    return tuple(structs)


# Enough for every command type of the protocol and a few wallets' worth of others; a
# hostile stream of distinct types only evicts entries, it cannot grow the cache.
@lru_cache(maxsize=256)
def _cached_schema(key: _TypesKey) -> _Schema:
    return _Schema.parse(
        {name: [{"name": field, "type": kind} for field, kind in fields] for name, fields in key}
    )


def _parse_type(declared: object, structs: set[str], path: str) -> _FieldType:
    if not isinstance(declared, str):
        raise InvalidInput(f"{path} must be a type name", field=path)
    match = _TYPE.fullmatch(declared)
    if match is None:
        raise InvalidInput(f"{path}: {declared!r} is not a type", field=path)
    base, dimensions = match.group(1), _DIMENSION.findall(match.group(2))
    if len(dimensions) > array_dimensions_max:
        raise InvalidInput(
            f"{path}: {declared!r} has more than {array_dimensions_max} array dimensions",
            field=path,
        )
    parsed: _FieldType
    atomic = _atomic(base)
    if atomic is not None:
        parsed = atomic
    elif base == DOMAIN_TYPE:
        raise InvalidInput(f"{path}: {DOMAIN_TYPE} cannot be a field's type", field=path)
    elif base in structs:
        parsed = _Struct(base)
    else:
        raise InvalidInput(f"{path}: unknown type {base!r}", field=path)
    # The last bracket is the outermost array: uint8[2][] is a dynamic array of uint8[2].
    for dimension in dimensions:
        length = int(dimension) if dimension else None
        if length is not None and not 1 <= length <= array_length_max:
            raise InvalidInput(
                f"{path}: a fixed array length must lie in [1, {array_length_max}]", field=path
            )
        parsed = _Array(parsed, length)
    return parsed


def _core_struct(kind: _FieldType) -> str | None:
    while isinstance(kind, _Array):
        kind = kind.element
    return kind.name if isinstance(kind, _Struct) else None


def _integer(value: object, path: str) -> int:
    # bool is an int in Python but true is not a number in JSON; floats are refused
    # because 1e20 has already lost precision by the time it reaches us.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if _DECIMAL.fullmatch(value):
            return int(value, 10)
        if _HEX_INT.fullmatch(value):
            return int(value, 16)
    raise InvalidInput(
        f"{path} must be an integer, a decimal string or a 0x-hex string, got {value!r}",
        field=path,
    )


def _byte_string(value: object, path: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and _HEX_BYTES.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise InvalidInput(f"{path} must be a 0x-hex string of whole bytes, got {value!r}", field=path)


def _encode_atomic(kind: _Atomic, value: object, path: str) -> bytes:
    if kind.kind == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"{path} must be true or false, got {value!r}", field=path)
        return int(value).to_bytes(_WORD_BYTES, "big")
    if kind.kind == "address":
        return address_to_bytes(value, field=path).rjust(_WORD_BYTES, b"\x00")
    if kind.kind in ("uint", "int"):
        number = _integer(value, path)
        if kind.kind == "uint":
            low, high = 0, 2**kind.bits - 1
        else:
            low, high = -(2 ** (kind.bits - 1)), 2 ** (kind.bits - 1) - 1
        if not low <= number <= high:
            raise InvalidInput(
                f"{path} = {number} is out of range for {kind.kind}{kind.bits}", field=path
            )
        # Two's complement over 256 bits: a negative intN is sign-extended to the word.
        return (number % 2**256).to_bytes(_WORD_BYTES, "big")
    if kind.kind == "bytesN":
        data = _byte_string(value, path)
        if len(data) != kind.bits:
            raise InvalidInput(
                f"{path} must be exactly {kind.bits} bytes for bytes{kind.bits}, got {len(data)}",
                field=path,
            )
        return data.ljust(_WORD_BYTES, b"\x00")
    if kind.kind == "bytes":
        data = _byte_string(value, path)
    else:
        if not isinstance(value, str):
            raise InvalidInput(f"{path} must be a string, got {value!r}", field=path)
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"{path} is not valid Unicode text", field=path) from exc
    if len(data) > dynamic_value_bytes_max:
        raise InvalidInput(
            f"{path} is {len(data)} bytes, at most {dynamic_value_bytes_max} allowed", field=path
        )
    return keccak256(data)


@dataclass(frozen=True, slots=True)
class _Checked:
    schema: _Schema
    primary: str
    domain: Mapping[str, Any]
    message: Mapping[str, Any]


def _check_shape(doc: object) -> _Checked:
    """Check the document's outline; values are checked by the encoder as it reads them."""
    if not isinstance(doc, Mapping):
        raise InvalidInput("a typed-data document must be a JSON object", field="document")
    missing = sorted(_DOCUMENT_KEYS - set(doc))
    if missing:
        raise InvalidInput(f"document lacks {', '.join(missing)}", field=missing[0])
    extra = sorted(str(key) for key in set(doc) - _DOCUMENT_KEYS)
    if extra:
        raise InvalidInput(f"document has unknown keys: {', '.join(extra)}", field=extra[0])
    schema = _schema(doc["types"])
    if DOMAIN_TYPE not in doc["types"]:
        path = f"types.{DOMAIN_TYPE}"
        raise InvalidInput(f"{path} is missing: types must define the domain", field=path)
    _check_domain_type(schema.fields(DOMAIN_TYPE))
    primary = schema.require_struct(doc["primaryType"], "primaryType")
    # eth_signTypedData_v4 lets primaryType be EIP712Domain and then signs the domain
    # alone; such a document says nothing, and eth-account cannot sign it, so it is refused.
    if primary == DOMAIN_TYPE:
        raise InvalidInput(
            f"primaryType must name a message struct, not {DOMAIN_TYPE}", field="primaryType"
        )
    for part in ("domain", "message"):
        if not isinstance(doc[part], Mapping):
            raise InvalidInput(f"{part} must be an object", field=part)
    return _Checked(schema, primary, doc["domain"], doc["message"])


def _check_domain_type(fields: tuple[_Field, ...]) -> None:
    if not fields:
        path = f"types.{DOMAIN_TYPE}"
        raise InvalidInput(f"{path} must declare at least one field", field=path)
    allowed = dict(DOMAIN_FIELDS)
    order = [name for name, _ in DOMAIN_FIELDS]
    position = -1
    for index, field in enumerate(fields):
        name_path = f"types.{DOMAIN_TYPE}[{index}].name"
        if field.name not in allowed:
            raise InvalidInput(
                f"{name_path}: {field.name!r} is not an {DOMAIN_TYPE} field (allowed: "
                + ", ".join(order)
                + ")",
                field=name_path,
            )
        if field.declared != allowed[field.name]:
            type_path = f"types.{DOMAIN_TYPE}[{index}].type"
            raise InvalidInput(
                f"{type_path}: {field.name} must have type {allowed[field.name]}",
                field=type_path,
            )
        if order.index(field.name) < position:
            raise InvalidInput(
                f"{name_path}: {DOMAIN_TYPE} fields must be in the order " + ", ".join(order),
                field=name_path,
            )
        position = order.index(field.name)


def _domain_separator(checked: _Checked) -> bytes:
    return checked.schema.hash_struct(DOMAIN_TYPE, checked.domain, "domain", 1)


def encode_type(primary: str, types: Types) -> str:
    """Return encodeType: `Primary(type name,...)` then its dependencies sorted by name."""
    schema = _schema(types)
    return schema.encode_type(schema.require_struct(primary, "primaryType"))


def type_hash(primary: str, types: Types) -> bytes:
    """Return typeHash = keccak256(encodeType(primary))."""
    schema = _schema(types)
    return schema.type_hash(schema.require_struct(primary, "primaryType"))


def encode_data(primary: str, data: Mapping[str, Any], types: Types) -> bytes:
    """Return encodeData: typeHash ‖ the 32-byte encoding of each field, in order."""
    schema = _schema(types)
    return schema.encode_data(schema.require_struct(primary, "primaryType"), data, "message", 1)


def hash_struct(primary: str, data: Mapping[str, Any], types: Types) -> bytes:
    """Return hashStruct = keccak256(encodeData(primary, data))."""
    return keccak256(encode_data(primary, data, types))


def domain_separator(doc: Document) -> bytes:
    """Return hashStruct(EIP712Domain, doc["domain"]) after checking the whole outline."""
    return _domain_separator(_check_shape(doc))


def hash_typed_data(doc: Document) -> bytes:
    """Return the digest a wallet signs: keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct)."""
    checked = _check_shape(doc)
    message_hash = checked.schema.hash_struct(checked.primary, checked.message, "message", 1)
    return keccak256(_EIP191_TYPED_DATA_PREFIX + _domain_separator(checked) + message_hash)


def validate_document(doc: Document) -> None:
    """Raise InvalidInput, naming the field, unless `doc` is a valid typed-data document.

    Every rule is enforced where the encoder reads the value it governs, so validating is
    hashing and discarding the digest: there is no second set of rules to drift apart.
    """
    hash_typed_data(doc)


def document_from_json(data: bytes | str) -> dict[str, Any]:
    """Parse a document from JSON text of at most `document_json_bytes_max` bytes.

    Duplicate keys are refused, because two parsers could keep different ones and so
    show a person one message while signing another; NaN and Infinity are not JSON.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > document_json_bytes_max:
        raise InvalidInput(
            f"document is larger than {document_json_bytes_max} bytes", field="document"
        )

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InvalidInput(f"duplicate key {key!r} in document", field="document")
            result[key] = value
        return result

    def no_constants(name: str) -> Any:
        raise InvalidInput(f"{name} is not a JSON value", field="document")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("document is not UTF-8 text", field="document") from exc
    if _json_nesting(text) > json_nesting_max:
        raise InvalidInput(
            f"document nests deeper than {json_nesting_max} levels", field="document"
        )
    try:
        parsed = json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"document is not JSON: {exc}", field="document") from exc
    if not isinstance(parsed, dict):
        raise InvalidInput("a typed-data document must be a JSON object", field="document")
    return parsed


def _json_nesting(text: str) -> int:
    """Return the deepest bracket nesting of JSON text, ignoring brackets inside strings.

    Malformed text may give a meaningless number here; json.loads then refuses it anyway.
    """
    deepest = depth = 0
    for bracket in _JSON_NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def sign_typed_data(key: PrivateKey, doc: Document) -> bytes:
    """Sign the document's digest; return 65 bytes r ‖ s ‖ v (v in {27, 28}, low s)."""
    return key.sign_digest(hash_typed_data(doc))


def recover_typed_data_signer(doc: Document, signature: bytes) -> str:
    """Return the EIP-55 address that signed `doc` with `signature`."""
    return recover_address(hash_typed_data(doc), signature)
