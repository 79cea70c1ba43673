"""`blacktail demo` and `blacktail up`: the whole network on embedded defaults, and
`blacktail ledger demo`, the ledger's own story (a simulated workload of signed commands,
the export of the tamper-evident log, an independent audit that passes, and the same audit
catching a one-line forgery)."""

from __future__ import annotations

import contextlib
import json
import shutil
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


@click.command("demo")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's store here (default: a fresh temporary directory).",
)
@click.option("--accounts", type=click.IntRange(2, 10_000), default=20, show_default=True)
@click.option("--operations", type=click.IntRange(1, 1_000_000), default=2_000, show_default=True)
def ledger_demo(data_dir: Path | None, accounts: int, operations: int) -> None:
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


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the network's store here (default: a fresh temporary directory).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-report"),
    show_default=True,
    help="Where the report (Markdown and PNG plots) is written.",
)
def demo(data_dir: Path | None, report_dir: Path) -> None:
    """Run the whole network's story on this machine and write a report.

    A gateway with its SQLite store, contracts on an in-process EVM, three providers (one
    cheating), two verifiers, a developer and a buyer: deposits on-chain, a training job
    on handwritten digits, the cheater caught and slashed, the verified model's accuracy,
    an epoch settled on-chain and claimed, the model sold and served, and an independent
    audit of the exported log against the gateway's balances and the on-chain anchor.
    Exits 0 only when every check held.
    """
    # Imported here: torch, numba and web3 take seconds to import.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from node.demo import Story, audit_story, run_story
    from node.demo_report import write_report
    from node.embedded import embedded_network

    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="blacktail-demo-"))
    out.print(
        Panel.fit(
            "[bold]BlackTail[/] network demo: deposits on-chain → a verified training job "
            "(with a cheater) → settlement on-chain → the model sold and served → audit",
            border_style="cyan",
        )
    )
    started = time.perf_counter()
    story = Story()
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    )
    task = bar.add_task("segments verified", total=None, visible=False)
    step = [0]

    def say(text: str) -> None:
        step[0] += 1
        bar.console.print(
            f"[cyan]{step[0]}.[/] {text}  [dim]({time.perf_counter() - started:.0f} s)"
        )

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, visible=True)

    deployment = distributor = None
    try:
        with bar, embedded_network(data_dir) as (net, accounts):
            say(
                f"gateway on {net.gateway.base_url}, contracts on an in-process EVM "
                f"(vault {net.deployment.vault})"
            )
            deployment, distributor = net.deployment, net.distributor
            story = run_story(net, accounts, data_dir, say, progress)
    except Exception as error:  # The report still says how far the story got, and why.
        story.check("the story ran to its end", False, f"{type(error).__name__}: {error}")
    if deployment is not None and "gateway_balances" in story.facts:
        say("gateway stopped; the log is exported and audited independently")
        audit_story(data_dir, story, deployment, distributor)
    story.seconds["audit"] = time.perf_counter() - started
    report = write_report(story, report_dir)
    table = Table(title="BlackTail demo")
    table.add_column("check")
    table.add_column("result", justify="center")
    table.add_column("detail", overflow="fold")
    for check in story.checks:
        table.add_row(check.name, "[green]✓" if check.ok else "[red]✗", check.detail)
    out.print(table)
    out.print(f"report: {report}   store: {data_dir}   {time.perf_counter() - started:.0f} s")
    out.print("[bold green]demo passed[/]" if story.ok else "[bold red]demo failed[/]")
    if not story.ok:
        raise SystemExit(1)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".blacktail/up"),
    show_default=True,
    help="The network's store, keys and deployment file.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1),
    default=None,
    help="Stop after this long (default: run until Ctrl-C).",
)
@click.option("--fresh", is_flag=True, help="Delete DATA_DIR first (it must be new otherwise).")
@click.option(
    "--settle-every",
    type=click.FloatRange(5),
    default=60.0,
    show_default=True,
    help="Seconds between epoch settlements.",
)
def up(data_dir: Path, seconds: float | None, fresh: bool, settle_every: float) -> None:
    """Start the whole network on this machine and keep it running to explore.

    The gateway (with the dashboard at its root URL), contracts on an in-process EVM with
    the chain watcher, two providers and two verifiers working, a developer whose digits
    job is training, and an epoch settled every --settle-every seconds. The participants'
    keys are written to DATA_DIR/keys/ so that every `blacktail` command can be used
    against the running gateway. Ctrl-C stops everything.
    """
    from node.datasets import publish, save_dataset
    from node.demo import BLACK, STAKE, digits_split, job_spec
    from node.embedded import (
        EmbeddedNetworkError,
        agent_poll_seconds,
        embedded_network,
        participants,
    )

    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        network = embedded_network(data_dir)
        net, accounts = network.__enter__()
    except EmbeddedNetworkError as error:
        raise click.ClickException(f"{error} (or pass --fresh)") from None
    with contextlib.ExitStack() as stack:
        stack.push(network.__exit__)
        people = participants(
            accounts,
            [
                ("dana", "developer"),
                ("paul", "provider"),
                ("petra", "provider"),
                ("vera", "verifier"),
                ("victor", "verifier"),
            ],
        )
        keys_dir = data_dir / "keys"
        keys_dir.mkdir(exist_ok=True)
        for person in people:
            path = keys_dir / f"{person.name}.pem"
            if not path.exists():
                person.key.save(path)
            net.deposit(person, Asset.BLACK, 100 * BLACK)
        net.credit_deposits()
        train, _, _ = digits_split()
        save_dataset(train, data_dir / "digits-train")
        spec = job_spec(publish(data_dir / "digits-train", net.client))
        for person in people:
            if person.role == "provider":
                agent = net.provider_agent(person)
                agent.register(
                    device="cpu (embedded)",
                    gpus=1,
                    memoryMb=16_000,
                    benchmarkGflops=50,
                    priceBlack=5 * 10**14,
                    priceUsd=1,
                    stake=STAKE,
                )
                net.run_in_background(
                    f"provider-{person.name}",
                    lambda stop, a=agent: a.run(stop, poll_seconds=agent_poll_seconds),  # type: ignore[misc]
                )
            elif person.role == "verifier":
                verifier_agent = net.verifier_agent(person)
                verifier_agent.register(STAKE)
                net.run_in_background(f"verifier-{person.name}", verifier_agent.run)
        developer = people[0]
        net.command(
            developer.key,
            "SubmitJob",
            {"spec": spec.to_json()},
            specHash="0x" + spec.digest().hex(),
        )
        out.print(
            Panel.fit(
                f"[bold]BlackTail is up[/]\n"
                f"gateway and dashboard: {net.gateway.base_url}/\n"
                f"API document: {net.gateway.base_url}/openapi.json\n"
                f"keys: {keys_dir}/<name>.pem ({', '.join(p.name for p in people)})\n"
                f"deployment: {data_dir / 'deployment.json'} (in-process EVM)\n"
                f"try: blacktail account balance --gateway {net.gateway.base_url} "
                f"--key {keys_dir / 'paul.pem'}\n"
                "Ctrl-C stops everything.",
                border_style="green",
            )
        )
        started = time.monotonic()
        settled_at = started
        try:
            while seconds is None or time.monotonic() - started < seconds:
                for credit in net.credit_deposits():
                    out.print(
                        f"credited {credit.deposit.amount} {credit.asset} "
                        f"to {credit.deposit.account}"
                    )
                if time.monotonic() - settled_at >= settle_every:
                    report = net.settle()
                    out.print(f"epoch {report.epoch} settled: log head {report.log_size} events")
                    settled_at = time.monotonic()
                time.sleep(1.0)
        except KeyboardInterrupt:
            out.print("stopping")
    out.print("[bold]BlackTail stopped[/]")
