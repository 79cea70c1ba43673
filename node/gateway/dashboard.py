"""The web dashboard: HTML pages for people, and the JSON each page polls to stay live.

Pages (server-rendered with Jinja from node/gateway/templates/dashboard/):

    /                         -> redirect to /ui/
    /ui/                      the network: providers, GPUs, jobs, throughput, disputes
    /ui/jobs/<job>            a job: segment timeline, loss curve, verdicts, disputes
    /ui/providers/<address>   a provider: stake, earnings, reputation, its work
    /ui/accounts              balances of every account the network knows by a role
    /ui/accounts/<address>    one account's balances
    /ui/market                DMarket's listings
    /ui/audit                 log size, signed tree head, on-chain anchor, audit status

Each page's facts come from one `View` (node/gateway/dashboard_views.py), and
`/ui/data/<page>` answers the same View as JSON: the page's script (node/gateway/web/,
bundled by `make dashboard` into static/dist/) polls it every two seconds and updates
the page in place. Without the bundle a page still renders in full, with a note saying
that live updates need `make dashboard`. Scripts and styles are served from
/ui/static/ only; nothing is fetched from another origin (the Content-Security-Policy
says so to the browser).

Errors are problems like everywhere else in the gateway; a browser asking for a page
(Accept: text/html) gets the same problem as an HTML page.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import marshmallow as ma
from flask import Response, redirect, render_template, request, send_from_directory, url_for
from werkzeug.wrappers import Response as BaseResponse

from node.gateway import dashboard_views as views
from node.gateway.api import GatewayBlueprint, documents_problems
from node.gateway.problems import PROBLEM_MEDIA_TYPE, error_body, problem_response
from node.gateway.services import Services
from protocol.errors import ProtocolError
from protocol.keys import parse_address
from protocol.ledger import SYSTEM_ACCOUNTS

STATIC_DIR = Path(__file__).resolve().parent / "static"
# What `make dashboard` builds (esbuild, from node/gateway/web/main.js).
BUNDLE = STATIC_DIR / "dist" / "dashboard.js"
HTML = "text/html; charset=utf-8"
POLL_MILLISECONDS = 2_000
# Only this origin: the bundle, the stylesheet and the JSON the pages poll.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# How the OpenAPI document describes a page's body.
_HTML_DOCUMENT = {"type": "string", "description": "An HTML document"}
_NAV = (
    ("overview", "Network", "/ui/"),
    ("accounts", "Balances", "/ui/accounts"),
    ("market", "Marketplace", "/ui/market"),
    ("audit", "Audit", "/ui/audit"),
)


class ViewCellSchema(ma.Schema):
    text = ma.fields.String(required=True)
    href = ma.fields.String(metadata={"description": "A dashboard path to link to"})
    badge = ma.fields.String(metadata={"description": "ok | info | warn | bad | muted"})
    title = ma.fields.String(metadata={"description": "The full value (hover text)"})
    mono = ma.fields.Boolean(metadata={"description": "Set in a monospace font"})


class ViewMeterSchema(ma.Schema):
    value = ma.fields.Integer(required=True)
    max = ma.fields.Integer(required=True)
    text = ma.fields.String(required=True)


class ViewBlockSchema(ma.Schema):
    label = ma.fields.String(required=True)
    tone = ma.fields.String(required=True)
    title = ma.fields.String(required=True)


class ViewSeriesSchema(ma.Schema):
    label = ma.fields.String(required=True)
    tone = ma.fields.String(required=True)
    points = ma.fields.List(
        ma.fields.List(ma.fields.Raw(allow_none=True)),
        required=True,
        metadata={"description": "[x, y] pairs; y null is a gap"},
    )


class ViewChartSchema(ma.Schema):
    kind = ma.fields.String(required=True, metadata={"description": "line | bar"})
    x_label = ma.fields.String(required=True)
    y_label = ma.fields.String(required=True)
    series = ma.fields.List(ma.fields.Nested(ViewSeriesSchema), required=True)


class ViewSchema(ma.Schema):
    """A page's facts, display-ready (amounts in whole units, statuses with a tone)."""

    title = ma.fields.String(required=True)
    facts = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(ViewCellSchema), required=True
    )
    tables = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.List(ma.fields.Nested(ViewCellSchema))),
        required=True,
        metadata={"description": "Rows of cells, newest first"},
    )
    meters = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(ViewMeterSchema), required=True
    )
    timelines = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.Nested(ViewBlockSchema)),
        required=True,
    )
    charts = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(ViewChartSchema), required=True
    )


class AccountLookupSchema(ma.Schema):
    class Meta:
        # A link may carry parameters of its own; only `address` means anything here.
        unknown = ma.EXCLUDE

    address = ma.fields.String(
        load_default=None,
        metadata={"description": "An address, treasury or vault: redirect to its page"},
    )


