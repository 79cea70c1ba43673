"""POST /commands and POST /commands/batch: signed commands in, results (or problems) out.

The envelope (`kind, chain_id, signer, message, signature`) is checked by the schema;
the message, the chain and the signature by `protocol.commands.verify_command`, and the
state by `Network.submit`. A retry with the same signer and client id gets the first
answer again, with status 200 instead of 201.

`submit_command` is the one place the gateway hands a command to the protocol: a kind
that needs data beside its signed message reads it from the request's `context` there,
and a market command whose artifact must be in the blob store is checked there
(`node.artifacts.check_market_command`), since the ledger records only its digest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import marshmallow as ma

from node.artifacts import check_market_command
from node.blobs import BlobError
from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.config import GatewayConfig
from node.gateway.problems import ProblemSchema, error_body, problem_for
from node.gateway.services import Services
from protocol.application import CommandContext, CommandResult
from protocol.commands import KINDS, SignedCommand
from protocol.errors import InvalidInput, ProtocolError
from protocol.jobspec import parse_job_spec

SIGNATURE_PATTERN = r"^0x[0-9a-fA-F]{130}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


def message_schema_name(kind: str) -> str:
    return f"{kind}Message"


class SignedCommandSchema(ma.Schema):
    """A signed command as it travels (specs/signing.md: the signed-command envelope)."""

    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(sorted(KINDS)))
    chain_id = ma.fields.Integer(strict=True, required=True, validate=ma.validate.Range(min=1))
    signer = ma.fields.String(
        required=True, metadata={"pattern": ADDRESS_PATTERN, "description": "EIP-55 address"}
    )
    message = ma.fields.Dict(
        keys=ma.fields.String(),
        required=True,
        metadata={
            "description": "The EIP-712 message of `kind`: the <kind>Message schema",
            "oneOf": [
                {"$ref": f"#/components/schemas/{message_schema_name(k)}"} for k in sorted(KINDS)
            ],
        },
    )
    signature = ma.fields.String(
        required=True,
        validate=ma.validate.Regexp(SIGNATURE_PATTERN),
        metadata={"description": "65 bytes r ‖ s ‖ v in hex, as eth_signTypedData_v4 gives"},
    )


class CommandContextSchema(ma.Schema):
    """What some kinds need beside the signed message; the message commits to it."""

    spec = ma.fields.Dict(
        keys=ma.fields.String(),
        metadata={"description": "SubmitJob: the job spec (specs/jobspec.md) its specHash names"},
    )


class CommandRequestSchema(SignedCommandSchema):
    context = ma.fields.Nested(CommandContextSchema, load_default=None)


class CommandResultSchema(ma.Schema):
    command_id = ma.fields.String(required=True)
    kind = ma.fields.String(required=True)
    signer = ma.fields.String(required=True)
    client_id = ma.fields.String(required=True)
    legs = ma.fields.List(
        ma.fields.List(ma.fields.Raw()),
        required=True,
        metadata={"description": "The posting set: [account, asset, bucket, D|C, amount]"},
    )
    outcome = ma.fields.Dict(
        required=True, metadata={"description": "What a compute command made or moved"}
    )


class BatchItemSchema(ma.Schema):
    status = ma.fields.Integer(
        required=True, metadata={"description": "201, 200 for a retry, else the problem's"}
    )
    result = ma.fields.Nested(CommandResultSchema)
    problem = ma.fields.Nested(ProblemSchema)


class BatchResultSchema(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(BatchItemSchema), required=True)


def batch_request_schema(config: GatewayConfig) -> type[ma.Schema]:
    return ma.Schema.from_dict(
        {
            "commands": ma.fields.List(
                ma.fields.Nested(SignedCommandSchema),
                required=True,
                validate=ma.validate.Length(min=1, max=config.batch_commands_max),
            )
        },
        name="BatchRequest",
    )


def command_context(extra: Mapping[str, Any]) -> CommandContext:
    spec = extra.get("spec")
    return CommandContext(spec=None if spec is None else parse_job_spec(spec))


def submit_command(
    services: Services, signed: SignedCommand, extra: Mapping[str, Any] | None = None
) -> CommandResult:
    """Apply one signed command: the one place the gateway hands commands to the ledger.

    `extra` is the request's unsigned `context` (a SubmitJob's job spec); it is turned
    into the protocol's CommandContext here and passed only when the request had one.
    """
    check_against_stores(services, signed)
    # The committer verifies the signature in this thread, then applies the command in
    # the next group commit of this process (node/gateway/committer.py).
    return services.committer.submit(signed, None if extra is None else command_context(extra))


def check_against_stores(services: Services, signed: SignedCommand) -> None:
    """What the gateway checks in its own stores before the ledger sees a command: a
    market command's artifact in the blob store (InvalidArtifact, BlobNotFound)."""
    check_market_command(
        signed.kind,
        signed.message,
        services.blobs,
        services.config.artifact_bytes_max,
        services.network,
    )


def submit_batch(
    services: Services, commands: Sequence[SignedCommand]
) -> list[CommandResult | ProtocolError]:
    """Apply commands in order through this process's group committer (one transaction
    per group, shared with concurrent requests); a refused one changes nothing and is
    reported in its slot. Batched commands carry no context."""
    return services.committer.submit_many(commands)


