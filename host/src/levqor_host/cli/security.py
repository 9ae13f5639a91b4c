"""``levqor users set-password`` and ``levqor users login-link``: dashboard sign-in."""

from __future__ import annotations

import sys

import click

from levqor_host.cli.context import find_user, load_config, open_store


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

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_policy(password)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    with open_store() as store:
        user = find_user(store, email)
        store.auth.set_password_hash(user["id"], hash_password(password))
    click.echo(f"password set for {user['email']}; its existing sessions were ended")


@click.command("login-link")
@click.argument("email")
def login_link(email: str) -> None:
    """Print a one-time dashboard login link for EMAIL (valid LEVQOR_LOGIN_LINK_TTL seconds)."""

    cfg = load_config()
    ttl = cfg.security.login_link_ttl
    with open_store(cfg) as store:
        token = store.auth.create_login_link(find_user(store, email)["id"], ttl)
    click.echo(f"{cfg.base_url}/auth/link/{token}")
    click.echo(f"(one use, valid for {ttl // 60} minutes)", err=True)
