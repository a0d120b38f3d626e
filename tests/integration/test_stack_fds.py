"""A server the local stack starts keeps none of its caller's descriptors: started under
``flock FILE …`` (a benchmark serialised by a lock, whose make starts the stack), the
lock is free again once the command ends, not held by PostgreSQL until it stops."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.registry import free_port
from tests.helpers.services import STACK, skip_or_fail

pytestmark = pytest.mark.integration


def _holders(path: Path) -> set[int]:
    """The processes with ``path`` open."""
    found = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(path):
                found.add(int(fd.parts[2]))
        except OSError:
            continue
    return found


def test_a_postgres_started_under_a_callers_lock_does_not_hold_it(tmp_path: Path) -> None:
    if shutil.which("flock") is None:
        skip_or_fail("flock (util-linux) is not installed")
    lock = tmp_path / "bench.lock"
    env = {
        **os.environ,
        "OCITAG_STACK_DIR": str(tmp_path / "stack"),
        "OCITAG_PG_PORT": str(free_port()),
    }
    started = subprocess.run(
        ["flock", str(lock), str(STACK), "pg-start"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        assert _holders(lock) == set()
        free = subprocess.run(["flock", "-n", str(lock), "true"], timeout=10, check=False)
        assert free.returncode == 0, "the lock is still held"
    finally:
        subprocess.run(
            [str(STACK), "pg-stop"], env=env, capture_output=True, timeout=120, check=False
        )
