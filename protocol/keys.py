"""Ethereum-compatible keys: addresses, secp256k1 signatures and their recovery.

An account is an Ethereum address, so any Ethereum wallet can act for it. Node keys are
made, stored (PEM) and used for signing with the pure-Python `ecdsa` library; checking a
signature is done by public-key recovery with `coincurve` (libsecp256k1), because that is
the hot path of the gateway and libsecp256k1 is many times faster. `specs/signing_eip712.md`
is the normative description of every format here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from pathlib import Path

import coincurve
import ecdsa
from ecdsa.util import sigdecode_string, sigencode_string_canonize
from sha3 import keccak_256

from protocol.errors import InvalidInput, InvalidSignature, WrongSigner

# The order n of the secp256k1 group. A signature's r and s must lie in [1, n - 1], and
# Ethereum (EIP-2) only accepts s <= n / 2 so that (r, s) and (r, n - s) are not two valid
# signatures of one message: a malleable signature would give one command two ids.
SECP256K1_ORDER: int = ecdsa.SECP256k1.order
SECP256K1_HALF_ORDER: int = SECP256K1_ORDER // 2

digest_bytes = 32
signature_bytes = 65
uncompressed_key_bytes = 64
address_bytes = 20

# A PEM private key for secp256k1 is about 250 bytes; anything much bigger is not a key,
# and reading it whole would let a wrong path (a log file, a device) eat memory.
key_file_bytes_max = 4096

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def keccak256(data: bytes) -> bytes:
    """Return the Keccak-256 digest of `data` (Ethereum's hash, not NIST SHA3-256).

    safe-pysha3 is a C implementation called without ctypes: about 2 µs a hash here,
    against about 13 µs through eth-hash's pycryptodome backend, and every command digest
    and address checksum takes several.
    """
    digest: bytes = keccak_256(data).digest()
    return digest


def to_checksum_address(value: str | bytes) -> str:
    """Return the EIP-55 mixed-case form of an address given as 20 bytes or 0x-hex.

    The hex form may be of any case; its checksum is not checked here (see
    `parse_address` for the strict reading of untrusted input).
    """
    if isinstance(value, bytes):
        if len(value) != address_bytes:
            raise InvalidInput(
                f"an address is {address_bytes} bytes, got {len(value)}", field="address"
            )
        lower = value.hex()
    elif isinstance(value, str) and _HEX_ADDRESS.fullmatch(value):
        lower = value[2:].lower()
    else:
        raise InvalidInput(f"not an address (0x and 40 hex digits): {value!r}", field="address")
    return _checksummed(lower)


# The same accounts sign and are named again and again, and each EIP-55 form costs a
# keccak; a bounded cache of recent ones keeps that off the per-command path.
@functools.lru_cache(maxsize=4096)
def _checksummed(lower: str) -> str:
    # EIP-55: a letter is upper case when the matching nibble of keccak(lowercase hex) is
    # >= 8; comparing hex digits as characters works because "8" < "9" < "a" < ... < "f".
    nibbles = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(
        char.upper() if nibble >= "8" else char
        for char, nibble in zip(lower, nibbles, strict=False)
    )


def parse_address(value: object, field: str = "address") -> str:
    """Read an untrusted address strictly and return its EIP-55 form.

    It must be `0x` followed by 40 hex digits. All-lower or all-upper case carries no
    checksum and is accepted; mixed case is an EIP-55 checksum and must be right, since a
    wrong one most likely means a mistyped address that would send value to nobody.
    """
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise InvalidInput(
            f"{field} must be 0x followed by 40 hex digits, got {value!r}", field=field
        )
    checksummed = to_checksum_address(value)
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and value != checksummed:
        raise InvalidInput(
            f"{field} {value} has a wrong EIP-55 checksum (expected {checksummed})", field=field
        )
    return checksummed


def address_to_bytes(value: object, field: str = "address") -> bytes:
    """Return the 20 bytes of an untrusted address, read as strictly as by `parse_address`.

    Hashing needs only the bytes; this skips computing the EIP-55 form (a keccak) when the
    input is in one case and so carries no checksum to check.
    """
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise InvalidInput(
            f"{field} must be 0x followed by 40 hex digits, got {value!r}", field=field
        )
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper():
        parse_address(value, field)
    return bytes.fromhex(digits)


def address_of_public_key(public_key: bytes) -> str:
    """Return the address of a 64-byte uncompressed public key (x ‖ y, no 0x04 prefix)."""
    if len(public_key) != uncompressed_key_bytes:
        raise InvalidInput(
            f"a public key is {uncompressed_key_bytes} bytes (x ‖ y), got {len(public_key)}",
            field="public_key",
        )
    return to_checksum_address(keccak256(public_key)[-address_bytes:])


class PrivateKey:
    """A secp256k1 private key held by `ecdsa`, with its Ethereum address.

    The key never leaves this object except as PEM, written with owner-only permissions.
    """

    __slots__ = ("_address", "_public_key", "_signing_key")

    def __init__(self, signing_key: ecdsa.SigningKey) -> None:
        if signing_key.curve != ecdsa.SECP256k1:
            raise InvalidInput(
                f"key is on curve {signing_key.curve.name}, not secp256k1", field="key"
            )
        self._signing_key = signing_key
        self._public_key: bytes = signing_key.get_verifying_key().to_string("raw")
        self._address = address_of_public_key(self._public_key)

    @classmethod
    def generate(cls) -> PrivateKey:
        """Make a new key from the operating system's random source."""
        return cls(ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256))

    @classmethod
    def from_bytes(cls, secret: bytes) -> PrivateKey:
        """Load a key from its 32-byte big-endian secret, the form Ethereum wallets export."""
        if len(secret) != digest_bytes:
            raise InvalidInput(f"a private key is 32 bytes, got {len(secret)}", field="key")
        exponent = int.from_bytes(secret, "big")
        if not 1 <= exponent < SECP256K1_ORDER:
            raise InvalidInput("a private key must lie in [1, n - 1]", field="key")
        return cls(
            ecdsa.SigningKey.from_secret_exponent(
                exponent, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256
            )
        )

    @classmethod
    def from_pem(cls, data: bytes) -> PrivateKey:
        """Load a key from PEM (PKCS #8 or SEC 1 "EC PRIVATE KEY"); it must be secp256k1."""
        try:
            signing_key = ecdsa.SigningKey.from_pem(data, hashfunc=hashlib.sha256)
        # `ecdsa` reports a malformed PEM or DER with several unrelated exception types
        # (UnexpectedDER, MalformedPointError, plain ValueError from a missing header, and
        # binascii.Error, itself a ValueError); none of them is our bug, so all mean "bad key".
        except (ecdsa.der.UnexpectedDER, ecdsa.errors.MalformedPointError, ValueError) as exc:
            raise InvalidInput(f"not a PEM private key: {exc}", field="key") from exc
        return cls(signing_key)

    def to_pem(self) -> bytes:
        """Return the key as unencrypted PKCS #8 PEM, the form `openssl genpkey` writes."""
        pem: bytes = self._signing_key.to_pem(format="pkcs8")
        return pem

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as PEM to a new file that only its owner can read (mode 0600).

        The file is created with O_EXCL and the mode in the same system call, so there is
        no moment when it exists with wider permissions, and an existing file (perhaps
        another key, whose loss would lose its funds) is never overwritten.
        """
        target = Path(path)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise InvalidInput(
                f"{target} already exists; refusing to overwrite a key file", field="path"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(self.to_pem())
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            # A half-written key file would fail to load later with a confusing error;
            # remove it so the caller can simply try again.
            target.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivateKey:
        """Read a PEM key file, refusing one that group or others may read or write.

        A library cannot merely warn, and a key others can read is a key others may have
        copied: the owner should check and `chmod 600` it rather than keep using it unaware.
        """
        source = Path(path)
        with source.open("rb") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            if mode & 0o077:
                raise InvalidInput(
                    f"{source} has mode {mode:04o}; a key file must be 0600 (chmod 600 {source})",
                    field="path",
                )
            data = file.read(key_file_bytes_max + 1)
        if len(data) > key_file_bytes_max:
            raise InvalidInput(
                f"{source} is larger than {key_file_bytes_max} bytes, not a key file",
                field="path",
            )
        try:
            return cls.from_pem(data)
        except InvalidInput as exc:
            raise InvalidInput(f"{source}: {exc}", field="path") from exc

    @property
    def address(self) -> str:
        """The EIP-55 address: the last 20 bytes of keccak256 of the 64-byte public key."""
        return self._address

    @property
    def public_key_bytes(self) -> bytes:
        """The 64-byte uncompressed public key, x ‖ y, without the 0x04 prefix."""
        return self._public_key

    def secret_bytes(self) -> bytes:
        """The 32-byte big-endian secret, the form Ethereum wallets import and export."""
        exponent: int = self._signing_key.privkey.secret_multiplier
        return exponent.to_bytes(digest_bytes, "big")

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest; return 65 bytes r ‖ s ‖ v with low s and v in {27, 28}.

        The nonce is RFC 6979 with HMAC-SHA256, as in libsecp256k1, so a signature here is
        byte-for-byte the one any Ethereum wallet makes with the same key and digest.
        """
        _check_digest(digest)
        # `ecdsa` canonizes s to n - s when it is high, which is the signature of the
        # negated nonce point; the recovery id follows, so it is found below by recovery.
        rs: bytes = self._signing_key.sign_digest_deterministic(
            digest, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize
        )
        # `ecdsa` does not expose the nonce point R, whose y parity is the recovery id.
        # Recovering with both candidates finds it, and doubles as a check that what we
        # are about to hand out really verifies under our key (a guard against faults).
        for recovery_id in (0, 1):
            try:
                recovered = coincurve.PublicKey.from_signature_and_message(
                    rs + bytes([recovery_id]), digest, hasher=None
                )
            except ValueError:
                continue
            if recovered.format(compressed=False)[1:] == self._public_key:
                return rs + bytes([27 + recovery_id])
        # Recovery ids 2 and 3 (R.x >= n) occur with probability about 2**-128 and cannot be
        # expressed in Ethereum's v; reaching this line means a bug or a hardware fault.
        raise RuntimeError("signature does not recover to the signing key")


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes) or len(digest) != digest_bytes:
        raise InvalidInput(f"a digest is {digest_bytes} bytes", field="digest")


