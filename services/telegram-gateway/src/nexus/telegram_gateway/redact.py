"""The bot token never reaches a log line: python-telegram-bot names it in some messages (a rejected
token, the Bot API URL at debug level) and httpx in its request lines. Every record is cleaned
before any handler writes it."""

import logging

MASK = "[bot token]"


class RedactToken(logging.Filter):
    def __init__(self, token: str) -> None:
        super().__init__()
        # The whole token, and its secret half alone (a URL or message may carry either).
        self.secrets = [s for s in (token, token.partition(":")[2]) if len(s) >= 8]

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            record.msg, record.args = self.clean(message), None
        if record.exc_info:  # formatted here, cleaned, and kept as text (formatters use it as it is)
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True


def redact_token_in_logs(token: str) -> RedactToken:
    """Put the filter on every handler of the root logger (where every service's records end)."""
    f = RedactToken(token)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(x, RedactToken) and x.secrets == f.secrets for x in handler.filters):
            handler.addFilter(f)
    return f
