"""``levqor credits grant EMAIL N`` and ``levqor credits balance EMAIL``.

The host's ``levqor`` group offers ``levqor_state()`` (the app state for the environment's
configuration); these commands use its store and ledger, never the host's modules.
"""

from __future__ import annotations

import click
from levqor_kernel.host import Host, HostCommandGroup, InsufficientCredits


def _state() -> Host:
    root = click.get_current_context().find_root().command
    if not isinstance(root, HostCommandGroup):
        raise click.ClickException("this levqor command group offers no levqor_state()")
    return root.levqor_state()


def _user(st: Host, email: str) -> dict:
    u = st.store.users.get_by_email(email)
    if u is None:
        raise click.ClickException(f"no user with email {email}")
    return u


@click.group()
def credits() -> None:
    """Credits of the ledger (local billing, support and corrections)."""


@credits.command("grant")
@click.argument("email")
@click.argument("amount", type=int)
@click.option("--reason", default="grant", show_default=True)
def grant(email: str, amount: int, reason: str) -> None:
    """Add AMOUNT credits to EMAIL's balance (a negative AMOUNT, after --, takes away; never
    below zero)."""
    if amount == 0:
        raise click.ClickException("AMOUNT must not be 0")
    if not reason.strip() or len(reason) > 100:
        raise click.ClickException("--reason must be 1-100 characters")
    st = _state()
    u = _user(st, email)
    try:
        st.ledger.grant(u["id"], amount, reason=reason.strip())
    except InsufficientCredits:
        raise click.ClickException(
            f"cannot take {-amount}: the balance would go below zero"
        ) from None
    click.echo(f"{email}: {amount:+d} credits, balance {st.ledger.balance(u['id'])}")


@credits.command("balance")
@click.argument("email")
@click.option("--lines", "show", type=int, default=0, help="Also show the newest N ledger lines.")
def balance(email: str, show: int) -> None:
    """Show EMAIL's balance (the sum of its ledger lines)."""
    st = _state()
    u = _user(st, email)
    click.echo(f"{email}: {st.ledger.balance(u['id'])} credits (plan {u['plan']})")
    for line in st.ledger.lines(u["id"], limit=show) if show > 0 else []:
        click.echo(
            f"  {line['created_at']}  {line['delta']:+d}  {line['reason']}  {line['run_id'] or ''}"
        )
