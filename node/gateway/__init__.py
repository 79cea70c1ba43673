"""The BlackTail gateway: the REST API in front of the ledger, the event log and the blob
store (a Flask application factory; gunicorn runs it, see node/gateway/server.py).

Each resource is a flask-smorest blueprint in its own module, built by
`<module>.blueprint(services)` so that its views close over this app's services and its
schemas state this app's limits. Adding a resource: write the module, add it to
`_RESOURCES`. The API is described in specs/api.md and, generated from the schemas, at
GET /openapi.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, Response, g, request

from node.gateway import (
    accounts,
    blobs,
    commands,
    compute,
    dashboard,
    dev,
    events,
    health,
    hub,
    market,
)
from node.gateway.api import GatewayApi, GatewayBlueprint
from node.gateway.config import GatewayConfig
from node.gateway.links import ResponseLinks
from node.gateway.problems import register_error_handlers
from node.gateway.services import EXTENSION, Services, current_services, open_services

__all__ = ["GatewayConfig", "Services", "create_app", "current_services"]

API_TITLE = "BlackTail gateway"
API_VERSION = "1"
_RESOURCES: tuple[Callable[[Services], GatewayBlueprint], ...] = (
    health.blueprint,
    commands.blueprint,
    accounts.blueprint,
    events.blueprint,
    blobs.blueprint,
    market.blueprint,
    hub.blueprint,
    dashboard.blueprint,
)
_DESCRIPTION = (
    "Signed commands in, the tamper-evident event log and content-addressed blobs out. "
    "Every error is an RFC 7807 problem (application/problem+json) whose `type` names it; "
    "amounts are JSON integers of any size. See specs/api.md."
)


def create_app(config: GatewayConfig) -> Flask:
    """A gateway over the store in `config`, initialized for its chain id and operator
    (the genesis record and the operator key are made on first use)."""
    services = open_services(config)
    try:
        return _build(config, services)
    except BaseException:
        services.close()
        raise


def _build(config: GatewayConfig, services: Services) -> Flask:
    app = Flask("node.gateway", static_folder=None)
    app.config.update(
        API_TITLE=API_TITLE,
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        # JSON bodies; the blob upload raises its own limit for its request.
        MAX_CONTENT_LENGTH=config.request_bytes_max,
    )
    app.extensions[EXTENSION] = services
    register_error_handlers(app)
    api = GatewayApi(
        app,
        spec_kwargs={"info": {"description": _DESCRIPTION}, "extra_plugins": [ResponseLinks()]},
    )
    for schema_name, schema in commands.message_schemas().items():
        api.spec.components.schema(schema_name, schema=schema)
    for resource in _RESOURCES:
        api.register_blueprint(resource(services))
    for compute_resource in compute.blueprints(services):
        api.register_blueprint(compute_resource)
    if config.dev:
        api.register_blueprint(dev.blueprint(services))
    # flask-smorest serves its document without describing it; describe it too, so that
    # every route is in the document.
    (document_rule,) = (r for r in app.url_map.iter_rules() if r.rule == "/openapi.json")
    api.spec.path(
        rule=document_rule,
        operations={
            "get": {
                "summary": "This document (OpenAPI 3)",
                "tags": ["health"],
                "responses": {"200": {"description": "The OpenAPI document"}},
            }
        },
    )
    _count_requests(app, services)
    return app


def _count_requests(app: Flask, services: Services) -> None:
    metrics = services.metrics

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        started = g.get("started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.observe_request(
                endpoint, request.method, response.status_code, time.perf_counter() - started
            )
        return response
