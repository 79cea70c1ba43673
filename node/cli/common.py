"""Options and helpers shared by the `blacktail` sub-commands."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

# Re-exported: the sub-commands take these from here.
from node.device import DEVICE_CHOICES, DeviceError, resolve_device
from node.operator import DEFAULT_CHAIN_ID as DEFAULT_CHAIN_ID
from node.operator import OPERATOR_KEY_FILE as OPERATOR_KEY_FILE
from node.operator import OperatorKeyMissing, load_operator_key
from protocol.application import Network
from protocol.errors import ProtocolError
from protocol.keys import PrivateKey
from protocol.storage import DEFAULT_DATA_DIR, Storage, resolve_storage

F = TypeVar("F", bound=Callable[..., Any])

# Progress goes to stderr so that stdout carries only results (and pipes cleanly).
console = Console(stderr=True)
out = Console()


def store_options(func: F) -> F:
    """--data-dir and --db, with their environment variables."""
    func = click.option(
        "--db",
        "dsn",
        envvar="BLACKTAIL_DB",
        metavar="DSN",
        help="PostgreSQL DSN (postgresql://user:password@host:port/dbname); "
        "default: the SQLite file in the data directory.  [env: BLACKTAIL_DB]",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="BLACKTAIL_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help="Directory for the SQLite store and the operator key.  [env: BLACKTAIL_DATA_DIR]",
    )(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def device_option(func: F) -> F:
    """`--train-on auto|cpu|cuda`: where PyTorch trains (tolerance mode); the kernels of
    exact mode run on the CPU."""
    return click.option(
        "--train-on",
        type=click.Choice(DEVICE_CHOICES),
        default="auto",
        show_default=True,
        help="Where PyTorch trains tolerance-mode jobs: a GPU when one is seen under 'auto'.",
    )(func)


def resolve_train_on(choice: str) -> str:
    try:
        return resolve_device(choice)
    except DeviceError as error:
        raise click.BadParameter(str(error), param_hint="--train-on") from None


def open_storage(data_dir: Path, dsn: str | None) -> Storage:
    try:
        return resolve_storage(data_dir, dsn)
    except ProtocolError as error:
        raise click.ClickException(str(error)) from None


def open_network(data_dir: Path, dsn: str | None) -> Network:
    storage = open_storage(data_dir, dsn)
    try:
        return Network(storage)
    except Exception as error:  # A store that cannot be opened is an operating error.
        raise click.ClickException(
            f"cannot open the store {storage.description}: {error}"
        ) from None


def operator_key(data_dir: Path, *, create: bool) -> PrivateKey:
    """The operator key kept in the data directory (made on first use when `create`)."""
    path = data_dir / OPERATOR_KEY_FILE
    try:
        return load_operator_key(path, create=create)
    except OperatorKeyMissing:
        raise click.ClickException(
            f"no operator key at {path}; run `blacktail ledger init` first"
        ) from None
    except ProtocolError as error:
        raise click.ClickException(f"operator key {path}: {error}") from None


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def workers_default() -> int:
    return os.cpu_count() or 1
