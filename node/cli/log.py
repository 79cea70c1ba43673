"""`blacktail log`: export the tamper-evident event log with a signed tree head, from the
store (`export`) or from a gateway (`fetch`)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from node.cli.common import (
    console,
    emit_json,
    json_option,
    open_network,
    operator_key,
    store_options,
)
from node.cli.remote import gateway_option
from node.client import GatewayClient, GatewayError
from node.gateway_ledger import GatewayLedger, GatewayLedgerError
from protocol import merkle
from protocol.application import NotInitialized
from protocol.log import SignedTreeHead, export_line, tree_head_line, write_export


@click.group("log")
def log_group() -> None:
    """Read the event log: every recorded event as a leaf of an RFC 6962 Merkle tree."""


@log_group.command("export")
@store_options
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (JSON lines); `-` for stdout.",
)
@json_option
def export(data_dir: Path, dsn: str | None, out_path: Path, as_json: bool) -> None:
    """Write every event, in order, as one canonical JSON line with its leaf hash, then the
    operator's signed tree head (size, root, timestamp) over exactly those events.

    Example: blacktail log export --out events.jsonl && blacktail audit events.jsonl
    """
    app = open_network(data_dir, dsn)
    try:
        operator = app.operator
    except NotInitialized as error:
        raise click.ClickException(str(error)) from None
    key = operator_key(data_dir, create=False)
    if key.address != operator:
        raise click.ClickException(
            f"the key in {data_dir} is {key.address}, the store's operator is {operator}"
        )
    started = time.perf_counter()
    stream = click.open_file(str(out_path), "wb", atomic=str(out_path) != "-")
    with (
        stream as handle,
        Progress(
            TextColumn("[bold]exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            disable=as_json or str(out_path) == "-",
        ) as bar,
    ):
        task = bar.add_task("events", total=None)
        head = write_export(app, key, handle, lambda done: bar.update(task, completed=done))
        bar.update(task, completed=head.size, total=head.size)
    facts = {
        "events": head.size,
        "root": "0x" + head.root.hex(),
        "out": str(out_path),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        emit_json(facts)
    elif str(out_path) != "-":
        click.echo(f"exported {facts['events']} events to {out_path}; tree root {facts['root']}")


@log_group.command("fetch")
@gateway_option
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (JSON lines); `-` for stdout.",
)
@json_option
def fetch(gateway: str, out_path: Path, as_json: bool) -> None:
    """Download a gateway's whole log as an export: every event's line, then the operator's
    signed tree head the gateway serves now. Each leaf is checked against its hash and the
    leaves' root against the signed head before the file is written, so what an auditor
    then replays (`blacktail audit FILE`) is exactly what the operator signed.

    Example: blacktail log fetch --gateway http://127.0.0.1:8700 --out events.jsonl
    """
    started = time.perf_counter()
    with GatewayClient(gateway) as client:
        try:
            head = SignedTreeHead.from_json(client.get_json("/tree-head"))
            # Streamed into a temporary file that replaces `out_path` only when every leaf
            # and the root have checked out (click's atomic file drops it on an error).
            with (
                click.open_file(str(out_path), "wb", atomic=str(out_path) != "-") as handle,
                Progress(
                    TextColumn("[bold]fetching"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    console=console,
                    disable=as_json or str(out_path) == "-",
                ) as bar,
            ):
                task = bar.add_task("events", total=head.size)
                accumulator = merkle.MerkleAccumulator()
                for leaf in GatewayLedger(client).leaves(head.size):
                    line, digest = export_line(leaf)
                    accumulator.append_hash(digest)
                    handle.write(line + b"\n")
                    if accumulator.size % 1000 == 0:
                        bar.update(task, completed=accumulator.size)
                bar.update(task, completed=accumulator.size)
                if accumulator.root() != head.root:
                    raise click.ClickException(
                        f"{gateway}: the {head.size} events do not hash to the signed tree "
                        "head's root"
                    )
                handle.write(tree_head_line(head) + b"\n")
        except (GatewayError, GatewayLedgerError, OSError, ValueError) as error:
            raise click.ClickException(f"{gateway}: {error}") from None
    facts = {
        "events": head.size,
        "root": "0x" + head.root.hex(),
        "operator": head.operator,
        "out": str(out_path),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        emit_json(facts)
    elif str(out_path) != "-":
        click.echo(f"fetched {facts['events']} events to {out_path}; tree root {facts['root']}")
