"""The marketplace: generated from what installed plugins describe, never written by hand.

One function, :func:`listing`, turns a plugin manager's catalog plus each distribution's
package metadata into the marketplace data. ``GET /api/v1/marketplace`` serves it and
``levqor marketplace build <dir>`` writes it as a static site (index.json, a searchable index
page and one page per connector; no external asset, no inline script or style, so it works
under ``Content-Security-Policy: default-src 'self'; img-src 'self' data:``).

A plugin whose description is broken is not in the catalog, so it is in neither; ``levqor
plugins`` and the listing's ``failures`` say why.

The endpoint is public (no API key), like a public plugin directory: it shows only what is
installed, its public package metadata, and credential field names and descriptions, never a
schema's defaults or examples and never a stored value.
"""

from __future__ import annotations

import html
import importlib.metadata as md
import json
import re
import shutil
from email.utils import getaddresses
from importlib import resources
from pathlib import Path
from typing import Any

SAFE_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


# ------------------------------------------------------------------------------ data
def dist_metadata(dist: str | None) -> dict[str, Any]:
    """Summary, author, license and homepage of an installed distribution (None when unknown)."""
    out: dict[str, Any] = {"summary": None, "author": None, "license": None, "homepage": None}
    if not dist:
        return out
    try:
        meta = md.metadata(dist)
    except md.PackageNotFoundError:
        return out
    out["summary"] = meta.get("Summary")
    author = meta.get("Author")
    if not author and meta.get("Author-email"):
        # "Ada <ada@example.org>, Bob <b@x>" -> "Ada, Bob": names only, no addresses
        names = [n for n, _ in getaddresses([meta["Author-email"]]) if n]
        author = ", ".join(names) or None
    out["author"] = author
    out["license"] = meta.get("License-Expression") or meta.get("License")
    home = meta.get("Home-page")
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower().replace("-", "").replace("_", "") == "homepage":
            home = url.strip()
            break
    out["homepage"] = home
    return out


def _fields(properties: Any, required: set[str]) -> list[dict[str, Any]]:
    out = []
    for name, sub in (properties if isinstance(properties, dict) else {}).items():
        sub = sub if isinstance(sub, dict) else {}
        out.append(
            {
                "name": str(name),
                "title": str(sub.get("title") or name),
                "description": str(sub.get("description") or ""),
                "required": name in required,
                "secret": bool(sub.get("writeOnly")),
            }
        )
    return out


def credential_fields(schema: Any) -> list[dict[str, Any]]:
    """Names, titles, descriptions, required and secret flags of a credential schema's fields
    (those every variant shares; :func:`credential_variants` has the rest).

    Deliberately nothing else: a schema's ``default``/``examples``/``const`` may hold a real
    value an author left in, and the marketplace is public."""
    if not isinstance(schema, dict):
        return []
    return _fields(schema.get("properties"), set(schema.get("required") or []))


def credential_variants(schema: Any) -> list[dict[str, Any]]:
    """The alternatives of a credential schema written with ``oneOf``/``anyOf`` (say, an API key
    or an OAuth token): per variant its title, description and fields as in
    :func:`credential_fields`; [] for a schema without alternatives."""
    if not isinstance(schema, dict):
        return []
    alts = schema.get("oneOf") or schema.get("anyOf")
    if not isinstance(alts, list):
        return []
    shared = set(schema.get("required") or [])
    out = []
    for i, alt in enumerate(alts, 1):
        if not isinstance(alt, dict):
            continue
        out.append(
            {
                "title": str(alt.get("title") or f"Option {i}"),
                "description": str(alt.get("description") or ""),
                "fields": _fields(alt.get("properties"), shared | set(alt.get("required") or [])),
            }
        )
    return out


def trigger_entries(info: Any) -> list[dict[str, Any]]:
    """A connector's triggers as the marketplace lists them: name, title, description, kind
    (polling or instant), for an instant trigger its ``webhook`` (one URL per registration, or
    one for the connector), and the config and output schemas with the sample item."""
    return [
        {
            "name": t.name,
            "title": t.title,
            "description": t.description,
            "kind": t.kind,
            "webhook": t.webhook if t.kind == "instant" else None,
            "config": t.config,
            "output": t.output,
            "sample": t.sample,
        }
        for t in info.triggers.values()
    ]


def oauth_entry(info: Any) -> dict[str, Any] | None:
    """What the marketplace says of a connector's OAuth2 option ("Connect"): the button's title,
    the scopes asked for and whether PKCE is used; None when the connector has no OAuth2
    variant. The endpoints' addresses are the provider's and public; no client id is listed
    (that is the operator's)."""
    spec = info.oauth2
    if not isinstance(spec, dict):
        return None
    return {
        "title": str(spec.get("title") or f"Connect {info.title}"),
        "scopes": [str(s) for s in spec.get("scopes") or []],
        "pkce": bool(spec.get("pkce", True)),
        "authorization_url": spec.get("authorization_url"),
    }


