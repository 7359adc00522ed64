"""Messages in Telegram's HTML parse mode: escaped, and split under Telegram's 4096-character limit
(counted in UTF-16 code units) without cutting a tag or an entity in half."""

import html

LIMIT = 4096


def esc(value: object) -> str:
    return html.escape(str(value), quote=False)


def bold(value: object) -> str:
    return f"<b>{esc(value)}</b>"


def code(value: object) -> str:
    return f"<code>{esc(value)}</code>"


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cut_plain(raw: str, room: int) -> list[str]:
    """Pieces of raw text whose escaped form fits in `room` units, cut at line ends where possible."""
    pieces: list[str] = []
    while raw:
        lo, hi = 1, len(raw)
        while lo < hi:  # the longest prefix whose escaped form fits
            mid = (lo + hi + 1) // 2
            if units(esc(raw[:mid])) <= room:
                lo = mid
            else:
                hi = mid - 1
        cut = lo
        if cut < len(raw):
            nl = raw.rfind("\n", 0, cut)
            if nl > cut // 2:
                cut = nl + 1
        pieces.append(raw[:cut])
        raw = raw[cut:]
    return pieces


def pre(raw: str, limit: int = LIMIT) -> list[str]:
    """A preformatted block (a diff, a command) as one or more blocks that each fit in a message."""
    return [f"<pre>{esc(p)}</pre>" for p in _cut_plain(raw, limit - len("<pre></pre>"))] or ["<pre></pre>"]


def plain(raw: str, limit: int = LIMIT) -> list[str]:
    return [esc(p) for p in _cut_plain(raw, limit)]


def pack(blocks: list[str], limit: int = LIMIT) -> list[str]:
    """Join complete HTML blocks with newlines into as few messages as fit; a block never straddles two.
    Callers make every block fit on its own (`pre`/`plain` cut long raw text)."""
    messages: list[str] = []
    current = ""
    for block in blocks:
        if units(block) > limit:
            raise ValueError("a block longer than one message; cut it with pre() or plain()")
        joined = f"{current}\n{block}" if current else block
        if units(joined) <= limit:
            current = joined
        else:
            messages.append(current)
            current = block
    if current or not messages:
        messages.append(current)
    return messages
