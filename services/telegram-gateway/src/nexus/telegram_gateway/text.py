"""Messages in Telegram's HTML parse mode: escaped, and split under Telegram's 4096-character limit
(counted in UTF-16 code units) without cutting a tag or an entity in half."""

import html
import re

LIMIT = 4096
# A tag, an entity, or a run of text (what a cut may not split, and what it may).
_TOKEN = re.compile(r"<(/?)([a-z-]+)[^>]*>|&#?\w+;|[^<&]+|[<&]")


def esc(value: object) -> str:
    return html.escape(str(value), quote=False)


def as_plain(message: str) -> str:
    """A message's words without its markup (tags gone, entities read back)."""
    return html.unescape(re.sub(r"<[^>]*>", "", message))


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


def split_html(block: str, limit: int = LIMIT) -> list[str]:
    """An HTML block too long for one message, cut into pieces that each fit: never inside a tag or an
    entity, and the tags open at a cut are closed before it and opened again after it."""
    pieces: list[str] = []
    open_tags: list[tuple[str, str]] = []  # (name, the opening tag as written)
    current = ""  # the piece being filled; `reopened` is what it started with
    reopened = ""

    def closing() -> str:
        return "".join(f"</{name}>" for name, _ in reversed(open_tags))

    for m in _TOKEN.finditer(block):
        token = m.group(0)
        while units(current) + units(token) + units(closing()) > limit:
            room = limit - units(current) - units(closing())
            if m.group(2) is None and not token.startswith("&") and room > 0:  # text: as much as fits here
                n = len(token)
                while n and units(token[:n]) > room:
                    n = min(n - 1, n * room // units(token[:n]))
                current, token = current + token[:n], token[n:]
            if current == reopened:  # not even one token fits beside the open tags: let it overflow
                break
            pieces.append(current + closing())
            current = reopened = "".join(tag for _, tag in open_tags)
        current += token
        if m.group(2) is not None:
            if m.group(1):
                if open_tags and open_tags[-1][0] == m.group(2):
                    open_tags.pop()
            elif not token.endswith("/>"):
                open_tags.append((m.group(2), token))
    if current != reopened:
        pieces.append(current + closing())
    return pieces


def pack(blocks: list[str], limit: int = LIMIT) -> list[str]:
    """Join complete HTML blocks with newlines into as few messages as fit; a block never straddles two,
    unless it is longer than a message on its own: then `split_html` cuts it where it is safe to."""
    messages: list[str] = []
    current = ""
    for block in [piece for b in blocks for piece in (split_html(b, limit) if units(b) > limit else [b])]:
        joined = f"{current}\n{block}" if current else block
        if units(joined) <= limit:
            current = joined
        else:
            messages.append(current)
            current = block
    if current or not messages:
        messages.append(current)
    return messages
