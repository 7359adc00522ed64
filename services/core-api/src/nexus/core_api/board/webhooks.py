"""Webhooks from external boards. A delivery is believed only when its signature verifies over
the raw body (HMAC-SHA256, constant-time compare); it is forwarded once to board-sync as
`board.external_changed`, and a replay of the same delivery id is acknowledged and ignored."""

import hashlib
import hmac
import json
from typing import Any

from litestar import Controller, post
from pymongo.errors import DuplicateKeyError

from nexus.core_api.auth.requests import OpenRequest
from nexus.core_api.board import providers
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.db.documents import Task, now
from nexus.domain.json_types import JsonObject
from nexus.events.payloads import BoardExternalChanged

DELIVERIES = "webhook_deliveries"  # {_id: "<provider>:<delivery id>", at}


def _signed_by_one_of(raw: bytes, signature: str, secrets: list[str]) -> bool:
    ok = False
    for secret in secrets:  # every secret is tried, so the time taken does not tell which one matched
        ok |= hmac.compare_digest(hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(), signature)
    return ok and bool(signature)


async def _secrets(ctx: Context, provider: str) -> list[str]:
    refs = await providers.webhook_secrets(provider)
    return [v for v in (ctx.secrets.get(r) if ctx.secrets else None for r in refs) if v]


def _text(value: Any) -> str:
    """A comment body as text: Plane sends HTML or stripped text, Jira ADF or a string."""
    if isinstance(value, dict):  # ADF
        return "".join(_text(c) for c in value.get("content", [])) + (value.get("text") or "")
    return str(value or "")


def _actor(value: Any) -> str:
    if isinstance(value, dict):
        return str(
            value.get("display_name") or value.get("displayName") or value.get("accountId") or value.get("id") or ""
        )
    return str(value or "")


async def _accept(ctx: Context, change: BoardExternalChanged) -> JsonObject:
    key = f"{change.provider}:{change.delivery_id}"
    coll = Task.get_pymongo_collection().database[DELIVERIES]
    if await coll.find_one({"_id": key}):
        return {"accepted": False, "duplicate": True}
    # The message id is the delivery's: a retry after a crash between publish and the insert below
    # is deduped by JetStream.
    await ctx.publisher.publish("board.external_changed", change, msg_id=key)
    try:
        await coll.insert_one({"_id": key, "at": now()})
    except DuplicateKeyError:
        return {"accepted": False, "duplicate": True}
    return {"accepted": True, "duplicate": False}


def _json(raw: bytes) -> JsonObject:
    try:
        body = json.loads(raw)
    except ValueError:
        raise DomainError(400, "the body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise DomainError(400, "the body is not a JSON object", field="body")
    return body


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]

    @post("/plane", status_code=200)
    async def plane(self, request: OpenRequest) -> JsonObject:
        """Plane: `X-Plane-Signature` is the HMAC-SHA256 hex digest of the body with the webhook's secret."""
        ctx: Context = request.app.state.ctx
        raw = await request.body()
        if not _signed_by_one_of(raw, request.headers.get("x-plane-signature", ""), await _secrets(ctx, "plane")):
            raise DomainError(
                401, "the delivery is not signed by a configured Plane webhook", field="X-Plane-Signature"
            )
        delivery = request.headers.get("x-plane-delivery", "")
        if not delivery:
            raise DomainError(400, "a Plane delivery carries X-Plane-Delivery", field="X-Plane-Delivery")
        body = _json(raw)
        data = body.get("data") or {}
        event = str(body.get("event") or request.headers.get("x-plane-event", ""))
        comment = event == "issue_comment"
        return await _accept(
            ctx,
            BoardExternalChanged(
                provider="plane",
                delivery_id=delivery[:200],
                event=event,
                action=str(body.get("action", "")),
                item_id=str((data.get("issue") if comment else data.get("id")) or ""),
                actor=_actor((body.get("activity") or {}).get("actor") or data.get("actor") or data.get("updated_by")),
                comment=_text(data.get("comment_stripped") or data.get("comment_html")) if comment else "",
                body=raw.decode("utf-8", errors="replace")[:100_000],
            ),
        )

    @post("/jira", status_code=200)
    async def jira(self, request: OpenRequest) -> JsonObject:
        """Jira: `X-Hub-Signature: sha256=<hex>` is the HMAC-SHA256 of the body with the webhook's shared secret."""
        ctx: Context = request.app.state.ctx
        raw = await request.body()
        signature = request.headers.get("x-hub-signature", "")
        signature = signature[7:] if signature.startswith("sha256=") else ""
        if not _signed_by_one_of(raw, signature, await _secrets(ctx, "jira")):
            raise DomainError(401, "the delivery is not signed by a configured Jira webhook", field="X-Hub-Signature")
        body = _json(raw)
        delivery = request.headers.get("x-atlassian-webhook-identifier") or hashlib.sha256(raw).hexdigest()
        event = str(body.get("webhookEvent", ""))
        return await _accept(
            ctx,
            BoardExternalChanged(
                provider="jira",
                delivery_id=delivery[:200],
                event=event,
                action=event.rsplit("_", 1)[-1],
                item_id=str((body.get("issue") or {}).get("key") or ""),
                actor=_actor(body.get("user") or (body.get("comment") or {}).get("author")),
                comment=_text((body.get("comment") or {}).get("body")) if "comment" in event else "",
                body=raw.decode("utf-8", errors="replace")[:100_000],
            ),
        )
