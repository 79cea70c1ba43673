"""`blacktail verifier register|run`: stake as a verifier, then judge commitments and
referee disputes for the network with one key (the agent is `verifier/agent.py`)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.cli.common import console, emit_json, json_option, out
from node.cli.remote import Remote, base_units, gateway_option, key_option, report
from node.client import GatewayError
from protocol.assets import Asset

if TYPE_CHECKING:
    from verifier.agent import TaskReport
    from verifier.reexecute import Device


@click.group()
def verifier() -> None:
    """Verify committed training segments and referee disputes, for a share of the pay."""


@verifier.command("register")
@gateway_option
@key_option
@click.option("--stake", default="20", show_default=True, help="BLACK to stake now.")
@json_option
def verifier_register(gateway: str, key_path: Path, stake: str, as_json: bool) -> None:
    """Stake BLACK and join the verifier roster (again: add stake)."""
    units = base_units(stake, Asset.BLACK, "--stake")
    result = Remote(gateway, key_path).command("/verifiers", "RegisterVerifier", {"stake": units})
    report(as_json, result, lambda r: out.print(f"registered verifier {r['signer']}"))


def default_device() -> Device:
    """CUDA when numba sees a GPU, else the CPU (both give the same bits)."""
    from numba import cuda

    return "cuda" if cuda.is_available() else "cpu"


@verifier.command("run")
@gateway_option
@key_option
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Where steps are re-executed.  [default: cuda if a GPU is found, else cpu]",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".blacktail/datasets"),
    show_default=True,
    help="Where fetched datasets are kept (checked against their id on every use).",
)
@click.option("--poll-seconds", type=click.FloatRange(0.1), default=2.0, show_default=True)
@click.option(
    "--max-tasks", type=click.IntRange(1), default=None, help="Stop after this many posted."
)
@click.option(
    "--check-beacon/--no-check-beacon",
    default=True,
    show_default=True,
    help="Prove each beacon from the operator's signed log before sampling with it.",
)
@json_option
def verifier_run(
    gateway: str,
    key_path: Path,
    device: str | None,
    cache_dir: Path,
    poll_seconds: float,
    max_tasks: int | None,
    check_beacon: bool,
    as_json: bool,
) -> None:
    """Judge the commitments assigned to this key and rule its disputes, until stopped
    (Ctrl-C) or --max-tasks verdicts and rulings are posted."""
    # Imported here: the kernels behind the agent take a while to import, and the rest of
    # the command line needs none of it.
    from node.datasets import DatasetError, fetch
    from verifier.agent import VerifierAgent

    chosen = default_device()
    if device == "cuda" and chosen != "cuda":
        raise click.ClickException("--device cuda: numba finds no CUDA GPU here")
    if device == "cpu":
        chosen = "cpu"
    remote = Remote(gateway, key_path)
    assert remote.key is not None

    def show(task: TaskReport) -> None:
        if not as_json:
            out.print(task.line())

    agent = VerifierAgent(
        remote.client,
        remote.key,
        lambda dataset_id: fetch(dataset_id, remote.client, cache_dir),
        chain_id=remote.chain_id,
        device=chosen,
        poll_seconds=poll_seconds,
        transient_errors=(GatewayError, OSError, DatasetError),
        check_beacon=check_beacon,
        report=show,
    )
    if not as_json:
        console.print(f"verifier {agent.address} on {gateway}, re-executing on {chosen}")
    stop = threading.Event()
    with _warnings_to_console():
        try:
            summary = agent.run(stop, max_tasks=max_tasks)
        except KeyboardInterrupt:
            # Everything posted is recorded by the gateway; the summary so far still holds.
            stop.set()
            summary = agent.summary
    if as_json:
        emit_json({"verifier": agent.address, "device": chosen, **summary.to_json()})
        return
    out.print(
        f"{summary.posted} posted: {summary.accepted} accepted, {summary.rejected} rejected, "
        f"{summary.fraud} fraud, {summary.cleared} cleared; {summary.steps_checked} steps "
        f"re-executed in {summary.seconds:.1f} s; {summary.errors} put off"
    )


@contextlib.contextmanager
def _warnings_to_console() -> Iterator[None]:
    """The agent's warnings and errors on stderr while it runs (its one line per task is
    printed by the report callback)."""
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, level=logging.WARNING)
    agent_log = logging.getLogger("verifier")
    agent_log.addHandler(handler)
    try:
        yield
    finally:
        agent_log.removeHandler(handler)
