"""What a file write and a command looked like, for the people reading a run: a unified diff per
file write and the tail of a command's output. Both are masked by the hypervisor's SecretBox
before anything is cut (a cut can then only split a `${secret:NAME}` reference, never a value),
and capped, so a run event stays small whatever the agent wrote or printed."""

import difflib
from collections.abc import Callable

DIFF_CAP_BYTES = 16 * 1024  # a file write's diff is cut (at a line) past this
DIFF_MAX_FILE_BYTES = 256 * 1024  # a side larger than this is not diffed (only "too large" is said)
OUTPUT_CAP_BYTES = 4 * 1024  # a command's output keeps its last bytes up to this


class Diff:
    __slots__ = ("text", "truncated", "binary", "too_large")

    def __init__(self, text: str = "", truncated: bool = False, binary: bool = False, too_large: bool = False):
        self.text, self.truncated, self.binary, self.too_large = text, truncated, binary, too_large


def _text(data: bytes | None) -> str | None:
    """The file as text ("" when absent), or None when it is not UTF-8 text."""
    if data is None:
        return ""
    if b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def file_diff(rel: str, old: bytes | None, new: bytes | None, mask: Callable[[str], str]) -> Diff:
    """`old`/`new` None: the file did not exist before / does not after."""
    if max(len(old or b""), len(new or b"")) > DIFF_MAX_FILE_BYTES:
        return Diff(too_large=True)
    before, after = _text(old), _text(new)
    if before is None or after is None:
        return Diff(binary=True)
    lines = difflib.unified_diff(
        mask(before).splitlines(keepends=True),
        mask(after).splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"a/{mask(rel)}",
        tofile="/dev/null" if new is None else f"b/{mask(rel)}",
    )
    kept: list[str] = []
    size = 0
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        size += len(line.encode())
        if size > DIFF_CAP_BYTES:
            return Diff("".join(kept), truncated=True)
        kept.append(line)
    return Diff("".join(kept))


def output_tail(masked: str) -> tuple[str, bool]:
    """The last OUTPUT_CAP_BYTES of an already masked output; True when something was cut."""
    data = masked.encode()
    if len(data) <= OUTPUT_CAP_BYTES:
        return masked, False
    return data[-OUTPUT_CAP_BYTES:].decode("utf-8", errors="ignore"), True
