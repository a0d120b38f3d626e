"""A command run on a terminal of its own, as a person runs it: a pseudo-terminal that is
the command's controlling terminal (its session's), so that ``interrupt()`` is a real
Ctrl-C: the terminal signals its foreground process group, whichever that is then.

Hand-written on the standard library's ``pty``: ``pexpect`` would do the same, but would
be one more dependency for one test, and this is the part of it that test needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import subprocess
import termios
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _groups_of_session(session: int) -> set[int]:
    """The process groups of the processes in ``session`` (from /proc)."""
    groups = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp session ...: comm may hold spaces, not ')'
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:
                groups.add(int(fields[2]))
    return groups


def _take_the_terminal() -> None:
    """In the child, after ``setsid``: its stdin (the pty) becomes its controlling
    terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """``command`` started on a new pseudo-terminal; everything it prints is kept."""

    def __init__(self, command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self._master, slave = pty.openpty()
        try:
            self.process = subprocess.Popen(
                list(command),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_take_the_terminal,  # noqa: PLW1509 - no threads run yet
            )
        finally:
            os.close(slave)  # the child's are the only ones left: EOF once they are gone
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # A full pty would block the command's writes: read all the time.
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every end on the command's side is closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def output(self) -> str:
        """What it printed so far, colours and carriage returns taken out."""
        text = b"".join(self._chunks).decode("utf-8", "replace")
        return _ANSI.sub("", text).replace("\r", "")

    def interrupt(self) -> None:
        """Ctrl-C, typed."""
        os.write(self._master, b"\x03")

    def wait(self, timeout: float) -> int:
        """Its exit status (negative: the signal that ended it); the output read to the end."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def close(self) -> None:
        """Ends whatever is left of it (a failed test): Ctrl-C, then SIGKILL to its
        session's process groups; then the terminal."""
        if self.process.poll() is None:
            self.interrupt()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                for group in _groups_of_session(self.process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                self.process.wait()
        self._reader.join(10)
        os.close(self._master)
