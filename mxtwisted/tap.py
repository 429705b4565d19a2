"""``twistd matrixhs``: options and service construction.

The configuration is read and validated while options are parsed, so that a
bad configuration stops twistd before it daemonises, with one line on stderr
naming the key and exit status 1 (no traceback).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the matrixhs Matrix homeserver. The configuration file is a Synapse-style homeserver.yaml; "
        "create one with 'python -m mxtwisted generate-config'. Keys Synapse knows but matrixhs does not "
        "implement are logged as ignored; unknown or invalid keys stop start-up."
    )
    optParameters = [
        ["config", "c", "homeserver.yaml", "Path of the homeserver configuration file (YAML)."],
    ]

    def postOptions(self) -> None:
        from mxtwisted.config import ConfigError, load_config
        from mxtwisted.logs import configure

        ignored: list[str] = []
        try:
            self.homeserver_config = load_config(self["config"], report_ignored=ignored.append)
        except ConfigError as e:
            sys.exit(f"matrixhs: error: {e}")
        for key in ignored:
            log.warn("Configuration key {key} is not implemented by matrixhs and is ignored", key=key)
        parent: Any = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger"):
            cfg = self.homeserver_config
            configure(cfg.log_level, parent.get("logfile"), cfg.log_config)
            parent["logger"] = "mxtwisted.logs.observer_factory"


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from mxtwisted.service import StartupError, exit_on_fatal, make_homeserver
    from mxtwisted.sighup import install_sighup_handler

    parent: Any = getattr(options, "parent", None)
    pidfile = parent.get("pidfile") if parent is not None else None
    try:
        service = make_homeserver(reactor, options.homeserver_config, on_fatal=exit_on_fatal(reactor, pidfile))
    except StartupError as e:
        sys.exit(f"matrixhs: error: {e}")
    # Installed now, not once the reactor runs, so that an early SIGHUP does not kill the process (its default).
    install_sighup_handler(reactor, [service.reload_tls])
    return service
