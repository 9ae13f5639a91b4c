"""``levqor connector new`` and ``levqor connector check``: the connector SDK's command side.

The templates are package data (``templates/*.tmpl``); placeholders are ``__LQ_<WORD>__``
tokens replaced literally, so the templates stay valid-looking Python/TOML/Markdown. Lines
between ``#[feature]`` and ``#[/feature]`` are kept only when that feature was asked for
(``polling``, ``instant``, ``oauth``; ``#[a|b]`` either, ``#[!oauth]`` its absence).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,38}[a-z0-9]$|^[a-z]$")

#: template file -> (path inside the new project, the features that ask for it: None always);
#: ``{module}`` / ``{name}`` are filled in
FILES: dict[str, tuple[str, frozenset[str] | None]] = {
    "pyproject.toml.tmpl": ("pyproject.toml", None),
    "README.md.tmpl": ("README.md", None),
    "gitignore.tmpl": (".gitignore", None),
    "__init__.py.tmpl": ("src/{module}/__init__.py", None),
    "fake.py.tmpl": ("src/{module}/fake.py", frozenset({"polling", "instant", "oauth"})),
    "test_connector.py.tmpl": ("tests/test_{name}.py", None),
    "test_triggers.py.tmpl": ("tests/test_{name}_triggers.py", frozenset({"polling", "instant"})),
    "test_oauth.py.tmpl": ("tests/test_{name}_oauth.py", frozenset({"oauth"})),
}

#: what ``levqor connector new --trigger`` accepts
TRIGGER_KINDS = ("polling", "instant")

_BLOCK = re.compile(r"^\s*#\[(/?)(!?[a-z]+(?:\|[a-z]+)*)\]\s*$")


class ScaffoldError(Exception):
    """A name or a target folder that cannot be used (message says why)."""


@dataclass(frozen=True)
class Names:
    """Every spelling of one connector name."""

    name: str  # connector and entry-point name: acme_notes
    dist: str  # distribution: levqor-acme-notes
    module: str  # import name: levqor_acme_notes
    title: str  # Acme Notes
    env: str  # LEVQOR_ACME_NOTES_API_BASE
    cls: str = ""  # AcmeNotes (class names: FakeAcmeNotes)

    @classmethod
    def from_arg(cls, raw: str) -> Names:
        arg = raw.strip().lower()
        if arg.startswith("levqor-") or arg.startswith("levqor_"):
            arg = arg[len("levqor-") :]
        if not NAME_RE.match(arg) or "--" in arg or "__" in arg:
            raise ScaffoldError(
                f"{raw!r} is not a usable connector name: use 1-40 lowercase letters, digits, "
                "'-' or '_', starting with a letter (for example: acme or acme-notes)"
            )
        name = arg.replace("-", "_")
        return cls(
            name=name,
            dist="levqor-" + name.replace("_", "-"),
            module="levqor_" + name,
            title=" ".join(w.capitalize() for w in name.split("_")),
            env=f"LEVQOR_{name.upper()}_API_BASE",
            cls="".join(w.capitalize() for w in name.split("_")),
        )


def kernel_spec() -> str:
    """The kernel versions a new connector supports: this major version from this minor on
    (``>=0.1,<1`` for kernel 0.1.x, ``>=1.2,<2`` for 1.2.x)."""
    from levqor_kernel import __version__
    from packaging.version import Version

    v = Version(__version__)
    return f">={v.major}.{v.minor},<{v.major + 1}"


def find_repo(start: Path) -> Path | None:
    """The Levqor source checkout containing ``start`` (it has kernel/ and plugins/), or None."""
    for d in [start, *start.parents]:
        if (d / "plugins").is_dir() and (d / "kernel" / "src" / "levqor_kernel").is_dir():
            return d
    return None


def default_parent(cwd: Path) -> Path:
    """Where ``levqor connector new`` puts the project without ``--dir``: ``plugins/`` when run
    inside a Levqor checkout (next to the connectors that ship with it), else ``cwd``."""
    repo = find_repo(cwd.resolve())
    return repo / "plugins" if repo is not None else cwd


def select(text: str, features: frozenset[str]) -> str:
    """Keep the lines of the ``#[feature]`` blocks that ``features`` asks for, drop the rest and
    the marker lines themselves."""
    out: list[str] = []
    stack: list[tuple[str, bool]] = []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        m = _BLOCK.match(line)
        if m is None:
            if all(keep for _, keep in stack):
                out.append(line)
            continue
        closing, expr = m.group(1) == "/", m.group(2)
        if closing:
            if not stack or stack[-1][0] != expr:  # a template bug, never an author's
                raise RuntimeError(f"template line {n}: #[/{expr}] closes no #[{expr}]")
            stack.pop()
            continue
        if expr.startswith("!"):
            keep = expr[1:] not in features
        else:
            keep = any(f in features for f in expr.split("|"))
        stack.append((expr, keep))
    if stack:
        raise RuntimeError(f"template: #[{stack[-1][0]}] is never closed")
    return "".join(out)


def render(text: str, names: Names, author: str, features: frozenset[str] = frozenset()) -> str:
    text = select(text, features)
    values = {
        "__LQ_NAME__": names.name,
        "__LQ_DIST__": names.dist,
        "__LQ_MODULE__": names.module,
        "__LQ_TITLE__": names.title,
        "__LQ_ENV__": names.env,
        "__LQ_CLASS__": names.cls,
        "__LQ_UPPER__": names.name.upper(),
        "__LQ_KERNEL_SPEC__": kernel_spec(),
        "__LQ_AUTHOR__": author.replace('"', "'"),
    }
    for k, v in values.items():
        text = text.replace(k, v)
    left = re.findall(r"__LQ_[A-Z_]+__", text)
    if left:  # a template bug, never an author's
        raise RuntimeError(f"unfilled template placeholders: {sorted(set(left))}")
    return text


def scaffold(
    name: str,
    parent: Path,
    *,
    author: str = "Your Name",
    triggers: tuple[str, ...] | list[str] = (),
    oauth: bool = False,
) -> Path:
    """Write ``levqor-<name>/`` under ``parent`` and return its path. Never overwrites.

    ``triggers`` adds a polling and/or an instant trigger (with a fake of the example API and
    the trigger contract kit's tests); ``oauth`` an OAuth2 credential variant (with its tests).
    """
    names = Names.from_arg(name)
    unknown = sorted(set(triggers) - set(TRIGGER_KINDS))
    if unknown:
        raise ScaffoldError(f"unknown trigger kind {unknown[0]!r}: use {' or '.join(TRIGGER_KINDS)}")
    features = frozenset(triggers) | ({"oauth"} if oauth else set())
    target = parent / names.dist
    if target.exists() and any(target.iterdir()):
        raise ScaffoldError(f"{target} already exists and is not empty")
    tpl = resources.files(__package__) / "templates"
    for src, (rel, wanted) in FILES.items():
        if wanted is not None and not wanted & features:
            continue
        out = target / rel.format(module=names.module, name=names.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            render(tpl.joinpath(src).read_text(encoding="utf-8"), names, author, features)
        )
    return target


# ---------------------------------------------------------------------------------- check
@dataclass
class CheckReport:
    """What ``levqor connector check`` found."""

    target: str
    dist: str | None = None
    modules: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "distribution": self.dist,
            "modules": self.modules,
            "ok": self.ok,
            "checks": self.checks,
            "problems": self.problems,
            "notes": self.notes,
        }


def endpoint_url(sub: Any, base_url: str) -> str:
    """``base_url`` with the path (and query) of the field's first example URL, so a connector
    that checks the shape of its endpoint's path still accepts it; else a made-up path."""
    from urllib.parse import urlsplit

    examples = sub.get("examples") if isinstance(sub, dict) else None
    if isinstance(examples, list) and examples and isinstance(examples[0], str):
        parts = urlsplit(examples[0])
        if parts.path:
            return base_url + parts.path + (f"?{parts.query}" if parts.query else "")
    return base_url + "/levqor-check/endpoint-secret-path"


def sample_credentials(
    schema: Any, base_url: str, endpoint_field: str | None = None
) -> dict[str, Any] | None:
    """Credentials made up from a credential schema to drive the contract checks: ``api_base``
    and the connector's ``endpoint_field`` point at the fake server, strings are long dummy
    secrets, enums take their first value. ``None`` when the connector takes no credentials."""
    if not isinstance(schema, dict):
        return None
    if not schema.get("properties"):
        # a credential of several kinds: the first one a user pastes (not the OAuth2 one,
        # which "Connect" fills in)
        for variant in schema.get("anyOf") or schema.get("oneOf") or []:
            auth = ((variant or {}).get("properties") or {}).get("auth") or {}
            if isinstance(variant, dict) and variant.get("properties") and auth.get("const") != "oauth2":
                schema = variant
                break
    out: dict[str, Any] = {}
    props = schema.get("properties") or {}
    for key, sub in props.items():
        if key == "api_base":
            out[key] = base_url
            continue
        if key == endpoint_field:
            out[key] = endpoint_url(sub, base_url)
            continue
        if key not in (schema.get("required") or []):
            continue
        sub = sub if isinstance(sub, dict) else {}
        types = sub.get("type", "string")
        types = types if isinstance(types, list) else [types]
        examples = sub.get("examples")
        if isinstance(examples, list) and examples:
            out[key] = examples[0]
        elif "enum" in sub and sub["enum"]:
            out[key] = sub["enum"][0]
        elif "const" in sub:
            out[key] = sub["const"]
        elif "string" in types:
            n = max(24, int(sub.get("minLength", 0)))
            out[key] = ("levqor-check-" + key + "-" + "x" * n)[
                : max(n, int(sub.get("maxLength", n)))
            ]
        elif "integer" in types or "number" in types:
            out[key] = sub.get("minimum", 1)
        elif "boolean" in types:
            out[key] = False
        elif "object" in types:
            out[key] = {}
        elif "array" in types:
            out[key] = []
    return out


def _fresh_import(module: str, src: Path | None) -> ModuleType:
    """Import ``module``; with ``src``, from that folder even when another copy is loaded."""
    if src is not None:
        loaded = sys.modules.get(module)
        here = str(src.resolve())
        if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(here):
            for m in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
                del sys.modules[m]
        if here not in sys.path:
            sys.path.insert(0, here)
        importlib.invalidate_caches()
    return importlib.import_module(module)


NETWORK_CHECKS = "the network checks (401, 403, 429, 5xx, timeout, malformed body)"


def _probe(report: CheckReport, pm: Any, label: str, creds: Any, env: Any) -> bool:
    """Can made-up credentials and the example payload reach a fake API at all?

    The command line has no author-written test setup, so it builds credentials from the
    credential schema. When the connector refuses them (or its example payload targets some
    other host) before any request is sent, a 503 from the fake never arrives and every network
    check would report a false failure: then say so and skip those checks (returns True).
    """
    import time

    from jsonschema import Draft202012Validator
    from levqor_kernel.context import StepContext
    from levqor_kernel.errors import RetryableError
    from levqor_kernel.testing import FakeServer, Reply

    for c in list(pm.catalog)[:1]:
        with FakeServer() as srv:
            sample = creds(srv.url)
            if c.credentials is not None:
                errors = list(Draft202012Validator(c.credentials).iter_errors(sample))
                if errors:
                    fields = sorted({str(e.absolute_path[0]) for e in errors if e.absolute_path})
                    report.notes.append(
                        f"{label}: cannot make up credentials matching {c.name!r}'s credential "
                        f"schema (field {', '.join(fields) or '(object)'}), so {NETWORK_CHECKS} "
                        'were skipped here: give the field "examples": [a dummy value of the right '
                        "shape, never a real secret], or rely on your own ConnectorContract"
                    )
                    return True
            srv.answer_all(Reply(503, {"error": "unavailable", "message": "probe"}))
            action = next(iter(c.actions.values()))
            ctx = StepContext(
                run_id="check",
                step_id="probe",
                deadline=time.monotonic() + 5,
                env={"LEVQOR_SSRF_ALLOW": "127.0.0.1", **env(srv.url)},
            )
            try:
                pm.call_owner(
                    "run_task",
                    c.name,
                    connector=c.name,
                    action=action.name,
                    payload=action.example,
                    credentials=sample,
                    context=ctx,
                )
                why = "it returned without calling the API"
            except RetryableError:
                return False
            except Exception as e:  # noqa: BLE001
                why = f"{type(e).__name__}: {e}"
            if srv.requests:
                return False  # it reached the fake: let the real checks judge what it did
            report.notes.append(
                f"{label}: with credentials made up from the schema and the example payload of "
                f"{c.name}.{action.name}, no request reached the fake API ({why[:200]}), so "
                f'{NETWORK_CHECKS} were skipped here: add "examples" (dummy values of the right '
                "shape) to your credential fields, or rely on your own ConnectorContract"
            )
            return True
    return False


def _check_plugin(report: CheckReport, plugin: Any, label: str) -> None:
    from levqor_kernel.plugins import make_plugin_manager
    from levqor_kernel.testing import check_connector

    # the plugin under development changes between checks: nothing to remember
    pm = make_plugin_manager(
        entry_points=False, builtins=False, plugins=[(label, plugin)], schema_cache_dir=None
    )
    descs = list(pm.catalog)

    def creds(base: str) -> dict | None:
        # one connector's credential schema drives the sample (a plugin offering several
        # connectors with different schemas should rely on its own ConnectorContract)
        if not descs:
            return None
        return sample_credentials(descs[0].credentials, base, descs[0].endpoint_field)

    def env(base: str) -> dict:
        out = {f"LEVQOR_{c.name.upper()}_API_BASE": base for c in descs}
        # a connector whose endpoint is a credential (a webhook URL) limits its hosts; the fake
        # is on the loopback interface
        for c in descs:
            if c.endpoint_field:
                out[f"LEVQOR_{c.name.upper()}_ALLOWED_HOSTS"] = "127.0.0.1"
        return out

    offline = _probe(report, pm, label, creds, env)
    res = check_connector(plugin, credentials=creds, env=env, offline=offline)
    report.checks += [f"{label}: {c}" for c in res.checks]
    report.problems += [f"{label}: {p}" for p in res.problems]
    for c in descs:
        if not c.kernel:
            report.problems.append(
                f"{label}: connector {c.name!r} does not declare the kernel versions it supports: "
                f'add "kernel": "{kernel_spec()}" to its describe_schema entry'
            )
        if (
            not offline
            and c.credentials is not None
            and not c.endpoint_field
            and not any(
                "api_base" in ((v or {}).get("properties") or {})
                for v in [c.credentials, *(c.credentials.get("anyOf") or c.credentials.get("oneOf") or [])]
            )
        ):
            report.notes.append(
                f"{label}: {c.name!r} has no api_base credential field; the network checks "
                f"reached it through LEVQOR_{c.name.upper()}_API_BASE (context.api_base)"
            )


def _check_metadata(report: CheckReport, meta: dict[str, Any]) -> None:
    """Packaging rules for the marketplace: name, keyword, kernel dependency, entry point."""
    name = str(meta.get("name") or "")
    if not name.startswith("levqor-"):
        report.problems.append(f"distribution name {name!r} should start with 'levqor-'")
    if "levqor" not in [k.lower() for k in meta.get("keywords") or []]:
        report.problems.append('add "levqor" to keywords (the marketplace and PyPI search use it)')
    deps = [
        re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].strip().lower() for d in meta.get("deps") or []
    ]
    if "levqor-kernel" not in [d.replace("_", "-") for d in deps]:
        report.problems.append('depend on levqor-kernel (dependencies = ["levqor-kernel>=0.1,<1"])')
    if "levqor" in [d.replace("_", "-") for d in deps]:
        report.problems.append(
            "do not depend on the host (levqor): a connector needs only levqor-kernel"
        )
    if not meta.get("entry_points"):
        report.problems.append(
            'no entry point in the "levqor" group: add [project.entry-points.levqor] '
            '<name> = "levqor_<name>"'
        )
    for key in ("summary", "license"):
        if not meta.get(key):
            report.problems.append(f"package metadata has no {key} (shown in the marketplace)")
    report.checks.append("package metadata")


