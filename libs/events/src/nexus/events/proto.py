"""Generates proto/: a JSON Schema per message and for the run config, and an AsyncAPI 3 document
built from the subject catalog (FastStream cannot derive one from msgspec types).

    python -m nexus.events.proto proto        # write
    python -m nexus.events.proto proto --check  # exit 1 when the committed files drift"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from nexus.domain.json_types import JsonObject
from nexus.events.catalog import MESSAGES, STREAMS, MessageSpec
from nexus.events.envelope import Envelope
from nexus.events.payloads import RunConfig

REF_PREFIX = "#/components/schemas/{name}"


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def message_schema(m: MessageSpec) -> JsonObject:
    schema = msgspec.json.schema(m.payload)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = m.type
    schema["description"] = f"{m.summary} Subject: {m.subject}."
    return schema


def _channel_name(m: MessageSpec) -> str:
    return m.type.replace(".", "_")


def _asyncapi_schema(node: Any) -> Any:
    """msgspec writes OpenAPI's object-style `discriminator` ({propertyName, mapping}); an AsyncAPI
    schema's `discriminator` is the property's name, a string."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def asyncapi() -> JsonObject:
    payloads = [m.payload for m in MESSAGES] + [Envelope]
    _, components = msgspec.json.schema_components(payloads, ref_template=REF_PREFIX)
    components = _asyncapi_schema(components)
    stream_of = {s.name: s for s in STREAMS}
    channels, operations, messages = {}, {}, {}
    for m in MESSAGES:
        name = _channel_name(m)
        params = {
            p: {"description": f"the {p.replace('_', ' ')}"}
            for p in ("run_id", "original_subject")
            if "{" + p + "}" in m.subject
        }
        channels[name] = {
            "address": m.subject,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            **({"parameters": params} if params else {}),
            "x-nexus-stream": m.stream,
        }
        messages[name] = {
            "name": m.type,
            "summary": m.summary,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "the envelope id (ULID): JetStream deduplication"},
                    "traceparent": {"type": "string", "description": "W3C trace context"},
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": REF_PREFIX.format(name="Envelope")},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": m.type},
                            "data": {"$ref": REF_PREFIX.format(name=m.payload.__name__)},
                        },
                    },
                ]
            },
        }
        operations[f"publish_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": m.summary,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Nexus event bus",
            "version": "0.1.0",
            "description": "Every subject, stream and payload on NATS. Generated from libs/events; do not edit.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "make run"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
        "x-nexus-streams": {
            n: {
                "subjects": list(s.subjects),
                "retention": s.retention,
                "max_age_s": s.max_age_s,
                "duplicate_window_s": s.duplicate_window_s,
                "description": s.description,
            }
            for n, s in stream_of.items()
        },
    }


def render() -> dict[str, str]:
    files = {"asyncapi.json": _dump(asyncapi())}
    rc = msgspec.json.schema(RunConfig)
    rc.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "RunConfig",
            "description": "What core-api hands a run: the agent as data.",
        }
    )
    files["run-config.schema.json"] = _dump(rc)
    env = msgspec.json.schema(Envelope)
    env.update({"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Envelope"})
    files["messages/envelope.schema.json"] = _dump(env)
    for m in MESSAGES:
        files[f"messages/{m.type}.schema.json"] = _dump(message_schema(m))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    files = render()
    if args.check:
        stale = [p for p, text in files.items() if not (args.out / p).exists() or (args.out / p).read_text() != text]
        stale += [
            str(p.relative_to(args.out))
            for p in (args.out / "messages").glob("*.json")
            if str(p.relative_to(args.out)) not in files
        ]
        if stale:
            print("proto/ drifted from the code; run `make proto`:\n  " + "\n  ".join(sorted(stale)), file=sys.stderr)
            sys.exit(1)
        return
    (args.out / "messages").mkdir(parents=True, exist_ok=True)
    for old in (args.out / "messages").glob("*.json"):
        if str(old.relative_to(args.out)) not in files:
            old.unlink()
    for p, text in files.items():
        (args.out / p).write_text(text)
    print(f"wrote {len(files)} files to {args.out}")


if __name__ == "__main__":
    main()
