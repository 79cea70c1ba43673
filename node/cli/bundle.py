"""`blacktail train` and `blacktail verify`: offline proofs of training (specs/proof.md §2)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from node.cli.common import console, device_option, emit_json, json_option, out, resolve_train_on
from node.cli.compute import read_spec
from node.datasets import DatasetError, LoadedDataset, load_dataset
from protocol.errors import ProtocolError
from protocol.jobspec import JobSpec, parse_decimal


def _dataset(directory: Path, spec: JobSpec) -> LoadedDataset:
    try:
        return load_dataset(directory, "0x" + spec.dataset.sha256.hex())
    except DatasetError as error:
        raise click.ClickException(f"{directory}: {error}") from None


@click.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The dataset directory (`blacktail dataset build`); checked against the spec's id.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--checkpoint-every", type=click.IntRange(1), default=16, show_default=True)
@device_option
@json_option
def train(
    spec_path: Path,
    data_dir: Path,
    out_dir: Path,
    checkpoint_every: int,
    train_on: str,
    as_json: bool,
) -> None:
    """Train the job in SPEC.yaml locally and write its proof bundle to --out."""
    # Imported here: torch and numba take seconds to import, and every other command
    # (the gateway's workers above all) should not pay for them.
    from node.bundle import write_bundle

    spec = read_spec(spec_path)
    device = resolve_train_on(train_on)
    if out_dir.exists():
        raise click.ClickException(f"{out_dir} exists; a bundle is written to a new directory")
    data = _dataset(data_dir, spec)
    bar = Progress(
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    )
    task = bar.add_task("train", total=spec.total_steps, loss=float("nan"))
    started = time.perf_counter()
    with bar:
        run = write_bundle(
            spec,
            data,
            data.id,
            out_dir,
            checkpoint_every=checkpoint_every,
            progress=lambda step, loss: bar.update(task, completed=step, loss=loss),
            device=device,
        )
    facts = {
        "bundle": str(out_dir),
        "root": "0x" + run.root.hex(),
        "steps": run.steps,
        "loss_first": run.losses[0],
        "loss_last": run.losses[-1],
        "train_seconds": round(run.train_seconds, 3),
        "hash_seconds": round(run.hash_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        emit_json(facts)
    else:
        out.print(
            f"trained {run.steps} steps (loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f}); "
            f"bundle {out_dir}, root {facts['root']}"
        )


@click.command()
@click.argument("bundle_dir", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The dataset directory; checked against the bundle spec's id.",
)
@click.option("--samples", type=click.IntRange(0), default=None, help="Steps to re-execute.")
@click.option("--detect", default=None, help="Or: the detection probability to size the sample.")
@json_option
def verify(
    bundle_dir: Path, data_dir: Path, samples: int | None, detect: str | None, as_json: bool
) -> None:
    """Verify a proof bundle: exit 0 when accepted, 1 when rejected (the step is named)."""
    from node.bundle import BundleError, read_bundle, verify_bundle

    if samples is not None and detect is not None:
        raise click.UsageError("give --samples or --detect, not both")
    try:
        probability = None if detect is None else parse_decimal(detect, "--detect").value
        bundle = read_bundle(bundle_dir)
    except ProtocolError as error:
        raise click.BadParameter(str(error), param_hint="--detect") from None
    except BundleError as error:
        _finish(
            as_json, {"accepted": False, "failed_step": None, "reason": str(error), "samples": []}
        )
        return
    data = _dataset(data_dir, bundle.spec)
    verdict = verify_bundle(bundle, data, samples=samples, detect=probability)
    _finish(as_json, verdict.to_json())


def _finish(as_json: bool, verdict: dict[str, object]) -> None:
    if as_json:
        emit_json(verdict)
    elif verdict["accepted"]:
        # click.echo, not rich: the verdict is one line, never wrapped.
        click.echo(f"accepted: {len(verdict['samples'])} sampled steps re-executed")  # type: ignore[arg-type]
    else:
        where = "" if verdict["failed_step"] is None else f"step {verdict['failed_step']}: "
        click.echo(f"rejected: {where}{verdict['reason']}")
    sys.exit(0 if verdict["accepted"] else 1)
