from pymongo.errors import DuplicateKeyError

from nexus.core_api.errors import DomainError
from nexus.core_api.named import get_named
from nexus.core_api.repositories.schemas import RepositoryOut, RepositorySpec
from nexus.core_api.schemas import iso
from nexus.db.documents import Repository, now
from nexus.db.writes import update_document
from nexus.domain.ids import new_id


def to_out(doc: Repository) -> RepositoryOut:
    return RepositoryOut(
        id=doc.id,
        name=doc.name,
        url=doc.url,
        default_branch=doc.default_branch,
        has_credentials=bool(doc.credentials_secret),
        created_at=iso(doc.created_at),
        updated_at=iso(doc.updated_at),
    )


async def create(spec: RepositorySpec) -> Repository:
    doc = Repository(
        id=new_id("repo"),
        name=spec.name,
        url=spec.url,
        default_branch=spec.default_branch,
        credentials_secret=spec.credentials_secret,
    )
    try:
        await doc.insert()
    except DuplicateKeyError as exc:
        raise DomainError(409, f"a repository named {spec.name!r} exists", field="name") from exc
    return doc


async def get(id_or_name: str) -> Repository:
    return await get_named(Repository, id_or_name, "repository")


async def update(id_or_name: str, spec: RepositorySpec) -> tuple[Repository, bool]:
    doc = await get(id_or_name)
    if spec.name != doc.name:
        raise DomainError(422, "a repository's name cannot change", field="name")
    fields = {"url": spec.url, "default_branch": spec.default_branch, "credentials_secret": spec.credentials_secret}
    if all(getattr(doc, k) == v for k, v in fields.items()):
        return doc, False
    await update_document(Repository, doc.id, {"$set": {**fields, "updated_at": now()}})
    return await get(doc.id), True


async def delete(id_or_name: str) -> Repository:
    doc = await get(id_or_name)
    await update_document(Repository, doc.id, {"$set": {"deleted": True, "name": f"{doc.name}~deleted~{doc.id}"}})
    return doc
