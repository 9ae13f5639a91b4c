"""``levqor plan``: the AI builder from the command line (what ``POST /api/v1/plan`` does)."""

from __future__ import annotations

import json

import click

from levqor_host.cli.context import find_user, make_app, problem_lines, services


def _print_plan(out: dict, stored: dict | None, base_url: str) -> None:
    """The planner's answer as text: the stored pipeline (or the dry run's document), the
    explanation and each warning."""
    if stored is not None:
        click.echo(f"pipeline {stored['id']}  v{stored['version']}  {out['name']}")
        if (stored["doc"].get("trigger") or {}).get("type") == "webhook":
            click.echo(f"webhook: {base_url}/hooks/{stored['webhook_token']}")
    else:
        click.echo(f"dry run (not stored): {out['name']}")
        click.echo(json.dumps(out["pipeline"], indent=2))
    click.echo(f"explanation: {out['explanation']}")
    for w in out["warnings"]:
        click.echo(f"warning: {w['message']}")


@click.command("plan")
@click.argument("description")
@click.option("--name", default=None, help="Pipeline name (default: the planner's).")
@click.option("--dry-run", is_flag=True, help="Show the plan without storing it.")
@click.option("--user", "email", default=None, help="Email (default: the first admin).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
def plan_cmd(
    description: str, name: str | None, dry_run: bool, email: str | None, as_json: bool
) -> None:
    """Plan a pipeline from a plain-words DESCRIPTION with the AI builder and store it."""
    from levqor_host.errors import ApiError
    from levqor_host.planner.service import plan

    st = services(make_app())
    u = find_user(st.store, email)
    try:
        out = plan(st, u, description, name=name, dry_run=dry_run)
    except ApiError as e:
        problems = problem_lines((e.details or {}).get("problems", []))
        raise click.ClickException(f"{e.message} ({e.status} {e.code}){problems}") from None
    finally:
        st.store.close()
    stored = out.pop("stored", None)
    if as_json:
        if stored is not None:
            out["id"] = stored["id"]
            out["version"] = stored["version"]
            out["pipeline"] = stored["doc"]
        click.echo(json.dumps(out, indent=2, default=str))
        return
    _print_plan(out, stored, st.config.base_url)
