"""Nothing acknowledged is lost: a gunicorn gateway under a load of signed commands is
killed with SIGKILL at random moments, restarted on the same store each time, and the log
it leaves behind is checked against everything the clients were told (issue 8, §1)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from node.client import GatewayClient
from protocol.keys import PrivateKey
from tests.stress.exported_log import export_and_audit
from tests.stress.gateways import GatewaySite, kill
from tests.stress.load import ACKED, REFUSED, UNKNOWN, Endpoint, LoadGenerator

kills = 3
# Each life of the gateway sees at least this many commands acknowledged before the
# random moment of its death is drawn, so that every crash lands in real traffic.
acked_per_life_min = 40
life_seconds_max = 60.0
# The kill comes this long (drawn uniformly) after the minimum above is reached.
kill_delay_seconds_max = 0.8
USERS = [PrivateKey.from_bytes((0x5EED0 + n).to_bytes(32, "big")) for n in range(8)]


def _wait_for_acks(load: LoadGenerator, target: int) -> None:
    deadline = time.monotonic() + life_seconds_max
    while load.count(ACKED) < target:
        assert time.monotonic() < deadline, f"fewer than {target} commands acknowledged"
        assert not load.server_errors, load.server_errors[:3]
        time.sleep(0.02)


def test_sigkilled_gateway_loses_nothing_acknowledged_and_half_applies_nothing(
    tmp_path: Path, store_dsn: str | None, seed: int
) -> None:
    """Under load, a gateway killed three times at random moments and restarted on the
    same store keeps every acknowledged command exactly once with the legs it answered,
    applies no refused one, leaves each cut-off command whole or absent, serves the
    balances its audited log replays to, and those are exactly what the clients' own
    acknowledged (and found) commands add up to."""
    rng = random.Random(seed)
    site = GatewaySite(tmp_path / "gateway", dsn=store_dsn)
    endpoint = Endpoint()
    load: LoadGenerator | None = None
    try:
        for life in range(kills + 1):
            with site.running() as gateway:
                if load is None:
                    load = LoadGenerator(gateway.operator, USERS, gateway.chain_id, endpoint, seed)
                    load.start()
                endpoint.up(gateway.base_url)
                _wait_for_acks(load, load.count(ACKED) + acked_per_life_min)
                if life < kills:
                    time.sleep(rng.uniform(0, kill_delay_seconds_max))
                    endpoint.down()
                    kill(gateway)
                    continue
                load.stop()
                served = {
                    user.address: _balances(gateway.client(), user.address)
                    for user in [*USERS, gateway.operator]
                }
                served["vault"] = _balances(gateway.client(), "vault")
    finally:
        if load is not None:
            load.stop()
    assert load is not None
    assert not load.server_errors, load.server_errors[:3]

    audited = export_and_audit(site.data_dir, store_dsn, tmp_path / "export.jsonl")
    acked = [a for a in load.attempts if a.state == ACKED]
    refused = [a for a in load.attempts if a.state == REFUSED]
    unknown = [a for a in load.attempts if a.state == UNKNOWN]
    assert len(acked) >= (kills + 1) * acked_per_life_min
    assert unknown, "no kill cut a command off in flight: the crash path was not exercised"
    for attempt in acked:
        assert audited.receipt_counts[attempt.key] == 1, attempt.key
        receipt = audited.receipt(*attempt.key)
        assert attempt.result is not None and receipt is not None
        assert receipt["legs"] == attempt.result["legs"] == [leg.to_json() for leg in attempt.legs]
    for attempt in refused:
        assert audited.receipt_counts[attempt.key] == 0, (attempt.key, attempt.problem)
    found = {a.key for a in unknown if audited.receipt_counts[a.key]}
    for attempt in unknown:
        # Cut off in flight: either recorded once with exactly its legs (the audit has
        # checked that every receipt's postings follow it whole) or not at all.
        if attempt.key in found:
            assert audited.receipt_counts[attempt.key] == 1
            receipt = audited.receipt(*attempt.key)
            assert receipt is not None
            assert receipt["legs"] == [leg.to_json() for leg in attempt.legs]
    client_commands = {a.key for a in load.attempts}
    others = [key for key in audited.receipt_counts if key not in client_commands]
    assert others == [], "the log holds commands no client sent"

    print(
        f"{len(acked)} acknowledged, {len(refused)} refused, {len(unknown)} cut off "
        f"({len(found)} of them in the log); {audited.report.events} events"
    )
    applied = {a.key for a in acked} | found
    expected = load.expected_balances(applied)
    replayed = {name: b for name, b in audited.balances.items() if b}
    assert replayed == expected
    for name, balances in served.items():
        assert balances == replayed.get(name, {}), name


def _balances(client: GatewayClient, who: str) -> dict[str, int]:
    with client:
        reply = client.get_json(f"/accounts/{who}/balances")
    return {f"{b['asset']}/{b['bucket']}": b["amount"] for b in reply["balances"]}
