"""Signed one-time links that decide an approval: ``/resume/<run>/<approve|reject>``.

The run's API answer carries them (``approve_url``, ``reject_url``: absolute, from
``LEVQOR_BASE_URL``) so they can be emailed or posted to Slack. The signature (HMAC of the
host's secret over the run, its waiting step, the wait's nonce and the decision) is the
credential: no sign-in. A GET only shows what the link does and a button (mail scanners and
link previews fetch links: a GET changes nothing); the POST decides. A link works once: the
nonce ends with the wait, so a second use, or a use after the approval timed out, is 410.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from markupsafe import escape

from levqor_host.errors import ApiError
from levqor_host.web.access import public
from levqor_host.web.api.blueprint import state
from levqor_host.web.operations import content, operation, path, query

bp = Blueprint("resume", __name__)

_PARAMS = [
    path("decision", {"enum": ["approve", "reject"]}),
    query("nonce", {"type": "string"}, "the wait the link was made for"),
    query("sig", {"type": "string"}, "the link's signature"),
]
_PAGES = {
    200: content("A page that shows the decision (GET) or its outcome (POST)", "text/html"),
    403: content("The signature is not valid", "text/html"),
    404: content("No such run or decision", "text/html"),
    410: content("The link was used already, or the approval has ended", "text/html"),
}
_MAX_COMMENT = 2000


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"robots\" content=\"noindex\"><title>{escape(title)} - Levqor</title>"
        f"</head><body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    resp = Response(html, status=status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _error_page(e: ApiError) -> Response:
    return _page("This link cannot be used", f"<p>{escape(e.message)}</p>", e.status)


def _checked(run_id: str, decision: str) -> dict:
    nonce, sig = request.args.get("nonce", ""), request.args.get("sig", "")
    return state().runs.flow.check_link(run_id, decision, nonce, sig)


@bp.get("/resume/<run_id>/<decision>")
@public("a signed one-time link: the signature is the credential; a GET changes nothing")
@operation(
    "Show what a signed approval link does",
    "A page naming the run, its step and the approval's message, with a button that sends "
    "the POST. Changes nothing (mail scanners fetch links).",
    tag="runs",
    responses=_PAGES,
    params=_PARAMS,
    standard_errors=False,
)
def show_link(run_id: str, decision: str) -> Response:
    try:
        run = _checked(run_id, decision)
    except ApiError as e:
        return _error_page(e)
    wait = run.get("wait") or {}
    message = (wait.get("approval") or {}).get("message") or ""
    verb = "Approve" if decision == "approve" else "Reject"
    body = (
        f"<p>Run <code>{escape(run['id'])}</code> waits at step "
        f"<code>{escape(str(wait.get('step') or ''))}</code>.</p>"
        + (f"<p>{escape(message)}</p>" if message else "")
        + f'<form method="post" action="{escape(request.full_path)}">'
        f'<p><label>Comment (optional)<br><textarea name="comment" maxlength="{_MAX_COMMENT}">'
        f"</textarea></label></p><p><button type=\"submit\">{verb}</button></p></form>"
    )
    return _page(f"{verb} this run?", body)


@bp.post("/resume/<run_id>/<decision>")
@public("a signed one-time link: the signature is the credential; it works once")
@operation(
    "Decide an approval through a signed link",
    "Approves or rejects the approval the run waits for (form field comment, optional). "
    "403 for a signature that is not valid, 410 when the link was used already or the "
    "approval has ended.",
    tag="runs",
    responses=_PAGES,
    params=_PARAMS,
    request_body={
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"comment": {"type": "string", "maxLength": _MAX_COMMENT}},
                }
            }
        },
    },
    standard_errors=False,
)
def use_link(run_id: str, decision: str) -> Response:
    try:
        run = _checked(run_id, decision)
        comment = (request.form.get("comment") or "").strip()[:_MAX_COMMENT] or None
        state().runs.flow.approve(
            None,
            run["id"],
            decision == "approve",
            by="signed link",
            comment=comment,
            nonce=run["wait"]["nonce"],
        )
    except ApiError as e:
        if e.status == 409:  # decided by someone else between the check and the decision
            e = ApiError(410, "gone", "this approval was decided already")
        return _error_page(e)
    done = "Approved" if decision == "approve" else "Rejected"
    return _page(done, f"<p>Run <code>{escape(run['id'])}</code> goes on.</p>")
