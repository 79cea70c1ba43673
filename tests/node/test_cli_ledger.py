"""The ledger's command line: init, simulate, balances, log export, audit and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from protocol.storage import Storage


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def store_args(storage: Storage, tmp_path: Path) -> list[str]:
    if storage.is_postgres:
        env = storage.env
        dsn = (
            f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{env['POSTGRES_HOST']}"
            f":{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
        )
        return ["--data-dir", str(tmp_path / "keys"), "--db", dsn]
    return ["--data-dir", str(tmp_path / "store")]


def test_simulate_export_and_audit_round_trip(
    runner: CliRunner, storage: Storage, tmp_path: Path
) -> None:
    """A simulated workload exports to a log whose audit passes and agrees with the export."""
    where = store_args(storage, tmp_path)
    code, out = invoke(
        runner, "ledger", "simulate", *where, "--accounts", "5", "--operations", "120", "--json"
    )
    assert code == 0, out
    simulated = json.loads(out)
    assert simulated["accepted"] > 100
    export_path = tmp_path / "events.jsonl"
    code, out = invoke(runner, "log", "export", *where, "--out", str(export_path), "--json")
    assert code == 0, out
    exported = json.loads(out)
    code, out = invoke(runner, "audit", str(export_path), "--json", "--workers", "0")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and report["events"] == exported["events"]
    assert report["root"] == exported["root"]
    assert report["commands"] == simulated["accepted"]
    code, out = invoke(runner, "audit", *where, "--json", "--workers", "0")
    assert code == 0, out
    assert json.loads(out)["root"] == exported["root"]


def test_audit_of_a_forged_export_exits_one_naming_the_position(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Editing one amount in an export makes `blacktail audit` exit 1 and name that line."""
    where = ["--data-dir", str(tmp_path / "store")]
    assert (
        invoke(
            runner, "ledger", "simulate", *where, "--accounts", "3", "--operations", "40", "--json"
        )[0]
        == 0
    )
    export_path = tmp_path / "events.jsonl"
    assert invoke(runner, "log", "export", *where, "--out", str(export_path))[0] == 0
    lines = export_path.read_bytes().splitlines()
    victim = max(i for i, line in enumerate(lines) if b'"type":"Account.Posted"' in line)
    lines[victim] = lines[victim].replace(b'"C",', b'"D",', 1)
    export_path.write_bytes(b"\n".join(lines) + b"\n")
    code, out = invoke(runner, "audit", str(export_path), "--workers", "0")
    assert code == 1
    assert f"AUDIT FAILED at position {victim}" in out


def test_balances_show_every_bucket(runner: CliRunner, tmp_path: Path) -> None:
    """`ledger balances --json` lists the treasury's buckets after a workload with fees."""
    where = ["--data-dir", str(tmp_path / "store")]
    assert (
        invoke(
            runner, "ledger", "simulate", *where, "--accounts", "4", "--operations", "200", "--json"
        )[0]
        == 0
    )
    code, out = invoke(runner, "ledger", "balances", *where, "vault", "--json")
    assert code == 0, out
    balances = json.loads(out)["balances"]
    assert set(balances) <= {"BLACK/reserve", "USD/reserve"} and balances


def test_init_refuses_a_store_of_another_chain(runner: CliRunner, tmp_path: Path) -> None:
    """Re-initializing a store with another chain id fails with a one-line reason."""
    where = ["--data-dir", str(tmp_path / "store")]
    assert invoke(runner, "ledger", "init", *where, "--chain-id", "7")[0] == 0
    result = runner.invoke(main, ["ledger", "init", *where, "--chain-id", "8"])
    assert result.exit_code == 1
    assert "chain 7" in result.output and "Traceback" not in result.output


def test_export_without_a_store_fails_clearly(runner: CliRunner, tmp_path: Path) -> None:
    """Exporting an uninitialized store exits non-zero with a reason, not a traceback."""
    result = runner.invoke(
        main, ["log", "export", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code != 0
    assert "genesis" in result.output and "Traceback" not in result.output


def test_demo_runs_the_story_and_passes(runner: CliRunner, tmp_path: Path) -> None:
    """`blacktail ledger demo` on a small workload passes its audit, catches its forgery and
    exits 0."""
    code, out = invoke(
        runner,
        "ledger",
        "demo",
        "--data-dir",
        str(tmp_path / "demo"),
        "--operations",
        "150",
        "--accounts",
        "4",
    )
    assert code == 0, out
    assert "demo passed" in out and "caught it at position" in out
