"""``levqor users set-password`` and ``levqor users login-link`` (host sessions)."""

from __future__ import annotations

import sys

import click


def _store_and_user(email: str):
    from levqor_host.app import create_app
    from levqor_host.config import Config

    app = create_app(Config.from_env(), start_workers=False, start_scheduler=False)
    st = app.extensions["levqor"]
    user = st.store.get_user_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email} (create it: levqor users create)")
    return st, user


@click.command("set-password")
@click.argument("email")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (one line) instead of prompting.",
)
def set_password(email: str, password_stdin: bool) -> None:
    """Set EMAIL's dashboard password (hashed with scrypt; ends the user's sessions)."""
    from levqor_host.security.passwords import check_policy, hash_password
    from levqor_host.store.auth import set_password_hash

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_policy(password)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    st, user = _store_and_user(email)
    set_password_hash(st.store, user["id"], hash_password(password))
    click.echo(f"password set for {user['email']}; its existing sessions were ended")


@click.command("login-link")
@click.argument("email")
def login_link(email: str) -> None:
    """Print a one-time dashboard login link for EMAIL (valid LEVQOR_LOGIN_LINK_TTL seconds)."""
    from levqor_host.store.auth import create_login_link

    st, user = _store_and_user(email)
    ttl = st.config.security.login_link_ttl
    token = create_login_link(st.store, user["id"], ttl)
    click.echo(f"{st.config.base_url}/auth/link/{token}")
    click.echo(f"(one use, valid for {ttl // 60} minutes)", err=True)