def bundle_version() -> int | None:
    """The bundle's modification time (a cache-busting version), or None when it was not
    built."""
    try:
        return BUNDLE.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def blueprint(services: Services) -> GatewayBlueprint:
    blp = GatewayBlueprint(
        "dashboard",
        __name__,
        description="The web dashboard: HTML pages, and the JSON views they poll",
    )

    def page(template: str, nav: str, view: views.View, source: str, **extra: Any) -> Response:
        html = render_template(
            f"dashboard/{template}",
            view=view.to_json(),
            nav=_NAV,
            active=nav,
            source=source,
            poll_ms=POLL_MILLISECONDS,
            bundle=bundle_version(),
            operator=services.operator.address,
            **extra,
        )
        return Response(html, content_type=HTML)

    def html_page(rule: str, endpoint: str, summary: str, *statuses: int) -> Callable[[Any], Any]:
        def decorate(func: Callable[..., BaseResponse]) -> Any:
            func.__name__ = endpoint
            func.__doc__ = summary
            decorated = documents_problems(blp, *statuses)(func) if statuses else func
            decorated = blp.response(
                200, _HTML_DOCUMENT, content_type="text/html", description="The page"
            )(decorated)
            return blp.route(rule, endpoint=endpoint)(decorated)

        return decorate

    def data(rule: str, endpoint: str, summary: str, *statuses: int) -> Callable[[Any], Any]:
        def decorate(func: Callable[..., views.View]) -> Any:
            def view_json(**path: str) -> dict[str, Any]:
                return func(**path).to_json()

            view_json.__name__ = endpoint
            view_json.__doc__ = summary
            decorated = documents_problems(blp, *statuses)(view_json) if statuses else view_json
            decorated = blp.response(200, ViewSchema)(decorated)
            return blp.route(rule, endpoint=endpoint)(decorated)

        return decorate

    @blp.route("/")
    @blp.response(302, description="To the dashboard (/ui/)")
    def root() -> BaseResponse:
        """The dashboard's front page."""
        return redirect(url_for("dashboard.overview_page"))

    @html_page("/ui/", "overview_page", "The network at a glance (HTML).")
    def overview_page() -> Response:
        return page("overview.html", "overview", views.overview(services), "/ui/data/overview")

    @data("/ui/data/overview", "overview_data", "The network page's facts.")
    def overview_data() -> views.View:
        return views.overview(services)

    @html_page("/ui/jobs/<job>", "job_page", "A job's page (HTML).", 404)
    def job_page(job: str) -> Response:
        view = views.job(services, job)
        key = view.facts["id"]["text"]
        return page("job.html", "overview", view, f"/ui/data/jobs/{key}", job=key)

    @data("/ui/data/jobs/<job>", "job_data", "A job page's facts.", 404)
    def job_data(job: str) -> views.View:
        return views.job(services, job)

    @html_page("/ui/providers/<address>", "provider_page", "A provider's page (HTML).", 400, 404)
    def provider_page(address: str) -> Response:
        view = views.provider(services, address)
        account = view.facts["address"]["text"]
        source = f"/ui/data/providers/{account}"
        return page("provider.html", "overview", view, source, account=account)

    @data("/ui/data/providers/<address>", "provider_data", "A provider page's facts.", 400, 404)
    def provider_data(address: str) -> views.View:
        return views.provider(services, address)

    @blp.route("/ui/accounts", endpoint="accounts_page")
    @blp.arguments(AccountLookupSchema, location="query")
    @blp.response(200, _HTML_DOCUMENT, content_type="text/html", description="The page")
    @blp.alt_response(302, description="To the page of the account looked up")
    @documents_problems(blp, 400)
    def accounts_page(query: dict[str, Any]) -> BaseResponse:
        """Balances of every known account (HTML); with `address`, that account's page."""
        wanted = (query["address"] or "").strip()
        if wanted:
            name = wanted if wanted in SYSTEM_ACCOUNTS else parse_address(wanted, "address")
            return redirect(url_for("dashboard.account_page", address=name))
        return page("accounts.html", "accounts", views.accounts(services), "/ui/data/accounts")

    @data("/ui/data/accounts", "accounts_data", "The balances page's facts.")
    def accounts_data() -> views.View:
        return views.accounts(services)

    @html_page("/ui/accounts/<address>", "account_page", "An account's balances (HTML).", 400)
    def account_page(address: str) -> Response:
        view = views.account(services, address)
        name = view.facts["account"]["text"]
        source = f"/ui/data/accounts/{name}"
        return page("account.html", "accounts", view, source, account=name)

    @data("/ui/data/accounts/<address>", "account_data", "An account page's facts.", 400)
    def account_data(address: str) -> views.View:
        return views.account(services, address)

    @html_page("/ui/market", "market_page", "The marketplace's listings (HTML).")
    def market_page() -> Response:
        return page("market.html", "market", views.market(services), "/ui/data/market")

    @data("/ui/data/market", "market_data", "The marketplace page's facts.")
    def market_data() -> views.View:
        return views.market(services)

    @html_page("/ui/audit", "audit_page", "The auditor's page (HTML).")
    def audit_page() -> Response:
        return page("audit.html", "audit", views.audit(services), "/ui/data/audit")

    @data("/ui/data/audit", "audit_data", "The auditor page's facts.")
    def audit_data() -> views.View:
        return views.audit(services)

    @blp.route("/ui/static/<path:filename>")
    @blp.response(200, description="The file; its Content-Type says which kind it is")
    @documents_problems(blp, 404)
    def static_file(filename: str) -> Response:
        """The dashboard's stylesheet and script bundle."""
        return send_from_directory(STATIC_DIR, filename, max_age=0)

    @blp.errorhandler(ProtocolError)
    def protocol_error(error: ProtocolError) -> Response:
        # A person asking for a page sees the problem as a page; a script gets the problem.
        body = error_body(error)
        if _wants_html() and not request.path.startswith("/ui/data/"):
            html = render_template(
                "dashboard/error.html",
                problem=body,
                phrase=HTTPStatus(body["status"]).phrase,
                nav=_NAV,
                active=None,
                bundle=bundle_version(),
                operator=services.operator.address,
                view={"facts": {}},
            )
            return Response(html, status=body["status"], content_type=HTML)
        return problem_response(body)

    @blp.after_request
    def harden(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return blp


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(
        [PROBLEM_MEDIA_TYPE, "application/json", "text/html"]
    )
    return best == "text/html"
