"""What each dashboard page shows, built from the gateway's read model.

A page is a `View`: display-ready values (`facts`), table rows, meters, a segment
timeline and chart series, every value already formatted (amounts in whole units, addresses
shortened with the full one kept as a title, statuses with the tone of their badge). The
same View renders the page on the server (Jinja, node/gateway/templates/dashboard/) and
is what the page's script polls (GET /ui/data/...) to update it in place, so the markup
and the live updates cannot disagree about what a fact says.

Everything is read from the catalog (the compute and market read model fed by the event
log), the ledger's balances and the log feed; the only rules applied here are the
domain's own (`protocol.fees.settle_segment` for a provider's share of a payment). A view
reads at most the newest `scan_window_items` items of each kind, so a request's cost is
bounded however long the network has run; lists and totals cover that window.
"""

from __future__ import annotations

import math
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from node.gateway.feed import Feed
from node.gateway.services import Services
from protocol.assets import Asset, to_display
from protocol.catalog import Catalog
from protocol.errors import NotFound, ProtocolError
from protocol.fees import settle_segment
from protocol.jobs import Commitment, Dispute, Job, Lease
from protocol.keys import parse_address
from protocol.ledger import (
    AVAILABLE,
    ESCROW_PREFIX,
    STAKE,
    SYSTEM_ACCOUNTS,
    TREASURY_ACCOUNT,
    UNBONDING,
    VAULT_ACCOUNT,
)
from protocol.market import Listing, rating_text
from protocol.participants import Provider, Verifier, provider_id, verifier_id
from protocol.settlement import SETTLEMENTS_ID, Settlements

A = TypeVar("A", bound=Aggregate)
Cell = dict[str, Any]

# The newest items of each kind a view reads; older ones are left out of its lists and
# totals (a bound on the cost of one request, which a page repeats every two seconds).
scan_window_items = 50_000
# Items per catalog page while scanning, and the pages one scan may take (new items can
# arrive while it runs; the window bounds the rest).
scan_page_items = 1_000
scan_pages_max = 2 * scan_window_items // scan_page_items
# Rows shown per table, newest first; the totals above a table count them all.
rows_max = 200
# Segments drawn on a job's timeline (the first ones).
timeline_blocks_max = 1_000
# Points per loss-curve series: a longer trace is thinned to every n-th step.
loss_points_max = 2_000
# The throughput chart: verified steps per minute over the last this many minutes.
throughput_minutes = 30
# The "steps per minute" figure averages over the last this many minutes.
rate_minutes = 5
# Epochs listed on the auditor's page, newest first.
epochs_shown_max = 50

# The tone of a status's badge: ok (green), info (blue), warn (amber), bad (red), muted.
_TONES = {
    "accepted": "ok",
    "active": "ok",
    "cleared": "ok",
    "completed": "ok",
    "consistent": "ok",
    "listed": "ok",
    "valid": "ok",
    "committed": "info",
    "leased": "info",
    "open": "info",
    "pending": "info",
    "running": "info",
    "disputed": "warn",
    "paused": "warn",
    "queued": "warn",
    "submitted": "warn",
    "cancelled": "bad",
    "expired": "bad",
    "fraud": "bad",
    "invalid": "bad",
    "jailed": "bad",
    "mismatch": "bad",
    "rejected": "bad",
    "revoked": "bad",
}


# -- cells and views ------------------------------------------------------------------------


def cell(
    text: object,
    *,
    href: str | None = None,
    badge: str | None = None,
    title: str | None = None,
    mono: bool = False,
) -> Cell:
    """One displayed value: its text, and optionally a link, a badge tone, a hover title
    and whether it is set in a monospace font (hashes, ids)."""
    out: Cell = {"text": str(text)}
    if href is not None:
        out["href"] = href
    if badge is not None:
        out["badge"] = badge
    if title is not None:
        out["title"] = title
    if mono:
        out["mono"] = True
    return out


def status(value: str) -> Cell:
    """A status as a badge in its tone."""
    return cell(value, badge=_TONES.get(value, "muted"))


