"""API keys as admins manage them: create (shown once), list, revoke, and per-run runner tokens."""

from nexus.core_api.auth.keys import BOOTSTRAP_KEY_ID, KeyCache, create_key
from nexus.core_api.errors import DomainError, not_found
from nexus.db.documents import ApiKey, Run
from nexus.db.writes import update_document
from nexus.domain.roles import Role


async def get(key_id: str) -> ApiKey:
    doc = await ApiKey.get(key_id)
    if doc is None:
        raise not_found("api key", key_id)
    return doc


async def create(name: str, role: str, *, created_by: str) -> tuple[ApiKey, str]:
    return await create_key(name, Role(role), created_by=created_by)


async def mint_runner_token(run_id: str, *, created_by: str) -> tuple[ApiKey, str]:
    """A key that may read and act on one run only: what a runner needs, nothing more."""
    run = await Run.get(run_id)
    if run is None:
        raise not_found("run", run_id)
    return await create_key(f"runner-{run.id}", Role.RUNNER, created_by=created_by, run_id=run.id)


async def revoke(key_id: str, cache: KeyCache) -> ApiKey:
    doc = await get(key_id)
    if doc.id == BOOTSTRAP_KEY_ID:
        # It is re-enabled from NEXUS_ADMIN_KEY at the next start; rotate that instead.
        raise DomainError(409, "the bootstrap admin key is managed by NEXUS_ADMIN_KEY", field="key_id")
    if not doc.revoked:
        await update_document(ApiKey, doc.id, {"$set": {"revoked": True}})
    cache.forget()  # revocation takes effect on the next request in this process
    return doc
