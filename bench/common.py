"""Shared helpers for the benchmarks: figure lines, machine facts, a fast workload signer.

Benchmarks print one line per figure, `name value unit`, and compare against a named
baseline measured in the same run (a ratio), because these machines are noisy. With
`--json` the lines go to stderr and stdout carries one JSON object
`{name: {"value", "unit", "baseline", "ratio"}}`, which `bench/run_all.py` collects.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

import coincurve

from protocol.commands import SignedCommand, command_digest, parse_kind, parse_message
from protocol.keys import PrivateKey

FIGURES: dict[str, dict[str, Any]] = {}
JSON = "--json" in sys.argv


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"


def say(text: str) -> None:
    print(text, file=sys.stderr if JSON else sys.stdout, flush=True)


def figure(
    name: str, value: float, unit: str, *, baseline: str | None = None, ratio: float | None = None
) -> None:
    """Print one figure line and keep it for the JSON output."""
    FIGURES[name] = {"value": value, "unit": unit, "baseline": baseline, "ratio": ratio}
    extra = f"  ({ratio:.2f}x {baseline})" if ratio is not None and baseline else ""
    shown = f"{value:.3g}" if 0 < abs(value) < 0.1 else f"{value:,.1f}"
    say(f"{name} {shown} {unit}{extra}")


def finish() -> None:
    if JSON:
        print(json.dumps(FIGURES, indent=2))


class FastSigner:
    """Signs workload commands with libsecp256k1 instead of `ecdsa`.

    Only for *generating* benchmark workloads quickly (pure-Python signing runs at about
    700/s). RFC 6979 makes the signature byte for byte the one `PrivateKey.sign_digest`
    gives; `check` asserts that on the first use of each key.
    """

    def __init__(self) -> None:
        self._keys: dict[str, coincurve.PrivateKey] = {}

    def __call__(
        self, key: PrivateKey, kind: str, chain_id: int, message: Mapping[str, Any]
    ) -> SignedCommand:
        parsed = parse_kind(kind)
        normal = parse_message(parsed, message)
        digest = command_digest(parsed, chain_id, normal)
        fast = self._keys.get(key.address)
        if fast is None:
            fast = coincurve.PrivateKey(key.secret_bytes())
            self._keys[key.address] = fast
            assert self._sign(fast, digest) == key.sign_digest(digest), "signers disagree"
        return SignedCommand(kind, chain_id, key.address, normal, self._sign(fast, digest))

    @staticmethod
    def _sign(key: coincurve.PrivateKey, digest: bytes) -> bytes:
        signature: bytes = key.sign_recoverable(digest, hasher=None)
        return signature[:64] + bytes([27 + signature[64]])
