"""The wire side of the fake API server: HTTP/1.1 framing (plain and chunked streams) and the
discovery documents kr8s reads (/version, /api, /api/v1, /apis, /apis/batch/v1)."""

import asyncio
import json
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

KUBERNETES_VERSION = "1.33"

Obj = dict[str, Any]


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Obj:
        return json.loads(self.body) if self.body else {}


# ---------------------------------------------------------------- discovery
def _resource_list(group_version: str, resources: list[tuple[str, str, str, list[str]]]) -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": name, "singularName": singular, "namespaced": True, "kind": kind, "verbs": verbs}
            for name, singular, kind, verbs in resources
        ],
    }


_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
DISCOVERY: dict[str, Obj] = {
    "/version": {
        "major": "1",
        "minor": KUBERNETES_VERSION.split(".")[1],
        "gitVersion": f"v{KUBERNETES_VERSION}.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    },
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    },
    "/api/v1": _resource_list(
        "v1",
        [
            ("pods", "pod", "Pod", _VERBS),
            ("pods/log", "", "Pod", ["get"]),
            ("secrets", "secret", "Secret", _VERBS),
        ],
    ),
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "batch",
                "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"},
            }
        ],
    },
    "/apis/batch/v1": _resource_list(
        "batch/v1", [("jobs", "job", "Job", _VERBS), ("jobs/status", "", "Job", ["get", "patch", "update"])]
    ),
}


# ---------------------------------------------------------------- HTTP/1.1 framing
async def read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        key, _, value = raw.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = b""
    if length := int(headers.get("content-length", "0")):
        body = await reader.readexactly(length)
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    parsed = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    return Request(method, target, parsed.path, query, headers, body)


async def send(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = "application/json") -> None:
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Audit-Id: 00000000-0000-0000-0000-000000000000\r\nCache-Control: no-cache, private\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


async def send_stream_head(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()


async def send_chunk(writer: asyncio.StreamWriter, text: str) -> None:
    data = text.encode()
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def send_stream(writer: asyncio.StreamWriter, events: list[str]) -> None:
    await send_stream_head(writer)
    for event in events:
        await send_chunk(writer, event + "\n")
    await send_chunk(writer, "")
