"""Offline proof bundles: `blacktail train` writes one, `blacktail verify` accepts an honest
one and rejects a tampered file or a self-consistent fake trajectory, naming the step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from node.cli import main
from node.datasets import build_synthetic, save_dataset
from protocol import canonical

TINY = Path(__file__).resolve().parents[2] / "specs" / "examples" / "tiny.yaml"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data") / "tiny"
    save_dataset(build_synthetic(0, 512, 16, 4), directory)
    return directory


def spec_file(tmp_path: Path, name: str = "job.yaml", **changes: object) -> Path:
    document = yaml.safe_load(TINY.read_text())
    document["total_steps"], document["segment_steps"] = 24, 24
    for key, value in changes.items():
        document["optimizer"][key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_an_honest_bundle_verifies_and_a_tampered_file_is_rejected(
    data_dir: Path, tmp_path: Path
) -> None:
    """A trained bundle is accepted with every step re-executed; changing one byte of a
    checkpoint makes verification fail on the file's digest."""
    bundle = tmp_path / "bundle"
    trained = run(
        "train",
        str(spec_file(tmp_path)),
        "--data",
        str(data_dir),
        "--out",
        str(bundle),
        "--checkpoint-every",
        "8",
        "--json",
    )
    assert trained.exit_code == 0, trained.output
    accepted = run("verify", str(bundle), "--data", str(data_dir), "--samples", "24", "--json")
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.output)["samples"] == list(range(24))
    checkpoint = bundle / "checkpoints" / "8.safetensors"
    raw = bytearray(checkpoint.read_bytes())
    raw[-1] ^= 1
    checkpoint.write_bytes(bytes(raw))
    rejected = run("verify", str(bundle), "--data", str(data_dir), "--json")
    assert rejected.exit_code == 1
    assert "checkpoints/8.safetensors" in json.loads(rejected.output)["reason"]


def test_a_self_consistent_fake_trajectory_is_rejected_at_its_first_step(
    data_dir: Path, tmp_path: Path
) -> None:
    """A bundle trained with another learning rate but claiming the job's spec has files
    that all match their digests, and fails re-execution at the first sampled step."""
    bundle = tmp_path / "fake"
    fake_spec = spec_file(tmp_path, "fake.yaml", lr="0.1")
    assert (
        run("train", str(fake_spec), "--data", str(data_dir), "--out", str(bundle)).exit_code == 0
    )
    manifest = canonical.decode((bundle / "bundle.json").read_bytes())
    manifest["spec"]["optimizer"]["lr"] = "0.05"
    (bundle / "bundle.json").write_bytes(canonical.encode(manifest))
    rejected = run("verify", str(bundle), "--data", str(data_dir), "--samples", "3", "--json")
    assert rejected.exit_code == 1
    verdict = json.loads(rejected.output)
    assert verdict["failed_step"] == verdict["samples"][0]


def test_verify_of_a_missing_bundle_is_a_rejection_with_a_reason(
    data_dir: Path, tmp_path: Path
) -> None:
    """A directory that holds no bundle is rejected (exit 1) with a one-line reason."""
    result = run("verify", str(tmp_path / "nothing"), "--data", str(data_dir))
    assert result.exit_code == 1
    assert "not a readable bundle" in result.output
