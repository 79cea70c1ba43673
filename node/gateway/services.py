"""What a gateway process holds: the ledger application, the log feed, the operator key,
the blob store and the metrics. One `Services` per Flask app (so per gunicorn worker),
kept in `app.extensions["blacktail"]`; nothing is global.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from node.blobs import BlobStore
from node.gateway.committer import GroupCommitter
from node.gateway.config import GatewayConfig
from node.gateway.feed import Feed
from node.gateway.metrics import Metrics
from node.hub_models import HubModels
from node.operator import load_operator_key
from protocol.application import Network
from protocol.catalog import Catalog
from protocol.keys import PrivateKey

EXTENSION = "blacktail"


@dataclass(frozen=True, slots=True)
class Services:
    config: GatewayConfig
    network: Network
    operator: PrivateKey
    feed: Feed
    blobs: BlobStore
    metrics: Metrics
    # The compute read model, fed by the same event log as the feed.
    catalog: Catalog
    # Single-command requests of this process, applied in groups (one transaction each).
    committer: GroupCommitter
    # The hub's models, loaded into this process on their first request.
    hub_models: HubModels

    @property
    def chain_id(self) -> int:
        return self.network.chain_id

    def close(self) -> None:
        self.committer.stop()
        self.network.close()


def initialize_store(config: GatewayConfig) -> tuple[Network, PrivateKey]:
    """Open the store and make sure it holds this network's genesis (made on first use,
    with the operator key, made in its file on first use too)."""
    operator = load_operator_key(config.operator_key_path, create=True)
    network = Network(config.storage, config.compute_params())
    try:
        network.initialize(config.chain_id, operator.address)
    except BaseException:
        network.close()
        raise
    return network, operator


def open_services(config: GatewayConfig) -> Services:
    network, operator = initialize_store(config)
    try:
        blobs = BlobStore(config.blob_dir, config.blob_bytes_max)
        feed = Feed(network, operator)
        catalog = Catalog(network.event_log)
        committer = GroupCommitter(network)
        hub_models = HubModels(blobs, config.artifact_bytes_max, config.hub_device)
        return Services(
            config, network, operator, feed, blobs, Metrics(), catalog, committer, hub_models
        )
    except BaseException:
        network.close()
        raise


def current_services() -> Services:
    """The services of the app handling the current request."""
    services = current_app.extensions[EXTENSION]
    assert isinstance(services, Services), "the app was not made by create_app"
    return services
