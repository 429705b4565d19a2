"""How the test suite gets a PostgreSQL server.

In order of preference:

1. ``MATRIXHS_TEST_POSTGRES_DSN`` is set (a libpq ``key=value`` DSN or a
   ``postgresql://`` URL) -> use that server. The DSN's user must be allowed to
   ``CREATE DATABASE``; its own database is only used for that maintenance.
2. The PostgreSQL server binaries (``initdb``, ``pg_ctl``) are on ``PATH`` or
   under ``/usr/lib/postgresql/*/bin`` -> start a throwaway cluster once per
   test *process* (so ``trial -j N`` gets one per worker): a temp directory,
   trust authentication, a Unix socket in that directory (no TCP listener, so
   workers can never collide), fsync off. When running as root the cluster is
   run as the ``postgres`` OS user, because ``initdb`` refuses to run as root.
3. Otherwise PostgreSQL tests are skipped, with a message saying what would
   enable them (:func:`skip_reason`).

Either way every test (or test class) gets a fresh, uniquely named database
from :func:`create_test_database`, which the caller drops again with
:func:`drop_test_database`.

The throwaway cluster is stopped at process exit by ``atexit`` and, as a
safety net for workers that die without running ``atexit`` handlers, by a tiny
reaper process that waits for our end of a pipe to close.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from typing import Any

import psycopg2
import psycopg2.extensions

DSN_ENV_VAR = "MATRIXHS_TEST_POSTGRES_DSN"

_counter = itertools.count()

# Code run by the reaper: wait until the parent closes the pipe (or dies),
# then stop the cluster and remove its directory.
_REAPER = r"""
import os, shutil, subprocess, sys
stop_cmd = sys.argv[2:]
tmpdir = sys.argv[1]
try:
    sys.stdin.buffer.read()
finally:
    subprocess.run(stop_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(tmpdir, ignore_errors=True)
"""


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be used; the message says how to get one."""


class _Cluster:
    """A throwaway PostgreSQL cluster owned by this process."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.tmpdir = tempfile.mkdtemp(prefix="matrixhs-pg-", dir=_scratch_dir())
        self.datadir = os.path.join(self.tmpdir, "data")
        self.logfile = os.path.join(self.tmpdir, "postgres.log")
        self.port = _free_port()
        self._run_as: list[str] = []
        self._reaper: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                raise PostgresUnavailable(
                    "running as root, and initdb refuses to run as root; create a 'postgres' OS user "
                    "(useradd --system postgres) or set " + DSN_ENV_VAR
                ) from None
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    def _cmd(self, name: str, *args: str) -> list[str]:
        return [*self._run_as, os.path.join(self.bindir, name), *args]

    def start(self) -> None:
        try:
            subprocess.run(
                self._cmd(
                    "initdb", "-D", self.datadir, "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--locale=C", "--no-sync",
                ),
                check=True, capture_output=True,
            )  # fmt: skip
            options = (
                f"-p {self.port} -k {self.tmpdir} -c listen_addresses='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
                "-c max_connections=200"
            )
            subprocess.run(
                self._cmd("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-o", options, "-w", "-t", "60", "start"),
                check=True, capture_output=True,
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            log = ""
            if os.path.exists(self.logfile):
                with open(self.logfile, errors="replace") as f:
                    log = f.read()[-2000:]
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise RuntimeError(
                f"could not start a throwaway PostgreSQL cluster with {e.cmd}: "
                f"{e.stderr.decode(errors='replace')}\n{log}"
            ) from e
        # The reaper stops the cluster when our end of its stdin closes, which
        # happens at exit however we exit (even SIGKILL).
        stop = self._cmd("pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop")
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, self.tmpdir, *stop],
            stdin=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        atexit.register(self.stop)

    def stop(self) -> None:
        if self._reaper is not None:
            reaper, self._reaper = self._reaper, None
            assert reaper.stdin is not None
            reaper.stdin.close()
            try:
                reaper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass

    def admin_dsn(self) -> str:
        return f"host={self.tmpdir} port={self.port} user=postgres dbname=postgres"


def _scratch_dir() -> str | None:
    """Where to put the throwaway cluster: RAM (/dev/shm) when there is room.

    Creating a database copies its template's files; on tmpfs that is several
    times faster than on disk, and every PostgreSQL test creates one.
    """
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    if st.f_bavail * st.f_frsize >= 1 << 30 and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_bindir() -> str | None:
    initdb = shutil.which("initdb")
    if initdb and os.path.exists(os.path.join(os.path.dirname(initdb), "pg_ctl")):
        return os.path.dirname(initdb)

    def version(path: str) -> tuple[int, ...]:
        v = path.split(os.sep)[-3]
        return tuple(int(p) for p in v.split(".") if p.isdigit())

    candidates = [
        os.path.dirname(p)
        for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if os.path.exists(os.path.join(os.path.dirname(p), "pg_ctl"))
    ]
    return max(candidates, key=version) if candidates else None


_state: dict[str, Any] = {}


def _admin_dsn() -> str:
    """The maintenance DSN, starting the throwaway cluster on first use."""
    if "dsn" in _state:
        return str(_state["dsn"])
    if "error" in _state:
        raise _state["error"]
    try:
        dsn = os.environ.get(DSN_ENV_VAR, "").strip()
        if not dsn:
            bindir = _find_bindir()
            if bindir is None:
                raise PostgresUnavailable(
                    f"no PostgreSQL available: set {DSN_ENV_VAR} to a libpq DSN of a server where the user may "
                    "CREATE DATABASE (e.g. 'host=localhost user=postgres password=...'), or install the "
                    "PostgreSQL server binaries (initdb and pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
                )
            cluster = _Cluster(bindir)
            cluster.start()
            _state["cluster"] = cluster
            dsn = cluster.admin_dsn()
    except Exception as e:
        _state["error"] = e
        raise
    _state["dsn"] = dsn
    return dsn


def skip_reason() -> str | None:
    """Why PostgreSQL tests must be skipped, or None if a server is usable.

    Only a missing server is a reason to skip. A server that should work but
    fails to start raises, so a broken setup is not silently ignored.
    """
    try:
        _admin_dsn()
    except PostgresUnavailable as e:
        return str(e)
    return None


def _admin_connection() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(_admin_dsn())
    conn.autocommit = True
    return conn


def create_test_database() -> dict[str, Any]:
    """Create a fresh, uniquely named database and return its ``database.args``.

    The result is what a homeserver.yaml ``database: {name: psycopg2, args:
    ...}`` section would contain (without ``cp_min``/``cp_max``).
    """
    name = f"matrixhs_test_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:8]}"
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    finally:
        conn.close()
    params = psycopg2.extensions.parse_dsn(_admin_dsn())
    params.pop("dbname", None)
    params["database"] = name
    return params


def drop_test_database(name: str) -> None:
    """Drop a database made by :func:`create_test_database`, even if still in use."""
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except psycopg2.errors.SyntaxError:  # server older than 13
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        conn.close()