def recover_address(digest: bytes, signature: bytes) -> str:
    """Return the EIP-55 address whose key made `signature` (65 bytes r ‖ s ‖ v) of `digest`.

    Rejects, with InvalidSignature, every signature that is not in the one canonical form:
    so a command has exactly one valid signature per signer and cannot be replayed under a
    second id by flipping s.
    """
    _check_digest(digest)
    if not isinstance(signature, bytes) or len(signature) != signature_bytes:
        length = len(signature) if isinstance(signature, bytes) else type(signature).__name__
        raise InvalidSignature(f"a signature is {signature_bytes} bytes r ‖ s ‖ v, got {length}")
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    # Wallets write v as 27/28 (Ethereum's legacy form) or as the raw recovery id 0/1;
    # both name the same signature, so both are read, and nothing else is.
    if v in (27, 28):
        recovery_id = v - 27
    elif v in (0, 1):
        recovery_id = v
    else:
        raise InvalidSignature(f"signature v must be 27 or 28 (or 0 or 1), got {v}")
    if not 1 <= r < SECP256K1_ORDER:
        raise InvalidSignature("signature r is zero or not below the curve order")
    if not 1 <= s < SECP256K1_ORDER:
        raise InvalidSignature("signature s is zero or not below the curve order")
    if s > SECP256K1_HALF_ORDER:
        raise InvalidSignature("signature s is in the upper half of the curve order (malleable)")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([recovery_id]), digest, hasher=None
        )
    except ValueError as exc:
        # r is not the x coordinate of any curve point, or the recovered point is infinity.
        raise InvalidSignature(f"signature recovers to no public key: {exc}") from exc
    return address_of_public_key(public_key.format(compressed=False)[1:])


def verify_signer(digest: bytes, signature: bytes, expected_address: str) -> None:
    """Raise WrongSigner unless `signature` of `digest` was made by `expected_address`."""
    expected = parse_address(expected_address, field="signer")
    recovered = recover_address(digest, signature)
    if recovered != expected:
        raise WrongSigner(expected, recovered)


def ecdsa_verify(public_key_bytes: bytes, digest: bytes, signature: bytes) -> bool:
    """Verify r ‖ s of `signature` with the pure-Python `ecdsa` library.

    Only the benchmark's baseline uses this: it is what checking signatures would cost
    without libsecp256k1. The protocol itself always recovers with `recover_address`.
    """
    verifying_key = ecdsa.VerifyingKey.from_string(public_key_bytes, curve=ecdsa.SECP256k1)
    try:
        return bool(verifying_key.verify_digest(signature[:64], digest, sigdecode=sigdecode_string))
    except ecdsa.BadSignatureError:
        return False
