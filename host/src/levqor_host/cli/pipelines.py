"""``levqor pipelines``: list, import and export pipelines as JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from levqor_host.cli.context import find_user, make_app, open_store, problem_lines, services

if TYPE_CHECKING:
    from levqor_host.services import Services
    from levqor_host.store import Store


@click.group()
def pipelines() -> None:
    """List, import and export pipelines (JSON files)."""


@pipelines.command("list")
@click.option("--user", "email", default=None)
def pipelines_list(email: str | None) -> None:
    """A user's pipelines: id, version, name."""
    with open_store() as store:
        for p in store.pipelines.list(find_user(store, email)["id"]):
            click.echo(f"{p['id']}  v{p['version']}  {p['name']}")


def read_pipeline_file(f: Path) -> tuple[dict, str, str | None]:
    """(document, name, id or None) of a file in any shape `pipelines import` takes."""
    try:
        data = json.loads(f.read_text())
    except OSError as e:
        raise click.ClickException(f"{f}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise click.ClickException(f"{f}: not JSON: {e}") from None
    name = file_id = None
    if isinstance(data, dict) and isinstance(data.get("pipeline"), dict):
        doc, name, file_id = data["pipeline"], data.get("name"), data.get("id")
    elif isinstance(data, dict) and isinstance(data.get("doc"), dict):
        doc, name, file_id = data["doc"], data.get("name"), data.get("id")
    elif isinstance(data, dict) and ("levqor" in data or "steps" in data):
        doc = data
    else:
        raise click.ClickException(
            f'{f}: not a pipeline document: expected a pipeline ({{"levqor": 1, ...}}), '
            '{"name": ..., "pipeline": {...}} or an export {"id", "name", "version", "doc"}'
        )
    name = name if name is not None else doc.get("name") or f.stem
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise click.ClickException(f"{f}: the name must be a string of 1-200 characters")
    return doc, name, file_id if isinstance(file_id, str) else None


def describe_ids(ps: list[dict]) -> str:
    """``id (vN), ...`` of pipelines, for messages that must name them."""
    return ", ".join(f"{p['id']} (v{p['version']})" for p in ps)


def pipeline_by_id_or_name(store: Store, user_id: str, ref: str) -> dict:
    """The user's pipeline with id ``ref``, else the one named ``ref`` (several: an error)."""
    p = store.pipelines.get(user_id, ref)
    if p is not None:
        return p
    matches = [x for x in store.pipelines.list(user_id) if x["name"] == ref]
    if not matches:
        raise click.ClickException(f"no pipeline with id or name {ref!r}")
    if len(matches) > 1:
        raise click.ClickException(
            f"several pipelines are named {ref!r}: {describe_ids(matches)}; run one by its id"
        )
    return matches[0]


def _import_target(
    f: Path,
    name: str,
    file_id: str | None,
    existing: list[dict],
    update: bool,
    creating: dict[str, Path],
) -> dict | None:
    """The existing pipeline a file updates (None: it creates one), or a refusal that names
    the pipelines in the way."""
    same = [p for p in existing if file_id and p["id"] == file_id]
    same = same or [p for p in existing if p["name"] == name]
    if len(same) > 1:
        raise click.ClickException(
            f"{f}: several pipelines are named {name!r}: {describe_ids(same)}; import the "
            "export of one (it carries its id), or use --new for another copy"
        )
    if same and not update:
        raise click.ClickException(
            f"{f}: pipeline {name!r} exists as {describe_ids(same)}: use --update to save "
            "this file as its new version, or --new to import a copy"
        )
    if not same and name in creating:
        raise click.ClickException(
            f"{f}: {creating[name]} creates a pipeline named {name!r} too "
            "(use --new to import both)"
        )
    return same[0] if same else None


def _plan_imports(
    st: Services, user: dict, files: tuple[Path, ...], update: bool, as_new: bool
) -> list[tuple[dict, str, dict | None]]:
    """(document, name, pipeline to update or None) per file; every file is read and checked
    before anything is written."""
    existing = st.store.pipelines.list(user["id"])
    plans: list[tuple[dict, str, dict | None]] = []
    creating: dict[str, Path] = {}
    for f in files:
        doc, name, file_id = read_pipeline_file(f)
        problems = [
            p for p in st.runs.validate(user["id"], doc) if "does not exist" not in p["message"]
        ]
        if problems:
            raise click.ClickException(f"{f}: invalid pipeline:{problem_lines(problems)}")
        target = None if as_new else _import_target(f, name, file_id, existing, update, creating)
        if target is None:
            creating[name] = f
        plans.append((doc, name, target))
    return plans


@pipelines.command("import")
@click.argument(
    "files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--user", "email", default=None)
@click.option(
    "--update",
    is_flag=True,
    help="A file whose pipeline exists (same id, else same name) becomes its new version.",
)
@click.option(
    "--new",
    "as_new",
    is_flag=True,
    help="Import every file as a new pipeline, even when one with its id or name exists.",
)
def pipelines_import(
    files: tuple[Path, ...], email: str | None, update: bool, as_new: bool
) -> None:
    """Import pipeline files: a bare pipeline document, {"name": ..., "pipeline": {...}} (what
    the API takes) or an export ({"id", "name", "version", "doc"}: `levqor pipelines export`).

    A file whose pipeline exists already (by the id an export carries, else by name) is
    refused unless --update (save it as that pipeline's new version) or --new (import a copy).
    Every file is checked before any is written."""
    if update and as_new:
        raise click.UsageError("--update and --new exclude each other")
    from levqor_host.errors import ApiError
    st = services(make_app())
    u = find_user(st.store, email)
    for doc, name, target in _plan_imports(st, u, files, update, as_new):
        try:
            if target is None:
                p = st.triggers.save(
                    u["id"], doc, lambda d=doc, n=name: st.store.pipelines.create(u["id"], n, d)
                )
                what = "created"
            elif target["doc"] == doc and target["name"] == name:
                p, what = target, "unchanged"
            else:
                p = st.triggers.save(
                    u["id"], doc,
                    lambda d=doc, n=name, t=target["id"]: st.store.pipelines.update(
                        u["id"], t, d, name=n
                    ),
                    pipeline=target,
                )  # fmt: skip
                what = "updated"
        except ApiError as e:
            raise click.ClickException(f"{name}: {e.message}") from None
        assert p is not None
        if what != "unchanged":
            st.export_pipeline(p)
        click.echo(f"{p['id']}  v{p['version']}  {name}  ({what})")


@pipelines.command("export")
@click.argument("pipeline_id")
@click.option("--user", "email", default=None)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def pipelines_export(pipeline_id: str, email: str | None, output: Path | None) -> None:
    """Print (or write) a pipeline as {"id", "name", "version", "doc"}, the shape import takes."""
    with open_store() as store:
        p = store.pipelines.get(find_user(store, email)["id"], pipeline_id)
    if p is None:
        raise click.ClickException("no such pipeline")
    out = {"id": p["id"], "name": p["name"], "version": p["version"], "doc": p["doc"]}
    text = json.dumps(out, indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        click.echo(text)
