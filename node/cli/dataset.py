"""`blacktail dataset`: build content-addressed training datasets and inspect them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from node import datasets
from node.cli.common import console, json_option, out
from node.cli.remote import report

# The tiny example job's dataset (specs/examples/tiny.yaml) is what `build synthetic`
# makes when given no sizes.
SYNTHETIC_DEFAULTS = {"seed": 0, "examples": 512, "features": 16, "classes": 4}
# Below this many feature values a build takes well under a second: no progress bar.
progress_values_min = 1 << 22
classes_listed_max = 16


@click.group("dataset")
def dataset() -> None:
    """Build and inspect content-addressed training datasets (specs/datasets.md)."""


@dataset.command("build")
@click.argument("kind", type=click.Choice(["digits", "synthetic"]))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write manifest.json and data.safetensors into.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, datasets.seed_max),
    help=f"Synthetic only (default {SYNTHETIC_DEFAULTS['seed']}).",
)
@click.option(
    "--examples",
    type=click.IntRange(1, datasets.examples_max),
    help=f"Synthetic only (default {SYNTHETIC_DEFAULTS['examples']}).",
)
@click.option(
    "--features",
    type=click.IntRange(1, datasets.features_max),
    help=f"Synthetic only (default {SYNTHETIC_DEFAULTS['features']}).",
)
@click.option(
    "--classes",
    type=click.IntRange(2, datasets.classes_max),
    help=f"Synthetic only (default {SYNTHETIC_DEFAULTS['classes']}).",
)
@json_option
def build(
    kind: str,
    out_dir: Path,
    seed: int | None,
    examples: int | None,
    features: int | None,
    classes: int | None,
    as_json: bool,
) -> None:
    """Build a dataset into --out and print its id (the job spec's dataset.sha256).

    digits: scikit-learn's bundled handwritten digits (1797 examples, 64 features, 10
    classes). synthetic: seeded class clusters of any size, the same bytes on any machine.

    Example: blacktail dataset build synthetic --seed 0 --examples 512 --features 16
    --classes 4 --out data/tiny
    """
    sizes = {"seed": seed, "examples": examples, "features": features, "classes": classes}
    if kind == "digits":
        given = [name for name, value in sizes.items() if value is not None]
        if given:
            raise click.UsageError(f"--{given[0]} applies to synthetic datasets only")
        arrays = datasets.build_digits()
    else:
        chosen = {n: SYNTHETIC_DEFAULTS[n] if v is None else v for n, v in sizes.items()}
        arrays = _build_synthetic(chosen, quiet=as_json)
    try:
        manifest = datasets.save_dataset(arrays, out_dir)
    except datasets.DatasetError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out_dir}: {error}") from None
    report(as_json, _facts(manifest, out_dir), lambda f: _print_facts("dataset built", f))


def _build_synthetic(sizes: dict[str, int], *, quiet: bool) -> datasets.DatasetArrays:
    examples = sizes["examples"]
    with Progress(
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or examples * sizes["features"] < progress_values_min,
        transient=True,
    ) as bar:
        task = bar.add_task("examples", total=examples)
        try:
            return datasets.build_synthetic(
                sizes["seed"],
                examples,
                sizes["features"],
                sizes["classes"],
                progress=lambda done: bar.update(task, completed=done),
            )
        except datasets.DatasetError as error:
            raise click.ClickException(str(error)) from None


@dataset.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@json_option
def info(directory: Path, as_json: bool) -> None:
    """Check the dataset in DIRECTORY in full and show its id, shape and class counts.

    Exits 1, naming the first failed check, when any byte disagrees with the manifest.
    """
    try:
        dataset_id, _ = datasets.read_manifest(directory)
        loaded = datasets.load_dataset(directory, dataset_id)
    except datasets.DatasetError as error:
        raise click.ClickException(str(error)) from None
    facts = _facts(loaded.manifest, directory)
    counts = np.bincount(loaded.y, minlength=loaded.manifest.classes)
    facts["class_counts"] = [int(c) for c in counts]
    facts["source"] = loaded.manifest.source
    report(as_json, facts, _print_info)


def _print_info(facts: dict[str, Any]) -> None:
    counts = facts["class_counts"]
    # A table row of 65 536 counts helps nobody: beyond a screenful, the extremes.
    shown = counts if len(counts) <= classes_listed_max else f"{min(counts)} … {max(counts)}"
    _print_facts("dataset (verified)", {**facts, "class_counts": shown})


def _print_facts(title: str, facts: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    # Ids are copied from here into job specs: fold them onto a second line in a narrow
    # terminal rather than cut them short.
    table.add_column(overflow="fold")
    for name, value in facts.items():
        table.add_row(name, str(value))
    out.print(table)


def _facts(manifest: datasets.Manifest, directory: Path) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "name": manifest.name,
        "examples": manifest.examples,
        "features": manifest.features,
        "classes": manifest.classes,
        "file_sha256": "0x" + manifest.file_sha256.hex(),
        "bytes": manifest.file_bytes,
        "directory": str(directory),
    }
