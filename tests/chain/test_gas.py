"""Gas of every contract operation against the committed snapshot, chain/gas-snapshot.json.

Gas on py-evm is exact and repeatable, so the tolerance is zero: any operation that costs
more than its snapshot fails the test, with the whole table printed. When a change is
meant to cost more (or saves gas, which should be locked in), rewrite the snapshot with
`BLACKTAIL_UPDATE_GAS_SNAPSHOT=1 pytest tests/chain/test_gas.py` and commit it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.bench_settlement_gas import measure_operations

SNAPSHOT = Path(__file__).resolve().parents[2] / "chain" / "gas-snapshot.json"
UPDATE_ENV = "BLACKTAIL_UPDATE_GAS_SNAPSHOT"


def _update_requested() -> bool:
    value = os.environ.get(UPDATE_ENV, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{UPDATE_ENV}: expected 0 or 1, got {value!r}")
    return value == "1"


def _table(snapshot: dict[str, int], measured: dict[str, int]) -> str:
    lines = [f"{'operation':<32} {'snapshot':>10} {'measured':>10} {'change':>8}"]
    for name in sorted(set(snapshot) | set(measured)):
        old, new = snapshot.get(name), measured.get(name)
        change = "" if old is None or new is None else f"{new - old:+d}"
        shown_old = "-" if old is None else str(old)
        shown_new = "-" if new is None else str(new)
        lines.append(f"{name:<32} {shown_old:>10} {shown_new:>10} {change:>8}")
    return "\n".join(lines)


def test_no_operation_costs_more_gas_than_its_snapshot() -> None:
    """Every measured operation is in the snapshot and uses no more gas than recorded there."""
    update = _update_requested()
    measured = measure_operations()
    if update:
        SNAPSHOT.write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n")
    snapshot: dict[str, int] = json.loads(SNAPSHOT.read_text())
    table = _table(snapshot, measured)
    print(table)
    assert set(measured) == set(snapshot), (
        f"operations differ from {SNAPSHOT.name} (rewrite it with {UPDATE_ENV}=1):\n{table}"
    )
    risen = sorted(name for name in measured if measured[name] > snapshot[name])
    assert not risen, f"gas rose for {risen}:\n{table}"


def test_snapshot_is_sorted_and_meets_the_aims() -> None:
    """The snapshot file is canonical (sorted keys, indent 2), and holds the issue's aims:
    a root post under 60,000 gas and a repeat claim at proof depth 20 under 80,000."""
    text = SNAPSHOT.read_text()
    snapshot: dict[str, int] = json.loads(text)
    assert text == json.dumps(snapshot, indent=2, sort_keys=True) + "\n"
    assert snapshot["post_root"] <= 60_000
    assert snapshot["claim.depth20.repeat"] <= 80_000
