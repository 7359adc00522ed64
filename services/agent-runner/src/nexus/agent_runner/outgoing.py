"""What leaves the run: checked before every push, so nothing is pushed when a check fails.

- The canary: every object the push would send (commits with their messages, trees with their
  path names, blobs) is searched for every secret and credential value the runner holds, plain and
  in simple encodings (base64 at every alignment, standard and URL-safe; hex; percent-encoding).
- Provenance: every outgoing commit was made through the hypervisor (its sha is in the ledger) and
  carries exactly the runner's `Nexus-*` trailers, its `Nexus-Ledger` the hash of the ledger entry
  before it. An agent cannot add a commit nor a trailer of its own.

What the canary cannot see: a value transformed otherwise (compressed, encrypted, split across
objects, reversed). Values shorter than MIN_CANARY_CHARS are not searched (they would match by chance)."""

import asyncio
import re
from collections.abc import Iterable, Mapping

from nexus.agent_runner.hypervisor.secrets import MIN_CANARY_CHARS, SecretBox, encodings
from nexus.agent_runner.workspace import RunGit, run_git
from nexus.domain.sessions import GitCommitChange, SessionChange

_CHUNK = 1 << 20  # what the canary holds of an object at a time
_NEXUS_LINE = re.compile(r"^\s*nexus-[\w-]*\s*:.*$", re.IGNORECASE | re.MULTILINE)


def canaries(values: Mapping[str, str]) -> list[tuple[bytes, str]]:
    """(form, description) for every named value, longest forms first; the description names the
    value by reference, never by content."""
    out: dict[bytes, str] = {}
    for name, value in values.items():
        if value and len(value) >= MIN_CANARY_CHARS:
            for form, how in encodings(value).items():
                out.setdefault(form, f"${{secret:{name}}}" + ("" if how == "plain" else f" ({how})"))
    return sorted(out.items(), key=lambda item: -len(item[0]))


async def _lines(rg: RunGit, *args: str) -> list[str]:
    _, out = await run_git(rg, *args)
    return [line for line in out.decode(errors="surrogateescape").splitlines() if line]


async def outgoing_commits(rg: RunGit) -> list[str]:
    return await _lines(rg, "rev-list", "HEAD", "--not", "--remotes=origin")


async def _objects(rg: RunGit) -> dict[str, str]:
    """sha -> the path it is at (or "" for commits and the root tree), for every object HEAD has
    that the remote's branches do not."""
    named: dict[str, str] = {}
    for line in await _lines(rg, "rev-list", "--objects", "--no-object-names", "HEAD", "--not", "--remotes=origin"):
        named.setdefault(line, "")
    for line in await _lines(rg, "rev-list", "--objects", "HEAD", "--not", "--remotes=origin"):
        sha, _, path = line.partition(" ")
        named[sha] = path
    return named


async def read_objects(rg: RunGit, shas: Iterable[str]) -> dict[str, tuple[str, bytes]]:
    """sha -> (type, raw content), through one `git cat-file --batch`."""
    wanted = list(shas)
    if not wanted:
        return {}
    _, out = await run_git(rg, "cat-file", "--batch", stdin="".join(f"{sha}\n" for sha in wanted).encode())
    found: dict[str, tuple[str, bytes]] = {}
    pos = 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        header = out[pos:end].decode().split()
        if len(header) < 3:  # "<sha> missing"
            pos = end + 1
            continue
        size = int(header[2])
        found[header[0]] = (header[1], out[end + 1 : end + 1 + size])
        pos = end + 1 + size + 1
    return found


async def find_leak(rg: RunGit, values: Mapping[str, str]) -> str:
    """Why the push must not happen ("" when nothing outgoing holds a secret). Objects are read as git
    streams them, a chunk at a time: what a run commits can be gigabytes (held whole, twice, a commit of
    600 MiB ended the runner at its memory limit before any push)."""
    forms = canaries(values)
    if not forms:
        return ""
    named = await _objects(rg)
    if not named:
        return ""
    mask = SecretBox(values).mask  # a path may hold the value itself: the reason names it masked
    found = ""

    async def scan(out: asyncio.StreamReader) -> None:
        nonlocal found
        while header := await out.readline():
            parts = header.decode(errors="replace").split()
            if len(parts) < 3:  # "<sha> missing"
                continue
            sha, kind = parts[0], parts[1]
            path = named.get(sha, "")
            what = await _scan_content(out, int(parts[2]), forms) or _first(
                path.encode(errors="surrogateescape"), forms
            )
            if what:
                found = f"{what} found in {kind} {sha[:12]}" + (f" at {mask(path)}" if path else "")
                return

    await run_git(rg, "cat-file", "--batch", stdin="".join(f"{sha}\n" for sha in named).encode(), reader=scan)
    return found


def _first(data: bytes, forms: list[tuple[bytes, str]]) -> str:
    return next((what for form, what in forms if form in data), "")


async def _scan_content(out: asyncio.StreamReader, size: int, forms: list[tuple[bytes, str]]) -> str:
    """The first form found in the next `size` bytes of `out` (read a chunk at a time, each chunk with the
    end of the one before, so a value across two chunks is found), "" if none; the content is read whole."""
    keep = max(len(form) for form, _ in forms) - 1
    tail, hit, left = b"", "", size
    while left:
        chunk = await out.readexactly(min(_CHUNK, left))
        left -= len(chunk)
        window = tail + chunk
        hit = hit or _first(window, forms)
        tail = window[-keep:] if keep else b""
    await out.readexactly(1)  # the newline after the content
    return hit


def without_trailers(message: str) -> str:
    """The runner's own commit message (task title, the agent's summary) with any Nexus-* line dropped."""
    return _NEXUS_LINE.sub("", message).strip()


def expected_trailers(changes: list[SessionChange], trailers: Mapping[str, str]) -> dict[str, list[str]]:
    """commit sha -> the Nexus-* lines the hypervisor wrote into it."""
    out = {}
    for index, change in enumerate(changes):
        if isinstance(change, GitCommitChange):
            ledger = changes[index - 1].hash if index else ""
            out[change.sha] = [f"{key}: {value}" for key, value in {**trailers, "Nexus-Ledger": ledger}.items()]
    return out


async def check_provenance(rg: RunGit, changes: list[SessionChange], trailers: Mapping[str, str]) -> str:
    """Why the push must not happen ("" when every outgoing commit is the hypervisor's, trailers intact)."""
    expected = expected_trailers(changes, trailers)
    commits = await outgoing_commits(rg)
    for sha, (_, data) in (await read_objects(rg, commits)).items():
        if sha not in expected:
            return f"commit {sha[:12]} was not made through the hypervisor"
        message = data.partition(b"\n\n")[2].decode(errors="replace")
        lines = [line.strip() for line in _NEXUS_LINE.findall(message)]
        if lines != expected[sha]:
            return f"commit {sha[:12]} carries Nexus-* trailers the runner did not write"
    return ""
