"""Password hashing with bcrypt, off the reactor thread.

bcrypt is deliberately slow (tens to hundreds of milliseconds), so hashing and
checking run in a thread pool of their own. The optional pepper (a server
secret from ``password_config.pepper``) is appended before hashing, as
Synapse does, so hashes are compatible with a Synapse database using the
same pepper.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import bcrypt
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

#: bcrypt only uses the first 72 bytes of its input. bcrypt < 5 truncated silently (so Synapse's hashes of longer
#: passwords are hashes of the first 72 bytes); bcrypt >= 5 raises instead, so truncate here, compatibly.
BCRYPT_MAX_BYTES = 72


def _normalise(password: str, pepper: str) -> bytes:
    return unicodedata.normalize("NFKC", password + pepper).encode("utf-8")[:BCRYPT_MAX_BYTES]


class PasswordHasher:
    def __init__(self, reactor: Any, rounds: int = 12, pepper: str = "", threads_max: int = 2) -> None:
        self._reactor = reactor
        self.rounds = rounds
        self._pepper = pepper
        self._pool = ThreadPool(minthreads=0, maxthreads=threads_max, name="bcrypt")
        self._started = False

    def _ensure_started(self) -> None:
        if not self._started:
            self._pool.start()
            self._started = True
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()

    def hash(self, password: str) -> defer.Deferred:
        """A Deferred firing with the bcrypt hash (str) of ``password``."""
        self._ensure_started()
        data = _normalise(password, self._pepper)
        return threads.deferToThreadPool(
            self._reactor, self._pool, lambda: bcrypt.hashpw(data, bcrypt.gensalt(self.rounds)).decode("ascii")
        )

    def check(self, password: str, stored_hash: str) -> defer.Deferred:
        """A Deferred firing with True if ``password`` matches ``stored_hash``."""
        self._ensure_started()
        data = _normalise(password, self._pepper)

        def check() -> bool:
            try:
                return bcrypt.checkpw(data, stored_hash.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                return False

        return threads.deferToThreadPool(self._reactor, self._pool, check)
