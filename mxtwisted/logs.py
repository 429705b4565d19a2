"""Log observers for twistd: the configured level, or Synapse-style stdlib logging.

twistd builds its log observer after the plugin parsed its options, from the
``--logger`` factory; :func:`configure` records what the plugin wants and
:func:`observer_factory` (named as that factory) builds it.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, Optional

import yaml
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    STDLibLogObserver,
    textFileLogObserver,
)
from twisted.python import logfile

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

_settings: dict[str, Any] = {"level": "info", "logfile": None, "log_config": None}


def configure(level: str, logfile_path: Optional[str], log_config: Optional[str]) -> None:
    """Record the log settings for :func:`observer_factory` (called once, from the plugin)."""
    _settings.update(level=level, logfile=logfile_path, log_config=log_config)


def make_observer(level: str = "info", logfile_path: Optional[str] = None, log_config: Optional[str] = None) -> ILogObserver:
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    if log_config:
        with open(log_config, encoding="utf-8") as f:
            logging.config.dictConfig(yaml.safe_load(f))
        return FilteringLogObserver(STDLibLogObserver(name="mxtwisted"), [predicate])
    if not logfile_path or logfile_path == "-":
        out: Any = sys.stdout
    else:
        out = logfile.LogFile.fromFullPath(logfile_path)
    return FilteringLogObserver(textFileLogObserver(out), [predicate])


def observer_factory() -> ILogObserver:
    """The ``--logger`` factory twistd calls."""
    return make_observer(_settings["level"], _settings["logfile"], _settings["log_config"])