def command_route(
    blp: GatewayBlueprint,
    services: Services,
    rule: str,
    kind: str,
    path_field: str | None,
    summary: str,
) -> None:
    """`POST rule`: a signed command of `kind`, whose `path_field` must be the path's id."""

    def view(body: dict[str, Any], **path: str) -> tuple[dict[str, Any], int]:
        extra = body.pop("context")
        signed = SignedCommand.from_json(body)
        if signed.kind != kind:
            raise InvalidInput(f"kind: this endpoint takes {kind}", field="kind")
        if path_field is not None:
            (value,) = path.values()
            if signed.message.get(path_field) != value:
                raise InvalidInput(
                    f"message.{path_field}: must be the {path_field} in the path",
                    field=f"message.{path_field}",
                )
        result = submit_command(services, signed, extra)
        return result.to_json(), 200 if result.duplicate else 201

    view.__name__ = f"post_{kind}"
    view.__doc__ = summary
    decorated = documents_problems(blp, 400, 403, 404, 409, 413, 415, 503)(view)
    decorated = blp.alt_response(
        200, schema=CommandResultSchema, description="A retry: the first answer", success=True
    )(decorated)
    decorated = blp.response(201, CommandResultSchema, description="Accepted")(decorated)
    decorated = blp.arguments(CommandRequestSchema)(decorated)
    blp.route(rule, methods=["POST"], endpoint=f"post_{kind}")(decorated)


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint("commands", __name__, description="Signed commands")
    metrics = services.metrics

    def counted(kind: str, outcome: CommandResult | ProtocolError | BlobError) -> None:
        if isinstance(outcome, CommandResult):
            metrics.count_command(kind, "duplicate" if outcome.duplicate else "accepted")
        else:
            metrics.count_command(kind, problem_for(outcome).slug)

    @blp.route("/commands", methods=["POST"])
    @blp.arguments(CommandRequestSchema)
    @blp.response(201, CommandResultSchema, description="Accepted and recorded")
    @blp.alt_response(
        200, schema=CommandResultSchema, description="A retry: the first answer", success=True
    )
    @documents_problems(blp, 400, 403, 404, 409, 413, 415, 503)
    def post_command(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Apply one signed command of any kind."""
        extra = body.pop("context")
        signed = SignedCommand.from_json(body)
        try:
            result = submit_command(services, signed, extra)
        except (ProtocolError, BlobError) as error:
            counted(signed.kind, error)
            raise
        counted(signed.kind, result)
        return result.to_json(), 200 if result.duplicate else 201

    @blp.route("/commands/batch", methods=["POST"])
    @blp.arguments(batch_request_schema(services.config))
    @blp.response(200, BatchResultSchema, description="One result or problem per command")
    @documents_problems(blp, 400, 413, 415)
    def post_batch(body: dict[str, Any]) -> dict[str, Any]:
        """Apply up to batch_commands_max signed commands in order, in one transaction."""
        parsed: list[SignedCommand | ProtocolError | BlobError] = []
        for item in body["commands"]:
            try:
                command = SignedCommand.from_json(item)
                check_against_stores(services, command)
                parsed.append(command)
            except (InvalidInput, BlobError) as error:
                parsed.append(error)
        signed = [p for p in parsed if isinstance(p, SignedCommand)]
        applied = iter(submit_batch(services, signed))
        results = []
        for item, parsed_item in zip(body["commands"], parsed, strict=True):
            outcome = parsed_item if not isinstance(parsed_item, SignedCommand) else next(applied)
            counted(item["kind"], outcome)
            results.append(_batch_item(outcome))
        return {"results": results}

    return blp


def _batch_item(outcome: CommandResult | ProtocolError | BlobError) -> dict[str, Any]:
    if isinstance(outcome, CommandResult):
        return {"status": 200 if outcome.duplicate else 201, "result": outcome.to_json()}
    problem = error_body(outcome)
    return {"status": problem["status"], "problem": problem}


# -- the OpenAPI document's message schemas, derived from protocol.commands.KINDS -----------


def _doc_field(type_: str) -> ma.fields.Field[Any]:
    """A documentation-only field for an EIP-712 type (the protocol validates messages)."""
    if type_ == "address":
        return ma.fields.String(required=True, metadata={"pattern": ADDRESS_PATTERN})
    if type_ == "string":
        return ma.fields.String(required=True)
    if type_ == "bool":
        return ma.fields.Boolean(required=True)
    if type_.startswith(("uint", "int")) and "[" not in type_:
        return ma.fields.Integer(
            required=True,
            metadata={"description": f"{type_}: a JSON integer of any size (or a decimal string)"},
        )
    if type_ == "bytes" or type_.startswith("bytes"):
        return ma.fields.String(required=True, metadata={"description": f"{type_} as 0x-hex"})
    if type_ == "Payout[]":
        return ma.fields.List(
            ma.fields.Nested(
                ma.Schema.from_dict(
                    {"account": _doc_field("address"), "amount": _doc_field("uint256")},
                    name="Payout",
                )
            ),
            required=True,
        )
    if type_.endswith("[]"):
        return ma.fields.List(_doc_field(type_[:-2]), required=True)
    return ma.fields.Raw(required=True, metadata={"description": type_})


def message_schemas() -> dict[str, type[ma.Schema]]:
    """One schema per command kind, named <Kind>Message, from its EIP-712 fields."""
    return {
        message_schema_name(name): ma.Schema.from_dict(
            {field: _doc_field(type_) for field, type_ in kind.all_fields},
            name=message_schema_name(name),
        )
        for name, kind in sorted(KINDS.items())
    }
