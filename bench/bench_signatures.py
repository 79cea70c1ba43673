"""How fast the gateway can check signatures: libsecp256k1 recovery against pure-Python ECDSA.

Every signed command costs one EIP-712 hash and one public-key recovery, so these figures
bound how many commands per second one gateway process can admit. The baseline is the
pure-Python `ecdsa` verify on the same digests in the same run, because these machines are
noisy and only a ratio measured side by side means anything. One key signs every digest,
so the EIP-55 form of its address is cached after the first recovery, as it is in a gateway
that sees the same accounts again and again; without that cache each recovery costs one
more keccak.

Usage: python bench/bench_signatures.py [--json]

Each figure is printed as one line, `name value unit`. With --json those lines go to
stderr and stdout carries one JSON object {name: {"value": ..., "unit": ...}} instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from protocol.eip712 import hash_typed_data
from protocol.keys import PrivateKey, ecdsa_verify, keccak256, recover_address

# Bounds on the whole run (about 12 s): each figure is the best of `rounds_count` rounds of
# at least `round_seconds` each, best because noise only ever slows a round down.
rounds_count = 3
round_seconds = 0.8
digests_count = 64

# A small command, the size of a typical BlackTail command: one struct, five fields.
SMALL_DOCUMENT: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
        ],
        "Transfer": [
            {"name": "from", "type": "address"},
            {"name": "to", "type": "address"},
            {"name": "asset", "type": "string"},
            {"name": "amount", "type": "uint256"},
            {"name": "nonce", "type": "uint64"},
        ],
    },
    "primaryType": "Transfer",
    "domain": {"name": "BlackTail", "version": "1", "chainId": 31337},
    "message": {
        "from": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "to": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "asset": "BLACK",
        "amount": "1000000000000000000",
        "nonce": 1,
    },
}


def _rate(operation: Callable[[int], object], items: int) -> float:
    """Return the best operations per second over the rounds, cycling through `items`."""
    best = 0.0
    for _ in range(rounds_count):
        done = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < round_seconds:
            for index in range(items):
                operation(index)
            done += items
            elapsed = time.perf_counter() - start
        best = max(best, done / elapsed)
    return best


def measure() -> list[tuple[str, float, str]]:
    """Run every measurement and return (name, value, unit) for each figure."""
    key = PrivateKey.generate()
    public_key = key.public_key_bytes
    digests = [keccak256(index.to_bytes(8, "big")) for index in range(digests_count)]
    signatures = [key.sign_digest(digest) for digest in digests]
    # Check once, outside the timing, that both sides accept what they are timed on.
    assert all(
        recover_address(d, s) == key.address for d, s in zip(digests, signatures, strict=True)
    )
    assert all(ecdsa_verify(public_key, d, s) for d, s in zip(digests, signatures, strict=True))

    document_signature = key.sign_digest(hash_typed_data(SMALL_DOCUMENT))

    def hash_and_recover(_: int) -> object:
        return recover_address(hash_typed_data(SMALL_DOCUMENT), document_signature)

    coincurve_rate = _rate(lambda i: recover_address(digests[i], signatures[i]), digests_count)
    ecdsa_rate = _rate(lambda i: ecdsa_verify(public_key, digests[i], signatures[i]), digests_count)
    hash_rate = _rate(lambda _: hash_typed_data(SMALL_DOCUMENT), 16)
    command_rate = _rate(hash_and_recover, 16)
    sign_rate = _rate(lambda i: key.sign_digest(digests[i]), digests_count)
    return [
        ("signatures.coincurve_recover_per_s", coincurve_rate, "/s"),
        ("signatures.ecdsa_verify_per_s", ecdsa_rate, "/s"),
        ("signatures.coincurve_over_ecdsa_ratio", coincurve_rate / ecdsa_rate, "x"),
        ("signatures.eip712_hash_per_s", hash_rate, "/s"),
        ("signatures.eip712_hash_and_recover_per_s", command_rate, "/s"),
        ("signatures.ecdsa_sign_per_s", sign_rate, "/s"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print a JSON object of the figures")
    arguments = parser.parse_args(argv)
    figures = measure()
    lines = sys.stderr if arguments.json else sys.stdout
    for name, value, unit in figures:
        print(f"{name} {value:.1f} {unit}", file=lines)
    if arguments.json:
        print(
            json.dumps(
                {name: {"value": round(value, 1), "unit": unit} for name, value, unit in figures}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
