"""One scan of a registry host: list, resolve, read the live records, diff.

The I/O sits behind three small Protocols (the registry, the live records, progress),
so that tests can drive the scan against fakes and the real thing alike. Observation
instants are taken once a request slot is free, just before the request is sent (see
diff.py for why that instant and no later one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from worker.identifiers import InvalidIdentifierError, normalize_digest, normalize_repository
from worker.identifiers import validate_tag as _validate_tag
from worker.oci import RegistryError, RepositoryNotFoundError
from worker.reconcile.diff import LiveRecord, Observation, RepositoryDiff, diff_repository

log = structlog.get_logger("worker.reconcile")


class RegistryReader(Protocol):
    """What the scan reads from the registry (worker.oci.RegistryClient)."""

    async def catalog(self, host: str) -> list[str]: ...

    async def list_tags(self, repository: str) -> list[str]: ...

    async def resolve_digest(self, repository: str, tag: str) -> str | None: ...


class LiveRecords(Protocol):
    """The live records of the store (worker.reconcile.store.PostgresLiveRecords)."""

    async def repositories(self, host: str) -> list[str]: ...

    async def live(self, repository: str) -> dict[str, LiveRecord]: ...


class Progress(Protocol):
    """Told how many tags there are as listings arrive, and as each is resolved."""

    def listed(self, tags: int) -> None: ...

    def resolved(self, tags: int = 1) -> None: ...


class _NoProgress:
    def listed(self, tags: int) -> None:
        pass

    def resolved(self, tags: int = 1) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RepositoryFailure:
    """A repository the scan could not read; its records are left as they are."""

    repository: str
    error: str


@dataclass
class ScanResult:
    repositories: int = 0
    tags: int = 0
    skipped: int = 0  # tags or digests the registry gave that break the Identifiers rules
    diffs: list[RepositoryDiff] = field(default_factory=list)
    failures: list[RepositoryFailure] = field(default_factory=list)


def repository_names(host: str, names: Iterable[str]) -> list[str]:
    """``--repository`` values (paths in the registry, or with the host) as normalised
    repositories of ``host``. Raises InvalidIdentifierError naming the bad one."""
    found: list[str] = []
    for name in names:
        path = name.removeprefix(f"{host}/")
        try:
            repository = normalize_repository(f"{host}/{path}")
        except InvalidIdentifierError as exc:
            raise InvalidIdentifierError(f"repository '{name}': {exc}") from None
        found.append(repository)
    return list(dict.fromkeys(found))


Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scanner:
    """Scans repositories concurrently; at most ``concurrency`` registry requests wait
    on the registry at once (the client's own bound is the same)."""

    def __init__(
        self,
        registry: RegistryReader,
        records: LiveRecords,
        *,
        concurrency: int,
        progress: Progress | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._registry = registry
        self._records = records
        self._slots = asyncio.Semaphore(concurrency)
        self._progress = progress or _NoProgress()
        self._clock = clock

    async def repositories(self, host: str, named: list[str]) -> list[str]:
        """The named repositories, else the catalogue's plus every repository of the
        host that has live records (a repository deleted whole is not in the catalogue)."""
        if named:
            return named
        async with self._slots:
            listed = await self._registry.catalog(host)
        found: list[str] = []
        for name in listed:
            try:
                found.append(normalize_repository(name))
            except InvalidIdentifierError:
                log.warning("repository_skipped", repository=name, reason="invalid name")
        found.extend(await self._records.repositories(host))
        return sorted(set(found))

    async def scan(
        self,
        repositories: list[str],
        on_diff: Callable[[RepositoryDiff], Awaitable[None]],
    ) -> ScanResult:
        """Scan each repository and hand its diff to ``on_diff`` as soon as it is ready."""
        result = ScanResult()

        async def one(repository: str) -> None:
            scanned = None
            try:
                scanned = await self._scan_repository(repository)
            except* RegistryError as group:
                error = str(group.exceptions[0])
                log.warning("repository_failed", repository=repository, error=error)
                result.failures.append(RepositoryFailure(repository, error))
            if scanned is None:
                return
            repo_diff, tags, skipped = scanned
            result.repositories += 1
            result.tags += tags
            result.skipped += skipped
            result.diffs.append(repo_diff)
            await on_diff(repo_diff)

        try:
            async with asyncio.TaskGroup() as group:  # a publish failure stops the scan
                for repository in repositories:
                    group.create_task(one(repository))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        result.diffs.sort(key=lambda d: d.repository)
        return result

    async def _scan_repository(self, repository: str) -> tuple[RepositoryDiff, int, int]:
        async with self._slots:
            listed_at = self._clock()
            try:
                tags = await self._registry.list_tags(repository)
            except RepositoryNotFoundError:
                tags = []  # the registry says the repository is gone: so are its tags
        valid = [t for t in dict.fromkeys(tags) if _is_tag(t)]
        skipped = {t for t in tags if not _is_tag(t)}
        for tag in sorted(skipped):
            log.warning("tag_skipped", repository=repository, tag=tag[:200], reason="invalid tag")
        self._progress.listed(len(valid))
        async with asyncio.TaskGroup() as group:  # one failure cancels the rest
            tasks = [group.create_task(self._observe(repository, t)) for t in valid]
        observed: dict[str, Observation] = {}
        for tag, task in zip(valid, tasks, strict=True):
            observation = task.result()
            if observation is None:
                skipped.add(tag)
            else:
                observed[tag] = observation
        # read after observing: a record changed meanwhile is then seen as newer
        live = await self._records.live(repository)
        live = {tag: record for tag, record in live.items() if tag not in skipped}
        return diff_repository(repository, observed, live, listed_at), len(tags), len(skipped)

    async def _observe(self, repository: str, tag: str) -> Observation | None:
        async with self._slots:
            at = self._clock()
            digest = await self._registry.resolve_digest(repository, tag)
        self._progress.resolved()
        if digest is None:
            return Observation(None, at)
        try:
            return Observation(normalize_digest(digest), at)
        except InvalidIdentifierError:
            log.warning("tag_skipped", repository=repository, tag=tag, reason="invalid digest")
            return None


def _is_tag(tag: str) -> bool:
    try:
        _validate_tag(tag)
    except InvalidIdentifierError:
        return False
    return True
