"""`blacktail provider|job|account`: talk to a gateway with a key file.

Every command that changes something is signed here, with the key given by --key, and
sent to the gateway; the gateway never sees a private key.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import click
import yaml
from rich.table import Table

from node.cli.common import (
    console,
    device_option,
    emit_json,
    json_option,
    out,
    resolve_train_on,
)
from node.cli.remote import (
    Remote,
    address_of,
    base_units,
    gateway_option,
    key_option,
    print_facts,
    report,
)
from node.device import describe_device, measure_gflops
from protocol.assets import Asset, parse_asset, to_display
from protocol.errors import ProtocolError
from protocol.jobspec import JobSpec, parse_job_spec, spec_bytes_max


def _show(value: int, asset: str) -> str:
    return f"{to_display(value, Asset(asset))} {asset}"


# -- provider -------------------------------------------------------------------------


@click.group()
def provider() -> None:
    """Register GPUs with the network and look at a provider's standing."""


@provider.command("register")
@gateway_option
@key_option
@device_option
@click.option("--device", default=None, help="Device name; default: detected (e.g. 'NVIDIA H100').")
@click.option("--gpus", type=click.IntRange(1, 1024), default=None, help="Default: detected.")
@click.option("--memory-mb", type=click.IntRange(1), default=None, help="Default: detected.")
@click.option(
    "--benchmark-gflops",
    type=click.IntRange(0),
    default=None,
    help="Measured float32 matmul throughput; default: measure it now (a few seconds).",
)
@click.option("--price-black", default="0.0001", show_default=True, help="BLACK per step.")
@click.option("--price-usd", default="0.0001", show_default=True, help="USD per step.")
@click.option("--stake", default="20", show_default=True, help="BLACK to stake now.")
@json_option
def provider_register(
    gateway: str,
    key_path: Path,
    train_on: str,
    device: str | None,
    gpus: int | None,
    memory_mb: int | None,
    benchmark_gflops: int | None,
    price_black: str,
    price_usd: str,
    stake: str,
    as_json: bool,
) -> None:
    """Register (or update) this key's GPUs, prices and stake."""
    remote = Remote(gateway, key_path)
    kind = resolve_train_on(train_on)
    facts = describe_device(kind)
    if benchmark_gflops is None:
        benchmark_gflops = measure_gflops(kind)
    result = remote.command(
        "/providers",
        "RegisterProvider",
        {
            "device": device or facts.name,
            "gpus": gpus or facts.count,
            "memoryMb": memory_mb or facts.memory_mb,
            "benchmarkGflops": benchmark_gflops,
            "priceBlack": base_units(price_black, Asset.BLACK, "--price-black"),
            "priceUsd": base_units(price_usd, Asset.USD, "--price-usd"),
            "stake": base_units(stake, Asset.BLACK, "--stake"),
        },
    )
    report(
        as_json,
        result,
        lambda r: out.print(f"registered provider {r['signer']} ({benchmark_gflops} GFLOP/s)"),
    )


@provider.command("status")
@gateway_option
@click.argument("address", required=False)
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Use this key's address.")
@json_option
def provider_status(
    gateway: str, address: str | None, key_path: Path | None, as_json: bool
) -> None:
    """Show a provider: hardware, prices, status, reputation, stake and earnings."""
    address = address_of(address, key_path)
    remote = Remote(gateway)
    facts = remote.get(f"/providers/{address}")
    facts["balances"] = remote.get(f"/accounts/{address}/balances")

    def render(p: dict[str, Any]) -> None:
        print_facts(
            f"provider {p['address']}",
            {
                "device": f"{p['gpus']} x {p['device']} ({p['memory_mb']} MB)",
                "benchmark": f"{p['benchmark_gflops']} GFLOP/s",
                "prices": ", ".join(_show(v, a) for a, v in p["prices"].items()),
                "status": p["status"],
                "reputation": f"{p['reputation_bps'] / 100:.2f}% "
                f"({p['accepted']} accepted, {p['rejected']} rejected)",
                "leases held": len(p["leases"]),
            },
        )
        _balances_table(p["balances"])

    report(as_json, facts, render)


# -- job --------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Submit training jobs, follow them, cancel them."""


def read_spec(path: Path) -> JobSpec:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read: {error.strerror}") from None
    if len(text) > spec_bytes_max:
        raise click.ClickException(f"{path}: larger than {spec_bytes_max} bytes")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise click.ClickException(f"{path}: not YAML or JSON: {error}") from None
    if not isinstance(document, dict):
        raise click.ClickException(f"{path}: a job spec is a mapping")
    try:
        return parse_job_spec(document)
    except ProtocolError as error:
        raise click.ClickException(f"{path}: {error}") from None


@job.command("submit")
@gateway_option
@key_option
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(path_type=Path))
@json_option
def job_submit(gateway: str, key_path: Path, spec_path: Path, as_json: bool) -> None:
    """Submit the job in SPEC.yaml; its whole budget moves into escrow."""
    spec = read_spec(spec_path)
    remote = Remote(gateway, key_path)
    result = remote.command(
        "/jobs",
        "SubmitJob",
        {"specHash": "0x" + spec.digest().hex()},
        extra={"spec": spec.to_json()},
    )
    outcome = result["outcome"]

    def render(r: dict[str, Any]) -> None:
        out.print(
            f"job {outcome['job']} submitted; "
            f"{_show(outcome['budget'], outcome['currency'])} in escrow"
        )

    report(as_json, result, render)


