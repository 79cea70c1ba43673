"""Solidity contracts, their committed artifacts, web3 clients, the chain watcher and settler."""
