"""``levqor run``: queue a run for the executor, and follow it to the end."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import click

from levqor_host.cli.context import find_user, make_app, problem_lines, services
from levqor_host.cli.pipelines import pipeline_by_id_or_name
from levqor_host.store.runs import FINAL_RUN_STATUSES

if TYPE_CHECKING:
    from levqor_host.store import Store

#: seconds a followed run may stay queued before `levqor run --follow` says it waits for a worker
QUEUED_HINT_AFTER = 5.0

NO_WORKER = "is `levqor serve` or `levqor worker` running on this database?"



def _print_new_transitions(run: dict, seen: dict[str, tuple]) -> None:
    """Print each step whose status or attempt count changed since ``seen`` (updated)."""
    for s in run.get("steps", []):
        sig = (s["status"], s["attempts"])
        if seen.get(s["step_id"]) != sig:
            seen[s["step_id"]] = sig
            extra = f"  {s['error'].get('message', '')}" if s.get("error") else ""
            click.echo(f"  {s['step_id']:<16} {s['status']:<10} attempt {s['attempts']}{extra}")


def follow(store: Store, user_id: str, run_id: str, timeout: float) -> None:
    """Print each step transition of the run until it is final (read from the database: the
    server's workers run it); exit 1 unless it succeeded."""
    seen: dict[str, tuple] = {}
    start = time.monotonic()
    hinted = False
    run: dict = {"status": "queued"}
    while time.monotonic() - start < timeout:
        run = store.runs.get(user_id, run_id) or run
        _print_new_transitions(run, seen)
        if run["status"] in FINAL_RUN_STATUSES:
            click.echo(f"run {run_id} {run['status']}")
            if run["status"] != "succeeded":
                sys.exit(1)
            return
        if (
            run["status"] == "queued"
            and not hinted
            and time.monotonic() - start > QUEUED_HINT_AFTER
        ):
            hinted = True
            click.echo(f"run {run_id} waits for a worker ({NO_WORKER})", err=True)
        time.sleep(0.2)
    if run["status"] == "queued":
        raise click.ClickException(
            f"run {run_id} still queued after {timeout:g} s: no worker claimed it ({NO_WORKER}); "
            "it stays queued"
        )
    raise click.ClickException(
        f"run {run_id} still {run['status']} after {timeout:g} s (it goes on)"
    )


@click.command("run")
@click.argument("pipeline")
@click.option("--input", "input_json", default="{}", help="Trigger data as JSON.")
@click.option("--user", "email", default=None)
@click.option(
    "--follow",
    "follow_run",
    is_flag=True,
    help="Show each step as the server's workers run it; exit 1 unless the run succeeds.",
)
@click.option("--timeout", type=float, default=300.0, help="Seconds --follow waits.")
def run_cmd(
    pipeline: str, input_json: str, email: str | None, follow_run: bool, timeout: float
) -> None:
    """Queue a run of PIPELINE (an id or a name) for the executor (`levqor serve`'s embedded
    workers, `levqor worker` or Celery), as the API does."""
    try:
        data = json.loads(input_json)
    except ValueError as e:
        raise click.ClickException(f"--input is not JSON: {e}") from None
    from levqor_host.errors import ApiError

    st = services(make_app())
    u = find_user(st.store, email)
    p = pipeline_by_id_or_name(st.store, u["id"], pipeline)
    try:
        run, _ = st.runs.start(u, p, data, trigger="manual")
    except ApiError as e:
        problems = problem_lines((e.details or {}).get("problems", []))
        raise click.ClickException(f"{e.message}{problems}") from None
    finally:
        if st.dispatcher is not None:
            st.dispatcher.close()
    click.echo(f"run {run['id']} queued")
    if follow_run:
        follow(st.store, u["id"], run["id"], timeout)
