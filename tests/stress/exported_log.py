"""The log as an auditor gets it: `blacktail log export` run against the store, the export
audited (`protocol.audit.audit_lines`: signatures, posting sets, versions, the signed tree
head), and replayed once more to read what it says: every receipt and every balance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import canonical
from protocol.audit import AuditReport, Replayer, audit_lines, read_lines
from protocol.log import split_export_line

export_seconds_max = 120


@dataclass(frozen=True)
class AuditedLog:
    """An exported log that passed the audit, and what its replay shows."""

    report: AuditReport
    # (signer, client id) -> how many receipts the log holds for it.
    receipt_counts: Counter[tuple[str, str]]
    # (signer, client id) -> the receipt's data (legs, outcome, message...): the first one.
    receipts: dict[tuple[str, str], dict[str, Any]]
    # account name -> {"ASSET/bucket": amount}, as the replay computes them.
    balances: dict[str, dict[str, int]]
    leaves: list[dict[str, Any]]

    def receipt(self, signer: str, client_id: str) -> dict[str, Any] | None:
        return self.receipts.get((signer, client_id))


def export_and_audit(data_dir: Path, dsn: str | None, out: Path) -> AuditedLog:
    """Export the store's log with the CLI, audit it, and fail the test if the audit does."""
    command = [sys.executable, "-m", "node.cli", "log", "export", "--data-dir", str(data_dir)]
    if dsn is not None:
        command += ["--db", dsn]
    done = subprocess.run(
        [*command, "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=export_seconds_max,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    exported = json.loads(done.stdout)
    lines = list(read_lines(str(out)))
    report = audit_lines(lines, workers=0, require_tree_head=True)
    assert report.ok, f"the audit failed: {report.error}"
    assert report.events == exported["events"]
    replayer = Replayer()
    counts: Counter[tuple[str, str]] = Counter()
    receipts: dict[tuple[str, str], dict[str, Any]] = {}
    leaves: list[dict[str, Any]] = []
    for line in lines:
        parts = split_export_line(line)
        if parts is None:
            continue  # the tree head line, which the audit has checked
        leaf = canonical.decode(parts[0])
        replayer.apply(leaf)
        leaves.append(leaf)
        if leaf["type"] == "Receipt.Accepted":
            who = (leaf["data"]["signer"], leaf["data"]["client_id"])
            counts[who] += 1
            receipts.setdefault(who, leaf["data"])
    replayer.finish()
    return AuditedLog(report, counts, receipts, replayer.balances(), leaves)
