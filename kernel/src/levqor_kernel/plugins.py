"""The plugin manager factory: discovery, allow/block lists, failures, the catalog, dispatch.

There is no module-level manager: every caller (a host app, a test, a benchmark) builds its
own with :func:`make_plugin_manager`.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from . import __version__, hookspecs
from .catalog import (
    CHECK_CACHE,
    Catalog,
    ConnectorInfo,
    check_description,
    connector_from_description,
)
from .errors import PluginConflictError

ENTRY_POINT_GROUP = "levqor"

#: Plugins that ship inside levqor-kernel and load unless disabled.
DEFAULT_PLUGINS: dict[str, str] = {"core": "levqor_kernel.builtins.core"}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that was skipped: which one, from which distribution, and why."""

    name: str
    dist: str | None
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.dist, "error": self.error}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    dist: str | None
    version: str | None
    hooks: tuple[str, ...]
    connectors: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.dist,
            "version": self.version,
            "hooks": list(self.hooks),
            "connectors": list(self.connectors),
        }


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


#: where :func:`make_plugin_manager` remembers the descriptions it found valid, by default
DEFAULT_SCHEMA_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "levqor")


class LevqorPluginManager(pluggy.PluginManager):
    """A pluggy manager that also knows distributions, failures and the connector catalog."""

    def __init__(self) -> None:
        super().__init__("levqor")
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.dists: dict[str, tuple[str | None, str | None]] = {}
        self.catalog: Catalog = Catalog()
        #: the folder of the schema-check cache (None: memory only); see make_plugin_manager
        self.schema_cache_dir: str | None = None
        self._dispatch: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ registration
    def add_plugin(
        self, plugin: Any, name: str, dist: str | None = None, version: str | None = None
    ) -> bool:
        """Register ``plugin``; on any error record a failure and return False."""
        try:
            self.register(plugin, name=name)
        except Exception as e:  # noqa: BLE001 - a broken plugin never stops the host
            self.failures.append(PluginFailure(name, dist, f"{type(e).__name__}: {e}"))
            return False
        self.dists[name] = (dist, version)
        return True

    def fail(self, name: str, error: str) -> None:
        dist = self.dists.get(name, (None, None))[0]
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.dists.pop(name, None)
        self.failures.append(PluginFailure(name, dist, error))

    # ------------------------------------------------------------------ catalog
    def build_catalog(self) -> Catalog:
        """Ask every plugin for ``describe_schema`` and check each answer.

        A plugin whose description is invalid (or raises) is recorded as a failure and
        unregistered. Two plugins claiming one connector name raise PluginConflictError.
        """
        self.check_unknown_hooks()
        CHECK_CACHE.load(self.schema_cache_dir)
        owners: dict[str, ConnectorInfo] = {}
        for impl in list(self.hook.describe_schema.get_hookimpls()):
            name = self.get_name(impl.plugin)
            if name is None:
                continue
            dist, version = self.dists.get(name, (None, None))
            try:
                descs = impl.function()
            except Exception as e:  # noqa: BLE001
                self.fail(name, f"describe_schema raised {type(e).__name__}: {e}")
                continue
            if isinstance(descs, Mapping):
                descs = [descs]
            if not isinstance(descs, list):
                self.fail(name, "describe_schema must return a list of connector descriptions")
                continue
            problems: list[str] = []
            for d in descs:
                problems += check_description(d)
                spec = d.get("kernel") if isinstance(d, Mapping) else None
                if spec:
                    try:
                        if Version(__version__) not in SpecifierSet(spec):
                            problems.append(
                                f"{d.get('name')}: requires levqor-kernel {spec}, but levqor-kernel {__version__} is installed"
                            )
                    except InvalidSpecifier:
                        problems.append(
                            f"{d.get('name')}: invalid kernel version specifier {spec!r}"
                        )
            if problems:
                self.fail(name, "invalid describe_schema: " + "; ".join(problems[:5]))
                continue
            for d in descs:
                info = connector_from_description(
                    d, plugin_name=name, plugin=impl.plugin, dist=dist, version=version
                )
                other = owners.get(info.name)
                if other is not None:
                    raise PluginConflictError(
                        f"connector {info.name!r} is claimed by two plugins: "
                        f"{other.dist or other.plugin_name} and {dist or name}; uninstall one or "
                        f"block one with LEVQOR_DISABLE_PLUGINS"
                    )
                owners[info.name] = info
        CHECK_CACHE.save(self.schema_cache_dir)
        self.catalog = Catalog(owners.values())
        self._dispatch.clear()
        return self.catalog

    def check_unknown_hooks(self) -> None:
        """Skip plugins that implement hooks nobody declared (typos), like pluggy's check_pending."""
        for name, plugin in list(self.list_name_plugin()):
            for attr in dir(plugin):
                try:
                    opts = self.parse_hookimpl_opts(plugin, attr)
                except Exception:  # noqa: BLE001
                    opts = None
                if opts is None:
                    continue
                caller = getattr(self.hook, attr, None)
                if caller is None or (not caller.has_spec() and not opts.get("optionalhook")):
                    self.fail(name, f"implements unknown hook {attr!r}")
                    break

    # ------------------------------------------------------------------ dispatch
    def owner_impl(self, hook_name: str, connector: str) -> Any | None:
        """The hook implementation of the plugin that owns ``connector`` (None if it has none)."""
        key = (hook_name, connector)
        if key in self._dispatch:
            return self._dispatch[key]
        info = self.catalog.get(connector)
        impl = None
        if info is not None:
            for i in getattr(self.hook, hook_name).get_hookimpls():
                if i.plugin is info.plugin:
                    impl = i
                    break
        self._dispatch[key] = impl
        return impl

    def call_owner(self, hook_name: str, connector: str, /, **kwargs: Any) -> Any:
        """Call ``hook_name`` on the owning plugin only. KeyError when nobody implements it."""
        impl = self.owner_impl(hook_name, connector)
        if impl is None:
            raise KeyError(f"no plugin implements {hook_name} for connector {connector!r}")
        return impl.function(*[kwargs[a] for a in impl.argnames])

    # ------------------------------------------------------------------ listing
    def plugin_infos(self) -> list[PluginInfo]:
        out = []
        by_plugin: dict[str, list[str]] = {}
        for c in self.catalog:
            by_plugin.setdefault(c.plugin_name, []).append(c.name)
        for name, plugin in sorted(self.list_name_plugin(), key=lambda x: x[0] or ""):
            if name is None:
                continue
            hooks = tuple(sorted(hc.name for hc in (self.get_hookcallers(plugin) or [])))
            dist, version = self.dists.get(name, (None, None))
            out.append(
                PluginInfo(name, dist, version, hooks, tuple(sorted(by_plugin.get(name, []))))
            )
        return out


