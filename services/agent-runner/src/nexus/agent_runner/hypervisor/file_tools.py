"""The workspace's files: read, write, edit, patch, list and search them, always inside the
workspace (paths.Workspace) and with every secret's value masked out of what the model sees."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from nexus.agent_runner.hypervisor import commands, patches, sandbox, search
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.paths import Workspace
from nexus.agent_runner.hypervisor.registry import tool
from nexus.agent_runner.hypervisor.state import now_iso
from nexus.agent_runner.hypervisor.tools import Args, Doc, RelPath, ToolResult
from nexus.domain.sessions import FileReadChange, FileWriteChange

if TYPE_CHECKING:
    from nexus.agent_runner.hypervisor.core import Hypervisor

MAX_READ_BYTES = 1 << 20
MAX_WRITE_BYTES = 8 << 20
MAX_LIST_ENTRIES = 1000
MAX_SEARCH_LINES = 200
MAX_SEARCH_LINE_CHARS = 300
SEARCH_TIMEOUT_S = 20.0
# grep compiles the model's pattern outside the sandbox: `((x{32767}){32767})` grew to 4 GB in 20 s.
SEARCH_LIMITS = sandbox.Limits(cpu_s=int(SEARCH_TIMEOUT_S) + 5, address_space=1 << 30)


class ApplyPatchArgs(Args):
    patch: Annotated[
        str, Doc(description="A unified diff (as produced by `git diff`), paths relative to the workspace.")
    ]


class EditFileArgs(Args):
    path: RelPath
    old: Annotated[str, Doc(description="Exact text to replace; it must occur exactly once in the file.")]
    new: Annotated[str, Doc(description="The replacement text.")]


class ListDirArgs(Args):
    path: RelPath = "."


class ReadFileArgs(Args):
    path: RelPath


class SearchTextArgs(Args):
    pattern: Annotated[str, Doc(description="An extended regular expression (grep -E syntax).")]
    path: RelPath = "."


class WriteFileArgs(Args):
    path: RelPath
    content: Annotated[str, Doc(description="The whole new content of the file (UTF-8 text).")]


@tool("read_file", ReadFileArgs, "Read a text file in the workspace.", path_arg=True)
async def read_file(hv: Hypervisor, args: ReadFileArgs) -> ToolResult:
    rel = hv.ws.resolve(args.path)
    data, size = hv.ws.read_bytes(rel, MAX_READ_BYTES)
    text = data.decode("utf-8", errors="replace")
    if size > len(data):
        text = hv.secrets.mask_cut(text) + f"\n[truncated: showed {len(data)} of {size} bytes]"
    await hv.record(FileReadChange(rel_path=rel, timestamp=now_iso()))
    return ToolResult(ok=True, output=text)


@tool(
    "write_file",
    WriteFileArgs,
    "Create or overwrite a file in the workspace (parent directories are created).",
    path_arg=True,
)
async def write_file(hv: Hypervisor, args: WriteFileArgs) -> ToolResult:
    rel = hv.ws.resolve(args.path, writing=True)
    data = args.content.encode()
    if len(data) > MAX_WRITE_BYTES:
        raise Refused("too-large", f"{len(data)} bytes; files are limited to {MAX_WRITE_BYTES}")
    return await hv.write(rel, data)


@tool("edit_file", EditFileArgs, "Replace one exact occurrence of `old` with `new` in a file.", path_arg=True)
async def edit_file(hv: Hypervisor, args: EditFileArgs) -> ToolResult:
    rel = hv.ws.resolve(args.path, writing=True)
    if not args.old:
        raise Refused("invalid-arguments", "`old` must not be empty")
    data, size = hv.ws.read_bytes(rel, MAX_WRITE_BYTES)
    if size > len(data):
        raise Refused("too-large", f"{rel} is {size} bytes; edits are limited to {MAX_WRITE_BYTES}")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise Refused("not-text", f"{rel} is not UTF-8 text") from None
    count = text.count(args.old)
    if count != 1:
        raise Refused(
            "no-match" if count == 0 else "ambiguous-match",
            f"`old` occurs {count} times in {rel}; it must occur exactly once",
        )
    new = text.replace(args.old, args.new, 1).encode()
    if len(new) > MAX_WRITE_BYTES:
        raise Refused("too-large", f"the edit makes {rel} {len(new)} bytes")
    return await hv.write(rel, new)


@tool(
    "apply_patch",
    ApplyPatchArgs,
    "Apply a unified diff to the workspace (regular files only: no symlinks, submodules or .git).",
)
async def apply_patch(hv: Hypervisor, args: ApplyPatchArgs) -> ToolResult:
    patch = args.patch.encode()
    if len(patch) > MAX_WRITE_BYTES:
        raise Refused("too-large", f"the patch is {len(patch)} bytes")
    if await asyncio.to_thread(hv.disk.full):
        raise hv.disk.refusal("a patch adds bytes")
    scratch = tempfile.mkdtemp(prefix="patch-", dir=hv.scratch)
    try:
        return await _apply(hv, patch, Path(scratch))
    finally:
        hv.disk.forget()  # a patch is at most MAX_WRITE_BYTES: it may pass the budget by that much, once
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)


async def _apply(hv: Hypervisor, patch: bytes, scratch: Path) -> ToolResult:
    """git's own parser lists what the patch touches and with which modes; the patch is applied to
    private copies of those files, and each result is written back path-safely (patches.py)."""
    git = functools.partial(hv.git, repo=False)
    plan = await patches.plan(patch, scratch, git)
    rels = []
    for path in plan.paths:
        hv.check_path(path)
        rel = hv.ws.resolve(path, writing=True)
        if rel != os.path.normpath(path):
            raise Refused("symlink", f"{path}: a patch may not go through a symlinked directory")
        rels.append(rel)
    plan.paths = rels
    for rel in rels:
        await hv.approve_write(rel)
    before = {rel: hv.before_write(rel) for rel in rels}
    results = await patches.apply(plan, hv.ws, git)
    for rel, data in results:
        digest = hashlib.sha256(data).hexdigest() if data is not None else ""
        await hv.record(FileWriteChange(rel_path=rel, bytes=len(data or b""), sha256=digest, timestamp=now_iso()))
        await hv.show_write(rel, before.get(rel), data)
    return ToolResult(ok=True, output="applied to " + ", ".join(rel for rel, _ in results))


@tool("list_dir", ListDirArgs, "List a directory: directories end with '/', symlinks with '@'.", path_arg=True)
async def list_dir(hv: Hypervisor, args: ListDirArgs) -> ToolResult:
    rel = hv.ws.resolve(args.path)
    # A directory a command filled with hundreds of thousands of names: read in a thread, never on the loop.
    return ToolResult(ok=True, output=await asyncio.to_thread(listing, hv.ws, rel))


def listing(ws: Workspace, rel: str) -> str:
    """The first MAX_LIST_ENTRIES names of the directory `rel`, sorted and marked, and how many more."""
    fd = ws.open_dir(rel)
    try:
        names = sorted(os.listdir(fd))
        lines = []
        for name in names[:MAX_LIST_ENTRIES]:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            lines.append(name + ("/" if stat.S_ISDIR(mode) else "@" if stat.S_ISLNK(mode) else ""))
    finally:
        os.close(fd)
    if len(names) > MAX_LIST_ENTRIES:
        lines.append(f"[{len(names) - MAX_LIST_ENTRIES} more entries not shown]")
    return "\n".join(lines)


@tool(
    "search_text",
    SearchTextArgs,
    "Search files under a path for a regular expression; returns path:line:text.",
    path_arg=True,
)
async def search_text(hv: Hypervisor, args: SearchTextArgs) -> ToolResult:
    """grep -E over a masked copy of the files: a secret's value can be neither shown nor probed."""
    rel = hv.ws.resolve(args.path)
    if not args.pattern:
        raise Refused("invalid-arguments", "the pattern is empty")
    if "\0" in args.pattern:
        raise Refused("invalid-arguments", "the pattern contains a NUL byte")
    scratch = tempfile.mkdtemp(prefix="search-", dir=hv.scratch)
    try:
        # A walk of the whole workspace (seconds for 100,000 files): in a thread, never on the runner's loop.
        skipped = await asyncio.to_thread(search.masked_copy, hv.ws, rel, Path(scratch), hv.secrets)
        argv = ["grep", "-rnIE", "--null", "--devices=skip", "--color=never", "-e", args.pattern, "--", rel]
        outcome = await commands.execute(
            argv,
            cwd=scratch,
            env=hv.env,
            timeout_s=SEARCH_TIMEOUT_S,
            max_output=hv.permissions.commands.max_output_bytes,
            limits=SEARCH_LIMITS,
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
    if outcome.exit_code not in (0, 1) and not outcome.timed_out:
        raise Refused("invalid-pattern", hv.decode(outcome).strip())
    shown = search.format_matches(hv.decode(outcome), MAX_SEARCH_LINES, MAX_SEARCH_LINE_CHARS)
    if outcome.truncated or outcome.timed_out:
        shown.append("[more matches not shown; narrow the pattern or the path]")
    if skipped:
        shown.append(
            f"[{skipped} files not searched: larger than {search.MAX_FILE_BYTES} bytes, hard-linked, over the "
            f"total, or more than {search.MAX_DEPTH} directories deep]"
        )
    return ToolResult(ok=True, output="\n".join(shown) if shown else "no matches")
