"""Keys, addresses and signatures, cross-checked with eth-account, eth-keys and coincurve."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import coincurve
import ecdsa
import pytest
from eth_account import Account
from eth_keys import keys as eth_keys
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidInput, InvalidSignature, WrongSigner
from protocol.keys import (
    SECP256K1_HALF_ORDER,
    SECP256K1_ORDER,
    PrivateKey,
    address_to_bytes,
    ecdsa_verify,
    keccak256,
    parse_address,
    recover_address,
    to_checksum_address,
    verify_signer,
)

# The four examples printed in EIP-55 itself.
EIP55_VECTORS = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]

# Made once: signing is pure Python and each property test runs a hundred examples.
KEY = PrivateKey.from_bytes(keccak256(b"blacktail test key"))
OTHER = PrivateKey.from_bytes(keccak256(b"another test key"))
KEY_SECRET = keccak256(b"byte-identical")
KEY_FROM_SECRET = PrivateKey.from_bytes(KEY_SECRET)

digests = st.binary(min_size=32, max_size=32)
secrets = st.integers(min_value=1, max_value=SECP256K1_ORDER - 1).map(
    lambda exponent: exponent.to_bytes(32, "big")
)


def _with(
    signature: bytes, *, r: int | None = None, s: int | None = None, v: int | None = None
) -> bytes:
    """Return `signature` with r, s or v replaced."""
    r_bytes = signature[:32] if r is None else r.to_bytes(32, "big")
    s_bytes = signature[32:64] if s is None else s.to_bytes(32, "big")
    v_byte = signature[64:] if v is None else bytes([v])
    return r_bytes + s_bytes + v_byte


def _typo(address: str) -> str:
    """Return `address` with the case of its first letter flipped."""
    index = next(i for i, char in enumerate(address) if i >= 2 and char.isalpha())
    return address[:index] + address[index].swapcase() + address[index + 1 :]


def test_keccak256_is_ethereum_keccak_not_sha3() -> None:
    """keccak256 of the empty string is Ethereum's well-known value, not NIST SHA3-256's."""
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


@settings(max_examples=50, print_blob=True)
@given(secrets)
def test_address_matches_eth_account_for_the_same_private_key(secret: bytes) -> None:
    """Our address for a secret is the one eth-account derives from the same secret."""
    assert PrivateKey.from_bytes(secret).address == Account.from_key(secret).address


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_checksum_address_matches_the_eip55_vectors(vector: str) -> None:
    """to_checksum_address turns the lower- or upper-case form into the EIP-55 vector."""
    assert to_checksum_address(vector.lower()) == vector
    assert to_checksum_address("0x" + vector[2:].upper()) == vector
    assert to_checksum_address(bytes.fromhex(vector[2:])) == vector


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_parse_address_accepts_checksummed_and_single_case_forms(vector: str) -> None:
    """A correct checksum, all lower case and all upper case all parse to the EIP-55 form."""
    assert parse_address(vector) == vector
    assert parse_address(vector.lower()) == vector
    assert parse_address("0x" + vector[2:].upper()) == vector


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_parse_address_rejects_a_wrong_checksum(vector: str) -> None:
    """Flipping the case of one letter of a checksummed address makes it invalid."""
    with pytest.raises(InvalidInput, match="checksum") as raised:
        parse_address(_typo(vector), field="to")
    assert raised.value.field == "to"


@pytest.mark.parametrize(
    "value",
    [
        "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedd",
        "0xgaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "",
        None,
        0,
        b"\x00" * 20,
    ],
)
def test_parse_address_rejects_malformed_values_naming_the_field(value: object) -> None:
    """Anything but 0x and 40 hex digits is refused with the caller's field name."""
    with pytest.raises(InvalidInput) as raised:
        parse_address(value, field="message.to")
    assert raised.value.field == "message.to"


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_address_to_bytes_reads_addresses_as_strictly_as_parse_address(vector: str) -> None:
    """address_to_bytes gives the 20 bytes of valid forms and refuses a wrong checksum."""
    expected = bytes.fromhex(vector[2:])
    assert address_to_bytes(vector) == expected
    assert address_to_bytes(vector.lower()) == expected
    assert address_to_bytes("0x" + vector[2:].upper()) == expected
    with pytest.raises(InvalidInput, match="checksum"):
        address_to_bytes(_typo(vector), field="to")


def test_to_checksum_address_rejects_wrong_lengths() -> None:
    """Raw addresses must be exactly 20 bytes."""
    with pytest.raises(InvalidInput):
        to_checksum_address(b"\x01" * 19)


