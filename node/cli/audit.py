"""`blacktail audit`: replay an exported log (or a store) and check everything."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from node.cli.common import (
    emit_json,
    json_option,
    open_network,
    open_storage,
    out,
    store_options,
    workers_default,
)
from protocol.assets import Asset, to_display
from protocol.audit import AuditReport, audit_lines, read_lines
from protocol.errors import ProtocolError
from protocol.log import EventLog
from protocol.storage import LEDGER_FILE


@click.command()
@click.argument(
    "export_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@store_options
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=workers_default,
    show_default="cores",
    help="Processes checking signatures and leaf hashes (0: in this process).",
)
@json_option
def audit(
    export_file: Path | None, data_dir: Path, dsn: str | None, workers: int, as_json: bool
) -> None:
    """Replay EXPORT_FILE into fresh state and check every invariant, signature and the
    signed tree head; exit 1 naming the first bad position.

    Checks: positions and versions in order; every leaf hash; every command's EIP-712
    signature and the signer's authority; every posting set balanced and exactly what
    the signed command asked for; no bucket below zero; per asset, balances = vault
    reserve = deposits - finalized withdrawals; the tree head's size, root and signature.

    Without EXPORT_FILE the store itself is audited (--db DSN, or the SQLite file in
    --data-dir); a store holds no signed tree head, so the report gives the root to
    compare with a published one.

    Examples: blacktail audit events.jsonl --json;
    blacktail audit --db postgresql://user:pw@127.0.0.1:5432/blacktail
    """
    if export_file is not None:
        if dsn:
            raise click.UsageError("give EXPORT_FILE or --db, not both")
        report = audit_lines(read_lines(str(export_file)), workers=workers)
    else:
        storage = open_storage(data_dir, dsn)
        if not storage.is_postgres and not (data_dir / LEDGER_FILE).exists():
            raise click.ClickException(
                f"no export file given and no store at {data_dir / LEDGER_FILE}"
            )
        log = EventLog(open_network(data_dir, dsn))
        lines = log.lines()
        try:
            report = audit_lines(lines, workers=workers, require_tree_head=False)
        except ProtocolError as error:
            raise click.ClickException(f"AUDIT FAILED reading the store: {error}") from None
    if as_json:
        emit_json(report.to_json())
    else:
        _print(report)
    if not report.ok:
        raise SystemExit(1)


def _print(report: AuditReport) -> None:
    facts = report.to_json()
    table = Table(title="audit", show_header=False)
    table.add_column("fact")
    table.add_column("value", justify="right")
    table.add_row("events replayed", f"{report.events:,}")
    table.add_row("commands", f"{report.commands:,}")
    table.add_row("signatures checked", f"{report.signatures_checked:,}")
    table.add_row("accounts", f"{report.accounts:,}")
    table.add_row("tree root", facts["root"])
    if report.tree_head is not None:
        table.add_row(
            "signed tree head", f"size {report.tree_head.size:,} by {report.tree_head.operator}"
        )
    for asset, totals in sorted(report.totals.items()):
        shown = to_display(totals["balances"], Asset(asset))
        table.add_row(f"{asset} held for users", shown)
    table.add_row("speed", f"{facts['events_per_second'] or 0:,} events/s in {facts['seconds']} s")
    out.print(table)
    if report.error is None:
        out.print("[bold green]AUDIT PASSED[/]: every invariant, signature and the tree head hold")
    else:
        out.print(
            f"[bold red]AUDIT FAILED[/] at position {report.error.position}: {report.error.reason}"
        )
