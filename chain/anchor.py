"""The auditor's check of the on-chain anchor: every epoch the `SettlementDistributor`
posted is compared with an exported event log.

For each `RootPosted` epoch (size n, log root r, claims root R), the export must hold at
least n events whose RFC 6962 root is r (the log the operator anchored is this one, not a
fork), R must be the root of the claims tree computed from those n events alone
(`chain.settlement.settlement_tree`), and the `SettleEpoch` record of that epoch, when the
export holds it, must name the same three values. The export's own integrity (hashes,
signatures, balances) is `blacktail audit`'s job; this adds the chain to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chain.contracts import SettlementDistributor
from chain.deploy import Deployment
from chain.settlement import ZERO_ROOT, recorded_epochs, settlement_tree
from protocol import canonical, merkle
from protocol.log import split_export_line
from protocol.settlement import withdrawals_from_log


@dataclass
class AnchorReport:
    """What the anchor check found: the epochs checked and every disagreement."""

    epochs: list[int] = field(default_factory=list)
    log_size: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "epochs": self.epochs,
            "log_size": self.log_size,
            "errors": self.errors,
        }


def read_export(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The leaves of an export and their leaf hashes (tree-head and blank lines skipped)."""
    leaves: list[dict[str, Any]] = []
    hashes: list[bytes] = []
    for line in lines:
        parts = split_export_line(line.rstrip(b"\n"))
        if parts is None:
            continue
        leaf_bytes, _ = parts
        leaves.append(canonical.decode(leaf_bytes))
        hashes.append(merkle.leaf_hash(leaf_bytes))
    return leaves, hashes


def check_anchor(
    lines: Iterable[bytes], distributor: SettlementDistributor, deployment: Deployment
) -> AnchorReport:
    """Compare every epoch posted on-chain with the exported log."""
    leaves, hashes = read_export(lines)
    report = AnchorReport(log_size=len(leaves))
    w3 = distributor.w3
    posts = distributor.root_posts(deployment.block_number, int(w3.eth.block_number))
    records = recorded_epochs(leaves)
    for post in posts:
        report.epochs.append(post.epoch)
        if post.log_size > len(leaves):
            report.errors.append(
                f"epoch {post.epoch}: anchors {post.log_size} events, the export has {len(leaves)}"
            )
            continue
        if merkle.root_from_hashes(hashes[: post.log_size]) != post.log_root:
            report.errors.append(
                f"epoch {post.epoch}: the export's first {post.log_size} events do not give "
                f"the anchored log root 0x{post.log_root.hex()}"
            )
        tree = settlement_tree(withdrawals_from_log(leaves, post.log_size), deployment)
        root = bytes.fromhex(tree.root[2:]) if tree is not None else ZERO_ROOT
        if root != post.root:
            report.errors.append(
                f"epoch {post.epoch}: the claims root from the log is 0x{root.hex()}, "
                f"the chain holds 0x{post.root.hex()}"
            )
        record = records.get(post.epoch)
        if record is not None and (
            record["root"] != "0x" + post.root.hex()
            or record["logSize"] != post.log_size
            or record["logRoot"] != "0x" + post.log_root.hex()
        ):
            report.errors.append(
                f"epoch {post.epoch}: the log's SettleEpoch differs from the chain"
            )
    return report
