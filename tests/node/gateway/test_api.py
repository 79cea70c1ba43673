"""The gateway as a whole: its OpenAPI document, metrics, health, accounts, error bodies
for what no view handles, and its configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.gateway.config import GatewayConfig
from node.gateway.links import LINKS
from node.gateway.problems import PROBLEM_TYPES
from protocol.commands import KINDS
from protocol.compute import ComputeParams
from protocol.errors import InvalidInput
from tests.gateway_server import REPO_ROOT
from tests.node.gateway.conftest import Gateway, MakeGateway
from tests.node.gateway.helpers import (
    ALICE,
    BLACK,
    BOB,
    deposit,
    make_command,
    post_command,
    problem,
)


def test_the_openapi_document_describes_every_route(gateway: Gateway) -> None:
    """/openapi.json is an OpenAPI 3 document with a path for every route the app serves,
    a response for every operation, and a message schema for every command kind."""
    response = gateway.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "BlackTail gateway" and document["info"]["version"] == "1"
    routes = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in gateway.app.url_map.iter_rules()
    }
    assert routes == set(document["paths"])
    for rule in gateway.app.url_map.iter_rules():
        path = document["paths"][re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert path[method.lower()]["responses"], (rule.rule, method)
    schemas = document["components"]["schemas"]
    assert {f"{kind}Message" for kind in KINDS} <= set(schemas)
    post = document["paths"]["/commands"]["post"]
    assert "application/json" in post["requestBody"]["content"]
    assert "application/problem+json" in document["components"]["responses"]["CONFLICT"]["content"]


def test_the_documents_links_lead_to_operations_that_take_what_they_fill(
    gateway: Gateway,
) -> None:
    """Every link of node/gateway/links.py is in the document (dev routes included), on a
    success response of its source; its operationRef resolves to an operation of this
    document, and each parameter it fills is one that operation declares."""
    document = gateway.client.get("/openapi.json").get_json()
    found = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, response in operation.get("responses", {}).items():
                for link in response.get("links", {}).values():
                    found += 1
                    assert status.startswith("2"), (path, method, status)
                    escaped, target_method = (
                        link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                    )
                    target_path = escaped.replace("~1", "/").replace("~0", "~")
                    target = document["paths"][target_path][target_method]
                    declared = {
                        f"{p['in']}.{p['name']}"
                        for p in [
                            *target.get("parameters", []),
                            *document["paths"][target_path].get("parameters", []),
                        ]
                    }
                    assert set(link["parameters"]) <= declared, (link, declared)
    assert found == sum(len(link.statuses) for link in LINKS)


def test_every_problem_type_is_documented_in_the_api_spec() -> None:
    """specs/api.md lists every problem type the gateway can answer, with its status."""
    spec = (REPO_ROOT / "specs" / "api.md").read_text()
    for kind in PROBLEM_TYPES:
        if kind.slug != "about:blank":
            assert re.search(rf"`{re.escape(kind.slug)}`\s*\|\s*{kind.status}\b", spec), kind.slug


_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
)


def _parse_prometheus(text: str) -> dict[str, list[tuple[str, float]]]:
    """Samples by metric family, checking the 0.0.4 text format line by line."""
    families: dict[str, list[tuple[str, float]]] = {}
    typed: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            typed[name] = kind
            families[name] = []
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed, f"sample {name} before its TYPE line"
        families[family].append((labels or "", float(value)))
    return families


def test_metrics_are_prometheus_text_that_counts_requests(gateway: Gateway) -> None:
    """/metrics parses as Prometheus text and counts requests, commands, latency and the
    log size."""
    deposit(gateway.client, ALICE.address, 10 * BLACK)
    post_command(
        gateway.client,
        make_command(
            ALICE, "Transfer", to=BOB.address, asset="BLACK", amount=100 * BLACK, memo="m"
        ),
    )
    gateway.client.get("/health")
    response = gateway.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = _parse_prometheus(response.get_data(as_text=True))
    requests = dict(families["blacktail_http_requests_total"])
    assert any('endpoint="/health"' in k and 'status="200"' in k for k in requests)
    commands = {labels: value for labels, value in families["blacktail_commands_total"]}
    assert any(
        'kind="Deposit"' in k and 'outcome="accepted"' in k and v == 1 for k, v in commands.items()
    )
    assert any('kind="Transfer"' in k and 'outcome="insufficient-funds"' in k for k in commands)
    health = [
        v
        for k, v in families["blacktail_http_request_duration_seconds"]
        if 'endpoint="/health"' in k
    ]
    buckets, count = health[:-2], health[-1]
    assert buckets == sorted(buckets) and buckets[-1] == count >= 1
    (log_size,) = families["blacktail_log_size"]
    assert log_size[1] == gateway.log_size()


def test_health_names_the_network_and_the_log_size(gateway: Gateway) -> None:
    """/health answers the chain id, operator, store and log size."""
    body = gateway.client.get("/health").get_json()
    assert body["status"] == "ok" and body["chain_id"] == 31337
    assert body["operator"] == gateway.operator.address
    assert body["log_size"] == gateway.log_size() == 1
    assert body["store"].startswith("sqlite:")


def test_unknown_routes_and_methods_are_problems(gateway: Gateway) -> None:
    """An unknown path is a 404 problem, a wrong method a 405 problem with Allow."""
    problem(gateway.client.get("/no/such/thing"), 404, "not-found")
    body = problem(gateway.client.delete("/commands"), 405, "method-not-allowed")
    assert body["instance"] == "/commands"
    allow = gateway.client.delete("/commands").headers["Allow"]
    assert set(allow.split(", ")) == {"OPTIONS", "POST"}


def test_an_unexpected_failure_is_a_500_without_internals(gateway: Gateway) -> None:
    """A failure no handler expects answers a 500 problem with an incident id and no
    traceback, path or exception text."""
    gateway.services.network.close()
    response = gateway.client.get(f"/accounts/{ALICE.address}/balances")
    body = problem(response, 500, "internal-error")
    assert re.fullmatch(r"[0-9a-f]{32}", body["incident"])
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and ".py" not in text and "sqlite" not in text.lower()


def test_accounts_are_read_strictly_and_empty_accounts_are_not_errors(gateway: Gateway) -> None:
    """A malformed or mis-checksummed address is a 400; an unused address has no
    balances; the system accounts are named."""
    body = problem(gateway.client.get("/accounts/0x1234/balances"), 400, "invalid-input")
    assert body["field"] == "address"
    wrong_case = ALICE.address[:2] + ALICE.address[2:].swapcase()
    problem(gateway.client.get(f"/accounts/{wrong_case}"), 400, "invalid-input")
    fresh = gateway.client.get(f"/accounts/{BOB.address.lower()}/balances").get_json()
    assert fresh == {"account": BOB.address, "balances": []}
    assert gateway.client.get(f"/accounts/{BOB.address}").get_json() == {
        "account": BOB.address,
        "system": False,
        "opened": False,
        "version": 0,
    }
    deposit(gateway.client, ALICE.address, 5)
    vault = gateway.client.get("/accounts/vault/balances").get_json()
    assert vault["balances"] == [
        {"asset": "BLACK", "bucket": "reserve", "amount": 5, "display": "0.000000000000000005"}
    ]
    assert gateway.client.get(f"/accounts/{ALICE.address}").get_json()["opened"] is True


def test_configuration_reads_arguments_then_environment_strictly(tmp_path: Path) -> None:
    """Explicit arguments beat BLACKTAIL_* variables, which beat defaults; a bad value
    names the variable and the value."""
    env = {
        "BLACKTAIL_DATA_DIR": str(tmp_path / "d"),
        "BLACKTAIL_CHAIN_ID": "5",
        "BLACKTAIL_DEV": "yes",
    }
    config = GatewayConfig.resolve(environ=env)
    assert (config.chain_id, config.dev) == (5, True)
    assert config.operator_key_path == tmp_path / "d" / "operator.pem"
    assert config.blob_dir == tmp_path / "d" / "blobs"
    assert GatewayConfig.resolve(chain_id=7, dev=False, environ=env).chain_id == 7
    for name, value in (
        ("BLACKTAIL_CHAIN_ID", "five"),
        ("BLACKTAIL_DEV", "maybe"),
        ("BLACKTAIL_PAGE_ITEMS_MAX", "0"),
        ("BLACKTAIL_BLOB_BYTES_MAX", "-1"),
    ):
        with pytest.raises(InvalidInput) as refused:
            GatewayConfig.resolve(environ={**env, name: value})
        assert name in str(refused.value) and repr(value) in str(refused.value)
    with pytest.raises(InvalidInput, match="page_items_default"):
        GatewayConfig.resolve(page_items_max=10, page_items_default=11, environ=env)


def test_the_protocol_clocks_come_from_the_configuration(
    tmp_path: Path, make_gateway: MakeGateway
) -> None:
    """BLACKTAIL_LEASE_SECONDS and its siblings reach the network's ComputeParams (the
    rest of the parameters keep their defaults); unset, the defaults of compute.md hold."""
    env = {"BLACKTAIL_DATA_DIR": str(tmp_path / "d"), "BLACKTAIL_LEASE_SECONDS": "7"}
    config = GatewayConfig.resolve(verdict_seconds=9, environ=env)
    params = config.compute_params()
    assert (params.lease_seconds, params.verdict_seconds) == (7, 9)
    assert params.opening_seconds == ComputeParams().opening_seconds
    assert params.fees == ComputeParams().fees
    assert GatewayConfig.resolve(data_dir=tmp_path / "e", environ={}).compute_params() == (
        ComputeParams()
    )
    with pytest.raises(InvalidInput, match="BLACKTAIL_SWEEP_SECONDS"):
        GatewayConfig.resolve(environ={**env, "BLACKTAIL_SWEEP_SECONDS": "0"})
    gateway = make_gateway(lease_seconds=11, dispute_seconds=13)
    assert gateway.services.network.params.lease_seconds == 11
    assert gateway.services.network.params.dispute_seconds == 13


def test_a_store_of_another_network_is_refused(make_gateway: MakeGateway) -> None:
    """A gateway does not start over a store initialized for another chain id."""
    make_gateway("same", chain_id=1)
    with pytest.raises(Exception, match="chain 1"):
        make_gateway("same", chain_id=2)


def test_serve_stops_on_a_bad_environment_value(tmp_path: Path) -> None:
    """`blacktail gateway serve` exits 1 naming a malformed BLACKTAIL_* variable and its
    value, before it starts anything."""
    result = CliRunner().invoke(
        main, ["gateway", "serve", "--data-dir", str(tmp_path)], env={"BLACKTAIL_CHAIN_ID": "abc"}
    )
    assert result.exit_code == 1
    assert "BLACKTAIL_CHAIN_ID" in result.output and "'abc'" in result.output
