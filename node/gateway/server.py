"""Running the gateway under gunicorn (`blacktail gateway serve`).

The master process initializes the store (genesis record, operator key) once, before it
forks, so that workers never race to create them; it then closes the store, because no
SQLite connection may cross a fork. Each worker builds its own Flask app, with its own
connections, after the fork (`preload_app` is off). Workers are gthread workers: one
process serves several requests at once on threads and keeps connections alive.
"""

from __future__ import annotations

import logging
from typing import Any

import gunicorn.app.base
from flask import Flask

from node.blobs import BlobStore
from node.gateway import create_app
from node.gateway.config import GatewayConfig
from node.gateway.services import EXTENSION, Services, initialize_store
from node.sweeper import Sweeper

log = logging.getLogger("node.gateway")
DEFAULT_BIND = "127.0.0.1:8700"


def prepare(config: GatewayConfig) -> tuple[int, str]:
    """Initialize the store and the blob directory in this (the master) process, close
    the store again, and return the chain id and operator address."""
    network, operator = initialize_store(config)
    try:
        chain_id = network.chain_id
    finally:
        network.close()
    BlobStore(config.blob_dir, config.blob_bytes_max).remove_stale_temporaries()
    return chain_id, operator.address


class GatewayServer(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
    """gunicorn running `create_app(config)` in each worker."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        bind: str = DEFAULT_BIND,
        workers: int = 2,
        threads: int = 4,
        timeout_seconds: int = 30,
        announce: str = "",
    ) -> None:
        self.gateway_config = config
        self.announce = announce
        self.options: dict[str, Any] = {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": timeout_seconds,
            "preload_app": False,
            # gunicorn's control socket defaults to one path per user, which two
            # gateways (or two test runs) on one machine would fight over.
            "control_socket_disable": True,
            "when_ready": self._when_ready,
            "worker_exit": _worker_exit,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        app = create_app(self.gateway_config)
        services = app.extensions[EXTENSION]
        # Every worker runs a sweeper thread; a lock file lets one of them sweep at a time.
        lock_path = self.gateway_config.operator_key_path.parent / "sweeper.lock"
        Sweeper(services.network, services.catalog, services.operator, lock_path).start()
        return app

    def _when_ready(self, server: Any) -> None:
        for listener in server.LISTENERS:
            # print, not log: the fixture and the person starting it both read this line.
            print(f"BlackTail gateway listening on {listener} {self.announce}".rstrip(), flush=True)


def _worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        services = app.extensions.get(EXTENSION)
        if isinstance(services, Services):
            services.close()