def _entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


def make_plugin_manager(
    *,
    entry_points: bool = True,
    builtins: bool = True,
    plugins: Iterable[ModuleType | Any | tuple[str, Any]] = (),
    allow: Iterable[str] | None = None,
    block: Iterable[str] = (),
    extra_hookspecs: Iterable[Any] = (),
    build_catalog: bool = True,
    schema_cache_dir: str | os.PathLike[str] | None = DEFAULT_SCHEMA_CACHE_DIR,
) -> LevqorPluginManager:
    """Build a fresh plugin manager.

    Loads the built-ins (:data:`DEFAULT_PLUGINS`), every entry point in the ``levqor`` group,
    and ``plugins`` given directly (modules or objects, optionally ``(name, obj)``).
    ``allow`` (entry-point or distribution names; the host reads ``LEVQOR_PLUGINS``) is an
    allow-list for installed plugins, None allowing all; ``block`` (``LEVQOR_DISABLE_PLUGINS``)
    is a block-list for all of them. ``schema_cache_dir`` is where descriptions found valid
    are remembered (None: in memory only). The kernel reads no environment variable: the
    caller hands these settings in. A plugin that fails to import or describes itself wrongly
    is recorded in ``pm.failures`` and skipped.

    .. versionchanged:: 0.2
       ``allow``, ``block`` and ``schema_cache_dir`` replace the ``env`` mapping.
    """
    allow_n = {_norm(a) for a in allow if a.strip()} if allow is not None else None
    block_n = {_norm(b) for b in block if b.strip()}

    pm = LevqorPluginManager()
    pm.schema_cache_dir = None if schema_cache_dir is None else os.fspath(schema_cache_dir)
    for spec in extra_hookspecs:
        pm.add_hookspecs(spec)

    def blocked(*names: str | None) -> bool:
        return any(n and _norm(n) in block_n for n in names)

    if builtins:
        for name, modname in DEFAULT_PLUGINS.items():
            if blocked(name):
                continue
            try:
                mod = importlib.import_module(modname)
            except Exception as e:  # noqa: BLE001
                pm.failures.append(PluginFailure(name, "levqor-kernel", f"{type(e).__name__}: {e}"))
                continue
            pm.add_plugin(mod, name, "levqor-kernel", __version__)

    if entry_points:
        seen: set[str] = set()
        for ep in _entry_points():
            dist_name = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if ep.name in seen or pm.has_plugin(ep.name):
                # the same distribution visible twice on sys.path, or a name clash
                if (
                    pm.get_plugin(ep.name) is not None
                    and pm.dists.get(ep.name, (None,))[0] == dist_name
                ):
                    continue
            seen.add(ep.name)
            if (
                allow_n is not None
                and _norm(ep.name) not in allow_n
                and not (dist_name and _norm(dist_name) in allow_n)
            ):
                continue
            if blocked(ep.name, dist_name):
                continue
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001 - report, skip, keep going
                tb = traceback.format_exception_only(type(e), e)[-1].strip()
                pm.failures.append(PluginFailure(ep.name, dist_name, f"failed to import: {tb}"))
                continue
            if pm.has_plugin(ep.name):
                pm.failures.append(
                    PluginFailure(
                        ep.name,
                        dist_name,
                        f"plugin name {ep.name!r} is already taken by {pm.dists.get(ep.name, (None,))[0]}",
                    )
                )
                continue
            pm.add_plugin(obj, ep.name, dist_name, version)

    for item in plugins:
        if isinstance(item, tuple):
            name, obj = item
        else:
            obj = item
            name = (
                getattr(obj, "LEVQOR_PLUGIN_NAME", None)
                or getattr(obj, "__name__", None)
                or repr(obj)
            )
        if blocked(name):
            continue
        pm.add_plugin(obj, name, getattr(obj, "__dist__", None), getattr(obj, "__version__", None))

    if build_catalog:
        pm.build_catalog()
    return pm
