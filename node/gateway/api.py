"""flask-smorest, fitted to the gateway: problems instead of its error bodies, a JSON
parser that refuses what it cannot read with the right problem, and helpers to document
the errors an operation may answer.

The marshmallow schemas on each operation are the one source of truth: they validate
requests (unknown fields refused: marshmallow's default RAISE) and generate the OpenAPI
document served at /openapi.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, NoReturn, TypeVar

import flask
import flask_smorest
import marshmallow as ma
from flask_smorest.utils import prepare_response
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from node.gateway.problems import (
    INVALID_REQUEST,
    MALFORMED_JSON,
    PROBLEM_MEDIA_TYPE,
    UNSUPPORTED_MEDIA_TYPE,
    Problem,
    ProblemSchema,
    http_problem,
)
from node.json_nesting import nests_deeper_than
from protocol import canonical

F = TypeVar("F", bound=Callable[..., Any])
JSON_MEDIA_TYPE = "application/json"


class GatewayParser(FlaskParser):
    """webargs' Flask parser, raising problems: 415 for a body that is not JSON, 400
    malformed-json for one that does not parse, 400 invalid-request (with marshmallow's
    messages as `errors`) for one that does not fit the schema."""

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req: flask.Request, schema: ma.Schema) -> Any:
        if not req.is_json:
            raise Problem(
                UNSUPPORTED_MEDIA_TYPE,
                f"expected an {JSON_MEDIA_TYPE} body, got {req.mimetype or 'none'}",
                accepted=[JSON_MEDIA_TYPE],
            )
        return super().load_json(req, schema)

    def _raw_load_json(self, req: flask.Request) -> Any:
        # Reading the body enforces the request size limit (413 past it).
        data = req.get_data(cache=True)
        if not data:
            return core.missing
        if nests_deeper_than(data, json_depth_max):
            raise Problem(MALFORMED_JSON, f"the body nests deeper than {json_depth_max} levels")
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)

    def _handle_invalid_json_error(
        self,
        error: json.JSONDecodeError | UnicodeDecodeError,
        req: flask.Request,
        *args: Any,
        **kwargs: Any,
    ) -> NoReturn:
        raise Problem(MALFORMED_JSON, f"the body is not JSON: {error}")

    def handle_error(
        self,
        error: ma.ValidationError,
        req: flask.Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Any,
    ) -> NoReturn:
        raise Problem(
            INVALID_REQUEST, "the request does not match its schema", errors=error.messages
        )


# The domain's values nest at most canonical.depth_max levels; anything deeper is refused
# before the JSON reader sees it (see node/json_nesting.py).
json_depth_max = 2 * canonical.depth_max


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's reader accepts them by default.
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


class GatewayBlueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """A resource's blueprint: flask-smorest's, with the gateway's parser."""

    ARGUMENTS_PARSER = GatewayParser()


class GatewayApi(flask_smorest.Api):  # type: ignore[misc]
    """flask-smorest's Api answering HTTP errors with problems and documenting every
    error response as an `application/problem+json` ProblemSchema."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException) -> flask.Response:
        return http_problem(error)

    def _register_responses(self) -> None:
        # flask-smorest's own version, with the problem media type: every status gets a
        # component response (named as http.HTTPStatus names it) that operations refer to.
        for status in HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not 100 <= status < 200 and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_MEDIA_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_MEDIA_TYPE)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def documents_problems(blueprint: GatewayBlueprint, *statuses: int) -> Callable[[F], F]:
    """Document that an operation may answer each of `statuses` with a problem."""

    def decorate(func: F) -> F:
        for status in statuses:
            func = blueprint.alt_response(status, response=HTTPStatus(status).name)(func)
        return func

    return decorate
