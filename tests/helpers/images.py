"""Pushing, re-tagging and deleting images on a test registry with the real ``crane``,
logged in through a private Docker config dir (never the user's)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.registry import Registry, run_tool


@dataclass
class Crane:
    """``crane`` against one registry, as ``user`` if given."""

    registry: Registry
    user: str | None = None
    password: str | None = None
    config_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ocitag-crane-")))

    def __post_init__(self) -> None:
        if self.user is not None:
            assert self.password is not None
            self.run("auth", "login", self.registry.host, "-u", self.user, "-p", self.password)

    @property
    def docker_config(self) -> Path:
        """The config.json ``crane auth login`` wrote."""
        return self.config_dir / "config.json"

    def run(self, *args: str) -> str:
        done = run_tool("crane", *args, env={"DOCKER_CONFIG": str(self.config_dir)})
        return done.stdout.strip()

    def ref(self, name: str, tag: str) -> str:
        return f"{self.registry.host}/{name}:{tag}"

    def push(self, name: str, tag: str, label: str = "") -> str:
        """Push a small image (distinct per ``label``) as ``name:tag``; its digest."""
        ref = self.ref(name, tag)
        self.run("append", "--new_layer", "/dev/null", "-t", ref)
        if label:
            self.run("mutate", ref, "--label", f"ocitag.test={label}", "-t", ref)
        return self.digest(name, tag)

    def tag(self, name: str, tag: str, new_tag: str) -> None:
        """Point ``new_tag`` at what ``tag`` points at (a manifest PUT, no blobs)."""
        self.run("tag", self.ref(name, tag), new_tag)

    def copy(self, src: tuple[str, str], dst: tuple[str, str]) -> None:
        self.run("copy", self.ref(*src), self.ref(*dst))

    def digest(self, name: str, tag: str) -> str:
        return self.run("digest", self.ref(name, tag))

    def delete_tag(self, name: str, tag: str) -> None:
        """Delete the tag only (distribution v3 deletes a tag by reference)."""
        self.run("delete", self.ref(name, tag))

    def index(self, name: str, tag: str, *members: tuple[str, str]) -> str:
        """An OCI image index of ``members`` as ``name:tag``; its digest."""
        args = [arg for member in members for arg in ("-m", self.ref(*member))]
        self.run("index", "append", *args, "-t", self.ref(name, tag))
        return self.digest(name, tag)


@dataclass
class Oras:
    """``oras`` against one registry (plain HTTP), as ``user``: OCI artifacts that are
    not images (an ``artifactType``, a file as the layer)."""

    registry: Registry
    user: str
    password: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ocitag-oras-")))

    def run(self, *args: str) -> str:
        auth = ["--plain-http", "-u", self.user, "-p", self.password]
        config = ["--registry-config", str(self.workdir / "config.json")]
        done = run_tool("oras", *args, *auth, *config)
        return done.stdout.strip()

    def push(self, name: str, tag: str, content: str, artifact_type: str) -> str:
        """Push ``content`` as a one-file artifact ``name:tag``; its digest."""
        (self.workdir / "file.txt").write_text(content, encoding="utf-8")
        ref = f"{self.registry.host}/{name}:{tag}"
        self.run(
            "push",
            "--artifact-type",
            artifact_type,
            "--disable-path-validation",
            ref,
            str(self.workdir / "file.txt"),
        )
        return self.run("resolve", ref)

    def tag(self, name: str, tag: str, *new_tags: str) -> None:
        self.run("tag", f"{self.registry.host}/{name}:{tag}", *new_tags)
