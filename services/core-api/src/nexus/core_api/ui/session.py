"""The UI's session: a sealed cookie (AES-GCM) holding the API key, a CSRF token and an expiry.

The key is what the API checks on every call, so a revoked key ends the session at once; the seal
keeps it unreadable and unforgeable in the browser, HttpOnly keeps it away from scripts."""

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "nexus_ui"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"


class UiSession(msgspec.Struct, kw_only=True):
    csrf: str
    exp: float
    key: str | None = None  # None before sign-in: the login form still needs a CSRF token


@dataclass(frozen=True)
class Sealer:
    aead: AESGCM

    @classmethod
    def from_secret(cls, secret: str | None) -> "Sealer":
        key = hashlib.sha256(secret.encode()).digest() if secret else os.urandom(32)
        return cls(AESGCM(key))

    def seal(self, session: UiSession) -> str:
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(nonce + self.aead.encrypt(nonce, msgspec.json.encode(session), b"ui")).decode()

    def open(self, token: str | None) -> UiSession | None:
        if not token or len(token) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            session = msgspec.json.decode(self.aead.decrypt(raw[:12], raw[12:], b"ui"), type=UiSession)
        except (ValueError, InvalidTag, msgspec.DecodeError):
            return None
        return session if session.exp > time.time() else None


def new_session(ttl_s: float, key: str | None = None) -> UiSession:
    return UiSession(csrf=secrets.token_urlsafe(24), exp=time.time() + ttl_s, key=key)


def csrf_ok(session: UiSession | None, presented: str | None) -> bool:
    return bool(session and presented and hmac.compare_digest(session.csrf, presented))
