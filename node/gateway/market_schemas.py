"""Request and response schemas of the market and hub resources (specs/market.md): what
each protocol object looks like in JSON, as its `to_json` gives it.

Like the compute schemas, they document the OpenAPI responses and shape every answer, so
a field the protocol adds must be added here too (a test compares the two).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from node.gateway.commands import SIGNATURE_PATTERN, SignedCommandSchema
from protocol.hub import input_rows_max

F = ma.fields


def _int(text: str) -> F.Integer:
    return F.Integer(required=True, metadata={"description": text})


def _str(text: str, *, allow_none: bool = False) -> F.String:
    return F.String(required=True, allow_none=allow_none, metadata={"description": text})


def _amounts(text: str) -> F.Dict:
    return F.Dict(
        keys=F.String(), values=F.Integer(), required=True, metadata={"description": text}
    )


class VerdictCountsSchema(ma.Schema):
    accepted = _int("Segments accepted by their verifier")
    cleared_on_dispute = _int("Segments accepted after a referee cleared a rejection")


class ProvenanceSchema(ma.Schema):
    job = _str("The job that trained the model")
    spec_hash = _str("0x SHA-256 of its job spec")
    mode = _str("exact | tolerance")
    detection_probability = _str("The job's target detection probability (decimal string)")
    segments = _int("Segments, every one verified")
    verified_steps = _int("Training steps, in verified segments")
    reexecuted_steps = _int("Sampled steps re-executed by verifiers")
    verdicts = F.Nested(VerdictCountsSchema, required=True)
    providers = _amounts("Provider address -> segments it trained (the royalty weights)")
    final_checkpoint = _str("0x SHA-256 of the job's final checkpoint: the artifact")


class ListingSchema(ma.Schema):
    id = _str("Listing id (derived from the artifact)")
    creator = _str("EIP-55 address of the lister")
    artifact = _str("0x SHA-256 of the safetensors blob")
    name = _str("Model name")
    task = _str("classification | regression | embedding | generation | other")
    license = _str(
        "MIT | Apache-2.0 | CC-BY-4.0 | CC-BY-NC-4.0 | OpenRAIL-M | proprietary | custom"
    )
    license_text = _str("The custom license's terms, or terms added to a listed one")
    description = _str("Free text")
    price = _int("Base units of currency; 0: free, downloadable by anyone")
    currency = _str("BLACK | USD")
    royalty_bps = _int("Share of each sale paid to the provenance job's providers")
    provenance = F.Nested(ProvenanceSchema, required=True, allow_none=True)
    hub = F.Boolean(required=True, metadata={"description": "Served by the GenAI Hub"})
    request_price = _int("Hub price per request for callers without a subscription (0: none)")
    listed_at = _int("Unix seconds")
    status = _str("listed | delisted")
    delisted_at = _int("Unix seconds (0 while listed)")
    sales = _int("Licenses sold")
    revenue = _int("Base units paid by buyers")
    rating_count = _int("Buyers who rated it")
    rating = _str("Average rating, two decimals rounded down", allow_none=True)


class SegmentRecordSchema(ma.Schema):
    segment = _int("Index")
    start_step = _int("First step")
    end_step = _int("One past the last step")
    provider = _str("Who trained it")
    verifier = _str("Who verified it (the referee, after a dispute)")
    commitment = _str("Commitment id")
    root = _str("0x Merkle root of the per-step state hashes")
    end_checkpoint = _str("0x SHA-256 of the segment's end checkpoint")
    reexecuted_steps = _int("Sampled steps re-executed")
    verdict = F.Dict(required=True, allow_none=True, metadata={"description": "The verdict"})
    dispute = _str("Dispute id, when the verdict was disputed", allow_none=True)


class ProvenanceDetailSchema(ma.Schema):
    listing = _str("Listing id")
    provenance = F.Nested(ProvenanceSchema, required=True)
    segments = F.List(F.Nested(SegmentRecordSchema), required=True)


class GrantSchema(ma.Schema):
    listing = _str("Listing id")
    buyer = _str("EIP-55 address")
    artifact = _str("0x SHA-256 of the licensed artifact")
    license = _str("The license bought")
    price = _int("Base units paid")
    currency = _str("BLACK | USD")
    granted_at = _int("Unix seconds")


class ReviewSchema(ma.Schema):
    listing = _str("Listing id")
    buyer = _str("EIP-55 address")
    rating = _int("1 to 5")
    text = _str("Free text")
    at = _int("Unix seconds of the latest revision")


class TokenRequestSchema(ma.Schema):
    """A buyer's signed request for a download token (specs/market.md, "Downloads")."""

    buyer = F.String(required=True, metadata={"description": "EIP-55 address of the buyer"})
    expiry = F.Integer(
        strict=True,
        required=True,
        validate=ma.validate.Range(min=0, max=2**64 - 1),
        metadata={"description": "Unix seconds, at most 300 s ahead"},
    )
    signature = F.String(
        required=True,
        validate=ma.validate.Regexp(SIGNATURE_PATTERN),
        metadata={"description": "EIP-712 DownloadRequest{listing, expiry} signed by the buyer"},
    )


