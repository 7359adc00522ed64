"""A local stand-in for Telegram's Bot API, speaking its HTTP wire format: `POST /bot/<token>/<method>`
with form-encoded (or JSON) parameters, answers `{"ok": true, "result": …}`; updates are served to
long polling (getUpdates with offset/timeout) or, once setWebhook was called, POSTed to the webhook
with its X-Telegram-Bot-Api-Secret-Token. A test can make the next calls of a method answer 429, or
any other error Telegram gives (400, 403, 502), be carried out and lose their answer (`drop`), or wait,
not carried out yet, until the test releases them (`hold`)."""

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import tornado.web
from tornado.httpserver import HTTPServer

from nexus.dev.servers import free_port

BOT_USER = {
    "id": 4242,
    "is_bot": True,
    "first_name": "Nexus",
    "username": "nexus_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int


@dataclass
class FakeBotApi:
    token: str = "123456:TEST-token"
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    throttle: dict[str, list[int]] = field(default_factory=dict)  # method → retry_after of the next answers
    # "method" or "method:chat_id" → (status, description) of the next answers
    fail: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    # method → how many of its next calls are carried out, then their connection closed with no answer
    drop: dict[str, int] = field(default_factory=dict)
    # "method" or "method:chat_id" → its calls wait, not carried out, until `release`; `holding` shows them
    hold: set[str] = field(default_factory=set)
    holding: list[Call] = field(default_factory=list)
    webhook: dict[str, str] | None = None
    _updates: list[dict] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _server: HTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot/"

    async def start(self) -> None:
        self.port = self.port or free_port()
        app = tornado.web.Application([(r"/bot/([^/]+)/(\w+)", _Handler, {"fake": self})])
        self._server = app.listen(self.port, address="127.0.0.1")

    async def stop(self) -> None:
        if self._server:
            self._server.stop()

    # ------------------------------------------------------------------ what the bot did
    def sent(self, chat_id: int | None = None, method: str = "sendMessage") -> list[dict]:
        return [
            c.params
            for c in self.calls
            if c.method == method
            and c.status == 200
            and (chat_id is None or int(c.params.get("chat_id", 0)) == chat_id)
        ]

    async def wait(self, predicate, what: str, timeout_s: float = 120.0):
        """Wait until predicate() is truthy after some call; bounded, and says what never came."""

        async def until():
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        try:
            return await asyncio.wait_for(until(), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"never saw {what}; calls: {[(c.method, c.params) for c in self.calls[-15:]]}"
            ) from None

    async def wait_message(self, chat_id: int, contains: str, method: str = "sendMessage") -> dict:
        return await self.wait(
            lambda: next((m for m in self.sent(chat_id, method) if contains in m.get("text", "")), None),
            f"{method} to {chat_id} containing {contains!r}",
        )

    async def wait_answer(self, callback_id: str) -> dict:
        return await self.wait(
            lambda: next(
                (c for c in self.sent(None, "answerCallbackQuery") if c.get("callback_query_id") == callback_id), None
            ),
            f"answer to {callback_id}",
        )

    # ------------------------------------------------------------------ what users do
    def _user(self, user_id: int) -> dict:
        return {"id": user_id, "is_bot": False, "first_name": f"user{user_id}", "username": f"user{user_id}"}

    async def send_text(self, user_id: int, text: str, chat_id: int | None = None) -> None:
        """A user's message; with a (negative) chat_id, said in that group."""
        chat_id = chat_id or user_id
        entities = (
            [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
        )
        await self.push(
            {
                "message": {
                    "message_id": next(self._ids),
                    "date": int(time.time()),
                    "text": text,
                    "entities": entities,
                    "chat": {"id": chat_id, "type": "group" if chat_id < 0 else "private"},
                    "from": self._user(user_id),
                }
            }
        )

    async def press(self, user_id: int, message: dict, data: str) -> str:
        """Press an inline button of a message the bot sent (as recorded by sendMessage)."""
        callback_id = f"cb{next(self._ids)}"
        await self.push(
            {
                "callback_query": {
                    "id": callback_id,
                    "from": self._user(user_id),
                    "chat_instance": "ci",
                    "data": data,
                    "message": {
                        "message_id": message["message_id"],
                        "date": int(time.time()),
                        "text": message["text"],
                        "chat": {"id": int(message["chat_id"]), "type": "private"},
                        "from": BOT_USER,
                    },
                }
            }
        )
        return callback_id

    async def push(self, body: dict) -> None:
        update = {"update_id": next(self._ids), **body}
        if self.webhook is not None:
            headers = {"X-Telegram-Bot-Api-Secret-Token": self.webhook.get("secret_token", "")}
            async with httpx.AsyncClient() as client:
                r = await client.post(self.webhook["url"], json=update, headers=headers)
                r.raise_for_status()
            return
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()

    async def release(self, key: str) -> None:
        """Carry out the calls held under `key`, and those to come."""
        async with self._changed:
            self.hold.discard(key)
            self._changed.notify_all()

    async def _held(self, method: str, params: dict[str, Any]) -> None:
        keys = (f"{method}:{params.get('chat_id')}", method)
        async with self._changed:
            if not self.hold.intersection(keys):
                return
            call = Call(method, params, 0)
            self.holding.append(call)
            self._changed.notify_all()
            await self._changed.wait_for(lambda: not self.hold.intersection(keys))
            self.holding.remove(call)

    # ------------------------------------------------------------------ the Bot API
    async def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict]:
        await self._held(method, params)
        if self.throttle.get(method):
            retry_after = self.throttle[method].pop(0)
            await self._record(method, params, 429)
            return 429, {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry_after}",
                "parameters": {"retry_after": retry_after},
            }
        for key in (f"{method}:{params.get('chat_id')}", method):  # one chat's calls, or any
            if self.fail.get(key):
                status, description = self.fail[key].pop(0)
                await self._record(method, params, status)
                return status, {"ok": False, "error_code": status, "description": description}
        if method == "getUpdates":
            return 200, {"ok": True, "result": await self._get_updates(params)}
        result = self._result(method, params)
        if method == "sendMessage":
            params["message_id"] = result["message_id"]
        await self._record(method, params, 200)
        return 200, {"ok": True, "result": result}

    async def _record(self, method: str, params: dict, status: int) -> None:
        async with self._changed:
            self.calls.append(Call(method, params, status))
            self._changed.notify_all()

    def _result(self, method: str, params: dict) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "setWebhook":
            self.webhook = {"url": params["url"], "secret_token": params.get("secret_token", "")}
            return True
        if method == "deleteWebhook":
            self.webhook = None
            return True
        if method in ("sendMessage", "editMessageText"):
            chat_id = int(params["chat_id"])
            message_id = int(params.get("message_id") or next(self._ids))
            return {
                "message_id": message_id,
                "date": int(time.time()),
                "text": params.get("text", ""),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT_USER,
            }
        return True

    async def _get_updates(self, params: dict) -> list[dict]:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 1.0)

        if offset > 0:  # as Telegram does: updates below the offset are confirmed, and never given again
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

        def pending() -> list[dict]:
            return [u for u in self._updates if u["update_id"] >= offset]

        async with self._changed:
            if not pending() and timeout:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(pending())), timeout)
                except TimeoutError:
                    pass
            return pending()


class _Handler(tornado.web.RequestHandler):
    def initialize(self, fake: FakeBotApi) -> None:
        self.fake = fake

    async def post(self, token: str, method: str) -> None:
        if token != self.fake.token:
            await self.fake._record(method, {}, 404)
            self.set_status(404)
            self.finish({"ok": False, "error_code": 404, "description": "Not Found"})
            return
        if self.request.headers.get("Content-Type", "").startswith("application/json"):
            params = json.loads(self.request.body or b"{}")
        else:
            params = {k: v[-1].decode() for k, v in self.request.body_arguments.items()}
        if "reply_markup" in params and isinstance(params["reply_markup"], str):
            params["reply_markup"] = json.loads(params["reply_markup"])
        status, body = await self.fake.answer(method, params)
        if self.fake.drop.get(method):  # done, and the answer lost on the way: the client cannot know
            self.fake.drop[method] -= 1
            self.request.connection.stream.close()
            self._finished = True  # nothing is to be written on the closed connection
            return
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    get = post
