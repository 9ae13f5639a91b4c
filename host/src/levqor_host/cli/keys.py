"""``levqor keys``: API keys, and the vault key that encrypts stored credentials."""

from __future__ import annotations

import os

import click

from levqor_host.cli.context import find_user, load_config, open_store
from levqor_host.security.scopes import SCOPES, scopes_for


@click.group()
def keys() -> None:
    """API keys and the credential vault key."""


@keys.command("create")
@click.option("--user", "email", default=None, help="Email (default: the first admin).")
@click.option("--name", default="cli")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES))
def keys_create(email: str | None, name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key; it is printed once."""
    with open_store() as store:
        u = find_user(store, email)
        chosen = list(scopes) or scopes_for(bool(u.get("is_admin")))
        key, _ = store.api_keys.create(u["id"], name=name, scopes=chosen)
    click.echo(key)


@keys.command("list")
@click.option("--user", "email", default=None)
def keys_list(email: str | None) -> None:
    """A user's API keys (their prefixes only), active or revoked, with their scopes."""
    with open_store() as store:
        for k in store.api_keys.list(find_user(store, email)["id"]):
            state = "revoked" if k.get("revoked_at") else "active"
            click.echo(
                f"{k['id']}  {k['prefix']}  {k['name']}  {state}  {','.join(k.get('scopes') or [])}"
            )


@keys.command("revoke")
@click.argument("key_id")
@click.option("--user", "email", default=None)
def keys_revoke(key_id: str, email: str | None) -> None:
    """Revoke one of a user's API keys."""
    with open_store() as store:
        if not store.api_keys.revoke(find_user(store, email)["id"], key_id):
            raise click.ClickException("no such key")
    click.echo("revoked")


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under a new vault key."""
    from cryptography.fernet import Fernet

    from levqor_host.security.vault import Vault

    cfg = load_config()
    new_key = Fernet.generate_key().decode()
    with open_store(cfg) as store:
        n = store.vault_keys.rotate(Vault([new_key]))
    keyfile = cfg.data_dir / "secret.key"
    if cfg.security.secret_key:
        click.echo(
            f"re-encrypted {n} secrets. Set LEVQOR_SECRET_KEY to the new key before the next start:"
        )
        click.echo(new_key)
    else:
        tmp = keyfile.with_suffix(".tmp")
        tmp.write_text(new_key + "\n")
        tmp.chmod(0o600)
        os.replace(tmp, keyfile)
        click.echo(f"re-encrypted {n} secrets; the new key is in {keyfile}")
