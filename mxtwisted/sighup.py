"""SIGHUP: the Unix "re-read your files" signal, here used to reload the TLS certificate.

A signal handler runs between two bytecodes of whatever the main thread was
doing, possibly in the middle of the reactor's own bookkeeping, so the handler
only schedules the work with ``reactor.callFromThread`` (safe from a signal
handler, as Twisted's own SIGINT handling relies on) and the callbacks run on
the next reactor iteration. A handler installed earlier (by an embedding
program, say) is chained, not replaced, as Synapse does.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Optional

from twisted.logger import Logger

log = Logger()

SignalHandler = Callable[[int, Any], None]


def make_sighup_handler(reactor: Any, callbacks: list[Callable[[], Any]], previous: Any = None) -> SignalHandler:
    """The function to install for SIGHUP: schedules ``callbacks`` (then calls ``previous`` if it is callable)."""

    def run(signum: int, frame: Any) -> None:
        log.info("Received SIGHUP")
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.failure("SIGHUP callback {callback!r} failed", callback=callback)
        if callable(previous):
            previous(signum, frame)

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(run, signum, frame)

    return handler


def install_sighup_handler(reactor: Any, callbacks: list[Callable[[], Any]]) -> Optional[Any]:
    """Install the SIGHUP handler (main thread only); returns the previous handler, or None where there is no SIGHUP."""
    if not hasattr(signal, "SIGHUP"):
        return None
    previous = signal.getsignal(signal.SIGHUP)
    chained = previous if previous not in (signal.SIG_DFL, signal.SIG_IGN) else None
    signal.signal(signal.SIGHUP, make_sighup_handler(reactor, callbacks, chained))
    return previous
