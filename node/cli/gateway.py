"""`blacktail gateway`: run the REST gateway under gunicorn, print its OpenAPI document."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from node.cli.common import store_options
from node.gateway import create_app
from node.gateway.config import GatewayConfig
from node.gateway.server import DEFAULT_BIND, GatewayServer, prepare
from protocol.errors import ProtocolError
from protocol.storage import memory_storage


@click.group()
def gateway() -> None:
    """The REST gateway: signed commands in; balances, the event log and blobs out."""


@gateway.command()
@store_options
@click.option(
    "--bind", default=DEFAULT_BIND, show_default=True, help="HOST:PORT to listen on (port 0: any)."
)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Threads per worker (gthread: keeps connections alive).",
)
@click.option(
    "--chain-id",
    type=click.IntRange(min=1),
    default=None,
    help="Chain id commands must be signed for.  [env: BLACKTAIL_CHAIN_ID; default: 31337]",
)
@click.option(
    "--dev/--no-dev",
    default=None,
    help="Serve dev-only endpoints (POST /dev/deposit mints funds).  [env: BLACKTAIL_DEV]",
)
@click.option(
    "--blob-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where blobs are stored.  [env: BLACKTAIL_BLOB_DIR; default: DATA_DIR/blobs]",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.IntRange(1, 3600),
    default=30,
    show_default=True,
    help="Seconds a silent worker is given before it is restarted.",
)
def serve(
    data_dir: Path,
    dsn: str | None,
    bind: str,
    workers: int,
    threads: int,
    chain_id: int | None,
    dev: bool | None,
    blob_dir: Path | None,
    timeout_seconds: int,
) -> None:
    """Serve the gateway with gunicorn until interrupted.

    Initializes the store on first use (genesis, and the operator key in DATA_DIR).
    Limits come from BLACKTAIL_REQUEST_BYTES_MAX, BLACKTAIL_BLOB_BYTES_MAX,
    BLACKTAIL_PAGE_ITEMS_MAX, BLACKTAIL_PAGE_ITEMS_DEFAULT, BLACKTAIL_BATCH_COMMANDS_MAX;
    the compute protocol's clocks from BLACKTAIL_LEASE_SECONDS, BLACKTAIL_OPENING_SECONDS,
    BLACKTAIL_VERDICT_SECONDS, BLACKTAIL_DISPUTE_SECONDS, and the sweeper's period and its
    grace after a start from BLACKTAIL_SWEEP_SECONDS and BLACKTAIL_SWEEP_GRACE_SECONDS.

    Example: blacktail gateway serve --data-dir ./.blacktail --bind 127.0.0.1:8700 --dev
    """
    try:
        config = GatewayConfig.resolve(
            data_dir=data_dir, dsn=dsn, chain_id=chain_id, dev=dev, blob_dir=blob_dir
        )
        chain, operator = prepare(config)
    except ProtocolError as error:
        raise click.ClickException(str(error)) from None
    announce = (
        f"({workers} workers x {threads} threads; chain {chain}; operator {operator}; "
        f"{config.storage.description}{'; DEV endpoints on' if config.dev else ''})"
    )
    GatewayServer(
        config,
        bind=bind,
        workers=workers,
        threads=threads,
        timeout_seconds=timeout_seconds,
        announce=announce,
    ).run()


@gateway.command()
@click.option("--dev/--no-dev", default=False, help="Include the dev-only endpoints.")
def openapi(dev: bool) -> None:
    """Print the gateway's OpenAPI 3 document (JSON), as GET /openapi.json serves it."""
    with tempfile.TemporaryDirectory(prefix="blacktail-openapi-") as scratch:
        where = Path(scratch)
        config = GatewayConfig(
            storage=memory_storage(),
            operator_key_path=where / "operator.pem",
            blob_dir=where / "blobs",
            dev=dev,
        )
        app = create_app(config)
        document = app.test_client().get("/openapi.json").get_json()
    click.echo(json.dumps(document, indent=2, sort_keys=True))
