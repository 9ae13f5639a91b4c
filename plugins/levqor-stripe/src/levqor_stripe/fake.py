"""A local fake of the two Stripe endpoints Levqor calls, over real HTTP on 127.0.0.1.

Wire contract (https://docs.stripe.com/api/checkout/sessions/create,
https://docs.stripe.com/api/customer_portal/sessions/create, https://docs.stripe.com/api/errors):
form-encoded bodies (``line_items[0][price]=...``), ``Authorization: Bearer sk_...``, answers
``{"id", "object": "checkout.session", "mode", "url", ...}`` and
``{"id", "object": "billing_portal.session", "customer", "url"}``, errors as
``{"error": {"type", "code", "message"}}``.

The real ``url`` points at Stripe's hosted pages (``https://checkout.stripe.com/c/pay/<id>``,
``https://billing.stripe.com/p/session/<id>``). With ``hosted_pages=True`` the fake answers URLs on
itself instead and serves a small page there, so a browser test can follow the redirect and land
on "Checkout" without reaching the internet.

Usage::

    with FakeStripe(secret_key="sk_test_x", hosted_pages=True) as stripe_fake:
        env = {"STRIPE_SECRET_KEY": "sk_test_x", "LEVQOR_STRIPE_API_BASE": stripe_fake.url, ...}
        ...
        stripe_fake.sessions[-1]["mode"]   # the form Levqor sent
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from levqor_kernel.testing.fakeserver import FakeServer, Recorded, Reply

__all__ = ["FakeStripe"]


def _error(status: int, code: str | None, message: str) -> Reply:
    return Reply(
        status, {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    )


class FakeStripe(FakeServer):
    """``sessions``: the Checkout Session forms received; ``visits``: hosted pages opened."""

    def __init__(self, secret_key: str = "sk_test_levqor_fake_123", *, hosted_pages: bool = False):
        super().__init__()
        self.secret_key = secret_key
        self.hosted_pages = hosted_pages
        self.sessions: list[dict] = []
        self.visits: list[str] = []
        self.route("POST", "/v1/checkout/sessions", self._checkout)
        self.route("POST", "/v1/billing_portal/sessions", self._portal)
        self.route("GET", r"/c/pay/.*", self._page)
        self.route("GET", r"/p/session/.*", self._page)

    def _auth(self, req: Recorded) -> Reply | None:
        if req.header("Authorization") != f"Bearer {self.secret_key}":
            return Reply(
                401,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": None,
                        "message": "Invalid API Key provided: sk_test_****",
                    }
                },
            )
        if not (req.header("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            return _error(400, "parameter_invalid", "form body expected")
        return None

    def _checkout(self, req: Recorded):
        bad = self._auth(req)
        if bad:
            return bad
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        price = form.get("line_items[0][price]")
        if not price or not price.startswith("price_"):
            return _error(400, "resource_missing", f"No such price: '{price}'")
        sid = f"cs_test_{len(self.sessions) + 1}"
        self.sessions.append(form)
        base = self.url if self.hosted_pages else "https://checkout.stripe.com"
        return {
            "id": sid,
            "object": "checkout.session",
            "mode": form["mode"],
            "url": f"{base}/c/pay/{sid}",
            "client_reference_id": form.get("client_reference_id"),
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
        }

    def _portal(self, req: Recorded):
        bad = self._auth(req)
        if bad:
            return bad
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        base = self.url if self.hosted_pages else "https://billing.stripe.com"
        return {
            "id": "bps_1",
            "object": "billing_portal.session",
            "customer": form["customer"],
            "url": f"{base}/p/session/test_1",
        }

    def _page(self, req: Recorded):
        self.visits.append(req.path)
        title = "Fake Stripe Checkout" if req.path.startswith("/c/pay/") else "Fake Stripe portal"
        sid = html.escape(req.path.rsplit("/", 1)[-1])
        body = (
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p id=session>{sid}</p></body></html>"
        )
        return Reply(200, body, {"Content-Type": "text/html; charset=utf-8"})
