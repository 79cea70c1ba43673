"""Fixtures for gateway tests: an in-process gateway on a fresh SQLite store (`gateway`,
`client`), a factory for one with other settings (`make_gateway`), and a real gunicorn
server with two workers on loopback (`server`, one per test module).

To reuse the real server elsewhere (end-to-end tests), either put the tests under this
directory, or write the same three-line fixture over `tests.gateway_server.run_gateway`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from node.gateway import GatewayConfig, Services, create_app
from node.gateway.services import EXTENSION
from protocol.keys import PrivateKey
from protocol.storage import sqlite_storage
from tests.gateway_server import RunningGateway, run_gateway


@dataclass
class Gateway:
    """An in-process gateway: the Flask app, its test client and its services."""

    app: Flask
    client: FlaskClient
    services: Services

    @property
    def operator(self) -> PrivateKey:
        return self.services.operator

    @property
    def chain_id(self) -> int:
        return self.services.chain_id

    def log_size(self) -> int:
        size = self.client.get("/tree-head").get_json()["size"]
        assert isinstance(size, int)
        return size


MakeGateway = Callable[..., Gateway]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[MakeGateway]:
    """Build in-process gateways on stores under tmp_path; `overrides` are GatewayConfig
    fields (dev is on unless said otherwise)."""
    made: list[Gateway] = []

    def make(name: str = "gw", **overrides: Any) -> Gateway:
        root = tmp_path / name
        settings: dict[str, Any] = {
            "storage": sqlite_storage(root / "data"),
            "operator_key_path": root / "data" / "operator.pem",
            "blob_dir": root / "blobs",
            "dev": True,
            **overrides,
        }
        app = create_app(GatewayConfig(**settings))
        gateway = Gateway(app, app.test_client(), app.extensions[EXTENSION])
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.services.close()


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> Gateway:
    """An in-process gateway with dev endpoints on a fresh SQLite store."""
    return make_gateway()


@pytest.fixture
def client(gateway: Gateway) -> FlaskClient:
    """The Flask test client of `gateway`."""
    return gateway.client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A real gunicorn gateway (2 workers, dev endpoints) on 127.0.0.1, for this module."""
    with run_gateway(tmp_path_factory.mktemp("gateway-server"), workers=2) as running:
        yield running
