"""GET /health (is the store reachable, how big is the log, which network is this) and
GET /metrics (Prometheus text; see metrics.py for what one worker's counters mean)."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import marshmallow as ma
from flask import Response

from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.metrics import CONTENT_TYPE
from node.gateway.problems import STORE_UNAVAILABLE, Problem, log
from node.gateway.services import Services
from protocol.application import PROTOCOL_VERSION


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ok"})
    store = ma.fields.String(required=True, metadata={"description": "sqlite:PATH or a DSN"})
    log_size = ma.fields.Integer(required=True, metadata={"description": "Events in the log"})
    chain_id = ma.fields.Integer(required=True)
    operator = ma.fields.String(required=True)
    version = ma.fields.String(required=True, metadata={"description": "The gateway's"})
    protocol_version = ma.fields.String(required=True)
    dev = ma.fields.Boolean(required=True, metadata={"description": "Dev endpoints on"})
    worker = ma.fields.Integer(required=True, metadata={"description": "pid that answered"})


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint("health", __name__, description="Liveness and metrics")
    version = importlib.metadata.version("blacktail")

    def log_size() -> int:
        try:
            return services.feed.sync()
        except Exception as error:  # Any failure to read the store is an outage here.
            log.warning("health: cannot read the store: %s", error)
            raise Problem(
                STORE_UNAVAILABLE, f"cannot read {services.config.storage.description}"
            ) from error

    @blp.route("/health")
    @blp.response(200, HealthSchema)
    @documents_problems(blp, 503)
    def health() -> dict[str, Any]:
        """Answers 200 when the store can be read."""
        return {
            "status": "ok",
            "store": services.config.storage.description,
            "log_size": log_size(),
            "chain_id": services.chain_id,
            "operator": services.operator.address,
            "version": version,
            "protocol_version": PROTOCOL_VERSION,
            "dev": services.config.dev,
            "worker": os.getpid(),
        }

    @blp.route("/metrics")
    @blp.response(200, content_type=CONTENT_TYPE, description="Prometheus text format 0.0.4")
    def metrics() -> Response:
        """This worker's counters and the log size."""
        return Response(services.metrics.render(log_size()), content_type=CONTENT_TYPE)

    return blp
