"""Skills are versioned like agents: every content change is a new version; old ones stay readable."""

from pymongo.errors import DuplicateKeyError

from nexus.core_api.errors import DomainError, changed_concurrently, not_found, one_writer
from nexus.core_api.named import get_named
from nexus.core_api.schemas import iso
from nexus.core_api.skills.schemas import SkillOut, SkillSpec
from nexus.db.documents import Skill, SkillRevision, now
from nexus.db.writes import update_document
from nexus.domain.ids import new_id


def to_out(doc: Skill | SkillRevision) -> SkillOut:
    updated = getattr(doc, "updated_at", doc.created_at)
    sid = doc.skill_id if isinstance(doc, SkillRevision) else doc.id
    return SkillOut(
        id=sid,
        name=doc.name,
        version=doc.version,
        description=doc.description,
        content=doc.content,
        created_at=iso(doc.created_at),
        updated_at=iso(updated),
    )


def _rev_id(skill_id: str, version: int) -> str:
    return f"{skill_id}@{version:06d}"


async def create(spec: SkillSpec) -> Skill:
    if await Skill.find_one({"name": spec.name}):
        raise DomainError(409, f"a skill named {spec.name!r} exists", field="name")
    doc = Skill(id=new_id("skl"), name=spec.name, description=spec.description, content=spec.content)
    try:
        await doc.insert()
    except DuplicateKeyError as exc:
        raise DomainError(409, f"a skill named {spec.name!r} exists", field="name") from exc
    await SkillRevision(
        id=_rev_id(doc.id, 1),
        skill_id=doc.id,
        name=doc.name,
        version=1,
        description=doc.description,
        content=doc.content,
    ).insert()
    return doc


async def get(id_or_name: str) -> Skill:
    return await get_named(Skill, id_or_name, "skill")


async def update(id_or_name: str, spec: SkillSpec) -> tuple[Skill, bool]:
    doc = await get(id_or_name)
    if spec.name != doc.name:
        raise DomainError(422, "a skill's name cannot change", field="name")
    if spec.content == doc.content and spec.description == doc.description:
        return doc, False
    version = doc.version + 1
    with one_writer("skill", "version"):
        await SkillRevision(
            id=_rev_id(doc.id, version),
            skill_id=doc.id,
            name=doc.name,
            version=version,
            description=spec.description,
            content=spec.content,
        ).insert()
    res = await update_document(
        Skill,
        doc.id,
        {"$set": {"version": version, "content": spec.content, "description": spec.description, "updated_at": now()}},
        {"version": doc.version},
    )
    if res.modified_count != 1:
        raise changed_concurrently("skill", "version")
    return await get(doc.id), True


async def version(id_or_name: str, number: int) -> SkillRevision:
    doc = await get(id_or_name)
    rev = await SkillRevision.get(_rev_id(doc.id, number))
    if rev is None:
        raise not_found("skill version", f"{doc.name}@{number}")
    return rev


async def resolve(refs: list[str]) -> list[SkillRevision]:
    """`name` → the latest version, `name@3` → version 3. An unknown skill is an error, not a skip."""
    out = []
    for ref in refs:
        name, _, ver = ref.partition("@")
        skill = await Skill.find_one({"name": name, "deleted": False})
        if skill is None:
            raise DomainError(422, f"skill {name!r} does not exist", field="skills")
        rev = await SkillRevision.get(_rev_id(skill.id, int(ver) if ver else skill.version))
        if rev is None:
            raise DomainError(422, f"skill {ref!r} has no such version", field="skills")
        out.append(rev)
    return out


async def delete(id_or_name: str) -> Skill:
    doc = await get(id_or_name)
    await update_document(Skill, doc.id, {"$set": {"deleted": True, "name": f"{doc.name}~deleted~{doc.id}"}})
    return doc
