"""The README's paths work as written, against a real gunicorn gateway on 127.0.0.1: the
API consumer's complete signing example (run as the README prints it, only its URL
changed), and the auditor's `blacktail log fetch` then `blacktail audit`, whose file
equals the store's own export event for event."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from protocol.audit import audit_lines
from tests.gateway_server import REPO_ROOT, RunningGateway, run_gateway

README = REPO_ROOT / "README.md"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("readme") / "gateway", workers=1) as running:
        yield running


def readme_block(heading: str, language: str) -> str:
    """The first fenced block of `language` under the README's `heading`."""
    text = README.read_text()
    section = text[text.index(heading) :]
    found = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert found is not None, f"no {language} block under {heading!r}"
    return found.group(1)


def test_the_api_consumers_example_signs_a_transfer_the_gateway_applies(
    gateway: RunningGateway,
) -> None:
    """The example deposits (dev), transfers 5 BLACK and prints both answers: the transfer
    is applied, and the sender holds 10 - 5 BLACK."""
    code = readme_block("## For API consumers", "python")
    assert 'GATEWAY = "http://127.0.0.1:8700"' in code
    code = code.replace("http://127.0.0.1:8700", gateway.base_url)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    result = ast.literal_eval(printed[0])  # a printed dict of JSON values
    assert (result["kind"], result["client_id"]) == ("Transfer", "pay-42")
    assert len(result["legs"]) == 2
    balances = ast.literal_eval(printed[1])
    available = [
        b["amount"]
        for b in balances["balances"]
        if (b["asset"], b["bucket"]) == ("BLACK", "available")
    ]
    assert available == [5 * 10**18]


def test_the_auditor_fetches_a_gateways_log_and_audits_it(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """`blacktail log fetch` writes the gateway's events with the signed tree head; the
    audit passes on it, and its event lines are the store's own export's."""
    client = gateway.client()
    for amount in (1, 2, 3):
        client.post_json(
            "/dev/deposit",
            {"account": "0x" + "ab" * 20, "asset": "BLACK", "amount": amount * 10**18},
        )
    fetched = tmp_path / "fetched.jsonl"
    result = CliRunner().invoke(
        main, ["log", "fetch", "--gateway", gateway.base_url, "--out", str(fetched), "--json"]
    )
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    lines = fetched.read_bytes().splitlines()
    assert facts["events"] == len(lines) - 1 >= 4
    assert json.loads(lines[-1])["tree_head"]["operator"] == gateway.operator.address
    report = audit_lines(lines, workers=0)
    assert report.ok, report.error
    assert report.events == facts["events"]
    audited = CliRunner().invoke(main, ["audit", str(fetched)])
    assert audited.exit_code == 0, audited.output

    exported = tmp_path / "exported.jsonl"
    result = CliRunner().invoke(
        main, ["log", "export", "--data-dir", str(gateway.data_dir), "--out", str(exported)]
    )
    assert result.exit_code == 0, result.output
    own = exported.read_bytes().splitlines()
    assert own[: facts["events"]] == lines[:-1]


def test_fetching_from_no_gateway_is_a_one_line_error(tmp_path: Path) -> None:
    """Nobody listening: exit 1 with the reason, and no file left behind."""
    out = tmp_path / "x.jsonl"
    result = CliRunner().invoke(
        main, ["log", "fetch", "--gateway", "http://127.0.0.1:9", "--out", str(out)]
    )
    assert result.exit_code == 1 and "127.0.0.1:9" in result.output
    assert not out.exists()
