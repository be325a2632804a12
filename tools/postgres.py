"""A throw-away PostgreSQL server for tests and benchmarks: ``initdb`` and ``pg_ctl`` from
Debian's ``postgresql`` package into a temporary folder, on a free loopback port, run as
an unprivileged user (the server refuses to run as root), removed afterwards.

    with temporary_server() as server:
        url = create_database(server, "seglab")   # postgresql://seglab@127.0.0.1:PORT/seglab
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    """No PostgreSQL server programs here, or no unprivileged user to run them as."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str


def server_programs() -> Path | None:
    """Debian keeps the server's programs in /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def temporary_server() -> Iterator[Server]:
    bindir = server_programs()
    if bindir is None:
        raise Unavailable("PostgreSQL server programs (initdb, pg_ctl) not found: `make test` "
                          "installs Debian's postgresql package")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                owner = pwd.getpwnam(name)
                break
        if owner is None or shutil.which("runuser") is None:
            raise Unavailable("running as root with no unprivileged user to run PostgreSQL as")
        prefix = ["runuser", "-u", owner.pw_name, "--"]
    root = Path(tempfile.mkdtemp(prefix="seglab-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = root / "data", root / "server.log"

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True,
                       timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "seglab", "--auth=trust",
            "-E", "UTF8", "--no-sync")
        # Durability settings off: a test server's data is thrown away anyway.
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start")
        yield Server("127.0.0.1", port, "seglab")
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: Server, name: str) -> str:
    """A fresh, empty database (an older one of that name is dropped), as a ``--db`` URL."""
    import psycopg

    with psycopg.connect(host=server.host, port=server.port, user=server.user,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{server.user}@{server.host}:{server.port}/{name}"