def _run_project_tests(report: CheckReport, path: Path, src: Path) -> None:
    """Run the project's own ConnectorContract (``pytest -k levqor_contract``)."""
    tests = path / "tests"
    has_contract = tests.is_dir() and any(
        "ConnectorContract" in p.read_text(errors="replace") for p in tests.rglob("*.py")
    )
    if not has_contract:
        report.problems.append(
            "tests/ has no ConnectorContract subclass: add one (see docs/connectors.md, "
            "'Testing with the contract kit') so pytest runs the contract with your credentials"
        )
        return
    if importlib.util.find_spec("pytest") is None:
        report.problems.append(
            "pytest is not installed beside Levqor, so the project's contract tests cannot run: "
            "pip install 'levqor-kernel[testing]' (or use --no-tests)"
        )
        return
    from levqor_host.config import child_process_env

    env = child_process_env(pythonpath_first=str(src))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "levqor_contract",
            str(tests),
        ],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report.checks.append("the project's ConnectorContract (pytest -k levqor_contract)")
    if r.returncode == 5:
        report.problems.append("pytest collected no levqor_contract test from tests/")
    elif r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
        report.problems.append(f"the project's contract tests fail:\n{tail}")


def check_path(path: Path, *, run_tests: bool = True) -> CheckReport:
    """Check a connector project folder (with pyproject.toml) without installing it."""
    report = CheckReport(target=str(path))
    path = path.resolve()
    pp = path / "pyproject.toml"
    if not pp.is_file():
        report.problems.append(f"{path} has no pyproject.toml")
        return report
    try:
        data = tomllib.loads(pp.read_text())
    except tomllib.TOMLDecodeError as e:
        report.problems.append(f"pyproject.toml is not valid TOML: {e}")
        return report
    proj = data.get("project") or {}
    eps = (proj.get("entry-points") or {}).get("levqor") or {}
    report.dist = proj.get("name")
    lic = proj.get("license")
    _check_metadata(
        report,
        {
            "name": proj.get("name"),
            "keywords": proj.get("keywords"),
            "deps": proj.get("dependencies"),
            "entry_points": eps,
            "summary": proj.get("description"),
            "license": lic
            if isinstance(lic, str)
            else (lic or {}).get("text") or (lic or {}).get("file"),
        },
    )
    if not (path / "README.md").is_file() and not proj.get("readme"):
        report.problems.append("no README: the package page on PyPI and the marketplace need one")
    src = path / "src" if (path / "src").is_dir() else path
    for ep_name, target in eps.items():
        module = str(target).split(":")[0]
        report.modules.append(module)
        try:
            plugin = _fresh_import(module, src)
        except Exception as e:  # noqa: BLE001 - report what the author must fix
            report.problems.append(f"{ep_name}: cannot import {module}: {type(e).__name__}: {e}")
            continue
        _check_plugin(report, plugin, ep_name)
    if run_tests:
        _run_project_tests(report, path, src)
    return report


