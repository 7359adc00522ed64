"""A small Kubernetes API server: real HTTP on 127.0.0.1, the REST paths and JSON bodies kr8s sees
from a real one (discovery, version, jobs, secrets, pods, pod logs, list/watch with selectors,
Status objects for errors), for the objects the worker's Kubernetes runtime touches.

Every object POSTed or PATCHed is validated against the real Kubernetes OpenAPI schema
(kubernetes_validate, strict: unknown fields are errors) and rejected with 422 like the API
server would. Controllers (the Job controller in fake_cluster.py) react to writes through
`reactions`. Faults can be injected per request."""

import asyncio
import copy
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import kubernetes_validate

from .fake_wire import (
    DISCOVERY,
    KUBERNETES_VERSION,
    Obj,
    Request,
    read_request,
    send,
    send_chunk,
    send_stream,
    send_stream_head,
)

TOKEN = "fake-token"


@dataclass(frozen=True)
class ResourceType:
    group: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    def qualified(self, plural: str) -> str:  # how the API server names it in messages: jobs.batch
        return f"{plural}.{self.group}" if self.group else plural


RESOURCES = {
    "jobs": ResourceType("batch", "Job"),
    "pods": ResourceType("", "Pod"),
    "secrets": ResourceType("", "Secret"),
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = details


@dataclass
class Fault:
    method: str
    target: re.Pattern[str]
    status: int | None  # None: close the connection without answering
    times: int | None  # None: until cleared
    expire_watch: bool = False  # answer a watch with an ERROR 410 (Gone) event


@dataclass
class Watcher:
    resource: str
    namespace: str
    matches: Callable[[Obj], bool]
    queue: asyncio.Queue[tuple[str, Obj] | None] = field(default_factory=asyncio.Queue)


# ---------------------------------------------------------------- selectors
def _split_terms(selector: str) -> list[str]:
    return [t.strip() for t in re.split(r",(?![^(]*\))", selector) if t.strip()]


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(selector):
        if m := re.fullmatch(r"([^!=\s]+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            checks.append(lambda ls, k=key, vs=values, o=op: (ls.get(k) in vs) == (o == "in"))
        elif m := re.fullmatch(r"([^!=]+)!=(.*)", term):
            checks.append(lambda ls, k=m[1], v=m[2]: ls.get(k) != v)
        elif m := re.fullmatch(r"([^!=]+)==?(.*)", term):
            checks.append(lambda ls, k=m[1], v=m[2]: ls.get(k) == v)
        elif term.startswith("!"):
            checks.append(lambda ls, k=term[1:]: k not in ls)
        else:
            checks.append(lambda ls, k=term: k in ls)
    return lambda labels: all(check(labels) for check in checks)


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    wanted: list[tuple[str, str]] = []
    for term in _split_terms(selector):
        key, _, value = term.partition("=")
        key = key.rstrip("=")
        if key not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f"field label not supported: {key}")
        wanted.append((key.split(".")[1], value.lstrip("=")))
    return lambda obj: all(obj["metadata"].get(k) == v for k, v in wanted)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists the API server merges by a key under a strategic merge patch (the `patchMergeKey` of the
# fields our objects use); every other list is replaced, as in a JSON merge patch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "ports": "containerPort",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "tolerations": None,
    "finalizers": None,
}


def strategic_merge_patch(target: Any, patch: Any, field_name: str = "") -> Any:
    """A strategic merge patch as the API server applies it to the fields above: maps merge key by
    key (null deletes), keyed lists merge element by element (`$patch: delete` removes one),
    `finalizers` merges as a set, other lists are replaced."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, key)
        return result
    if isinstance(patch, list) and field_name in MERGE_KEYS and isinstance(target, list):
        key = MERGE_KEYS[field_name]
        if key is None:  # a set of scalars
            return list(target) + [v for v in patch if v not in target]
        result = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise ApiError(422, "Invalid", f"{field_name}: each element of a merged list needs its key {key!r}")
            at = next((i for i, old in enumerate(result) if old.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if at is not None:
                    result.pop(at)
            elif at is None:
                result.append(copy.deepcopy(item))
            else:
                result[at] = strategic_merge_patch(result[at], item, field_name)
        return result
    return copy.deepcopy(patch)


# ---------------------------------------------------------------- RBAC
def load_role(path: Path) -> list[Obj]:
    """The rules of the one Role in a manifest file (the worker's, as the cluster would grant it)."""
    import yaml

    (role,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Role"]
    return role["rules"]


def _verb(method: str, named: bool, query: dict[str, str]) -> str:
    if method == "GET":
        return "watch" if query.get("watch") == "true" else ("get" if named else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(method) or (
        "delete" if named else "deletecollection"
    )


def _allowed(rules: list[Obj], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", ()) and resource in r.get("resources", ()) and verb in r.get("verbs", ())
        for r in rules
    )


# ---------------------------------------------------------------- the server
class FakeApiServer:
    def __init__(self, namespaces: set[str] | None = None, rules: list[Obj] | None = None) -> None:
        self.namespaces = namespaces if namespaces is not None else {"agents"}
        # RBAC: the client is a service account bound to these rules in every namespace served
        # (None: everything allowed). Each refusal is recorded, so a test can show what was asked.
        self.rules = rules
        self.forbidden: list[tuple[str, str, str]] = []  # (verb, group, resource)
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (resource, namespace, name) -> stored object
        self.logs: dict[tuple[str, str], list[str]] = {}  # (namespace, pod) -> lines
        self.requests: list[Request] = []
        self.validated: list[Obj] = []  # every body that passed schema validation
        self.deletions: list[tuple[str, str, str]] = []  # (resource, name, propagationPolicy)
        self.reactions: list[Callable[[str, str, Obj], None]] = []  # (event type, resource, object)
        self.hold_foreground_deletions = False
        self._faults: list[Fault] = []
        self._history: list[tuple[int, str, str, Obj]] = []  # (resourceVersion, resource, event type, object)
        self._watchers: list[Watcher] = []
        self._watches_opened: asyncio.Queue[None] = asyncio.Queue()
        self._rv = 1000
        self._compacted_rv = 0
        self._uids = itertools.count(1)
        self._clock = datetime(2025, 1, 1, tzinfo=UTC)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.close_watches()
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, namespace: str = "agents") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "nexus-worker", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "nexus-worker", "namespace": namespace}}
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # ------------------------------------------------------------ test controls
    def fault(
        self, method: str, target: str, *, status: int | None = 503, times: int | None = 1, expire_watch: bool = False
    ) -> None:
        """Make matching requests (method, regex searched in `path?query`) fail instead of being served."""
        self._faults.append(Fault(method, re.compile(target), status, times, expire_watch))

    def clear_faults(self) -> None:
        self._faults.clear()

    def close_watches(self) -> None:
        """End every open watch stream, as the API server does when a watch's timeout passes."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        self._watchers.clear()

    async def next_watch(self) -> None:
        """Wait until one more watch stream is open and registered (no event can be missed after this)."""
        await self._watches_opened.get()

    def open_watches(self) -> int:
        return len(self._watchers)

    def watch_count(self) -> int:
        return sum(1 for r in self.requests if r.query.get("watch") == "true")

    # ------------------------------------------------------------ the store
    def now(self) -> str:
        self._clock += timedelta(seconds=1)  # a clock that only moves on writes: timestamps order, tests don't wait
        return self._clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((resource, namespace, name))

    def list(self, resource: str, namespace: str, matches: Callable[[Obj], bool] = lambda o: True) -> list[Obj]:
        return [
            obj
            for (res, ns, _), obj in sorted(self.objects.items())
            if res == resource and ns == namespace and matches(obj)
        ]

    def _emit(self, event: str, resource: str, obj: Obj) -> None:
        snapshot = copy.deepcopy(obj)
        self._history.append((int(obj["metadata"]["resourceVersion"]), resource, event, snapshot))
        for watcher in self._watchers:
            if (
                watcher.resource == resource
                and watcher.namespace == obj["metadata"]["namespace"]
                and watcher.matches(obj)
            ):
                watcher.queue.put_nowait((event, snapshot))
        for react in list(self.reactions):
            react(event, resource, obj)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def new_uid(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._uids):012d}"

    def insert(self, resource: str, obj: Obj) -> Obj:
        """Store a new object as the API server would (uid, resourceVersion, timestamps); no validation.
        Returns it as stored, before any controller reacted."""
        meta = obj["metadata"]
        meta.setdefault("uid", self.new_uid())
        meta.update(resourceVersion=self._next_rv(), creationTimestamp=self.now())
        obj.update(kind=RESOURCES[resource].kind, apiVersion=RESOURCES[resource].api_version)
        self.objects[(resource, meta["namespace"], meta["name"])] = obj
        stored = copy.deepcopy(obj)
        self._emit("ADDED", resource, obj)
        return stored

    def update(self, resource: str, obj: Obj) -> Obj:
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[(resource, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        self._emit("MODIFIED", resource, obj)
        return obj

    def remove(self, resource: str, obj: Obj, propagation: str = "Background") -> None:
        """Delete now; dependents follow (Background/Foreground) or lose their owner reference (Orphan)."""
        meta = obj["metadata"]
        if self.objects.pop((resource, meta["namespace"], meta["name"]), None) is None:
            return
        meta["resourceVersion"] = self._next_rv()
        self._emit("DELETED", resource, obj)
        for (dep_resource, ns, _), dependent in list(self.objects.items()):
            refs = dependent["metadata"].get("ownerReferences") or []
            if ns != meta["namespace"] or not any(ref["uid"] == meta["uid"] for ref in refs):
                continue
            if propagation == "Orphan":
                dependent["metadata"]["ownerReferences"] = [ref for ref in refs if ref["uid"] != meta["uid"]]
                self.update(dep_resource, dependent)
            else:  # the garbage collector
                self.remove(dep_resource, dependent)
                self.logs.pop((ns, dependent["metadata"]["name"]), None)

    def finish_foreground_deletions(self) -> None:
        for (resource, _, _), obj in list(self.objects.items()):
            if "foregroundDeletion" in (obj["metadata"].get("finalizers") or []):
                self.remove(resource, obj)

    # ------------------------------------------------------------ HTTP
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._connections.add(writer)
        try:
            while request := await read_request(reader):
                self.requests.append(request)
                if not await self._answer(request, reader, writer):
                    break
        # Cancelled only by stop(); ending normally keeps Python 3.11's stream callback from logging it.
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(handler)
            self._connections.discard(writer)
            writer.close()

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self._faults:
            if fault.method == request.method and fault.target.search(request.target):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    async def _answer(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must close."""
        if fault := self._take_fault(request):
            if fault.status is None:
                return False
            if fault.expire_watch:
                gone = ApiError(410, "Expired", "too old resource version: 1 (2)").status
                await send_stream(writer, [json.dumps({"type": "ERROR", "object": gone})])
                return False
            reason = HTTPStatus(fault.status).phrase.replace(" ", "")
            error = ApiError(fault.status, reason, f"injected fault: {fault.status} {reason}")
            await send(writer, fault.status, json.dumps(error.status).encode())
            return True
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            await send(writer, 401, json.dumps(ApiError(401, "Unauthorized", "Unauthorized").status).encode())
            return True
        try:
            if request.method == "GET" and request.query.get("watch") == "true":
                await self._watch(request, reader, writer)
                return False
            status, body, content_type = self._route(request)
        except ApiError as e:
            status, body, content_type = e.status["code"], e.status, "application/json"
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        await send(writer, status, payload, content_type)
        return True

    def _route(self, request: Request) -> tuple[int, Obj | str, str]:
        path, method = request.path.rstrip("/"), request.method
        if method == "GET" and path in DISCOVERY:
            return 200, DISCOVERY[path], "application/json"
        m = re.fullmatch(r"/(?:api/v1|apis/batch/v1)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(?:/(log))?", path)
        if m is None or m[2] not in RESOURCES or (m[2] == "jobs") != path.startswith("/apis/batch/v1"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, resource, name, sub = m[1], m[2], m[3], m[4]
        self._authorize(request, resource, namespace, name, sub)
        if sub == "log" and resource == "pods" and method == "GET":
            return 200, self._logs(namespace, name, request.query), "text/plain"
        if name is None and method == "GET":
            return 200, self._list(resource, namespace, request.query), "application/json"
        if name is None and method == "POST":
            return 201, self.create(resource, namespace, request.json()), "application/json"
        if name is not None and sub is None and method == "GET":
            return 200, self._get(resource, namespace, name), "application/json"
        if name is not None and sub is None and method == "PATCH":
            return 200, self._patch(resource, namespace, name, request), "application/json"
        if name is not None and sub is None and method == "DELETE":
            return 200, self._delete(resource, namespace, name, request), "application/json"
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _authorize(self, request: Request, resource: str, namespace: str, name: str | None, sub: str | None) -> None:
        if self.rules is None:
            return
        group = RESOURCES[resource].group
        verb = _verb(request.method, name is not None, request.query)
        rbac_resource = f"{resource}/{sub}" if sub else resource
        if _allowed(self.rules, group, rbac_resource, verb):
            return
        self.forbidden.append((verb, group, rbac_resource))
        what = (
            f'{RESOURCES[resource].qualified(resource)} "{name}"' if name else RESOURCES[resource].qualified(resource)
        )
        raise ApiError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "system:serviceaccount:nexus:worker" cannot {verb} resource '
            f'"{rbac_resource}" in API group "{group}" in the namespace "{namespace}"',
            {"name": name or "", "group": group, "kind": resource},
        )

    # ------------------------------------------------------------ REST verbs
    def _not_found(self, resource: str, name: str) -> ApiError:
        rt = RESOURCES[resource]
        details = {"name": name, "kind": resource} | ({"group": rt.group} if rt.group else {})
        return ApiError(404, "NotFound", f'{rt.qualified(resource)} "{name}" not found', details)

    def _get(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self.get(resource, namespace, name)
        if obj is None:
            raise self._not_found(resource, name)
        return obj

    def _matcher(self, query: dict[str, str]) -> Callable[[Obj], bool]:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(query.get("fieldSelector", ""))
        return lambda obj: labels(obj["metadata"].get("labels") or {}) and fields(obj)

    def _list(self, resource: str, namespace: str, query: dict[str, str]) -> Obj:
        items = [
            {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            for obj in self.list(resource, namespace, self._matcher(query))
        ]
        rt = RESOURCES[resource]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _validate(self, resource: str, obj: Obj) -> None:
        rt = RESOURCES[resource]
        name = obj.get("metadata", {}).get("name", "")
        prefix = f'{rt.kind}{"." + rt.group if rt.group else ""} "{name}" is invalid'
        if obj.get("kind") != rt.kind or obj.get("apiVersion") != rt.api_version:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version ({rt.api_version})",
            )
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path)
            raise ApiError(422, "Invalid", f"{prefix}: {path}: {e.message}") from e
        problems = []
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            problems.append(
                f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
            )
        if resource == "jobs" and len(name) > 63:  # the Job controller puts its name in a pod label
            problems.append(f"metadata.name: Invalid value: {name!r}: must be no more than 63 characters")
        labels = dict(obj["metadata"].get("labels") or {})
        if resource == "jobs":
            labels |= obj["spec"]["template"].get("metadata", {}).get("labels") or {}
        for key, value in labels.items():
            if not _LABEL_NAME.match(key.rpartition("/")[2]) or len(key.rpartition("/")[2]) > 63:
                problems.append(f"metadata.labels: Invalid value: {key!r}: name part must be a valid label name")
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(
                    f"metadata.labels: Invalid value: {value!r}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
                )
        if problems:
            raise ApiError(422, "Invalid", f"{prefix}: [{', '.join(problems)}]")
        self.validated.append(copy.deepcopy(obj))

    def create(self, resource: str, namespace: str, body: Obj) -> Obj:
        """POST: validate, default and store, as the API server does."""
        meta = body.setdefault("metadata", {})
        if meta.setdefault("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        self._validate(resource, body)
        if namespace not in self.namespaces:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        name = meta["name"]
        if self.get(resource, namespace, name) is not None:
            rt = RESOURCES[resource]
            details = {"name": name, "kind": resource} | ({"group": rt.group} if rt.group else {})
            raise ApiError(409, "AlreadyExists", f'{rt.qualified(resource)} "{name}" already exists', details)
        meta["uid"] = self.new_uid()
        if resource == "jobs":
            _default_job(body)
        if resource == "secrets":
            body.setdefault("type", "Opaque")
        return self.insert(resource, body)

    def _patch(self, resource: str, namespace: str, name: str, request: Request) -> Obj:
        current = self._get(resource, namespace, name)
        content_type = request.headers.get("content-type")
        if content_type == "application/merge-patch+json":
            patched = merge_patch(current, request.json())
        elif content_type == "application/strategic-merge-patch+json":
            patched = strategic_merge_patch(current, request.json())
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
        if patched["metadata"].get("uid") != current["metadata"]["uid"]:
            raise ApiError(422, "Invalid", "metadata.uid: Invalid value: field is immutable")
        if resource == "secrets" and current.get("immutable") and patched.get("data") != current.get("data"):
            raise ApiError(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: data: Forbidden: field is immutable when `immutable` is set',
            )
        self._validate(resource, patched)
        if patched.get("spec") != current.get("spec"):
            patched["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return copy.deepcopy(self.update(resource, patched))

    def _delete(self, resource: str, namespace: str, name: str, request: Request) -> Obj:
        obj = self._get(resource, namespace, name)
        options = request.json()
        # batch/v1 Jobs orphan their pods unless told otherwise (the REST default kubectl works around).
        policy = (
            options.get("propagationPolicy")
            or request.query.get("propagationPolicy")
            or ("Orphan" if resource == "jobs" else "Background")
        )
        self.deletions.append((resource, name, policy))
        if policy == "Foreground" and not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = self.now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            obj["metadata"]["finalizers"] = [*(obj["metadata"].get("finalizers") or []), "foregroundDeletion"]
            self.update(resource, obj)
            snapshot = copy.deepcopy(obj)
            if not self.hold_foreground_deletions:
                self.remove(resource, obj)
            return snapshot
        if obj["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(obj)
        self.remove(resource, obj, policy)
        details = {"name": name, "kind": resource, "uid": obj["metadata"]["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _logs(self, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self.get("pods", namespace, name)
        if pod is None:
            raise self._not_found("pods", name)
        container = query.get("container") or pod["spec"]["containers"][0]["name"]
        statuses = {c["name"]: c for c in pod.get("status", {}).get("containerStatuses") or []}
        if container not in statuses:
            if container not in {c["name"] for c in pod["spec"]["containers"]}:
                raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        lines = self.logs.get((namespace, name), [])
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        return "".join(f"{line}\n" for line in lines)

    async def _watch(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        m = re.fullmatch(r"/(?:api/v1|apis/batch/v1)/namespaces/([^/]+)/([a-z]+)", request.path.rstrip("/"))
        if m is None or m[2] not in RESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, resource = m[1], m[2]
        watcher = Watcher(resource, namespace, self._matcher(request.query))
        since = request.query.get("resourceVersion", "")
        if since and since != "0" and int(since) < self._compacted_rv:
            gone = ApiError(410, "Expired", f"too old resource version: {since} ({self._compacted_rv})").status
            await send_stream(writer, [json.dumps({"type": "ERROR", "object": gone})])
            return
        if since and since != "0":
            backlog = [
                (e, o)
                for rv, res, e, o in self._history
                if rv > int(since)
                and res == resource
                and o["metadata"]["namespace"] == namespace
                and watcher.matches(o)
            ]
        else:  # no resourceVersion: the current state as ADDED events, then changes
            backlog = [("ADDED", copy.deepcopy(o)) for o in self.list(resource, namespace, watcher.matches)]
        self._watchers.append(watcher)
        self._watches_opened.put_nowait(None)
        await send_stream_head(writer)
        try:
            for event, obj in backlog:
                await send_chunk(writer, json.dumps({"type": event, "object": obj}) + "\n")
            client_gone = asyncio.ensure_future(reader.read(1))
            try:
                while True:
                    next_event = asyncio.ensure_future(watcher.queue.get())
                    done, _ = await asyncio.wait({next_event, client_gone}, return_when=asyncio.FIRST_COMPLETED)
                    if client_gone in done:
                        next_event.cancel()
                        return
                    item = next_event.result()
                    if item is None:
                        break
                    await send_chunk(writer, json.dumps({"type": item[0], "object": item[1]}) + "\n")
            finally:
                client_gone.cancel()
            await send_chunk(writer, "")
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def compact(self) -> None:
        """Forget history: watches from an older resourceVersion now get 410 Gone."""
        self._compacted_rv = self._rv


def _default_job(job: Obj) -> None:
    """What the API server fills in on a new Job: defaults, and the selector it generates from the uid."""
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec = job["spec"]
    defaults = {
        "parallelism": 1,
        "completions": 1,
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "suspend": False,
        "podReplacementPolicy": "TerminatingOrFailed",
    }
    for key, value in defaults.items():
        spec.setdefault(key, value)
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )
    template["spec"].setdefault("dnsPolicy", "ClusterFirst")
    template["spec"].setdefault("schedulerName", "default-scheduler")
    template["spec"].setdefault("terminationGracePeriodSeconds", 30)
    job["metadata"]["generation"] = 1
    job["status"] = {}
