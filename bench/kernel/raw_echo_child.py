"""Raw pipe echo child for B6: for every JSON line in, one JSON reply line out.

It does the same JSON work as a bridge child (parse the delivery, build and serialize a
response carrying reply_to and the payload) with none of the bridge: no asyncio, no
Message objects, no handler call. With --plain it echoes bytes without parsing at all.
"""

import json
import sys

plain = "--plain" in sys.argv
encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
decode = json.JSONDecoder().decode
read = sys.stdin.buffer.read1
out = sys.stdout.buffer
rest = b""
while chunk := read(1 << 16):
    lines = (rest + chunk).split(b"\n")
    rest = lines.pop()
    if plain:
        out.write(b"\n".join(lines) + b"\n" if lines else b"")
    else:
        replies = []
        for line in lines:
            item = decode(line.decode())
            if item["type"] != "message":
                continue
            m = item["payload"]
            reply = {"from": m["to"], "to": m["from"], "kind": "Response", "reply_to": m["id"], "payload": m["payload"]}
            replies.append(encode({"type": "response", "payload": reply}))
        if replies:
            out.write(("\n".join(replies) + "\n").encode())
    out.flush()
