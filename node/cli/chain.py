"""`blacktail chain …` and `blacktail claim`: the contracts on an EVM chain.

The operator deploys the contracts (`chain deploy`), runs the watcher that credits Vault
deposits to the ledger (`chain watch`) and settles epochs (`chain settle`); anyone reads
the contracts' state (`chain status`); an account claims what it withdrew (`claim`).
Every command talks to a JSON-RPC node (`--rpc`, e.g. a local `python -m
chain.hardhat_node`) and names the deployment by the JSON file `chain deploy` wrote.
Keys are the PEM files of `blacktail keys`: a ledger address is an Ethereum address, so
the same key signs ledger commands and chain transactions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from node.cli.common import (
    emit_json,
    json_option,
    open_network,
    operator_key,
    out,
    store_options,
)
from node.cli.remote import Remote, key_option, load_key, print_facts
from protocol.assets import Asset, to_display
from protocol.errors import ProtocolError

DEFAULT_RPC = "http://127.0.0.1:8545"
rpc_timeout_seconds = 30


def rpc_option(func: Any) -> Any:
    return click.option(
        "--rpc",
        envvar="BLACKTAIL_RPC",
        default=DEFAULT_RPC,
        show_default=True,
        metavar="URL",
        help="The chain's JSON-RPC endpoint.  [env: BLACKTAIL_RPC]",
    )(func)


def deployment_option(func: Any) -> Any:
    return click.option(
        "--deployment",
        "deployment_path",
        envvar="BLACKTAIL_DEPLOYMENT",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        metavar="JSON",
        help="The deployment file `blacktail chain deploy` wrote.  [env: BLACKTAIL_DEPLOYMENT]",
    )(func)


def _web3(rpc: str) -> Any:
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(rpc, request_kwargs={"timeout": rpc_timeout_seconds}))
    try:
        _ = w3.eth.chain_id
    except Exception as error:  # requests' and web3's errors alike: the node is not there.
        raise click.ClickException(f"{rpc}: no JSON-RPC node answers ({error})") from None
    return w3


def _deployment(path: Path, w3: Any) -> Any:
    from chain.deploy import Deployment
    from chain.errors import DeploymentInvalid

    try:
        deployment = Deployment.from_json(path.read_text())
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such deployment file") from None
    except DeploymentInvalid as error:
        raise click.ClickException(f"{path}: {error}") from None
    if deployment.chain_id != w3.eth.chain_id:
        raise click.ClickException(
            f"{path}: deployed on chain {deployment.chain_id}, the node runs {w3.eth.chain_id}"
        )
    return deployment


def _sender(key: Any) -> Any:
    from chain.contracts import Sender

    return Sender.from_key(key.secret_bytes())


@click.group("chain")
def chain_group() -> None:
    """Deploy the contracts, credit deposits, settle epochs, read the contracts' state."""


@chain_group.command("deploy")
@rpc_option
@key_option
@click.option("--operator", metavar="ADDRESS", help="Posts epoch roots; default: the key's.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path))
@json_option
def deploy(rpc: str, key_path: Path, operator: str | None, out_path: Path, as_json: bool) -> None:
    """Deploy BlackToken, TestUSD, the Vault and the SettlementDistributor; write --out."""
    from chain.deploy import deploy_network
    from chain.errors import ChainError

    if out_path.exists():
        raise click.ClickException(f"{out_path} exists; a deployment is written to a new file")
    w3 = _web3(rpc)
    key = load_key(key_path)
    try:
        deployment = deploy_network(w3, _sender(key), operator=operator)
    except ChainError as error:
        raise click.ClickException(f"deployment failed: {error}") from None
    out_path.write_text(deployment.to_json())
    facts = {"deployment": str(out_path), **_as_dict(deployment)}
    if as_json:
        emit_json(facts)
    else:
        print_facts("deployed", facts)


def _as_dict(deployment: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(deployment.to_json()))


@chain_group.command("watch")
@rpc_option
@deployment_option
@store_options
@click.option("--confirmations", type=click.IntRange(1, 1000), default=2, show_default=True)
@click.option("--poll-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True)
@click.option("--once", is_flag=True, help="Credit what is confirmed now, then exit.")
@json_option
def watch(
    rpc: str,
    deployment_path: Path,
    data_dir: Path,
    dsn: str | None,
    confirmations: int,
    poll_seconds: float,
    once: bool,
    as_json: bool,
) -> None:
    """Credit every Vault deposit to the ledger exactly once (the operator's watcher).

    The cursor lives in the data directory (watcher-<chain>-<vault>.json); restarting
    resumes from it, and re-reading blocks never credits a deposit twice."""
    from chain.contracts import Vault
    from chain.watcher import DepositWatcher, WatcherError

    w3 = _web3(rpc)
    deployment = _deployment(deployment_path, w3)
    network = open_network(data_dir, dsn)
    watcher = DepositWatcher(
        Vault(w3, deployment.vault),
        deployment,
        network.submit,
        operator_key(data_dir, create=False),
        network.chain_id,
        confirmations=confirmations,
        cursor_path=data_dir / f"watcher-{deployment.chain_id}-{deployment.vault}.json",
    )
    credited: list[dict[str, Any]] = []
    try:
        while True:
            for c in watcher.poll():
                row = {
                    "chain_ref": c.deposit.chain_ref,
                    "account": c.deposit.account,
                    "asset": c.asset,
                    "amount": c.deposit.amount,
                    "duplicate": c.duplicate,
                }
                credited.append(row)
                if not as_json:
                    out.print(
                        f"credited {to_display(c.deposit.amount, Asset(c.asset))} {c.asset} "
                        f"to {c.deposit.account} ({c.deposit.chain_ref})"
                    )
            if once:
                break
            time.sleep(poll_seconds)
    except WatcherError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        pass
    finally:
        network.close()
    if as_json:
        emit_json(credited)


@chain_group.command("settle")
@rpc_option
@deployment_option
@store_options
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path),
    metavar="PEM",
    help="Sends the root post (needs the operator role); default: the ledger's operator key.",
)
@json_option
def settle(
    rpc: str,
    deployment_path: Path,
    data_dir: Path,
    dsn: str | None,
    key_path: Path | None,
    as_json: bool,
) -> None:
    """Settle the next epoch: finalize pending withdrawals, post the root and the log head,
    record the epoch in the log."""
    from chain.contracts import SettlementDistributor
    from chain.errors import ChainError
    from chain.settlement import EpochSettler

    w3 = _web3(rpc)
    deployment = _deployment(deployment_path, w3)
    network = open_network(data_dir, dsn)
    operator = operator_key(data_dir, create=False)
    sender = _sender(load_key(key_path) if key_path is not None else operator)
    settler = EpochSettler(
        network, operator, SettlementDistributor(w3, deployment.distributor), deployment, sender
    )
    try:
        report = settler.settle()
    except (ChainError, ProtocolError) as error:
        raise click.ClickException(str(error)) from None
    finally:
        network.close()
    facts = {
        "epoch": report.epoch,
        "root": report.root,
        "log_size": report.log_size,
        "log_root": report.log_root,
        "accounts": report.accounts,
        "finalized": report.finalized,
        "tx_hash": report.tx_hash,
        "recovered": report.recovered,
    }
    if as_json:
        emit_json(facts)
    else:
        print_facts(f"epoch {report.epoch} settled", facts)