def connector_entry(info: Any, meta: dict[str, Any]) -> dict[str, Any]:
    actions = [
        {
            "name": a.name,
            "title": a.title,
            "description": a.description,
            "price": a.price,
            "payload": a.payload,
            "output": a.output,
            "example": a.example,
        }
        for a in info.actions.values()
    ]
    prices = [a["price"] for a in actions]
    return {
        "name": info.name,
        "title": info.title,
        "description": info.description,
        "icon": info.icon if info.icon.startswith("data:image/") else "",
        "categories": list(info.categories),
        "distribution": info.dist,
        "version": info.version,
        **meta,
        "kernel": info.kernel,
        "price": {"min": min(prices), "max": max(prices)} if prices else {"min": 0, "max": 0},
        "credentials": credential_fields(info.credentials),
        "credential_variants": credential_variants(info.credentials),
        "oauth2": oauth_entry(info),
        "triggers": trigger_entries(info),
        "actions": actions,
    }


def listing(pm: Any) -> dict[str, Any]:
    """The marketplace data of every connector in ``pm``'s catalog, sorted by name."""
    metas: dict[str | None, dict[str, Any]] = {}
    connectors = []
    for info in sorted(pm.catalog, key=lambda c: c.name):
        if info.dist not in metas:
            metas[info.dist] = dist_metadata(info.dist)
        connectors.append(connector_entry(info, metas[info.dist]))
    from levqor_kernel import __version__ as kernel_version

    from levqor_host import __version__

    return {
        "generator": f"levqor {__version__}",
        "kernel": kernel_version,
        "connectors": connectors,
        "failures": [f.to_dict() for f in pm.failures],
    }


# ------------------------------------------------------------------------------ static site
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _http_url(url: Any) -> str | None:
    return url if isinstance(url, str) and re.match(r"^https?://[^\s\"'<>]+$", url) else None


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)


def _page(title: str, body: str, *, root: str, script: bool = False) -> str:
    js = f'<script src="{root}assets/search.js" defer></script>' if script else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f'<link rel="stylesheet" href="{root}assets/style.css">{js}</head>\n'
        f"<body>{body}</body></html>\n"
    )


def _icon(c: dict[str, Any]) -> str:
    return f'<img class="icon" src="{_e(c["icon"])}" alt="">' if c.get("icon") else ""


def _price(c: dict[str, Any]) -> str:
    p = c["price"]
    n = p["min"] if p["min"] == p["max"] else f"{p['min']}-{p['max']}"
    return f"{n} credit{'' if n == 1 else 's'} a step"


def _kind(t: dict[str, Any]) -> str:
    return "instant" if t["kind"] == "instant" else "polling"


def _offers(c: dict[str, Any]) -> str:
    """What a card says the connector offers: " · 2 triggers · 3 actions · Connect (OAuth2)"."""
    n, m = len(c.get("triggers") or []), len(c["actions"])
    bits = [f"{n} trigger{'' if n == 1 else 's'}"] if n else []
    bits.append(f"{m} action{'' if m == 1 else 's'}")
    if c.get("oauth2"):
        bits.append("Connect (OAuth2)")
    return "".join(f" · {b}" for b in bits)


def _index_html(data: dict[str, Any]) -> str:
    cards = []
    for c in data["connectors"]:
        words = " ".join(
            [c["name"], c["title"], c["description"], c.get("distribution") or "", *c["categories"]]
            + [a["title"] for a in c["actions"]]
            + [t["title"] for t in c.get("triggers") or []]
            + (["connect", "oauth"] if c.get("oauth2") else [])
        ).lower()
        cats = "".join(f'<span class="cat">{_e(x)}</span>' for x in c["categories"])
        cards.append(
            f'<li class="card" data-search="{_e(words)}">'
            f'<a href="connectors/{_e(c["name"])}.html">{_icon(c)}<strong>{_e(c["title"])}</strong></a>'
            f" <code>{_e(c.get('distribution') or '')}</code> {_e(c.get('version') or '')}"
            f'<p>{_e(c["description"])}</p><p class="meta">{cats} {_e(_price(c))}'
            f"{_e(_offers(c))}</p></li>"
        )
    body = (
        "<header><h1>Levqor connectors</h1>"
        f"<p>{len(data['connectors'])} connectors, generated by {_e(data['generator'])} from the "
        'installed plugins\' own descriptions. <a href="index.json">index.json</a></p></header>'
        '<main><label for="q">Search</label> <input id="q" type="search" '
        'placeholder="name, category, action" autocomplete="off">'
        '<p id="count" aria-live="polite"></p>'
        f'<ul id="connectors">{"".join(cards)}</ul></main>'
    )
    return _page("Levqor connectors", body, root="", script=True)


