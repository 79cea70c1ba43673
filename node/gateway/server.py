"""Running the gateway under gunicorn (`blacktail gateway serve`).

The master process initializes the store (genesis record, operator key) once, before it
forks, so that workers never race to create them; it then closes the store, because no
SQLite connection may cross a fork. Each worker builds its own Flask app, with its own
connections, after the fork (`preload_app` is off). Workers are gthread workers: one
process serves several requests at once on threads and keeps connections alive.

A request gunicorn cannot even parse (a request line or headers over its limits) never
reaches Flask; gunicorn answers it itself, and each worker makes that answer a problem too
(`write_problem`), because the API promises one for every error. A body that breaks off or
whose chunking is broken is found only when the application reads it: that is the
client's fault too, a 400 bad-request (`body_unreadable`), not a 500.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import replace
from http import HTTPStatus
from typing import Any

import gunicorn.app.base
import gunicorn.util
from eventsourcing.persistence import DatabaseError, RecordConflictError
from flask import Flask, Response
from gunicorn.http.errors import NoMoreData, ParseException

from node.blobs import BlobStore
from node.gateway import create_app
from node.gateway.config import GatewayConfig
from node.gateway.problems import (
    BY_STATUS,
    PROBLEM_MEDIA_TYPE,
    ProblemType,
    problem_body,
    problem_response,
)
from node.gateway.services import EXTENSION, Services, initialize_store
from node.sweeper import Sweeper
from protocol.application import Network
from protocol.keys import PrivateKey

log = logging.getLogger("node.gateway")
DEFAULT_BIND = "127.0.0.1:8700"
ddl_attempts_max = 5


def prepare(config: GatewayConfig) -> tuple[int, str]:
    """Initialize the store and the blob directory in this (the master) process, close
    the store again, and return the chain id and operator address. The workers forked
    after it open the store without creating tables (`Storage.existing`)."""
    network, operator = _initialize_store_racing(config)
    try:
        chain_id = network.chain_id
    finally:
        network.close()
    BlobStore(config.blob_dir, config.blob_bytes_max).remove_stale_temporaries()
    return chain_id, operator.address


def _initialize_store_racing(config: GatewayConfig) -> tuple[Network, PrivateKey]:
    """`initialize_store`, tried again when another gateway is initializing the same fresh
    store at this instant: PostgreSQL's concurrent CREATE ... IF NOT EXISTS fails with
    "tuple concurrently updated" or a duplicate pg_type key, and two genesis writes
    conflict. Theirs will do; the next try finds it made."""
    for attempt in range(1, ddl_attempts_max + 1):
        try:
            return initialize_store(config)
        except (DatabaseError, RecordConflictError) as error:
            racing = isinstance(error, RecordConflictError) or any(
                sign in str(error) for sign in _RACING_SIGNS
            )
            if not racing or attempt == ddl_attempts_max:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


_RACING_SIGNS = ("concurrently updated", "already exists")


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
        # In the worker, after the fork: gunicorn's error pages become problems here.
        gunicorn.util.write_error = write_problem
        # The master made the tables before forking (`prepare`); workers only open them.
        config = replace(self.gateway_config, storage=self.gateway_config.storage.existing())
        app = create_app(config)
        app.register_error_handler(ParseException, body_unreadable)
        app.register_error_handler(NoMoreData, body_unreadable)
        services = app.extensions[EXTENSION]
        # Every worker runs a sweeper thread; a lock file lets one of them sweep at a time.
        lock_path = self.gateway_config.operator_key_path.parent / "sweeper.lock"
        Sweeper(
            services.network,
            services.catalog,
            services.operator,
            lock_path,
            interval_seconds=self.gateway_config.sweep_seconds,
            grace_seconds=self.gateway_config.sweep_grace_seconds,
        ).start()
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


def write_problem(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """gunicorn's `util.write_error`, answering with an RFC 7807 problem instead of an
    HTML page: the status's own type where it has one (400 bad-request), else
    "about:blank", as the Flask app answers an HTTP error without a type of its own."""
    kind = BY_STATUS.get(status) or ProblemType("about:blank", status, HTTPStatus(status).phrase)
    body = json.dumps(problem_body(kind, message or reason, {})).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: {PROBLEM_MEDIA_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


def body_unreadable(error: Exception) -> Response:
    """A request body gunicorn could not read to its end (broken chunking, a connection
    that closed half way): 400 bad-request, and the connection is closed, since where the
    next request would begin is unknown."""
    body = problem_body(BY_STATUS[400], f"the request body cannot be read: {error}", {})
    return problem_response(body, {"Connection": "close"})
