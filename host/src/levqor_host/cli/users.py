"""``levqor users``: create and list users; their dashboard passwords and login links are in
:mod:`levqor_host.cli.security`."""

from __future__ import annotations

import click

from levqor_host.cli.context import make_app, open_store, services
from levqor_host.cli.group import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_commands={
        "set-password": (
            "levqor_host.cli.security:set_password",
            "Set EMAIL's dashboard password (hashed with scrypt; ends the user's sessions).",
        ),
        "login-link": (
            "levqor_host.cli.security:login_link",
            "Print a one-time dashboard login link for EMAIL (valid LEVQOR_LOGIN_LINK_TTL "
            "seconds).",
        ),
    },
)
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("email")
@click.option("--name", default=None)
@click.option("--admin", is_flag=True)
@click.option("--plan", default="free", show_default=True)
@click.option("--with-key", is_flag=True, help="Also create an API key and print it once.")
@click.option("--ref", default=None, help="Referral code of the user who referred this one.")
@click.option("--utm-source", default=None)
@click.option("--utm-medium", default=None)
@click.option("--utm-campaign", default=None)
def users_create(
    email: str,
    name: str | None,
    admin: bool,
    plan: str,
    with_key: bool,
    ref: str | None,
    utm_source: str | None,
    utm_medium: str | None,
    utm_campaign: str | None,
) -> None:
    """Create a user (and with --with-key an API key, printed once)."""
    from levqor_host.growth.analytics import ReferralError, record_signup
    from levqor_host.security.scopes import scopes_for

    st = services(make_app())
    if st.store.users.get_by_email(email):
        raise click.ClickException(f"a user with email {email} exists")
    u = st.store.users.create(email, name=name, is_admin=admin, plan=plan)
    utm = {"utm_source": utm_source, "utm_medium": utm_medium, "utm_campaign": utm_campaign}
    try:
        record_signup(st.ledger, u, ref=ref, utm=utm)
    except ReferralError as e:
        click.echo(f"warning: referral not recorded: {e.message}", err=True)
    click.echo(f"created user {u['id']} ({email})")
    if with_key:
        key, _ = st.store.api_keys.create(u["id"], name="cli", scopes=scopes_for(admin))
        click.echo(key)


@users.command("list")
def users_list() -> None:
    """Every user: id, email, plan, and whether an admin."""
    with open_store() as store:
        for u in store.users.list():
            admin = "  admin" if u.get("is_admin") else ""
            click.echo(f"{u['id']}  {u['email']}  plan={u['plan']}{admin}")