def _schema_block(title: str, schema: Any) -> str:
    return f"<h4>{_e(title)}</h4><pre>{_e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"


def _fields_table(fields: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(f['name'])}</code></td><td>{_e(f['title'])}</td>"
        f"<td>{'yes' if f['required'] else 'no'}</td><td>{'yes' if f['secret'] else 'no'}</td>"
        f"<td>{_e(f['description'])}</td></tr>"
        for f in fields
    )
    return (
        "<table><thead><tr><th>field</th><th>title</th><th>required</th>"
        f"<th>secret</th><th>description</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _connector_html(c: dict[str, Any]) -> str:
    home = _http_url(c.get("homepage"))
    facts = [
        ("Distribution", f"<code>{_e(c.get('distribution') or '-')}</code>"),
        ("Version", _e(c.get("version") or "-")),
        ("Install", f"<code>pip install {_e(c.get('distribution') or '')}</code>"),
        ("Author", _e(c.get("author") or "-")),
        ("License", _e(c.get("license") or "-")),
        (
            "Homepage",
            f'<a href="{_e(home)}" rel="nofollow noopener">{_e(home)}</a>' if home else "-",
        ),
        ("Categories", _e(", ".join(c["categories"]) or "-")),
        ("Price", _e(_price(c))),
        ("Kernel", _e(c.get("kernel") or "any")),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    creds = "<h2>Credential</h2>"
    variants = c.get("credential_variants") or []
    if c["credentials"]:
        creds += _fields_table(c["credentials"])
    if variants:
        creds += f"<p>One of these {len(variants)} kinds:</p>" + "".join(
            f'<section class="variant"><h3>{_e(v["title"])}</h3><p>{_e(v["description"])}</p>'
            + (_fields_table(v["fields"]) if v["fields"] else "<p>No field.</p>")
            + "</section>"
            for v in variants
        )
    if not c["credentials"] and not variants:
        creds += "<p>None needed.</p>"
    oauth = c.get("oauth2")
    if oauth:
        scopes = ", ".join(f"<code>{_e(s)}</code>" for s in oauth["scopes"]) or "none"
        creds += (
            f'<section class="oauth"><h3>Connect (OAuth2): {_e(oauth["title"])}</h3>'
            "<p>Instead of pasting a key, connect the account in the dashboard's Credentials "
            f"page (the operator sets the OAuth client). Scopes asked for: {scopes}.</p></section>"
        )
    triggers = "".join(
        f'<section class="trigger" data-kind="{_e(_kind(t))}"><h3>{_e(t["title"])} '
        f'<code>{_e(c["name"])}.{_e(t["name"])}</code> <span class="kind">{_e(_kind(t))}</span></h3>'
        f"<p>{_e(t['description'])}</p>"
        + _schema_block("Settings", t["config"])
        + _schema_block("Output (one item)", t["output"])
        + _schema_block("Sample item", t["sample"])
        + "</section>"
        for t in c.get("triggers") or []
    )
    triggers = f"<h2>Triggers</h2>{triggers}" if triggers else ""
    actions = "".join(
        f'<section class="action"><h3>{_e(a["title"])} <code>{_e(c["name"])}.{_e(a["name"])}</code></h3>'
        f'<p>{_e(a["description"])}</p><p class="meta">{_e(a["price"])} credit(s) a step</p>'
        + _schema_block("Payload", a["payload"])
        + _schema_block("Output", a["output"])
        + _schema_block("Example payload", a["example"])
        + "</section>"
        for a in c["actions"]
    )
    body = (
        f'<header><p><a href="../index.html">All connectors</a></p>'
        f"<h1>{_icon(c)}{_e(c['title'])}</h1><p>{_e(c.get('summary') or c['description'])}</p></header>"
        f"<main><p>{_e(c['description'])}</p><dl>{dl}</dl>{creds}{triggers}"
        f"<h2>Actions</h2>{actions}</main>"
    )
    return _page(f"{c['title']} - Levqor connector", body, root="../")


def build_site(data: dict[str, Any], out: Path) -> list[Path]:
    """Write the static marketplace to ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "connectors").mkdir(exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    written = []
    public = {**data, "failures": len(data.get("failures") or [])}
    p = out / "index.json"
    p.write_text(json.dumps(public, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(p)
    p = out / "index.html"
    p.write_text(_index_html(data), encoding="utf-8")
    written.append(p)
    for c in data["connectors"]:
        if not SAFE_SLUG.match(c["name"]):  # catalog names are checked already; belt and braces
            continue
        p = out / "connectors" / f"{c['name']}.html"
        p.write_text(_connector_html(c), encoding="utf-8")
        written.append(p)
    assets = resources.files(__package__) / "marketplace_assets"
    for name in ("search.js", "style.css"):
        with resources.as_file(assets / name) as src:
            shutil.copyfile(src, out / "assets" / name)
        written.append(out / "assets" / name)
    return written
