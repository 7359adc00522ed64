"""Which memory items a run sees: in the agent's scopes, not expired, most relevant first (BM25 over
the task text, from rank-bm25), within the policy's item and character budget."""

import re
from datetime import UTC, datetime

from nexus.db.cache import cached_find
from nexus.db.documents import MemoryItem
from nexus.domain.agents import MemoryPolicy

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rank(items: list[MemoryItem], query: str) -> list[MemoryItem]:
    if not items:
        return []
    q = tokenize(query)
    if not q:
        return sorted(items, key=lambda m: m.created_at, reverse=True)
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([tokenize(m.content + " " + " ".join(m.tags)) or ["_"] for m in items])
    scores = bm25.get_scores(q)
    order = sorted(range(len(items)), key=lambda i: (scores[i], items[i].created_at), reverse=True)
    return [items[i] for i in order]


def within_budget(items: list[MemoryItem], policy: MemoryPolicy) -> list[MemoryItem]:
    out: list[MemoryItem] = []
    used = 0
    for m in items:
        if len(out) >= policy.max_items:
            break
        if used + len(m.content) > policy.max_chars:
            continue
        out.append(m)
        used += len(m.content)
    return out


async def select_memory(policy: MemoryPolicy, *, agent_id: str, repository_id: str | None, query: str) -> list[str]:
    """The contents a run config carries."""
    return [m.content for m in await select_items(policy, agent_id=agent_id, repository_id=repository_id, query=query)]


async def select_items(
    policy: MemoryPolicy, *, agent_id: str, repository_id: str | None, query: str
) -> list[MemoryItem]:
    clauses = []
    if "agent" in policy.scopes:
        clauses.append({"scope": "agent", "scope_id": agent_id})
    if "repo" in policy.scopes and repository_id:
        clauses.append({"scope": "repo", "scope_id": repository_id})
    if "global" in policy.scopes:
        clauses.append({"scope": "global"})
    if not clauses:
        return []
    now = datetime.now(UTC)
    items = [
        m
        for m in await cached_find(MemoryItem, {"$or": clauses}, [("_id", 1)], 0)  # read only: shared with other runs
        if (m.expires_at is None or m.expires_at > now) and (not policy.tags or set(policy.tags) & set(m.tags))
    ]
    return within_budget(rank(items, query), policy)
