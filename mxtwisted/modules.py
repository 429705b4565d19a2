"""Loading modules named in the configuration (``modules:``).

Each entry ``{module: "pkg.mod.Class", config: {...}}`` is imported,
optionally validated (a class may define ``parse_config(config)`` returning
the parsed form or raising), constructed as ``Class(config, api)`` and verified
against every extension point it declares. Any failure stops start-up with a
message naming the module, because a half-loaded spam checker or auth provider
is a security problem.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from mxtwisted.config import ModuleConfig
from mxtwisted.interfaces import EXTENSION_POINTS, IModuleApi


class ModuleLoadError(Exception):
    """A module could not be imported, configured, constructed or verified."""


@implementer(IModuleApi)
class ModuleApi:
    """The facade handed to every module."""

    def __init__(self, server_name: str, public_baseurl: Optional[str], clock: IReactorTime, module_name: str) -> None:
        self.server_name = server_name
        self.public_baseurl = public_baseurl
        self.clock = clock
        self._module_name = module_name

    def get_logger(self) -> Logger:
        return Logger(namespace=self._module_name)


@dataclass
class LoadedModule:
    name: str
    instance: Any
    provides: list  # the extension-point interfaces it implements

    def implements(self, interface: Any) -> bool:
        return interface in self.provides


def _import_class(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ModuleLoadError(f"module {path!r}: expected a dotted path such as 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ModuleLoadError(f"module {path!r}: cannot import {module_name!r}: {e.__class__.__name__}: {e}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModuleLoadError(f"module {path!r}: {module_name!r} has no attribute {attr!r}") from None


def load_module(entry: ModuleConfig, api_factory: Any) -> LoadedModule:
    """Import, configure, construct and verify one module."""
    cls = _import_class(entry.module)
    config: Any = entry.config
    parse = getattr(cls, "parse_config", None)
    if parse is not None:
        try:
            config = parse(config)
        except Exception as e:
            raise ModuleLoadError(f"module {entry.module!r}: invalid config: {e}") from None
    try:
        instance = cls(config, api_factory(entry.module))
    except Exception as e:
        raise ModuleLoadError(f"module {entry.module!r}: failed to start: {e.__class__.__name__}: {e}") from None
    provides = [iface for iface in EXTENSION_POINTS if iface.providedBy(instance)]
    if not provides:
        names = ", ".join(i.__name__ for i in EXTENSION_POINTS)
        raise ModuleLoadError(f"module {entry.module!r} implements no extension point (one of: {names})")
    for iface in provides:
        try:
            verifyObject(iface, instance)
        except Invalid as e:
            detail = " ".join(str(e).split())
            raise ModuleLoadError(f"module {entry.module!r} does not implement {iface.__name__}: {detail}") from None
    return LoadedModule(entry.module, instance, provides)


def load_modules(entries: list[ModuleConfig], server_name: str, public_baseurl: Optional[str], clock: IReactorTime) -> list[LoadedModule]:
    """Load every configured module, in order."""

    def api_factory(name: str) -> ModuleApi:
        return ModuleApi(server_name, public_baseurl, clock, name)

    return [load_module(entry, api_factory) for entry in entries]