@job.command("status")
@gateway_option
@click.argument("job_id")
@json_option
def job_status(gateway: str, job_id: str, as_json: bool) -> None:
    """Show a job: status, segments, escrow and payments."""
    facts = Remote(gateway).get(f"/jobs/{job_id}")

    def render(j: dict[str, Any]) -> None:
        print_facts(
            f"job {j['id']}",
            {
                "status": j["status"],
                "developer": j["developer"],
                "segments": f"{j['segments_accepted']} of {j['segments']} accepted",
                "segment in flight": f"{j['current_segment']} ({j['segment_state']})",
                "budget": _show(j["budget"], j["currency"]),
                "paid": _show(j["paid"], j["currency"]),
                "refunded": _show(j["refunded"], j["currency"]),
                "escrow": _show(j["escrow"], j["currency"]),
                "checkpoint": j["checkpoint"],
                "deadline": j["deadline"],
            },
        )

    report(as_json, facts, render)


@job.command("cancel")
@gateway_option
@key_option
@click.argument("job_id")
@json_option
def job_cancel(gateway: str, key_path: Path, job_id: str, as_json: bool) -> None:
    """Cancel a job; what it has not earned is refunded."""
    result = Remote(gateway, key_path).command(
        f"/jobs/{job_id}/cancel", "CancelJob", {"job": job_id}
    )
    report(
        as_json,
        result,
        lambda r: out.print(
            f"job {job_id} cancelled; refunded {r['outcome']['refund']} base units"
        ),
    )


# -- account ------------------------------------------------------------------------------


@click.group()
def account() -> None:
    """Balances, and dev-only credits on an embedded network."""


def _balances_table(balances: dict[str, Any]) -> None:
    table = Table(title="balances", title_justify="left")
    for column in ("asset", "bucket", "amount"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for row in _balance_rows(balances):
        table.add_row(*row)
    out.print(table)


def _balance_rows(balances: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows of a `GET /accounts/<address>/balances` answer (its display amounts)."""
    return [(b["asset"], b["bucket"], b["display"]) for b in balances["balances"]]


@account.command("balance")
@gateway_option
@click.argument("address", required=False)
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Use this key's address.")
@json_option
def account_balance(
    gateway: str, address: str | None, key_path: Path | None, as_json: bool
) -> None:
    """Show an account's balances in every asset and bucket."""
    address = address_of(address, key_path)
    balances = Remote(gateway).get(f"/accounts/{address}/balances")
    report(as_json, balances, _balances_table)


@account.command("deposit-dev")
@gateway_option
@click.option("--to", "address", help="Account to credit (default: the --key's address).")
@click.option(
    "--key", "key_path", type=click.Path(path_type=Path), help="Credit this key's address."
)
@click.option("--asset", default="BLACK", show_default=True)
@click.option("--amount", required=True, help="Amount in display units, e.g. 100 or 2.5.")
@json_option
def account_deposit_dev(
    gateway: str,
    address: str | None,
    key_path: Path | None,
    asset: str,
    amount: str,
    as_json: bool,
) -> None:
    """Credit an account on a gateway started with --dev (no chain needed)."""
    address = address_of(address, key_path, "--to ADDRESS")
    try:
        parsed = parse_asset(asset)
    except ProtocolError as error:
        raise click.BadParameter(str(error), param_hint="--asset") from None
    units = base_units(amount, parsed, "--amount")
    result = Remote(gateway).post(
        "/dev/deposit", {"account": address, "asset": parsed.value, "amount": units}
    )
    report(as_json, result, lambda r: out.print(f"credited {amount} {parsed.value} to {address}"))


@provider.command("run")
@gateway_option
@key_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".blacktail/datasets"),
    show_default=True,
    help="Where fetched datasets are kept (checked against their id on every use).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(1),
    default=None,
    help="Keep every Nth state for openings; default: every state when a segment's states "
    "fit in 256 MiB, else every 16th.",
)
@device_option
@click.option("--max-segments", type=click.IntRange(1), default=None, help="Stop after this many.")
@click.option("--poll-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True)
@json_option
def provider_run(
    gateway: str,
    key_path: Path,
    cache_dir: Path,
    checkpoint_every: int | None,
    train_on: str,
    max_segments: int | None,
    poll_seconds: float,
    as_json: bool,
) -> None:
    """Lease segments, train them, commit and open the sampled steps, until stopped."""
    import threading

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from node.datasets import fetch
    from node.provider import ProviderAgent

    remote = Remote(gateway, key_path)
    assert remote.key is not None
    bar = Progress(
        TextColumn("step {task.completed:.0f}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} steps/s"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    )
    task = bar.add_task("training", total=None, loss=float("nan"), rate=0.0)
    started = [time.perf_counter(), 0]

    def progress(step: int, loss: float) -> None:
        started[1] += 1
        rate = started[1] / max(time.perf_counter() - started[0], 1e-9)
        bar.update(task, completed=step, loss=loss, rate=rate)

    agent = ProviderAgent(
        remote.client,
        remote.key,
        lambda dataset_id: fetch(dataset_id, remote.client, cache_dir),
        chain_id=remote.chain_id,
        checkpoint_every=checkpoint_every,
        progress=progress,
        device=resolve_train_on(train_on),
    )
    stop = threading.Event()
    with bar:
        try:
            reports = agent.run(stop, max_segments=max_segments, poll_seconds=poll_seconds)
        except KeyboardInterrupt:
            stop.set()
            reports = []
    rows = [dataclasses.asdict(r) for r in reports]
    if as_json:
        emit_json(rows)
        return
    for r in reports:
        out.print(
            f"job {r.job} segment {r.segment}: {r.steps} steps, loss {r.loss_first:.4f} -> "
            f"{r.loss_last:.4f}, committed {r.commitment}, {r.samples} steps opened"
        )