@settings(max_examples=50, print_blob=True)
@given(digests)
def test_signature_recovers_to_our_address_with_every_library(digest: bytes) -> None:
    """A signature recovers to our address with coincurve, eth-account and eth-keys."""
    signature = KEY.sign_digest(digest)
    assert recover_address(digest, signature) == KEY.address
    assert Account._recover_hash(digest, signature=signature) == KEY.address
    eth_signature = eth_keys.Signature(signature[:64] + bytes([signature[64] - 27]))
    recovered = eth_signature.recover_public_key_from_msg_hash(digest)
    assert recovered.to_checksum_address() == KEY.address
    direct = coincurve.PublicKey.from_signature_and_message(
        signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
    )
    assert direct.format(compressed=False)[1:] == KEY.public_key_bytes


@settings(max_examples=50, print_blob=True)
@given(digests)
def test_signature_is_byte_identical_to_eth_accounts(digest: bytes) -> None:
    """RFC 6979 with HMAC-SHA256 and low s give the very bytes eth-account produces."""
    theirs = Account.unsafe_sign_hash(digest, KEY_SECRET)
    assert KEY_FROM_SECRET.sign_digest(digest) == bytes(theirs.signature)


@settings(max_examples=100, print_blob=True)
@given(digests)
def test_signatures_are_low_s_with_v_27_or_28(digest: bytes) -> None:
    """Every signature is 65 bytes with s in the lower half of the order and v in {27, 28}."""
    signature = KEY.sign_digest(digest)
    assert len(signature) == 65
    assert 1 <= int.from_bytes(signature[32:64], "big") <= SECP256K1_HALF_ORDER
    assert signature[64] in (27, 28)


@settings(max_examples=25, print_blob=True)
@given(digests)
def test_high_s_twin_of_a_signature_is_rejected_as_malleable(digest: bytes) -> None:
    """(r, n - s) with v flipped is a mathematically valid twin, and is refused."""
    signature = KEY.sign_digest(digest)
    s = int.from_bytes(signature[32:64], "big")
    twin = _with(signature, s=SECP256K1_ORDER - s, v=55 - signature[64])
    # The twin really is valid ECDSA: only the low-s rule stands between it and acceptance.
    assert Account._recover_hash(digest, vrs=(twin[64], twin[:32], twin[32:64])) == KEY.address
    with pytest.raises(InvalidSignature, match="malleable"):
        recover_address(digest, twin)


def test_raw_recovery_id_form_of_v_is_accepted() -> None:
    """v written as the recovery id 0 or 1 names the same signature as 27 or 28."""
    digest = keccak256(b"v as recovery id")
    signature = KEY.sign_digest(digest)
    assert recover_address(digest, _with(signature, v=signature[64] - 27)) == KEY.address


@pytest.mark.parametrize("v", [2, 3, 26, 29, 35, 255])
def test_v_outside_0_1_27_28_is_rejected(v: int) -> None:
    """Only 27, 28, 0 and 1 are recovery ids; chain-id-folded and other values are refused."""
    digest = keccak256(b"bad v")
    with pytest.raises(InvalidSignature, match="v must be"):
        recover_address(digest, _with(KEY.sign_digest(digest), v=v))


@pytest.mark.parametrize("length", [0, 64, 66, 130])
def test_signature_of_wrong_length_is_rejected(length: int) -> None:
    """A signature must be exactly 65 bytes."""
    with pytest.raises(InvalidSignature, match="65 bytes"):
        recover_address(keccak256(b"length"), b"\x01" * length)


@pytest.mark.parametrize(
    ("part", "value", "problem"),
    [
        ("r", 0, "r is zero"),
        ("r", SECP256K1_ORDER, "r is zero or not below"),
        ("r", 2**256 - 1, "r is zero or not below"),
        ("s", 0, "s is zero"),
        ("s", SECP256K1_ORDER, "s is zero or not below"),
        ("s", SECP256K1_HALF_ORDER + 1, "malleable"),
    ],
)
def test_r_or_s_out_of_range_is_rejected(part: str, value: int, problem: str) -> None:
    """r and s must lie in [1, n - 1], and s no higher than n / 2."""
    digest = keccak256(b"range")
    signature = KEY.sign_digest(digest)
    bad = _with(signature, r=value) if part == "r" else _with(signature, s=value)
    with pytest.raises(InvalidSignature, match=problem):
        recover_address(digest, bad)


