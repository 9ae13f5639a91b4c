"""levqor-stripe's configuration, read from the environment mapping the host hands its plugins,
with the kernel only. Checkout, the portal and the webhooks through a running host are in
tests/integration/test_stripe_billing.py."""

from __future__ import annotations

import json

import pytest
from levqor_stripe.config import load


def test_the_mode_follows_the_secret_key_unless_set():
    assert load({}).mode == "unlimited" and not load({}).enforced
    assert load({"STRIPE_SECRET_KEY": "sk_test_x"}).mode == "stripe"
    local = load({"LEVQOR_BILLING": " Local ", "STRIPE_SECRET_KEY": "sk_test_x"})
    assert local.mode == "local" and local.enforced
    assert "STRIPE_SECRET_KEY" in local.stripe_missing()
    with pytest.raises(ValueError, match="LEVQOR_BILLING"):
        load({"LEVQOR_BILLING": "gold"})


def test_plans_prices_and_packs():
    cfg = load(
        {
            "STRIPE_SECRET_KEY": "sk_test_x",
            "LEVQOR_STRIPE_PRICE_PRO": "price_pro",
            "LEVQOR_PLANS": json.dumps({"team": {"monthly_credits": 900, "price_id": "price_t"}}),
            "LEVQOR_CREDIT_PACKS": json.dumps({"small": {"credits": 1000, "price_id": "price_s"}}),
        }
    )
    assert cfg.stripe_missing() is None
    assert cfg.plan_for_price("price_pro") == "pro" and cfg.plan_for_price("price_t") == "team"
    assert cfg.plan_for_price(None) is None and cfg.plan("nope").name == "free"
    assert cfg.plans["team"].public() == {
        "name": "team",
        "title": "Team",
        "monthly_credits": 900,
        "runs_per_day": None,
        "included_runs_per_day": 0,
        "purchasable": True,
    }
    assert cfg.packs["small"].credits == 1000
    # the secret key never shows in the configuration's repr
    assert "sk_test_x" not in repr(cfg)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LEVQOR_PLANS": "{"}, "LEVQOR_PLANS"),
        ({"LEVQOR_PLANS": json.dumps({"pro": {"colour": "red"}})}, "unknown keys"),
        ({"LEVQOR_PLANS": json.dumps({"pro": {"monthly_credits": -1}})}, "monthly_credits"),
        ({"LEVQOR_CREDIT_PACKS": "[]"}, "LEVQOR_CREDIT_PACKS"),
        ({"LEVQOR_CREDIT_PACKS": json.dumps({"s": {"credits": 5}})}, "price_id"),
        ({"LEVQOR_CREDIT_PACKS": json.dumps({"s": {"credits": 0, "price_id": "p"}})}, "> 0"),
    ],
)
def test_a_wrong_setting_is_named(env, names):
    with pytest.raises(ValueError, match=names):
        load(env)

