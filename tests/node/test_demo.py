"""`blacktail demo`: the whole network's story runs on this machine, every check holds,
and the report folder holds the Markdown and the three plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

demo_seconds_max = 400


def test_the_demo_tells_the_whole_story_and_every_check_holds(tmp_path: Path) -> None:
    """The demo exits 0, its report lists every check as held, and the plots exist."""
    report_dir = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "demo",
            "--data-dir",
            str(tmp_path / "store"),
            "--report-dir",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=demo_seconds_max,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    checks = json.loads((report_dir / "checks.json").read_text())
    names = {c["name"] for c in checks}
    assert all(c["ok"] for c in checks), checks
    for expected in (
        "every deposit credited once",
        "the cheater is caught, refereed and jailed",
        "the listing shows the job's verification record",
        "the sale splits exactly: creator, royalties, platform fee",
        "the buyer downloads the model with a token; its hash checks",
        "the hub serves the bought model: its answers score as the model does",
        "the hub epoch pays the creator the subscription, less the fee",
        "the exported log passes the independent audit",
        "the on-chain anchor matches the log",
    ):
        assert expected in names
    for plot in ("loss.png", "balances.png", "verification.png"):
        assert (report_dir / plot).stat().st_size > 1000
    assert "every check held" in (report_dir / "report.md").read_text()


def test_up_runs_the_network_settles_epochs_and_stops(tmp_path: Path) -> None:
    """`blacktail up --seconds` starts everything, settles an epoch, stops cleanly; a second
    start on the same directory is refused with a reason, and --fresh starts anew."""
    data_dir = tmp_path / "up"
    command = [
        sys.executable,
        "-m",
        "node.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--seconds",
        "12",
        "--settle-every",
        "5",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "BlackTail is up" in done.stdout and "epoch 1 settled" in done.stdout
    assert (data_dir / "keys" / "paul.pem").exists()
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode != 0 and "already holds a ledger" in again.stderr
