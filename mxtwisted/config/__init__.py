"""Reading homeserver.yaml.

``load_config(path)`` is the only entry point the rest of the server uses; it
raises :class:`ConfigError` with one line naming the offending key, which the
command line prints without a traceback.
"""

from __future__ import annotations

from typing import Callable, Optional

import yaml

from mxtwisted.config.homeserver import HomeserverConfig, ListenerConfig, ModuleConfig, RateLimit, parse_config
from mxtwisted.config.schema import ConfigError

__all__ = [
    "ConfigError",
    "HomeserverConfig",
    "ListenerConfig",
    "ModuleConfig",
    "RateLimit",
    "load_config",
    "parse_config",
]


def load_config(path: str, report_ignored: Optional[Callable[[str], None]] = None) -> HomeserverConfig:
    """Read and validate the YAML file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("", f"configuration file {path!r} does not exist") from None
    except OSError as e:
        raise ConfigError("", f"cannot read configuration file {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"{path}{where}: invalid YAML: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("", f"{path}: the configuration must be a YAML mapping")
    return parse_config(data, config_path=path, report=report_ignored)
