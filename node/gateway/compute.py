"""The compute protocol's resources: providers, verifiers, stake, jobs, leases,
commitments, verification tasks and disputes (specs/compute.md, specs/api.md).

Every POST takes a signed command of exactly one kind, in the body `POST /commands`
takes (the envelope, plus `context` for a SubmitJob's spec); an id in the path must be the
one the signed message names. Single items are read from the store (strongly
consistent); lists come from the catalog, the read model fed by the event log, paged by
creation order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import marshmallow as ma
from eventsourcing.domain import Aggregate

from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.commands import command_route
from node.gateway.compute_schemas import (
    CommitmentDetailSchema,
    CommitmentSchema,
    DisputeSchema,
    JobSchema,
    LeaseSchema,
    ProviderSchema,
    SegmentsSchema,
    StakeSchema,
    TasksSchema,
    VerifierSchema,
)
from node.gateway.paging import Page, page_args_schema, page_schema
from node.gateway.problems import INVALID_REQUEST, Problem
from node.gateway.services import Services
from protocol.assets import Asset
from protocol.catalog import Catalog
from protocol.compute import expected_samples
from protocol.errors import NotFound
from protocol.jobs import Commitment, Dispute, Job, Lease
from protocol.keys import parse_address
from protocol.ledger import STAKE, UNBONDING
from protocol.participants import Bond, Provider, Verifier, bond_id, provider_id, verifier_id

Keep = Callable[[Any], bool]


def _filters(name: str, **fields: str) -> type[ma.Schema]:
    return ma.Schema.from_dict(
        {
            key: ma.fields.String(load_default=None, metadata={"description": text})
            for key, text in fields.items()
        },
        name=name,
    )


RESOURCES = {
    "providers": "GPU providers: hardware, prices, status, reputation, stake",
    "verifiers": "Verifiers: staked re-executors of sampled steps and referees",
    "stake": "Stake and unbonding",
    "jobs": "Training jobs and their segments",
    "leases": "Leases of segments to providers, heartbeats, commitments",
    "commitments": "Committed segment results, their beacon and sampled steps, verdicts",
    "disputes": "Disputes opened by failed verdicts, and rulings",
    "tasks": "A verifier's pending work",
}


def blueprints(services: Services) -> list[GatewayBlueprint]:
    """One blueprint per compute resource (see RESOURCES)."""
    bp = {
        name: GatewayBlueprint(name, f"{__name__}.{name}", description=text)
        for name, text in RESOURCES.items()
    }
    network = services.network
    catalog = services.catalog
    page_args = page_args_schema(services.config)

    def post(rule: str, kind: str, path_field: str | None, summary: str) -> None:
        command_route(bp[rule.split("/")[1]], services, rule, kind, path_field, summary)

    def listing(
        rule: str,
        cls: type[Aggregate],
        filters: type[ma.Schema],
        summary: str,
        keep: Callable[[dict[str, Any]], Keep | None],
        item: type[ma.Schema],
    ) -> None:
        blp = bp[rule.split("/")[1]]
        items_page = page_schema(f"{cls.__name__}Page", item)

        def view(query: dict[str, Any], args: dict[str, Any]) -> Page:
            start = _cursor(args["cursor"])
            items, next_position = catalog.page(cls, start, args["limit"], keep(query))
            return Page(
                [item.to_json() for item in items],  # type: ignore[attr-defined]
                None if next_position is None else str(next_position),
            )

        view.__name__ = f"list_{cls.__name__.lower()}"
        view.__doc__ = summary
        decorated = documents_problems(blp, 400)(view)
        decorated = blp.response(200, items_page)(decorated)
        decorated = blp.arguments(page_args, location="query", as_kwargs=False)(decorated)
        decorated = blp.arguments(filters, location="query", as_kwargs=False)(decorated)
        blp.route(rule, methods=["GET"], endpoint=view.__name__)(decorated)

    # -- providers and verifiers ------------------------------------------------------

    post("/providers", "RegisterProvider", None, "Register or update GPUs, prices and stake.")
    post("/providers/status", "SetProviderStatus", None, "Pause or resume taking leases.")
    post("/verifiers", "RegisterVerifier", None, "Register as a verifier, staking BLACK.")
    post("/stake/unbond", "Unbond", None, "Start unbonding stake (slashable until released).")
    post("/stake/withdraw", "WithdrawUnbonded", None, "Withdraw stake past its unbonding delay.")

    def _eq(name: str, value: str | None) -> Keep | None:
        return None if value is None else (lambda item: getattr(item, name) == value)

    listing(
        "/providers",
        Provider,
        _filters("ProviderFilters", status="active | paused | jailed"),
        "Registered providers, in registration order.",
        lambda q: _eq("status", q["status"]),
        ProviderSchema,
    )
    listing(
        "/verifiers",
        Verifier,
        _filters("VerifierFilters"),
        "Registered verifiers, in registration order.",
        lambda q: None,
        VerifierSchema,
    )

    @bp["providers"].route("/providers/<address>")
    @bp["providers"].response(200, ProviderSchema)
    @documents_problems(bp["providers"], 400, 404)
    def get_provider(address: str) -> dict[str, Any]:
        """A provider: hardware, prices, status, reputation, leases held, stake."""
        address = parse_address(address, "address")
        provider = network.get(provider_id(address))
        if not isinstance(provider, Provider):
            raise NotFound("provider", address)
        return {**provider.to_json(), **_stake(address)}

    @bp["verifiers"].route("/verifiers/<address>")
    @bp["verifiers"].response(200, VerifierSchema)
    @documents_problems(bp["verifiers"], 400, 404)
    def get_verifier(address: str) -> dict[str, Any]:
        """A verifier: verdicts, rulings, how often it was upheld, stake."""
        address = parse_address(address, "address")
        verifier = network.get(verifier_id(address))
        if not isinstance(verifier, Verifier):
            raise NotFound("verifier", address)
        return {**verifier.to_json(), **_stake(address)}

    @bp["stake"].route("/stake/<address>")
    @bp["stake"].response(200, StakeSchema)
    @documents_problems(bp["stake"], 400)
    def get_stake(address: str) -> dict[str, Any]:
        """An address's stake, unbonding stake and release times."""
        address = parse_address(address, "address")
        return {"address": address, **_stake(address)}

    def _stake(address: str) -> dict[str, Any]:
        bond = network.get(bond_id(address))
        return {
            "stake": network.balance(address, Asset.BLACK, STAKE),
            "unbonding": network.balance(address, Asset.BLACK, UNBONDING),
            "unbonding_entries": bond.to_json()["entries"] if isinstance(bond, Bond) else [],
        }

    # -- jobs, leases, commitments, disputes --------------------------------------------

    post("/jobs", "SubmitJob", None, "Submit a training job (spec in context.spec).")
    post("/jobs/<job>/cancel", "CancelJob", "job", "Cancel a job; the unearned is refunded.")
    post("/leases", "RequestLease", None, "Lease the next queued segment of a job.")
    post("/leases/<lease>/heartbeat", "Heartbeat", "lease", "Extend a held lease.")
    post("/leases/<lease>/commitment", "Commit", "lease", "Commit a leased segment's result.")
    post(
        "/commitments/<commitment>/openings",
        "OpenSamples",
        "commitment",
        "Publish the openings manifest of the sampled states.",
    )
    post("/commitments/<commitment>/verdict", "PostVerdict", "commitment", "Post a verdict.")
    post("/disputes/<dispute>/ruling", "RuleDispute", "dispute", "Rule on a dispute.")

    listing(
        "/jobs",
        Job,
        _filters(
            "JobFilters",
            status="submitted | running | completed | cancelled | expired",
            developer="address",
        ),
        "Jobs, in submission order.",
        lambda q: _all(_eq("status", q["status"]), _eq("developer", _address(q["developer"]))),
        JobSchema,
    )
    listing(
        "/leases",
        Lease,
        _filters(
            "LeaseFilters",
            job="job id",
            provider="address",
            state="open | committed | expired | revoked",
        ),
        "Leases, in the order granted.",
        lambda q: _all(
            _eq("job", q["job"]), _eq("provider", _address(q["provider"])), _eq("state", q["state"])
        ),
        LeaseSchema,
    )
    listing(
        "/commitments",
        Commitment,
        _filters(
            "CommitmentFilters",
            job="job id",
            verifier="address",
            status="pending | accepted | disputed | fraud",
        ),
        "Commitments, in the order recorded.",
        lambda q: _all(
            _eq("job", q["job"]),
            _eq("verifier", _address(q["verifier"])),
            _eq("status", q["status"]),
        ),
        CommitmentSchema,
    )
    listing(
        "/disputes",
        Dispute,
        _filters("DisputeFilters", referee="address", status="open | fraud | cleared"),
        "Disputes, in the order opened.",
        lambda q: _all(_eq("referee", _address(q["referee"])), _eq("status", q["status"])),
        DisputeSchema,
    )

    def _one(cls: type[Any], key: str, what: str) -> Any:
        try:
            aggregate = network.get(UUID(key))
        except ValueError:
            raise NotFound(what, key) from None
        if not isinstance(aggregate, cls):
            raise NotFound(what, key)
        return aggregate

    @bp["jobs"].route("/jobs/<job>")
    @bp["jobs"].response(200, JobSchema)
    @documents_problems(bp["jobs"], 404)
    def get_job(job: str) -> dict[str, Any]:
        """A job: spec, status, escrow accounting, the segment in flight."""
        return _one(Job, job, "job").to_json()  # type: ignore[no-any-return]

    @bp["jobs"].route("/jobs/<job>/segments")
    @bp["jobs"].response(200, SegmentsSchema)
    @documents_problems(bp["jobs"], 404)
    def get_segments(job: str) -> dict[str, Any]:
        """A job's segments: steps, and who trained and verified each accepted one."""
        found: Job = _one(Job, job, "job")
        accepted = {record["segment"]: record for record in found.accepted}
        segments = []
        for index, (start, end) in enumerate(found.segments):
            state = (
                "accepted"
                if index in accepted
                else (found.segment_state if index == found.current else "waiting")
            )
            segments.append(
                {
                    "segment": index,
                    "start_step": start,
                    "end_step": end,
                    "state": state,
                    **accepted.get(index, {}),
                }
            )
        return {"id": found.key, "segments": segments}

    @bp["leases"].route("/leases/<lease>")
    @bp["leases"].response(200, LeaseSchema)
    @documents_problems(bp["leases"], 404)
    def get_lease(lease: str) -> dict[str, Any]:
        """A lease: segment, provider, assigned verifier, price, deadline, state."""
        return _one(Lease, lease, "lease").to_json()  # type: ignore[no-any-return]

    @bp["commitments"].route("/commitments/<commitment>")
    @bp["commitments"].response(200, CommitmentDetailSchema)
    @documents_problems(bp["commitments"], 404)
    def get_commitment(commitment: str) -> dict[str, Any]:
        """A commitment, its beacon and the transitions its verifier must re-execute."""
        found: Commitment = _one(Commitment, commitment, "commitment")
        beacon = network.beacon(found.key)
        return {
            **found.to_json(),
            "beacon": "0x" + beacon.hex(),
            "sample_indices": expected_samples(found, beacon),
        }

    @bp["disputes"].route("/disputes/<dispute>")
    @bp["disputes"].response(200, DisputeSchema)
    @documents_problems(bp["disputes"], 404)
    def get_dispute(dispute: str) -> dict[str, Any]:
        """A dispute: the accused step, accuser, referee, deadline and ruling."""
        return _one(Dispute, dispute, "dispute").to_json()  # type: ignore[no-any-return]

    @bp["tasks"].route("/tasks")
    @bp["tasks"].arguments(_filters("TaskFilters", verifier="address (required)"), location="query")
    @bp["tasks"].response(200, TasksSchema)
    @documents_problems(bp["tasks"], 400)
    def get_tasks(query: dict[str, Any]) -> dict[str, Any]:
        """A verifier's work: commitments awaiting its verdict, disputes awaiting its ruling."""
        verifier = _address(query["verifier"])
        if verifier is None:
            raise Problem(
                INVALID_REQUEST, "verifier: required", errors={"query": {"verifier": ["required"]}}
            )
        verdicts = _scan(
            catalog, Commitment, lambda c: c.status == "pending" and c.verifier == verifier
        )
        rulings = _scan(catalog, Dispute, lambda d: d.status == "open" and d.referee == verifier)
        return {
            "verifier": verifier,
            "verdicts": [c.to_json() for c in verdicts],
            "rulings": [d.to_json() for d in rulings],
        }

    return list(bp.values())


def _scan(catalog: Catalog, cls: type[Any], keep: Keep) -> list[Any]:
    found: list[Any] = []
    cursor: int | None = 0
    while cursor is not None and len(found) < 100:
        items, cursor = catalog.page(cls, cursor, 100, keep)
        found += items
    return found[:100]


def _address(value: str | None) -> str | None:
    return None if value is None else parse_address(value, "address")


def _all(*keeps: Keep | None) -> Keep | None:
    active = [k for k in keeps if k is not None]
    if not active:
        return None
    return lambda item: all(k(item) for k in active)


def _cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 12:
        raise Problem(
            INVALID_REQUEST,
            f"cursor {cursor!r} is not a cursor this list gave",
            errors={"query": {"cursor": ["expected the next_cursor of the previous page"]}},
        )
    return int(cursor)
