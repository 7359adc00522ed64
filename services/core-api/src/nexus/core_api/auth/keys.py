"""API keys: random, shown once, stored as SHA-256 (they are high-entropy, so no slow hash is needed)."""

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus.db.documents import ApiKey, now
from nexus.db.writes import update_document
from nexus.domain.ids import new_id
from nexus.domain.roles import Role

log = logging.getLogger("nexus.core_api.auth")
KEY_PREFIX = "nxk_"
BOOTSTRAP_KEY_ID = "key_bootstrap_admin"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    role: Role
    run_id: str | None = None


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(name: str, role: Role, *, created_by: str, run_id: str | None = None) -> tuple[ApiKey, str]:
    raw = generate_key()
    doc = ApiKey(
        id=new_id("key"),
        name=name,
        role=role.value,
        key_hash=hash_key(raw),
        prefix=raw[:10],
        run_id=run_id,
        created_by=created_by,
    )
    await doc.insert()
    return doc, raw


async def ensure_bootstrap_admin(configured: str | None, key_file: Path) -> str:
    """The admin key is NEXUS_ADMIN_KEY when set, otherwise generated once and kept in key_file."""
    raw = configured
    if not raw:
        if key_file.exists():
            raw = key_file.read_text().strip()
        else:
            raw = generate_key()
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_text(raw + "\n")
    digest = hash_key(raw)
    existing = await ApiKey.get(BOOTSTRAP_KEY_ID)
    if existing is None:
        await ApiKey(
            id=BOOTSTRAP_KEY_ID, name="bootstrap-admin", role=Role.ADMIN.value, key_hash=digest, prefix=raw[:10]
        ).insert()
    elif existing.key_hash != digest:
        await existing.set({ApiKey.key_hash: digest, ApiKey.prefix: raw[:10], ApiKey.revoked: False})
    return raw


class KeyCache:
    """Keys looked up by hash, cached briefly so a request does not cost a database round trip.
    A revoked key stops working within `ttl_s` (at once when revoked through this process).

    Under steady use an entry is reloaded in the background once it is `refresh_at` of its TTL
    old, so requests never wait for the database; concurrent misses on one key share a single
    load (without that, every connection missed at each expiry and queued its own reads and
    writes on the database — the p99 of every request path). `last_used_at` is written in the
    background, at most once per load.

    Unknown keys are kept apart from known ones, each bounded by `max_entries`: anyone can send
    made-up keys, and were they kept together, enough of them would empty the cache of every real
    key, so that each real request read the database again."""

    def __init__(self, ttl_s: float = 5.0, refresh_at: float = 0.6, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.refresh_after_s = ttl_s * refresh_at
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._unknown: dict[str, tuple[float, Principal | None]] = {}
        self._loading: dict[str, asyncio.Future[Principal | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loads = 0

    def forget(self) -> None:
        self._cache.clear()
        self._unknown.clear()

    async def lookup(self, raw: str) -> Principal | None:
        digest = hash_key(raw)
        hit = self._cache.get(digest) or self._unknown.get(digest)
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < self.ttl_s:
                if age >= self.refresh_after_s and digest not in self._loading:
                    self._background(self._load(digest))  # the valid entry serves meanwhile
                return hit[1]
        return await self._load(digest)

    async def _load(self, digest: str) -> Principal | None:
        pending = self._loading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._loading[digest] = fut
        started = time.monotonic()  # the entry's age counts from before the read: a revocation never outlives the TTL
        try:
            self.loads += 1
            doc = await ApiKey.find_one({"key_hash": digest})
            principal = None
            if doc and not doc.revoked:
                principal = Principal(doc.id, doc.name, Role(doc.role), doc.run_id)
                self._background(update_document(ApiKey, doc.id, {"$set": {"last_used_at": now()}}))
            kept, other = (self._cache, self._unknown) if principal else (self._unknown, self._cache)
            other.pop(digest, None)  # a key revoked (or restored) since its last load
            if len(kept) >= self.max_entries:
                kept.clear()
            kept[digest] = (started, principal)
            fut.set_result(principal)
            return principal
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here: waiters (if any) get it too; none is not an error
            raise
        finally:
            del self._loading[digest]

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("api key bookkeeping failed: %s", task.exception())