def short(value: str, keep: int = 6) -> str:
    """`0x1234ab…cd56`: enough of an address or hash to tell it apart at a glance."""
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-4:]}"


def address(account: str, *, provider: bool = False) -> Cell:
    """An account, linked to its provider page or its balances."""
    if account in SYSTEM_ACCOUNTS:
        return cell(account, href=f"/ui/accounts/{account}")
    href = f"/ui/providers/{account}" if provider else f"/ui/accounts/{account}"
    return cell(short(account), href=href, title=account, mono=True)


def job_link(key: str) -> Cell:
    return cell(short(key, 8), href=f"/ui/jobs/{key}", title=key, mono=True)


def hexcell(value: str | None) -> Cell:
    return cell("—") if not value else cell(short(value, 10), title=value, mono=True)


def amount(value: int, currency: str) -> Cell:
    return cell(f"{to_display(value, Asset(currency))} {currency}", title=f"{value} base units")


def amounts(by_asset: Mapping[str, int]) -> Cell:
    """Amounts in several assets on one line; a dash when all are zero."""
    parts = [f"{to_display(v, Asset(a))} {a}" for a, v in sorted(by_asset.items()) if v]
    return cell(" · ".join(parts) if parts else "—")


def clipped(text: str, chars_max: int = 80) -> Cell:
    """Free text (a reason, a description) cut to `chars_max`, the whole of it as a title."""
    if len(text) <= chars_max:
        return cell(text or "—")
    return cell(text[: chars_max - 1] + "…", title=text)


def count(value: int) -> Cell:
    return cell(f"{value:,}")


def when(seconds: float | None) -> Cell:
    if not seconds:
        return cell("—")
    moment = datetime.fromtimestamp(seconds, UTC)
    today = moment.date() == datetime.now(UTC).date()
    text = moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")
    return cell(text, title=moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


def transition(commitment: Commitment | None, index: int) -> Cell:
    """Sampled transition `index` of a segment, as the steps it goes between."""
    if commitment is None:
        return cell(f"transition {index}")
    step = commitment.start_step + index
    return cell(f"{step} → {step + 1}", title=f"transition {index} of segment {commitment.segment}")


def percent(basis_points: int) -> str:
    return f"{basis_points / 100:.1f}%"


@dataclass
class View:
    """A page's facts, display-ready. `facts` are single values by name, `tables` rows of
    cells, `meters` progress as {value, max, text}, `timelines` blocks with a tone and a
    label, `charts` series of [x, y] points (y may be null: a gap)."""

    title: str
    facts: dict[str, Cell] = field(default_factory=dict)
    tables: dict[str, list[list[Cell]]] = field(default_factory=dict)
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    charts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def meter(self, name: str, value: int, maximum: int, text: str) -> None:
        self.meters[name] = {"value": value, "max": max(maximum, 1), "text": text}

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "facts": self.facts,
            "tables": self.tables,
            "meters": self.meters,
            "timelines": self.timelines,
            "charts": self.charts,
        }


def _network(services: Services, view: View) -> View:
    """The facts every page's header shows."""
    view.facts["log_size"] = count(services.feed.sync())
    view.facts["chain_id"] = cell(services.chain_id)
    view.facts["updated"] = when(time.time())
    return view


def _scan(catalog: Catalog, cls: type[A], keep: Callable[[A], bool] | None = None) -> list[A]:
    """The newest `scan_window_items` items of `cls` that `keep` accepts, oldest first."""
    start = max(0, catalog.count(cls) - scan_window_items)
    found: list[A] = []
    cursor: int | None = start
    for _ in range(scan_pages_max):
        if cursor is None:
            break
        items, cursor = catalog.page(cls, cursor, scan_page_items, keep)
        found += items
    return found


def _newest(items: list[A]) -> list[A]:
    return items[::-1][:rows_max]


