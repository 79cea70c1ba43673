"""The `blacktail` command line: one click group, a sub-group per area."""

from __future__ import annotations

import click

from node.cli.audit import audit
from node.cli.bundle import train, verify
from node.cli.chain import chain_group, claim
from node.cli.compute import account, job, provider
from node.cli.dataset import dataset
from node.cli.demo import demo, ledger_demo, up
from node.cli.gateway import gateway
from node.cli.keys import keys
from node.cli.ledger import ledger
from node.cli.log import log_group
from node.cli.market import hub, market
from node.cli.verifier import verifier


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blacktail")
def main() -> None:
    """BlackTail: a decentralized GPU compute network with a verifiable ledger.

    Every command prints what a person needs; most take --json for machines.
    """


main.add_command(keys)
main.add_command(ledger)
ledger.add_command(ledger_demo)
main.add_command(log_group)
main.add_command(audit)
main.add_command(demo)
main.add_command(up)
main.add_command(gateway)
main.add_command(provider)
main.add_command(job)
main.add_command(account)
main.add_command(dataset)
main.add_command(train)
main.add_command(verify)
main.add_command(verifier)
main.add_command(chain_group)
main.add_command(claim)
main.add_command(market)
main.add_command(hub)