@chain_group.command("status")
@rpc_option
@deployment_option
@json_option
def status(rpc: str, deployment_path: Path, as_json: bool) -> None:
    """The current epoch, its root and anchored log head, and the Vault's holdings."""
    from chain.contracts import BlackToken, SettlementDistributor, TestUSD

    w3 = _web3(rpc)
    deployment = _deployment(deployment_path, w3)
    head = SettlementDistributor(w3, deployment.distributor).head()
    facts = {
        "chain_id": deployment.chain_id,
        "epoch": head.epoch,
        "root": "0x" + head.root.hex(),
        "log_size": head.log_size,
        "log_root": "0x" + head.log_root.hex(),
        "vault_black": BlackToken(w3, deployment.black_token).balance_of(deployment.vault),
        "vault_usd": TestUSD(w3, deployment.usd_token).balance_of(deployment.vault),
    }
    if as_json:
        emit_json(facts)
    else:
        print_facts("chain", facts)


@click.command("claim")
@rpc_option
@deployment_option
@key_option
@click.option(
    "--asset", type=click.Choice([a.value for a in Asset]), required=True, help="Which token."
)
@click.option("--gateway", metavar="URL", help="Rebuild the tree from this gateway's log.")
@store_options
@json_option
def claim(
    rpc: str,
    deployment_path: Path,
    key_path: Path,
    asset: str,
    gateway: str | None,
    data_dir: Path,
    dsn: str | None,
    as_json: bool,
) -> None:
    """Claim on-chain what this key's account withdrew on the ledger.

    The claims tree is rebuilt from the log itself (a gateway's /events with --gateway,
    else the local store) and its root checked against the one the contract holds, so
    nobody has to be trusted for the proof."""
    from chain.contracts import SettlementDistributor
    from chain.errors import ChainError
    from chain.settlement import build_claim

    w3 = _web3(rpc)
    deployment = _deployment(deployment_path, w3)
    key = load_key(key_path)
    distributor = SettlementDistributor(w3, deployment.distributor)
    size = distributor.head().log_size
    network = None
    try:
        if gateway is not None:
            from node.gateway_ledger import GatewayLedger

            leaves: Any = GatewayLedger(Remote(gateway).client).leaves(size)
        else:
            from protocol.log import EventLog

            network = open_network(data_dir, dsn)
            log = EventLog(network)
            log.sync()
            leaves = log.leaves()
        found = build_claim(leaves, distributor, deployment, key.address, Asset(asset))
        distributor.claim(
            found.epoch,
            found.account,
            found.token,
            found.cumulative,
            found.proof,
            sender=_sender(key),
        )
    except ChainError as error:
        raise click.ClickException(str(error)) from None
    finally:
        if network is not None:
            network.close()
    facts = {
        "epoch": found.epoch,
        "account": found.account,
        "asset": asset,
        "amount": found.amount,
        "cumulative": found.cumulative,
    }
    if as_json:
        emit_json(facts)
    else:
        out.print(
            f"claimed {to_display(found.amount, Asset(asset))} {asset} for {found.account} "
            f"(epoch {found.epoch})"
        )


@chain_group.command("anchor")
@rpc_option
@deployment_option
@click.argument("export", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def anchor(rpc: str, deployment_path: Path, export: Path, as_json: bool) -> None:
    """Check every epoch anchored on-chain against an exported log (`blacktail log
    export`): its log root, its claims root and its SettleEpoch record. Exit 1 on any
    difference."""
    from chain.anchor import check_anchor
    from chain.contracts import SettlementDistributor

    w3 = _web3(rpc)
    deployment = _deployment(deployment_path, w3)
    with export.open("rb") as handle:
        report = check_anchor(handle, SettlementDistributor(w3, deployment.distributor), deployment)
    if as_json:
        emit_json(report.to_json())
    else:
        for error in report.errors:
            out.print(f"[red]✗[/red] {error}")
        verdict = "[green]anchor holds[/green]" if report.ok else "[red]anchor broken[/red]"
        out.print(f"{verdict}: epochs {report.epochs} against {report.log_size} exported events")
    if not report.ok:
        raise SystemExit(1)