def _epoch_seconds(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp()


# -- overview -------------------------------------------------------------------------------


def overview(services: Services) -> View:
    """The network at a glance: providers and their GPUs, jobs, verified throughput."""
    catalog = services.catalog
    view = View("BlackTail network")
    providers = _scan(catalog, Provider)
    verifiers = _scan(catalog, Verifier)
    jobs = _scan(catalog, Job)
    commitments = _scan(catalog, Commitment)
    disputes = _scan(catalog, Dispute)

    active = [p for p in providers if p.status == "active"]
    view.facts["providers"] = count(len(providers))
    view.facts["providers_active"] = cell(f"{len(active)} active")
    view.facts["gpus"] = count(sum(p.gpus for p in active))
    view.facts["gpus_total"] = cell(f"of {sum(p.gpus for p in providers):,} registered")
    view.facts["verifiers"] = count(len(verifiers))
    by_status = Counter(j.status for j in jobs)
    view.facts["jobs"] = count(len(jobs))
    view.facts["jobs_running"] = cell(
        f"{by_status['running']} running · {by_status['submitted']} queued · "
        f"{by_status['completed']} completed"
    )
    open_disputes = sum(d.status == "open" for d in disputes)
    view.facts["disputes"] = count(len(disputes))
    view.facts["disputes_open"] = cell(
        f"{open_disputes} open · {sum(d.status == 'fraud' for d in disputes)} fraud"
    )

    accepted = [c for c in commitments if c.status == "accepted"]
    view.facts["steps_verified"] = count(sum(c.steps for c in accepted))
    now = time.time()
    recent = sum(c.steps for c in accepted if now - _accepted_at(c) <= 60 * rate_minutes)
    view.facts["throughput"] = cell(f"{recent / rate_minutes:,.1f}")
    view.charts["throughput"] = _throughput(accepted, now)

    network = services.network
    view.tables["providers"] = [
        [
            address(p.address, provider=True),
            cell(p.device),
            count(p.gpus),
            status(p.status),
            cell(percent(p.reputation_bps), title=f"{p.reputation_bps} bps"),
            cell(f"{p.accepted} / {p.rejected}"),
            amount(network.balance(p.address, Asset.BLACK, STAKE), Asset.BLACK.value),
        ]
        for p in _newest(providers)
    ]
    view.tables["jobs"] = [
        [
            job_link(j.key),
            address(j.developer),
            cell(_model(j.spec)),
            status(j.status),
            cell(f"{len(j.accepted)} / {len(j.segments)}"),
            amount(j.paid, j.currency),
            amount(j.budget, j.currency),
        ]
        for j in _newest(jobs)
    ]
    by_key = {c.key: c for c in commitments}
    view.tables["disputes"] = [
        [
            job_link(d.job),
            transition(by_key.get(d.commitment), d.step),
            address(d.provider, provider=True),
            address(d.accuser),
            address(d.referee),
            status(d.status),
        ]
        for d in _newest(disputes)
    ]
    return _network(services, view)


def _accepted_at(commitment: Commitment) -> float:
    # A commitment's last event is the one that accepted it (a verdict, or a referee
    # clearing it), so its modification time is when its steps were verified.
    return _epoch_seconds(commitment.modified_on)


def _throughput(accepted: Iterable[Commitment], now: float) -> dict[str, Any]:
    """Verified steps per minute, one bar a minute, the current minute last."""
    this_minute = int(now // 60)
    steps = [0] * throughput_minutes
    for commitment in accepted:
        age = this_minute - int(_accepted_at(commitment) // 60)
        if 0 <= age < throughput_minutes:
            steps[throughput_minutes - 1 - age] += commitment.steps
    labels = [
        datetime.fromtimestamp((this_minute - throughput_minutes + 1 + i) * 60, UTC).strftime(
            "%H:%M"
        )
        for i in range(throughput_minutes)
    ]
    return {
        "kind": "bar",
        "x_label": "minute (UTC)",
        "y_label": "steps verified",
        "series": [
            {
                "label": "steps verified",
                "tone": "ok",
                "points": [[label, value] for label, value in zip(labels, steps, strict=True)],
            }
        ],
    }


def _model(spec: Mapping[str, Any]) -> str:
    """`mlp 16→32→4`: the model family and its layer widths."""
    model = spec.get("model", {})
    widths = [model.get("input"), *model.get("hidden", []), model.get("classes")]
    return f"{model.get('family', '?')} {'→'.join(str(w) for w in widths if w is not None)}"


# -- a job ----------------------------------------------------------------------------------


def job(services: Services, key: str) -> View:
    """A job: its progress, segments on a timeline, loss curve, verdicts and disputes."""
    catalog = services.catalog
    try:
        found = catalog.get(Job, UUID(key))
    except ValueError:
        found = None
    if found is None:
        raise NotFound("job", key)
    key = found.key
    commitments = _scan(catalog, Commitment, lambda c: c.job == key)
    leases = _scan(catalog, Lease, lambda lease: lease.job == key)
    disputes = _scan(catalog, Dispute, lambda d: d.job == key)
    spec = found.spec
    currency = found.currency
    view = View(f"Job {short(key, 8)}")

    view.facts["id"] = cell(key, mono=True)
    view.facts["status"] = status(found.status)
    view.facts["developer"] = address(found.developer)
    view.facts["model"] = cell(_model(spec))
    view.facts["dataset"] = hexcell(spec.get("dataset", {}).get("sha256"))
    verification = spec.get("verification", {})
    view.facts["mode"] = cell(
        f"{verification.get('mode', '?')} · detection probability "
        f"{verification.get('detection_probability', '?')}"
    )
    view.facts["spec_hash"] = hexcell(found.spec_hash)
    view.facts["budget"] = amount(found.budget, currency)
    view.facts["paid"] = amount(found.paid, currency)
    view.facts["escrow"] = amount(found.escrow, currency)
    view.facts["refunded"] = amount(found.refunded, currency)
    view.facts["requeues"] = count(found.requeues)
    view.facts["deadline"] = when(found.deadline)
    view.facts["checkpoint"] = hexcell(found.checkpoint)

    segments = len(found.segments)
    total_steps = found.segments[-1][1] if found.segments else 0
    verified = sum(
        found.segments[r["segment"]][1] - found.segments[r["segment"]][0] for r in found.accepted
    )
    view.facts["segments_accepted"] = cell(f"{len(found.accepted)} / {segments}")
    view.facts["steps_verified"] = cell(f"{verified:,} / {total_steps:,}")
    view.meter("segments", len(found.accepted), segments, f"{len(found.accepted)} of {segments}")

    attempts = Counter(lease.segment for lease in leases)
    accepted = {record["segment"]: record for record in found.accepted}
    states = [_segment_state(found, i, accepted) for i in range(segments)]
    view.timelines["segments"] = [
        {
            "label": str(index),
            "tone": _TONES.get(states[index], "muted"),
            "title": f"segment {index}: steps {start} to {end}, {states[index]}",
        }
        for index, (start, end) in enumerate(found.segments[:timeline_blocks_max])
    ]
    # The table shows rows_max segments around the one in flight.
    first = max(0, min(found.current - rows_max // 2, segments - rows_max))
    rows = []
    for index, (start, end) in enumerate(found.segments[first : first + rows_max], first):
        record = accepted.get(index, {})
        rows.append(
            [
                cell(index),
                cell(f"{start}-{end}"),
                status(states[index]),
                address(record["provider"], provider=True) if record else cell("—"),
                address(record["verifier"]) if record else cell("—"),
                count(attempts[index]),
                amount(record["payment"], currency) if record else cell("—"),
            ]
        )
    view.tables["segments"] = rows

    view.tables["commitments"] = [
        [
            cell(c.segment),
            address(c.provider, provider=True),
            address(c.verifier),
            status(c.status),
            _verdict(c),
            cell(f"{len(c.verdict['samples'])} of {c.steps}" if c.verdict else f"{c.samples}"),
            cell("published" if c.openings else "not yet"),
        ]
        for c in _newest(commitments)
    ]
    by_key = {c.key: c for c in commitments}
    view.tables["disputes"] = [
        [
            transition(by_key.get(d.commitment), d.step),
            address(d.provider, provider=True),
            address(d.accuser),
            address(d.referee),
            status(d.status),
            clipped(d.reason),
            amount(d.slashed, Asset.BLACK.value) if d.slashed else cell("—"),
        ]
        for d in _newest(disputes)
    ]
    view.tables["leases"] = [
        [
            cell(lease.segment),
            address(lease.provider, provider=True),
            status(lease.state),
            count(lease.heartbeats),
            when(lease.granted_at),
            when(lease.deadline),
        ]
        for lease in _newest(leases)
    ]
    traces = {c.key: _losses(c) for c in commitments}
    view.facts["loss_last"] = _last_loss(commitments, traces)
    view.charts["loss"] = _loss_chart(commitments, traces)
    return _network(services, view)


def _segment_state(found: Job, index: int, accepted: Mapping[int, Any]) -> str:
    """accepted; the in-flight segment's state (queued, leased, committed, disputed); or
    waiting (not reached yet), dropped (the job ended before it)."""
    if index in accepted:
        return "accepted"
    if found.finished:
        return "dropped"
    return found.segment_state if index == found.current else "waiting"


def _verdict(commitment: Commitment) -> Cell:
    verdict = commitment.verdict
    if verdict is None:
        return cell("awaiting openings" if commitment.openings is None else "awaiting verdict")
    if verdict["accepted"]:
        return cell("accepted", badge="ok")
    reason = verdict["reason"] or "rejected"
    step = commitment.start_step + verdict["failed_step"]
    return cell(f"rejected at {step} → {step + 1}", badge="bad", title=reason)


def _losses(commitment: Commitment) -> list[float | None]:
    """The commitment's loss trace (float32, big-endian, one per step); a value that is
    not finite is a gap (None), since a provider's numbers are untrusted."""
    raw = bytes.fromhex(commitment.loss_trace[2:])
    values = struct.unpack(f">{len(raw) // 4}f", raw[: len(raw) // 4 * 4])
    return [float(f"{v:.6g}") if math.isfinite(v) else None for v in values]


_LOSS_SERIES = (
    ("verified", "ok", ("accepted",)),
    ("awaiting verification", "info", ("pending", "disputed")),
    ("rejected (fraud)", "bad", ("fraud",)),
)


def _loss_chart(
    commitments: list[Commitment], traces: Mapping[str, list[float | None]]
) -> dict[str, Any]:
    """Training loss by step, one series per verification outcome; the loss of the step
    from state i to state i + 1 is plotted at step i + 1."""
    ordered = sorted(commitments, key=lambda c: c.start_step)
    series = []
    for label, tone, statuses in _LOSS_SERIES:
        points: list[list[float | None]] = []
        for commitment in ordered:
            if commitment.status in statuses:
                start = commitment.start_step
                points += [[start + i + 1, y] for i, y in enumerate(traces[commitment.key])]
        stride = max(1, math.ceil(len(points) / loss_points_max))
        series.append({"label": label, "tone": tone, "points": points[::stride]})
    return {"kind": "line", "x_label": "step", "y_label": "loss", "series": series}


def _last_loss(commitments: list[Commitment], traces: Mapping[str, list[float | None]]) -> Cell:
    """The loss at the last verified step."""
    accepted = [c for c in commitments if c.status == "accepted" and traces[c.key]]
    if not accepted:
        return cell("—")
    last = max(accepted, key=lambda c: c.start_step)
    value = traces[last.key][-1]
    step = last.start_step + len(traces[last.key])
    return cell("—" if value is None else f"{value:.4f}", title=f"at step {step}")


# -- a provider -----------------------------------------------------------------------------


def provider(services: Services, account: str) -> View:
    """A provider: hardware and prices, stake, earnings, reputation, its work."""
    account = parse_address(account, "address")
    catalog = services.catalog
    found = catalog.get(Provider, provider_id(account))
    if found is None:
        raise NotFound("provider", account)
    network = services.network
    view = View(f"Provider {short(account)}")
    view.facts["address"] = cell(account, mono=True)
    view.facts["status"] = status(found.status)
    view.facts["device"] = cell(found.device)
    view.facts["gpus"] = count(found.gpus)
    view.facts["memory"] = cell(f"{found.memory_mb:,} MB")
    view.facts["benchmark"] = cell(f"{found.benchmark_gflops:,} GFLOPS")
    view.facts["prices"] = cell(
        " · ".join(
            f"{to_display(price, Asset(c))} {c}/step" for c, price in sorted(found.prices.items())
        )
        or "—"
    )
    view.facts["jailed_until"] = when(found.jailed_until)
    view.facts["stake"] = amount(network.balance(account, Asset.BLACK, STAKE), "BLACK")
    view.facts["unbonding"] = amount(network.balance(account, Asset.BLACK, UNBONDING), "BLACK")
    view.facts["available"] = amounts(
        {a.value: network.balance(account, a, AVAILABLE) for a in Asset}
    )
    view.facts["reputation"] = cell(
        percent(found.reputation_bps), title=f"{found.reputation_bps} bps"
    )
    view.meter("reputation", found.reputation_bps, 10_000, percent(found.reputation_bps))
    view.facts["accepted"] = count(found.accepted)
    view.facts["rejected"] = count(found.rejected)
    view.facts["leases_lost"] = count(found.leases_lost)
    view.facts["unverified"] = count(found.unverified)

    fees = network.params.fees
    earned: dict[str, int] = defaultdict(int)
    segments = []
    trained = _scan(catalog, Job, lambda j: any(r["provider"] == account for r in j.accepted))
    for job_found in trained:
        for record in job_found.accepted:
            if record["provider"] != account:
                continue
            currency = job_found.currency
            share = settle_segment(record["payment"], Asset(currency), fees).provider
            earned[currency] += share
            segments.append(
                [
                    job_link(job_found.key),
                    cell(record["segment"]),
                    address(record["verifier"]),
                    amount(record["payment"], currency),
                    amount(share, currency),
                ]
            )
    view.facts["earned"] = amounts(earned)
    view.tables["segments"] = segments[::-1][:rows_max]

    disputes = _scan(catalog, Dispute, lambda d: d.provider == account)
    accused = {d.commitment for d in disputes}
    by_key = {c.key: c for c in _scan(catalog, Commitment, lambda c: c.key in accused)}
    slashed = sum(d.slashed for d in disputes)
    view.facts["slashed"] = amount(slashed, "BLACK") if slashed else cell("—")
    view.tables["disputes"] = [
        [
            job_link(d.job),
            transition(by_key.get(d.commitment), d.step),
            address(d.accuser),
            address(d.referee),
            status(d.status),
            amount(d.slashed, "BLACK") if d.slashed else cell("—"),
        ]
        for d in _newest(disputes)
    ]
    view.tables["leases"] = [
        [
            job_link(lease.job),
            cell(lease.segment),
            status(lease.state),
            count(lease.heartbeats),
            amount(lease.payment, lease.currency),
            when(lease.granted_at),
        ]
        for lease in _newest(_scan(catalog, Lease, lambda lease: lease.provider == account))
    ]
    return _network(services, view)


# -- balances -------------------------------------------------------------------------------

# The balances page's columns: a bucket's kind.
_COLUMN_NAMES = ("available", "staked", "escrow", "other")


def _column(bucket: str) -> str:
    if bucket == AVAILABLE:
        return "available"
    if bucket == STAKE:
        return "staked"
    return "escrow" if bucket.startswith(ESCROW_PREFIX) else "other"


def accounts(services: Services) -> View:
    """Every account the network knows by a role (system, provider, verifier, developer,
    model creator) with its balances by kind of bucket."""
    catalog = services.catalog
    roles: dict[str, list[str]] = {TREASURY_ACCOUNT: ["system"], VAULT_ACCOUNT: ["system"]}
    for role, names in (
        ("provider", (p.address for p in _scan(catalog, Provider))),
        ("verifier", (v.address for v in _scan(catalog, Verifier))),
        ("developer", (j.developer for j in _scan(catalog, Job))),
        ("creator", (item.creator for item in _scan(catalog, Listing))),
    ):
        for name in names:
            held = roles.setdefault(name, [])
            if role not in held:
                held.append(role)
    view = View("Balances")
    rows = []
    for name, held in list(roles.items())[:rows_max]:
        columns: dict[str, dict[str, int]] = {c: {} for c in _COLUMN_NAMES}
        for key, value in services.network.balances(name).items():
            asset, bucket = key.split("/", 1)
            column = columns[_column(bucket)]
            column[asset] = column.get(asset, 0) + value
        rows.append(
            [
                address(name),
                cell(", ".join(held)),
                *(amounts(columns[c]) for c in _COLUMN_NAMES),
            ]
        )
    view.tables["accounts"] = rows
    view.facts["accounts"] = count(len(roles))
    return _network(services, view)


def account(services: Services, name: str) -> View:
    """One account: every non-zero bucket, and the roles it holds."""
    if name not in SYSTEM_ACCOUNTS:
        name = parse_address(name, "address")
    catalog = services.catalog
    view = View(f"Account {short(name)}")
    view.facts["account"] = cell(name, mono=name not in SYSTEM_ACCOUNTS)
    rows = []
    for key, value in sorted(services.network.balances(name).items()):
        asset, bucket = key.split("/", 1)
        what = (
            job_link(bucket[len(ESCROW_PREFIX) :])
            if bucket.startswith(ESCROW_PREFIX)
            else cell(bucket)
        )
        rows.append(
            [
                cell(asset),
                cell("escrow" if bucket.startswith(ESCROW_PREFIX) else bucket),
                what if bucket.startswith(ESCROW_PREFIX) else cell("—"),
                cell(to_display(value, Asset(asset))),
                cell(value, mono=True),
            ]
        )
    view.tables["balances"] = rows
    roles = []
    if name not in SYSTEM_ACCOUNTS:
        offer = catalog.get(Provider, provider_id(name))
        if offer is not None:
            roles.append(
                cell(
                    f"provider · {offer.status}, reputation {percent(offer.reputation_bps)}",
                    href=f"/ui/providers/{name}",
                )
            )
        checker = catalog.get(Verifier, verifier_id(name))
        if checker is not None:
            roles.append(cell(f"verifier · {checker.verdicts} verdicts, {checker.rulings} rulings"))
    view.tables["roles"] = [[r] for r in roles]
    jobs = _scan(catalog, Job, lambda j: j.developer == name)
    view.tables["jobs"] = [
        [
            job_link(j.key),
            cell(_model(j.spec)),
            status(j.status),
            cell(f"{len(j.accepted)} / {len(j.segments)}"),
            amount(j.paid, j.currency),
        ]
        for j in _newest(jobs)
    ]
    return _network(services, view)


# -- the marketplace ------------------------------------------------------------------------


def market(services: Services) -> View:
    """DMarket's listings: terms, sales, rating and the provenance of each model."""
    listings = _scan(services.catalog, Listing)
    view = View("Marketplace")
    listed = [item for item in listings if item.status == "listed"]
    view.facts["listings"] = count(len(listed))
    view.facts["listings_total"] = cell(f"of {len(listings):,} ever listed")
    view.facts["sales"] = count(sum(item.sales for item in listings))
    revenue: dict[str, int] = defaultdict(int)
    for item in listings:
        revenue[item.currency] += item.revenue
    view.facts["revenue"] = amounts(revenue)
    view.facts["verified"] = count(sum(item.provenance is not None for item in listed))
    view.tables["listings"] = [
        [
            cell(item.name, title=item.description or None),
            cell(item.task),
            address(item.creator),
            amount(item.price, item.currency),
            _provenance(item.provenance),
            count(item.sales),
            cell(
                rating_text(item.rating_sum, item.rating_count) or "—",
                title=f"{item.rating_count} ratings",
            ),
            cell("yes" if item.hub else "no"),
            status(item.status),
        ]
        for item in _newest(listings)
    ]
    return _network(services, view)


def _provenance(record: Mapping[str, Any] | None) -> Cell:
    if not record:
        return cell("none", badge="muted")
    return cell(
        f"{record['verified_steps']:,} steps verified",
        href=f"/ui/jobs/{record['job']}",
        badge="ok",
        title=f"job {record['job']}, {record['segments']} segments",
    )


# -- the auditor's page ---------------------------------------------------------------------


def audit(services: Services) -> View:
    """The log's size and signed tree head, the epochs anchored on-chain, and whether the
    log's own root at each anchored size is the root the epoch anchored."""
    # The settlements first, then the head: an epoch anchors a size the log had before
    # its SettleEpoch was recorded, so the head read after covers every anchored size.
    settlements = services.catalog.get(Settlements, SETTLEMENTS_ID)
    epochs = [] if settlements is None else list(settlements.epochs)
    feed = services.feed
    head = feed.head()
    view = View("Audit")
    view.facts["head_size"] = count(head.size)
    view.facts["head_root"] = cell(f"0x{head.root.hex()}", mono=True)
    view.facts["head_time"] = when(head.timestamp / 1000)
    view.facts["operator"] = address(head.operator)
    view.facts["signature"] = hexcell(f"0x{head.signature.hex()}")
    try:
        head.verify(services.operator.address, services.chain_id)
        view.facts["signature_check"] = status("valid")
    except ProtocolError as error:
        view.facts["signature_check"] = cell("invalid", badge="bad", title=str(error))

    checks = [(epoch, _anchor_check(feed, head.size, epoch)) for epoch in epochs]
    view.facts["epochs"] = count(len(epochs))
    if checks:
        latest, (verdict, detail) = checks[-1]
        view.facts["epoch"] = cell(latest["epoch"])
        view.facts["anchor_size"] = count(latest["log_size"])
        view.facts["anchor_root"] = cell(latest["log_root"], mono=True)
        view.facts["claims_root"] = cell(latest["root"], mono=True)
        view.facts["chain_ref"] = cell(latest["chain_ref"] or "—", mono=True)
        view.facts["tokens"] = cell(
            " · ".join(f"{a} {short(t)}" for a, t in sorted(latest["tokens"].items()))
        )
        view.facts["since_anchor"] = count(head.size - latest["log_size"])
        view.facts["audit_status"] = cell(verdict, badge=_TONES[verdict], title=detail)
        view.facts["audit_detail"] = cell(detail)
    else:
        for name in ("epoch", "anchor_size", "anchor_root", "claims_root", "chain_ref"):
            view.facts[name] = cell("—")
        view.facts["tokens"] = cell("—")
        view.facts["since_anchor"] = count(head.size)
        view.facts["audit_status"] = cell("no epoch settled yet", badge="muted")
        view.facts["audit_detail"] = cell(
            "No epoch has been settled on-chain yet: there is no anchor to compare with."
        )
    failed = sum(verdict != "consistent" for _, (verdict, _) in checks)
    view.facts["epochs_failed"] = count(failed)
    view.tables["epochs"] = [
        [
            cell(epoch["epoch"]),
            count(epoch["log_size"]),
            hexcell(epoch["log_root"]),
            hexcell(epoch["root"]),
            hexcell(epoch["chain_ref"]),
            cell(verdict, badge=_TONES[verdict], title=detail),
        ]
        for epoch, (verdict, detail) in checks[::-1][:epochs_shown_max]
    ]
    return _network(services, view)


def _anchor_check(feed: Feed, log_size: int, epoch: Mapping[str, Any]) -> tuple[str, str]:
    """("consistent" | "mismatch", why): whether this log's RFC 6962 root over its first
    `epoch.log_size` events is the log root the epoch anchored."""
    number, size = epoch["epoch"], epoch["log_size"]
    if size > log_size:
        return "mismatch", f"epoch {number} anchors {size} events; the log has {log_size}"
    root = "0x" + feed.index.root(0, size).hex()
    if root != epoch["log_root"]:
        return "mismatch", (
            f"epoch {number}: the log's root at size {size} is {short(root, 10)}, "
            f"not the anchored {short(epoch['log_root'], 10)}"
        )
    return "consistent", f"epoch {number}: the log's root at size {size} is the anchored root"
