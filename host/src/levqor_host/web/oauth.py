""""Connect" for the dashboard: ``/oauth/<connector>/start`` and ``/oauth/callback``.

Both take the dashboard's session (the browser goes to the provider and comes back with its
cookie, which is SameSite=Lax). Start answers 302 to the provider's consent page; the callback
exchanges the code (:class:`levqor_host.credentials.OAuthService`) and answers 302 to the
credentials page naming the connected credential. Anything wrong (a forged, altered or expired
state, another account's state, the provider's ``error``, an unknown connector, a connector
whose OAuth client the operator has not configured) answers a short HTML page with the reason
and a 4xx status (503 for the missing configuration), and nothing is stored.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, request
from markupsafe import escape

from levqor_host.errors import ApiError
from levqor_host.web.access import current_user, session_only
from levqor_host.web.api.blueprint import state
from levqor_host.web.operations import content, operation, path, query

bp = Blueprint("oauth", __name__)

_PAGES = {
    302: content("To the provider's consent page (start) or to the credentials page (callback)", "text/html"),
    400: content("A bad request: no name, a bad or expired state, the provider's error", "text/html"),
    403: content("The Connect was started by another account, or from another site", "text/html"),
    404: content("No such connector, or it has no Connect option", "text/html"),
    409: content("The name belongs to another connector's credential", "text/html"),
    502: content("The provider could not be reached", "text/html"),
    503: content("The operator has not configured this connector's OAuth client", "text/html"),
}


def _page(e: ApiError) -> Response:
    title = "Connect did not work"
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title} - Levqor</title></head>'
        f"<body><main><h1>{title}</h1><p id=\"oauth-error\">{escape(e.message)}</p>"
        '<p><a href="/credentials">Back to your credentials</a></p></main></body></html>'
    )
    resp = Response(html, status=e.status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("/oauth/<connector>/start")
@session_only()
@operation(
    "Connect an account (OAuth2): to the provider",
    "Redirects the signed-in browser to the connector's consent page (authorization code with "
    "PKCE, a signed state that expires in 10 minutes). The account is stored as credential "
    "`name`; connecting a name again replaces its tokens.",
    tag="credentials",
    responses=_PAGES,
    params=[
        path("connector", {"type": "string"}),
        query("name", {"type": "string", "minLength": 1, "maxLength": 100}, "the credential's name"),
    ],
    standard_errors=False,
)
def start(connector: str) -> Response:
    try:
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            # a link on another site must not start a Connect in the user's name
            raise ApiError(403, "cross_site", "start Connect from your Levqor dashboard")
        url = state().oauth.start(current_user()["id"], connector, request.args.get("name", ""))
    except ApiError as e:
        return _page(e)
    resp = redirect(url, 302)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("/oauth/callback")
@session_only()
@operation(
    "Connect an account (OAuth2): back from the provider",
    "Where the provider sends the browser back (`code` and `state`, or `error`). Exchanges the "
    "code and stores the credential encrypted, then redirects to the credentials page.",
    tag="credentials",
    responses=_PAGES,
    params=[
        query("state", {"type": "string"}, "the signed state Connect started with"),
        query("code", {"type": "string"}, "the authorization code"),
        query("error", {"type": "string"}, "the provider's error (access_denied, ...)"),
    ],
    standard_errors=False,
)
def callback() -> Response:
    args = request.args
    try:
        row = state().oauth.callback(
            current_user()["id"],
            args.get("state", ""),
            args.get("code"),
            error=args.get("error"),
            error_description=args.get("error_description"),
        )
    except ApiError as e:
        return _page(e)
    resp = redirect("/credentials?" + urlencode({"connected": row["name"]}), 302)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp
