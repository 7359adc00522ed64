"""Projecting the internal board onto an external one. Every sync reads the task as it is now and
makes the item match, so redelivered, reordered or bunched-up changes end in the same state, and a
change that another already carried costs no call. An item is created once per task: before
creating, the provider is asked for an item carrying the task id (a crash between the provider's
create and the link write leaves exactly such an item)."""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from nexus.board_sync.links import BoardLink, LinkStore
from nexus.board_sync.metrics import DRIFT_REPAIRED, EXTERNAL_CHANGES, SYNC_LAG
from nexus.board_sync.providers.base import (
    AuthFailed,
    BoardProvider,
    Card,
    ExternalItem,
    Fields,
    NotFound,
    ProviderError,
    fit_description,
    fit_title,
    group_of,
)
from nexus.board_sync.resolver import INTERNAL, ProviderResolver
from nexus.db.documents import Repository, Run, Task
from nexus.domain.json_types import JsonObject
from nexus.events.payloads import BoardExternalChanged, CancelTask

log = logging.getLogger("nexus.board_sync")

RUN_FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
AUTHORITATIVE = "The internal board is authoritative: this change was reverted. Change the task in Nexus instead."


class _TaskLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def commit_url(repo_url: str, sha: str) -> str:
    if repo_url.startswith(("http://", "https://")):
        return f"{repo_url.removesuffix('.git')}/commit/{sha}"
    return f"{repo_url}@{sha}"


class Syncer:
    def __init__(
        self,
        links: LinkStore,
        resolver: ProviderResolver,
        *,
        nexus_url: str,
        cancel: Callable[[CancelTask], Awaitable[None]],
        crash_after_create_file: str | None = None,
    ) -> None:
        self.links = links
        self.resolver = resolver
        self.nexus_url = nexus_url.rstrip("/")
        self.cancel = cancel
        self.crash_file = Path(crash_after_create_file) if crash_after_create_file else None
        self._locks: dict[str, _TaskLock] = {}

    @contextlib.asynccontextmanager
    async def _lock(self, task_id: str) -> AsyncIterator[None]:
        """One sync of a task at a time; the lock is kept only while someone holds or waits for it
        (one per task ever synced would grow for as long as the process lives)."""
        entry = self._locks.setdefault(task_id, _TaskLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[task_id]

    async def _provider(self, task: Task, link: BoardLink | None) -> tuple[BoardProvider, str]:
        scope = link.scope if link else await self.resolver.scope_of(task.repository_id)
        return await self.resolver.for_scope(scope), scope

    @staticmethod
    def shown(task: Task) -> tuple[str, str]:
        """The title and description the item shows for the task: what the external boards accept."""
        return fit_title(task.title), fit_description(task.description)

    @classmethod
    def card(cls, task: Task) -> Card:
        title, description = cls.shown(task)
        return Card(task_id=task.id, title=title, description=description, status=task.status)

    async def sync_task(self, task_id: str, *, changed_at: float | None = None) -> int:
        """Make the task's item match the task; returns the number of provider writes."""
        async with self._lock(task_id):
            task = await Task.get(task_id)
            if task is None or task.is_meta:
                return 0
            link = await self.links.get(task_id)
            provider, scope = await self._provider(task, link)
            if provider is INTERNAL:
                return 0
            writes = await self._sync(provider, scope, link, task)
            if writes and changed_at is not None:
                SYNC_LAG.labels(provider.name).observe(max(0.0, time.time() - changed_at))
            return writes

    async def _sync(self, provider: BoardProvider, scope: str, link: BoardLink | None, task: Task) -> int:
        """Under the task's lock: create the item if there is none, then make it match the task. An
        item someone deleted on the external board is made again (the internal board is authoritative)."""
        writes = 0
        if link is not None:
            try:
                return await self._update(provider, link, task)
            except NotFound:
                await self._forget(provider, link)
        link, writes = await self._create_once(provider, scope, task)
        return writes + await self._update(provider, link, task)

    async def _update(self, provider: BoardProvider, link: BoardLink, task: Task) -> int:
        writes = await self._push(provider, link, task)
        writes += await self._comment_run(provider, link, task)
        await self.links.save(link)
        return writes

    async def _create_once(self, provider: BoardProvider, scope: str, task: Task) -> tuple[BoardLink, int]:
        item = await provider.find_by_external_id(task.id)
        writes = 0
        if item is None:
            item = await provider.create_item(self.card(task))
            writes = 1
            self._maybe_crash()
        else:
            log.info("task %s already has %s item %s: linking it", task.id, provider.name, item.id)
        link = BoardLink(
            task_id=task.id,
            provider=provider.name,
            scope=scope,
            item_id=item.id,
            item_key=item.key,
            group=item.group,
            title=item.title,
            description=item.description,
        )
        await self.links.save(link)
        return link, writes

    def _maybe_crash(self) -> None:
        if self.crash_file is not None and self.crash_file.exists():
            self.crash_file.unlink()
            log.error("fault injection: dying between the provider's create and the link write")
            os._exit(70)

    async def _push(self, provider: BoardProvider, link: BoardLink, task: Task) -> int:
        writes = 0
        group = group_of(task.status)
        if link.group != group:
            await provider.update_status(link.item_id, group)
            link.group = group
            writes += 1
        title, description = self.shown(task)
        if (link.title, link.description) != (title, description):
            await provider.update_fields(link.item_id, Fields(title=title, description=description))
            link.title, link.description = title, description
            writes += 1
        return writes

    async def _comment_run(self, provider: BoardProvider, link: BoardLink, task: Task) -> int:
        """Once per finished run: a comment with its summary and links to the run and the commit.
        Each step is remembered as soon as it is done, so a change held halfway (an outage between
        the comment and a link) goes on where it stopped instead of commenting twice."""
        run = await Run.get(task.current_run_id) if task.current_run_id else None
        if run is None or run.status not in RUN_FINAL:
            return 0
        run_url = f"{self.nexus_url}/v1/runs/{run.id}"
        commit = ""
        if run.commit_sha:
            repo = await Repository.get(task.repository_id) if task.repository_id else None
            commit = commit_url(repo.url, run.commit_sha) if repo else run.commit_sha
        writes = 0
        if run.id not in link.commented_runs:
            lines = [f"Run {run.id} {run.status}.", run.summary or run.reason or "", f"Run: {run_url}"]
            if run.commit_sha:
                lines.append(f"Commit {run.commit_sha[:12]} on {run.branch}: {commit}")
            # Once, even across a crash after the provider took the comment and before the link recorded it.
            heading = f"Run {run.id} "
            if not any(c.text.startswith(heading) for c in await provider.list_comments(link.item_id)):
                await provider.add_comment(link.item_id, "\n".join(line for line in lines if line))
            link.commented_runs.append(run.id)
            link.linked = link.linked or []
            await self.links.save(link)
            writes = 1
        if link.linked is None:
            return writes
        wanted = [(f"Nexus run {run.id}", run_url)]
        if commit.startswith(("http://", "https://")):
            wanted.append((f"commit {run.commit_sha[:12]}", commit))
        for title, url in wanted:
            if url not in link.linked:
                await provider.link(link.item_id, title, url)
                link.linked.append(url)
                await self.links.save(link)
        return writes

    # ---------------------------------------------------------------- coming back
    async def on_external(self, change: BoardExternalChanged) -> str:
        """An edit made on the external board: a cancel cancels the task; `/nexus` comments are
        reserved; board-sync's own writes (echoes) are ignored; anything else is reverted."""
        link = await self.links.by_item(change.provider, change.item_id)
        outcome = await self._external(change, link)
        EXTERNAL_CHANGES.labels(change.provider, outcome).inc()
        log.info("external %s %s on %s: %s", change.provider, change.event, change.item_id, outcome)
        return outcome

    async def _external(self, change: BoardExternalChanged, link: BoardLink | None) -> str:
        if link is None:
            return "unlinked"
        if "comment" in change.event:
            return "reserved" if change.comment.lstrip().startswith("/nexus") else "comment"
        async with self._lock(link.task_id):
            task = await Task.get(link.task_id)
            if task is None:
                return "unlinked"
            provider = await self.resolver.for_scope(link.scope)
            try:
                item = await provider.get_item(link.item_id)
            except NotFound:
                await self._remake(provider, link, task)
                return "recreated"
            if item.group == "cancelled" and link.group != "cancelled":
                await self.cancel(
                    CancelTask(
                        task_id=task.id,
                        provider=change.provider,
                        actor=change.actor,
                        reason=f"cancelled on {change.provider}",
                    )
                )
                return "cancelled"
            if self._matches(item, link):
                return "echo"
            await self._repair(provider, link, task, item)
            # Named after the delivery: a comment is known by its first line, and each revert has its own.
            await provider.add_comment(link.item_id, f"{AUTHORITATIVE} (webhook delivery {change.delivery_id})")
            await self.links.save(link)
            return "reverted"

    @staticmethod
    def _matches(item: ExternalItem, link: BoardLink) -> bool:
        return (item.group, item.title, item.description) == (link.group, link.title, link.description)

    async def _repair(self, provider: BoardProvider, link: BoardLink, task: Task, item: ExternalItem) -> None:
        group = group_of(task.status)
        if item.group != group:
            await provider.update_status(link.item_id, group)
        title, description = self.shown(task)
        if (item.title, item.description) != (title, description):
            await provider.update_fields(link.item_id, Fields(title=title, description=description))
        link.group, link.title, link.description = group, title, description

    async def _remake(self, provider: BoardProvider, link: BoardLink, task: Task) -> None:
        """The linked item is gone (deleted on the external board): the task gets a new one."""
        await self._forget(provider, link)
        await self._sync(provider, link.scope, None, task)

    async def _forget(self, provider: BoardProvider, link: BoardLink) -> None:
        log.warning("%s item %s of task %s is gone: making it again", provider.name, link.item_id, link.task_id)
        await self.links.delete(link.task_id)

    async def reconcile(self) -> int:
        """Compare every linked item with the internal board and repair what drifted. An item that
        is gone is made again; one the provider refuses is reported and the others still checked;
        an outage or a refused credential ends the pass (the next one tries again)."""
        repaired = 0
        for link in await self.links.all():
            try:
                repaired += await self._reconcile_one(link)
            except (AuthFailed, NotFound):
                raise
            except ProviderError as exc:
                log.warning("drift check of task %s skipped: %s", link.task_id, exc)
        if repaired:
            log.info("drift check repaired %d item(s)", repaired)
        return repaired

    async def _reconcile_one(self, link: BoardLink) -> int:
        async with self._lock(link.task_id):
            task = await Task.get(link.task_id)
            provider = await self.resolver.for_scope(link.scope)
            if task is None or provider is INTERNAL:
                return 0
            try:
                item = await provider.get_item(link.item_id)
            except NotFound:
                await self._remake(provider, link, task)
                DRIFT_REPAIRED.labels(provider.name).inc()
                return 1
            title, description = self.shown(task)
            wanted = BoardLink(
                **{**_fields(link), "group": group_of(task.status), "title": title, "description": description}
            )
            if self._matches(item, wanted):
                return 0
            if item.group == "cancelled" and link.group != "cancelled":
                return 0  # a cancel on the board is a command, handled when its webhook arrives
            await self._repair(provider, link, task, item)
            await self.links.save(link)
            DRIFT_REPAIRED.labels(provider.name).inc()
            return 1


def _fields(link: BoardLink) -> JsonObject:
    return {f: getattr(link, f) for f in link.__struct_fields__}