def test_r_that_is_no_curve_point_recovers_to_nothing() -> None:
    """An r that is not the x coordinate of any curve point is refused, not crashed on."""
    field_prime = ecdsa.SECP256k1.curve.p()
    # x is on secp256k1 when x**3 + 7 is a square mod p (Euler's criterion).
    r = next(x for x in range(1, 100) if pow(x**3 + 7, (field_prime - 1) // 2, field_prime) != 1)
    digest = keccak256(b"no point")
    with pytest.raises(InvalidSignature, match="no public key"):
        recover_address(digest, _with(KEY.sign_digest(digest), r=r))


def test_verify_signer_accepts_the_signer_written_in_any_case() -> None:
    """The expected address may be given checksummed or in lower case."""
    digest = keccak256(b"signer")
    signature = KEY.sign_digest(digest)
    verify_signer(digest, signature, KEY.address)
    verify_signer(digest, signature, KEY.address.lower())


def test_verify_signer_raises_wrong_signer_for_another_key() -> None:
    """A valid signature by another key is WrongSigner, carrying both addresses."""
    digest = keccak256(b"impostor")
    with pytest.raises(WrongSigner) as raised:
        verify_signer(digest, OTHER.sign_digest(digest), KEY.address)
    assert raised.value.expected == KEY.address
    assert raised.value.recovered == OTHER.address


def test_tampered_digest_recovers_to_another_address() -> None:
    """Changing the signed digest makes the signature point at some other key."""
    signature = KEY.sign_digest(keccak256(b"original"))
    assert recover_address(keccak256(b"tampered"), signature) != KEY.address


@pytest.mark.parametrize("length", [0, 31, 33])
def test_digests_must_be_32_bytes(length: int) -> None:
    """Signing or recovering anything but a 32-byte digest is refused."""
    with pytest.raises(InvalidInput):
        KEY.sign_digest(b"\x00" * length)
    with pytest.raises(InvalidInput):
        recover_address(b"\x00" * length, KEY.sign_digest(b"\x00" * 32))


@pytest.mark.parametrize("exponent", [0, SECP256K1_ORDER, 2**256 - 1])
def test_from_bytes_rejects_secrets_outside_the_group(exponent: int) -> None:
    """A secret must lie in [1, n - 1]."""
    with pytest.raises(InvalidInput):
        PrivateKey.from_bytes(exponent.to_bytes(32, "big"))


def test_ecdsa_verify_accepts_our_signature_and_refuses_a_tampered_digest() -> None:
    """The benchmark's pure-Python baseline agrees with recovery on good and bad input."""
    digest = keccak256(b"baseline")
    signature = KEY.sign_digest(digest)
    assert ecdsa_verify(KEY.public_key_bytes, digest, signature)
    assert not ecdsa_verify(KEY.public_key_bytes, keccak256(b"other"), signature)


def test_pem_round_trip_keeps_the_key() -> None:
    """A key read back from its PEM has the same address and signs identically."""
    key = PrivateKey.generate()
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = PrivateKey.from_pem(pem)
    digest = keccak256(b"pem")
    assert again.address == key.address
    assert again.sign_digest(digest) == key.sign_digest(digest)


def test_from_pem_reads_the_sec1_form_openssl_ecparam_writes() -> None:
    """The older "EC PRIVATE KEY" PEM form loads to the same key."""
    signing_key = ecdsa.SigningKey.from_string(KEY_SECRET, curve=ecdsa.SECP256k1)
    assert PrivateKey.from_pem(signing_key.to_pem()).address == KEY_FROM_SECRET.address


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ecdsa.SigningKey.generate(curve=ecdsa.NIST256p).to_pem(format="pkcs8"),
    ],
)
def test_from_pem_rejects_garbage_and_keys_on_other_curves(data: bytes) -> None:
    """Malformed PEM and non-secp256k1 keys are InvalidInput, not a library exception."""
    with pytest.raises(InvalidInput):
        PrivateKey.from_pem(data)


def test_saved_key_file_has_mode_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    """The file is created owner-only, whatever the process umask."""
    path = tmp_path / "key.pem"
    previous = os.umask(0)
    try:
        KEY.save(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PrivateKey.load(path).address == KEY.address


def test_save_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    """Saving onto an existing path fails and leaves the existing file untouched."""
    path = tmp_path / "key.pem"
    KEY.save(path)
    before = path.read_bytes()
    with pytest.raises(InvalidInput, match="refusing to overwrite"):
        OTHER.save(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_a_key_file_others_may_read(tmp_path: Path, mode: int) -> None:
    """A key file with any group or other permission bit is refused, naming the path."""
    path = tmp_path / "key.pem"
    KEY.save(path)
    path.chmod(mode)
    with pytest.raises(InvalidInput, match="must be 0600") as raised:
        PrivateKey.load(path)
    assert str(path) in str(raised.value)


def test_load_refuses_an_oversized_file(tmp_path: Path) -> None:
    """A file far bigger than any PEM key is refused before it is parsed."""
    path = tmp_path / "big.pem"
    path.write_bytes(b"x" * 100_000)
    path.chmod(0o600)
    with pytest.raises(InvalidInput, match="larger than"):
        PrivateKey.load(path)