def check_dist(dist: str) -> CheckReport:
    """Check an installed distribution by name."""
    report = CheckReport(target=dist)
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        report.problems.append(
            f"no installed distribution {dist!r} and no folder of that name: give a project "
            "path or the name of an installed distribution (pip list)"
        )
        return report
    report.dist = d.metadata["Name"]
    eps = [ep for ep in d.entry_points if ep.group == "levqor"]
    meta = d.metadata
    _check_metadata(
        report,
        {
            "name": meta["Name"],
            "keywords": re.split(r"[,\s]+", meta.get("Keywords") or "")
            if meta.get("Keywords")
            else [],
            "deps": meta.get_all("Requires-Dist") or [],
            "entry_points": eps,
            "summary": meta.get("Summary"),
            "license": meta.get("License-Expression") or meta.get("License"),
        },
    )
    for ep in eps:
        report.modules.append(ep.value)
        try:
            plugin = ep.load()
        except Exception as e:  # noqa: BLE001
            report.problems.append(f"{ep.name}: cannot import {ep.value}: {type(e).__name__}: {e}")
            continue
        _check_plugin(report, plugin, ep.name)
    return report


def check(target: str, *, run_tests: bool = True) -> CheckReport:
    """A folder when ``target`` is one, else an installed distribution name."""
    p = Path(target)
    if p.is_dir():
        return check_path(p, run_tests=run_tests)
    return check_dist(target)
