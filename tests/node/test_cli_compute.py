"""`blacktail provider|job|account` against a real gunicorn gateway on 127.0.0.1, driven
through the real entry point with click's test runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from node.cli import main
from protocol.keys import PrivateKey
from tests.gateway_server import RunningGateway, run_gateway
from tests.protocol.compute_world import small_spec


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("cli-gw"), workers=2) as running:
        yield running


def cli(gateway: RunningGateway, *args: str) -> Result:
    return CliRunner().invoke(main, [*args[:2], "--gateway", gateway.base_url, *args[2:]])


def new_key(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.pem"
    PrivateKey.generate().save(path)
    return path


def test_provider_register_and_status_show_stake_and_hardware(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """A funded key registers as a provider from the CLI, and `provider status --json`
    reports its hardware, price and the stake now in its stake bucket."""
    key_path = new_key(tmp_path, "provider")
    funded = cli(gateway, "account", "deposit-dev", "--key", str(key_path), "--amount", "50")
    assert funded.exit_code == 0, funded.output
    registered = cli(
        gateway,
        "provider",
        "register",
        "--key",
        str(key_path),
        "--device",
        "cpu",
        "--benchmark-gflops",
        "12",
        "--stake",
        "20",
        "--json",
    )
    assert registered.exit_code == 0, registered.output
    status = cli(gateway, "provider", "status", "--key", str(key_path), "--json")
    assert status.exit_code == 0, status.output
    facts = json.loads(status.output)
    assert (facts["device"], facts["benchmark_gflops"], facts["status"]) == ("cpu", 12, "active")
    assert facts["stake"] == 20 * 10**18
    balance = cli(gateway, "account", "balance", "--key", str(key_path), "--json")
    amounts = {
        f"{b['asset']}/{b['bucket']}": b["amount"] for b in json.loads(balance.output)["balances"]
    }
    assert amounts == {"BLACK/available": 30 * 10**18, "BLACK/stake": 20 * 10**18}
    for args in (("account", "balance"), ("provider", "status")):
        table = cli(gateway, *args, "--key", str(key_path))
        assert table.exit_code == 0, table.output
        assert "stake" in table.output and "20" in table.output


def test_job_submit_status_and_cancel_refund_the_whole_budget(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """A job submitted from a YAML spec escrows its budget; cancelling it before any
    lease refunds all of it, and `job status` says so."""
    key_path = new_key(tmp_path, "developer")
    assert (
        cli(gateway, "account", "deposit-dev", "--key", str(key_path), "--amount", "1").exit_code
        == 0
    )
    spec = small_spec()
    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(yaml.safe_dump(spec.to_json()))
    submitted = cli(gateway, "job", "submit", "--key", str(key_path), str(spec_path), "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.output)["outcome"]["job"]
    status = json.loads(cli(gateway, "job", "status", job, "--json").output)
    assert (status["status"], status["escrow"]) == ("submitted", spec.budget_max())
    cancelled = cli(gateway, "job", "cancel", "--key", str(key_path), job, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.output)["outcome"]["refund"] == spec.budget_max()
    status = json.loads(cli(gateway, "job", "status", job, "--json").output)
    assert (status["status"], status["escrow"], status["refunded"]) == (
        "cancelled",
        0,
        spec.budget_max(),
    )
    again = cli(gateway, "job", "cancel", "--key", str(key_path), job)
    assert again.exit_code != 0 and "invalid-transition" in again.output


def test_job_submit_with_a_bad_spec_exits_non_zero_with_the_field(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """A spec with an out-of-range field is refused locally with its field named."""
    key_path = new_key(tmp_path, "developer")
    document = small_spec().to_json()
    document["batch_size"] = 0
    spec_path = tmp_path / "bad.yaml"
    spec_path.write_text(yaml.safe_dump(document))
    result = cli(gateway, "job", "submit", "--key", str(key_path), str(spec_path))
    assert result.exit_code != 0
    assert "batch_size" in result.output


def test_unreachable_gateway_is_a_one_line_error(tmp_path: Path) -> None:
    """A gateway that does not answer gives a non-zero exit and a one-line reason."""
    result = CliRunner().invoke(
        main, ["job", "status", "--gateway", "http://127.0.0.1:9", "some-job"]
    )
    assert result.exit_code != 0
    assert "cannot reach" in result.output
