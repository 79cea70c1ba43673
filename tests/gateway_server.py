"""The tests' gateway on loopback: `node.gateway_process`, which the demo uses too.
Fixtures wrap it (tests/node/gateway/conftest.py: `server`)."""

from pathlib import Path

from node.gateway_process import (
    GatewayDidNotStart,
    RunningGateway,
    run_gateway,
    start_seconds_max,
    stop_seconds_max,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO_ROOT",
    "GatewayDidNotStart",
    "RunningGateway",
    "run_gateway",
    "start_seconds_max",
    "stop_seconds_max",
]
