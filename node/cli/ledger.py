"""`blacktail ledger`: initialize a store, run the simulated workload, show balances."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from node import simulate
from node.cli.common import (
    DEFAULT_CHAIN_ID,
    console,
    emit_json,
    json_option,
    open_network,
    operator_key,
    out,
    store_options,
)
from protocol.application import GenesisMismatch, Network, NotInitialized
from protocol.assets import Asset, to_display
from protocol.errors import ProtocolError
from protocol.keys import PrivateKey


@click.group()
def ledger() -> None:
    """Create and exercise the event-sourced ledger."""


def ensure_initialized(app: Network, data_dir: Path, chain_id: int) -> PrivateKey:
    key = operator_key(data_dir, create=True)
    try:
        app.initialize(chain_id, key.address)
    except GenesisMismatch as error:
        raise click.ClickException(f"{error}; use another --data-dir or --db") from None
    return key


@ledger.command()
@store_options
@click.option(
    "--chain-id",
    type=click.IntRange(min=1),
    default=DEFAULT_CHAIN_ID,
    show_default=True,
    help="Chain id every command must be signed for.",
)
@json_option
def init(data_dir: Path, dsn: str | None, chain_id: int, as_json: bool) -> None:
    """Record the network's genesis (chain id, operator) in the store.

    Makes the operator key DATA_DIR/operator.pem (mode 0600) on first use. Running it
    again with the same settings changes nothing.

    Example: blacktail ledger init --data-dir ./.blacktail --chain-id 31337
    """
    app = open_network(data_dir, dsn)
    key = ensure_initialized(app, data_dir, chain_id)
    facts = {"chain_id": app.chain_id, "operator": key.address, "store": app.storage.description}
    if as_json:
        emit_json(facts)
    else:
        click.echo(
            f"ledger ready: chain {facts['chain_id']}, operator {key.address}, {facts['store']}"
        )


@ledger.command("simulate")
@store_options
@click.option(
    "--accounts",
    type=click.IntRange(2, 100_000),
    default=20,
    show_default=True,
    help="Number of user accounts (keys are derived from the seed).",
)
@click.option(
    "--operations",
    type=click.IntRange(0, 10_000_000),
    default=2_000,
    show_default=True,
    help="Number of random commands after the initial deposits.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Commands saved per transaction (group commit).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random mix.")
@click.option("--chain-id", type=click.IntRange(min=1), default=DEFAULT_CHAIN_ID, show_default=True)
@json_option
def simulate_command(
    data_dir: Path,
    dsn: str | None,
    accounts: int,
    operations: int,
    batch: int,
    seed: int,
    chain_id: int,
    as_json: bool,
) -> None:
    """Run a realistic random mix of ledger operations through signed commands.

    Deposits fund every account, then transfers, job escrow (lock, release with a fee,
    refund), stake, unstake, slashes, fees and withdrawals follow; about 2% are built
    to be refused, to show that refusals change nothing.

    Example: blacktail ledger simulate --accounts 50 --operations 10000
    """
    app = open_network(data_dir, dsn)
    key = ensure_initialized(app, data_dir, chain_id)
    workload = simulate.Workload(key, app.chain_id, accounts, seed=seed)
    total = operations + accounts * len(Asset)
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        disable=as_json,
        transient=False,
    ) as bar:
        task = bar.add_task("commands", total=total, rate="")

        def advance(count: int) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            done = bar.tasks[task].completed + count
            bar.update(task, advance=count, rate=f"{done / elapsed:,.0f} cmd/s" if elapsed else "")

        report = simulate.run(app, workload, operations, batch=batch, progress=advance)
    if as_json:
        emit_json(report.to_json())
        return
    table = Table(title="ledger workload", show_header=True)
    table.add_column("command")
    table.add_column("count", justify="right")
    for kind, count in sorted(report.kinds.items()):
        table.add_row(kind, str(count))
    table.add_row("[green]accepted", str(report.accepted))
    for reason, count in sorted(report.refused.items()):
        table.add_row(f"[yellow]refused: {reason}", str(count))
    out.print(table)
    figures = report.to_json()
    out.print(
        f"signing {figures['seconds_signing']} s, applying {figures['seconds_applying']} s "
        f"({figures['commands_per_second_applied']} commands/s), store {app.storage.description}"
    )


@ledger.command()
@store_options
@click.argument("account")
@json_option
def balances(data_dir: Path, dsn: str | None, account: str, as_json: bool) -> None:
    """Show every bucket balance of ACCOUNT (an address, or `treasury` / `vault`)."""
    app = open_network(data_dir, dsn)
    try:
        app.genesis  # noqa: B018  (fails clearly on an uninitialized store)
        values = app.balances(account)
    except (NotInitialized, ProtocolError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        emit_json({"account": account, "balances": {k: str(v) for k, v in values.items()}})
        return
    table = Table(title=f"balances of {account}")
    for column in ("asset", "bucket", "amount", "base units"):
        table.add_column(column, justify="right" if column != "bucket" else "left")
    for key, value in sorted(values.items()):
        asset, bucket = key.split("/", 1)
        table.add_row(asset, bucket, to_display(value, Asset(asset)), str(value))
    out.print(table)
