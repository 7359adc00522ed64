"""API keys: random, shown once, stored as SHA-256 (they are high-entropy, so no slow hash is needed)."""

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from nexus.db.documents import ApiKey, now
from nexus.domain.ids import new_id
from nexus.domain.roles import Role

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
        id=new_id("key"), name=name, role=role.value, key_hash=hash_key(raw), prefix=raw[:10], run_id=run_id, created_by=created_by
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
        await ApiKey(id=BOOTSTRAP_KEY_ID, name="bootstrap-admin", role=Role.ADMIN.value, key_hash=digest, prefix=raw[:10]).insert()
    elif existing.key_hash != digest:
        await existing.set({ApiKey.key_hash: digest, ApiKey.prefix: raw[:10], ApiKey.revoked: False})
    return raw


class KeyCache:
    """Keys looked up by hash, cached briefly so a read does not cost a database round trip.
    A revoked key stops working within `ttl_s`."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def lookup(self, raw: str) -> Principal | None:
        digest = hash_key(raw)
        hit = self._cache.get(digest)
        t = time.monotonic()
        if hit and t - hit[0] < self.ttl_s:
            return hit[1]
        doc = await ApiKey.find_one({"key_hash": digest})
        principal = None
        if doc and not doc.revoked:
            principal = Principal(doc.id, doc.name, Role(doc.role), doc.run_id)
            await ApiKey.get_pymongo_collection().update_one({"_id": doc.id}, {"$set": {"last_used_at": now()}})
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (t, principal)
        return principal
