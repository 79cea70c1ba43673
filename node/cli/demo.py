"""`blacktail demo`: the network's main story on embedded defaults.

Until the compute network exists, the story is the ledger's: a simulated workload of
signed commands, the export of the tamper-evident log, an independent audit that passes,
and the same audit catching a one-line forgery.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
from rich.panel import Panel
from rich.table import Table

from node import simulate
from node.cli.common import DEFAULT_CHAIN_ID, console, open_network, out
from node.cli.ledger import ensure_initialized
from protocol.assets import Asset
from protocol.audit import audit_lines, read_lines
from protocol.log import write_export


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's store here (default: a fresh temporary directory).",
)
@click.option("--accounts", type=click.IntRange(2, 10_000), default=20, show_default=True)
@click.option("--operations", type=click.IntRange(1, 1_000_000), default=2_000, show_default=True)
def demo(data_dir: Path | None, accounts: int, operations: int) -> None:
    """Run the ledger workload, export the log, audit it, and show a forgery caught.

    Exits 0 only when the honest log passes the audit and the forged one fails it.
    """
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="blacktail-demo-"))
    out.print(
        Panel.fit(
            "[bold]BlackTail[/] ledger demo: signed commands -> event-sourced ledger -> "
            "tamper-evident log -> independent audit",
            border_style="cyan",
        )
    )
    app = open_network(data_dir, None)
    key = ensure_initialized(app, data_dir, DEFAULT_CHAIN_ID)
    out.print(f"1. store {app.storage.description}, chain {app.chain_id}, operator {key.address}")

    workload = simulate.Workload(key, app.chain_id, accounts, seed=int(time.time()))
    total = operations + accounts * len(Asset)
    with console.status("") as status:
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            status.update(f"2. applying signed commands: {done:,}/{total:,}")

        report = simulate.run(app, workload, operations, progress=advance)
    refused = sum(report.refused.values())
    out.print(
        f"2. {report.commands:,} signed commands: {report.accepted:,} accepted, "
        f"{refused:,} refused and left no trace ({dict(report.refused)})"
    )

    export_path = data_dir / "events.jsonl"
    with export_path.open("wb") as handle:
        head = write_export(app, key, handle)
    out.print(
        f"3. exported {head.size:,} events to {export_path}, "
        f"signed tree root 0x{head.root.hex()[:16]}..."
    )

    honest = audit_lines(read_lines(str(export_path)))
    table = Table(title="4. independent audit of the export")
    for column in ("events", "commands", "signatures", "accounts", "events/s", "result"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{honest.events:,}",
        f"{honest.commands:,}",
        f"{honest.signatures_checked:,}",
        f"{honest.accounts:,}",
        f"{honest.to_json()['events_per_second'] or 0:,}",
        "[green]PASSED"
        if honest.ok
        else f"[red]FAILED at {honest.error.position if honest.error else '?'}",
    )
    out.print(table)

    forged_path = data_dir / "events-forged.jsonl"
    lines = list(read_lines(str(export_path)))
    victim = next(
        i
        for i, line in enumerate(lines)
        if b'"type":"Account.Posted"' in line and i > len(lines) // 2
    )
    forged = json.loads(lines[victim])
    forged["event"]["data"]["legs"][0][4] += 1
    lines[victim] = json.dumps(forged, separators=(",", ":"), sort_keys=True).encode()
    forged_path.write_bytes(b"\n".join(lines) + b"\n")
    caught = audit_lines(read_lines(str(forged_path)))
    where = caught.error.position if caught.error else None
    out.print(
        f"5. forged one amount at position {victim}: audit "
        + (
            f"[green]caught it at position {where}[/]: {caught.error.reason}"
            if caught.error
            else "[red]did not notice[/]"
        )
    )
    ok = honest.ok and where == victim
    out.print("[bold green]demo passed[/]" if ok else "[bold red]demo failed[/]")
    if not ok:
        raise SystemExit(1)
