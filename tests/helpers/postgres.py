"""A private PostgreSQL that checks passwords (scram-sha-256): what the shared stack
cannot show, since it trusts local logins and so never refuses a wrong password."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.registry import free_port

USER = "postgres"


class PostgresUnavailableError(Exception):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


def server_binaries() -> Path:
    """The directory of initdb and pg_ctl (as deploy/local/stack finds it)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise PostgresUnavailableError("initdb/pg_ctl not found (install PostgreSQL's server)")


@contextmanager
def password_postgres(password: str) -> Iterator[str]:
    """A throw-away server whose ``postgres`` role logs in with ``password`` only; yields
    its URL (with that password). PostgreSQL refuses to run as root: as root the server
    runs as ``postgres``, as deploy/local/stack does."""
    binaries = server_binaries()
    owner = [] if os.geteuid() else ["runuser", "-u", USER, "--"]
    base = Path(tempfile.mkdtemp(prefix="ocitag-pg-"))
    data, secret = base / "data", base / "password"
    secret.write_text(password)
    if owner:
        shutil.chown(base, USER)
        shutil.chown(secret, USER)

    def run(*args: str) -> None:
        subprocess.run([*owner, *args], cwd="/", check=True, capture_output=True, timeout=120)

    port = free_port()
    try:
        run(
            str(binaries / "initdb"), "-D", str(data), "-U", USER, "-A", "scram-sha-256",
            f"--pwfile={secret}", "--no-sync", "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(base / "log")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", log, "-o", options, "-w", "start")
        try:
            yield f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
