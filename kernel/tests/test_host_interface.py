"""The host's face for plugins (levqor_kernel.host): its errors and page declarations."""

from __future__ import annotations

import pytest
from levqor_kernel.host import (
    DashboardPage,
    HttpError,
    InsufficientCredits,
    UserFault,
    is_user_fault,
)


def test_http_error_carries_the_hosts_error_shape():
    e = HttpError(409, "no_customer", "buy something first", {"hint": "checkout"}, {"X-A": "1"})
    assert (e.status, e.code, e.message, str(e)) == (
        409,
        "no_customer",
        "buy something first",
        "buy something first",
    )
    assert e.to_dict() == {
        "error": {"code": "no_customer", "message": "buy something first", "details": {"hint": "checkout"}}
    }
    assert e.headers == {"X-A": "1"}
    assert HttpError(400, "bad", "m").to_dict() == {"error": {"code": "bad", "message": "m"}}


def test_user_fault_follows_the_status_and_the_class():
    assert is_user_fault(HttpError(402, "payment_required", "m"))
    assert not is_user_fault(HttpError(502, "stripe_error", "m"))
    assert not is_user_fault(HttpError(503, "billing_not_configured", "m"))
    e = InsufficientCredits(5, 2)
    assert isinstance(e, UserFault) and e.user_fault and is_user_fault(e)
    assert (e.needed, e.balance) == (5, 2) and "needs 5 credits" in str(e)
    assert not is_user_fault(RuntimeError("boom"))


def test_a_dashboard_page_is_same_origin():
    page = DashboardPage("billing", "/billing", "x/billing.html", "/static/x/billing.js", "Billing")
    assert page.nav_label is None and page.order == 100
    with pytest.raises(ValueError, match="same-origin"):
        DashboardPage("x", "/x", "x.html", "https://cdn.example/x.js", "X")
    with pytest.raises(ValueError, match="same-origin"):
        DashboardPage("x", "/x", "x.html", "//cdn.example/x.js", "X")
    with pytest.raises(ValueError, match="path"):
        DashboardPage("x", "x", "x.html", "/x.js", "X")
