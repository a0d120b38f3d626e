"""A real OCI registry for integration tests: the CNCF Distribution registry v3, built by
``deploy/local/stack tools --test`` (with crane and oras), run as a child process on a free
loopback port with the configuration a test asks for (notifications to ingest, htpasswd
auth, deletes enabled). Push clients are the real ones: ``crane`` and ``oras``.

Locally, a machine without Go skips the tests that need it; under ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class ToolsUnavailableError(Exception):
    """The registry or its clients could not be built; the message says why."""


_tools_dir: Path | None = None


def tools_dir() -> Path:
    """Where ``registry``, ``crane`` and ``oras`` are (built once per machine; kcat installed
    too as root)."""
    global _tools_dir  # noqa: PLW0603 - one build per test session
    if _tools_dir is None:
        done = subprocess.run(
            [str(STACK), "tools", "--clients"],
            capture_output=True,
            text=True,
            check=False,
            timeout=1200,
        )
        if done.returncode != 0:
            raise ToolsUnavailableError(
                f"deploy/local/stack tools --clients failed:\n{done.stderr[-3000:]}"
            )
        _tools_dir = Path(done.stdout.strip().splitlines()[-1])
    return _tools_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd entry, bcrypt (the only scheme the registry accepts)."""
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


@dataclass(frozen=True)
class Endpoint:
    """A notifications endpoint: where the registry posts its events, and how."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: str = "1s"
    threshold: int = 3
    backoff: str = "500ms"
    ignored_actions: Sequence[str] = ("pull",)


@dataclass
class Registry:
    """One registry process. ``start()`` waits until ``/v2/`` answers."""

    endpoints: Sequence[Endpoint] = ()
    users: Mapping[str, str] = field(default_factory=dict)  # user → password (htpasswd)
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ocitag-registry-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The registry host as repositories name it: ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": "ocitag-test"},
        }
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text(
                "".join(htpasswd_line(u, p) + "\n" for u, p in self.users.items()),
                encoding="utf-8",
            )
            config["auth"] = {"htpasswd": {"realm": "ocitag-test", "path": str(htpasswd)}}
        if self.endpoints:
            config["notifications"] = {
                "events": {"includereferences": True},
                "endpoints": [
                    {
                        "name": f"endpoint-{index}",
                        "url": endpoint.url,
                        "headers": {k: [v] for k, v in endpoint.headers.items()},
                        "timeout": endpoint.timeout,
                        "threshold": endpoint.threshold,
                        "backoff": endpoint.backoff,
                        "ignore": {"actions": list(endpoint.ignored_actions)},
                    }
                    for index, endpoint in enumerate(self.endpoints)
                ],
            }
        return config

    def start(self) -> Registry:
        binary = tools_dir() / "registry"
        path = self.root / "config.yml"
        path.write_text(yaml.safe_dump(self.config()), encoding="utf-8")
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(binary), "serve", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"registry exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError as exc:  # 401 with auth on: it answers
                if exc.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"registry did not answer on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_tool(
    name: str, *args: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``crane`` or ``oras`` (from ``tools_dir()``) with a private docker config, so
    a test's logins never touch the user's."""
    binary = tools_dir() / name
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, check=check, env=merged, timeout=120
    )
