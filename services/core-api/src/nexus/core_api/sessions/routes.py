"""Sessions: one list, one session, and a run's meta/child tree, all in the camelCase contract."""

from typing import Any

import msgspec
from litestar import Controller, get
from litestar.params import FromPath

from nexus.core_api.auth.guards import READ
from nexus.core_api.errors import not_found
from nexus.core_api.pagination import Cursor, Filter, Limit, Page, page_of
from nexus.core_api.schemas import iso
from nexus.core_api.sessions.schemas import AttemptChain, SessionOut, load_chains, outs, to_out
from nexus.db.documents import Run, Session
from nexus.db.lookup import find_each

MAX_TREE_NODES = 2000  # a tree is a plan of tasks, not a log: bounded so a cycle cannot loop forever


class SessionNode(msgspec.Struct, rename="camel", kw_only=True):
    """A session and the child sessions that name it as their parent; `runId` says which run each is."""

    session_id: str
    run_id: str
    project_path: str
    parent_session_id: str | None
    backend: str
    status: str  # active | completed | error, or `pending` while its run has not opened it yet
    notes: list[str]
    changes: list[dict[str, Any]]
    created_at: str
    updated_at: str
    children: list["SessionNode"]
    attempt: int = 1
    attempts: list[AttemptChain] = msgspec.field(default_factory=list)
    sandbox: str = ""


def _node(out: SessionOut) -> SessionNode:
    return SessionNode(**{f: getattr(out, f) for f in SessionOut.__struct_fields__}, children=[])


def _pending(run: Run) -> SessionNode:
    """A run whose runner has not opened its session yet still has a place in the tree."""
    return SessionNode(
        session_id=run.session_id,
        run_id=run.id,
        project_path="",
        parent_session_id=run.parent_session_id,
        backend="",
        status="pending",
        notes=[],
        changes=[],
        created_at=iso(run.created_at),
        updated_at=iso(run.updated_at),
        children=[],
    )


async def session_tree(run: Run) -> SessionNode:
    root_doc = await Session.get(run.session_id)
    root = _node(to_out(root_doc, await load_chains([root_doc]))) if root_doc else _pending(run)
    by_id = {root.session_id: root}
    frontier = [root.session_id]
    while frontier and len(by_id) < MAX_TREE_NODES:
        found: dict[str, SessionNode] = {}
        # one equality per parent, not $in: FerretDB v1 answers equality from an index, $in by a scan
        children = sorted(await find_each(Session, "parent_session_id", frontier), key=lambda d: d.created_at)
        for out in await outs(children):
            found.setdefault(out.session_id, _node(out))
        for r in sorted(await find_each(Run, "parent_session_id", frontier), key=lambda d: d.id):
            found.setdefault(r.session_id, _pending(r))  # a retried child reuses its session id: one node
        frontier = []
        for sid, node in found.items():
            if sid in by_id or len(by_id) >= MAX_TREE_NODES:
                continue
            by_id[sid] = node
            by_id[node.parent_session_id or ""].children.append(node)  # found by its parent, so it has one
            frontier.append(sid)
    return root


class SessionController(Controller):
    path = "/v1/sessions"
    tags = ["sessions"]

    @get("/", guards=[READ])
    async def list_sessions(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        run_id: Filter = None,
        parent_session_id: Filter = None,
        status: Filter = None,
    ) -> Page[SessionOut]:
        filters = {
            k: v for k, v in {"run_id": run_id, "parent_session_id": parent_session_id, "status": status}.items() if v
        }
        docs, nxt = await page_of(Session, filters, limit, cursor)
        return Page(await outs(docs), nxt)

    @get("/{session_id:str}", guards=[READ])
    async def get_session(self, session_id: FromPath[str]) -> SessionOut:
        doc = await Session.get(session_id)
        if doc is None:
            raise not_found("session", session_id)
        return (await outs([doc]))[0]


@get("/v1/runs/{run_id:str}/sessions/tree", guards=[READ], tags=["sessions"])
async def run_session_tree(run_id: FromPath[str]) -> SessionNode:
    """The run's session and, below it, every child session that names it as parent (meta → children)."""
    run = await Run.get(run_id)
    if run is None:
        raise not_found("run", run_id)
    return await session_tree(run)
