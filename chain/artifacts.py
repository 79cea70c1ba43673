"""The committed contract artifacts in `chain/build/`, written by `node chain/compile.js`.

Running the network needs only these files, not node or the compiler; a test checks that
they are exactly what a fresh compile of `chain/contracts/` gives.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_typing import ABI

from chain.errors import ArtifactMissing

BUILD_DIR = Path(__file__).resolve().parent / "build"

# The contracts BlackTail deploys, in deployment order.
CONTRACT_NAMES = ("BlackToken", "TestUSD", "Vault", "SettlementDistributor")


@dataclass(frozen=True, slots=True)
class Artifact:
    """One compiled contract: its ABI, creation and runtime bytecode, and compiler facts."""

    contract_name: str
    source_name: str
    compiler: str
    abi: ABI
    bytecode: bytes
    deployed_bytecode: bytes
    metadata: str


@functools.cache
def load_artifact(name: str, build_dir: Path = BUILD_DIR) -> Artifact:
    """The artifact of contract `name` (`"Vault"`) from `build_dir`."""
    path = build_dir / f"{name}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ArtifactMissing(name, str(path)) from error
    record: dict[str, Any] = json.loads(text)
    # A mismatch here means a hand-edited or foreign file: a programmer error, not input.
    assert record["contractName"] == name, f"{path} holds {record['contractName']!r}"
    return Artifact(
        contract_name=record["contractName"],
        source_name=record["sourceName"],
        compiler=record["compiler"],
        abi=record["abi"],
        bytecode=bytes.fromhex(record["bytecode"].removeprefix("0x")),
        deployed_bytecode=bytes.fromhex(record["deployedBytecode"].removeprefix("0x")),
        metadata=record["metadata"],
    )


def artifact_names(build_dir: Path = BUILD_DIR) -> list[str]:
    """The names of every contract with an artifact in `build_dir`, sorted."""
    return sorted(path.stem for path in build_dir.glob("*.json"))
