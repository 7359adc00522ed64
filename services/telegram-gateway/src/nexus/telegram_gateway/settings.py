"""telegram-gateway settings: every field is read from NEXUS_<FIELD> in main(), nowhere else."""

from typing import Literal

from nexus.observability.service import CommonSettings


class TelegramSettings(CommonSettings, kw_only=True):
    telegram_token: str | None = None  # without one, Telegram is off: the gateway still follows events
    telegram_api_url: str = "https://api.telegram.org/bot"  # the Bot API base; the token is appended
    telegram_mode: Literal["polling", "webhook"] = "polling"
    telegram_webhook_url: str | None = None  # the public URL Telegram posts updates to (webhook mode)
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = 8443
    telegram_webhook_path: str = "telegram"
    telegram_webhook_secret: str | None = None  # checked against X-Telegram-Bot-Api-Secret-Token
    telegram_poll_timeout_s: int = 10
    telegram_default_planner: str = "planner"  # the planner agent of a /goal that names none
    telegram_default_repository: str | None = None  # the repository of a /goal that names none
    telegram_link_base: str | None = None  # e.g. https://nexus.example.com/ui: alerts link to {base}/runs/<id>
    telegram_send_retry_s: float = 5.0  # first delay before an outbox message is sent again
    telegram_rpc_timeout_s: float = 5.0
