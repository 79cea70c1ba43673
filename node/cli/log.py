"""`blacktail log`: export the tamper-evident event log with a signed tree head."""

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
from protocol.application import NotInitialized
from protocol.log import write_export


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
