"""The BlackTail domain: ledger, signed commands, the tamper-evident event log.

This package imports nothing else of the project and nothing of Flask, web3 or torch.
"""