class TokenSchema(ma.Schema):
    token = _str("<buyer>.<expiry>.<operator signature>: pass as ?token=")
    listing = _str("Listing id")
    buyer = _str("EIP-55 address")
    expires_at = _int("Unix seconds")
    url = _str("The artifact's download path with the token")


class TokenArgsSchema(ma.Schema):
    token = F.String(
        load_default=None,
        validate=ma.validate.Length(max=256),
        metadata={"description": "A download token (paid models only)"},
    )


class PlanSchema(ma.Schema):
    plan = _str("Plan id")
    prices = _amounts("Base units per period, by currency (0: not sold in it)")
    period_seconds = _int("Length of a period")
    quota = _int("Requests per period")
    active = F.Boolean(required=True, metadata={"description": "Sold now"})


class HubSchema(ma.Schema):
    plans = F.List(F.Nested(PlanSchema), required=True)
    pool = _amounts("Subscription revenue waiting for the next epoch, by currency")
    last_epoch = _int("The last closed epoch (0: none)")


class SubscriptionSchema(ma.Schema):
    subscriber = _str("EIP-55 address")
    plan = _str("Plan id of the current period")
    asset = _str("Currency paid")
    price = _int("Base units paid for the current period")
    quota = _int("Requests the current period allows")
    used = _int("Requests made in the current period")
    starts_at = _int("Unix seconds")
    ends_at = _int("Unix seconds; after it, requests are pay-per-request")
    periods = _int("Periods bought")
    requests_total = _int("Subscribed requests ever made")


class MeterSchema(ma.Schema):
    listing = _str("Listing id")
    subscribed = _int("Requests by subscribers (shared per epoch)")
    paid = _int("Requests paid per request")
    charged = _int("Base units those paid")


class HubModelSchema(ListingSchema):
    meter = F.Nested(MeterSchema, required=True)


class EpochSchema(ma.Schema):
    epoch = _int("Epoch number (1, 2, ...)")
    requests = _amounts("Listing -> subscribed requests counted")
    creators = _amounts("Creator -> subscribed requests (the weights)")
    payouts = F.Dict(
        keys=F.String(),
        values=F.Dict(keys=F.String(), values=F.Integer()),
        required=True,
        metadata={"description": "Currency -> creator -> base units paid"},
    )
    fees = _amounts("Currency -> platform fee")
    carried = _amounts("Currency -> pool left for the next epoch")
    at = _int("Unix seconds")


class FloatRows(F.List[Any]):
    """Rows of JSON numbers: documented as the array of arrays of numbers it is, read in
    one pass (a Float field per value costs more than the model it feeds). NaN and
    Infinity never get here (the JSON reader refuses them); booleans are refused here,
    and the width and float32 range by `protocol.hub.input_digest`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(F.List(F.Float(allow_nan=False)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list) or not 1 <= len(value) <= input_rows_max:
            raise ma.ValidationError(f"1 to {input_rows_max} rows")
        for row in value:
            if not isinstance(row, list) or not row:
                raise ma.ValidationError("every row is a non-empty list of numbers")
            for number in row:
                if type(number) is not float and type(number) is not int:
                    raise ma.ValidationError("every value is a number")
        return value


class PredictRequestSchema(ma.Schema):
    command = F.Nested(
        SignedCommandSchema,
        required=True,
        metadata={"description": "A HubRequest signed by the caller; inputDigest binds inputs"},
    )
    inputs = FloatRows(
        required=True,
        metadata={
            "description": f"1 to {input_rows_max} rows of features of one width (float32 "
            "after rounding)"
        },
    )


class PredictResultSchema(ma.Schema):
    listing = _str("Listing id")
    command_id = _str("The HubRequest's receipt id")
    metering = F.Dict(
        required=True, metadata={"description": "How the request was metered (its outcome)"}
    )
    outputs = F.List(F.List(F.Float()), required=True, metadata={"description": "Logits per row"})
    predictions = F.List(F.Integer(), required=True, metadata={"description": "Top class per row"})
