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
from typing import overload

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
    own_key: bool = False  # the key was minted for this session alone (a login link): signing out revokes it


class LoginLink(msgspec.Struct, kw_only=True):
    """A one-time sign-in: the key it carries is revoked when the link is used (a new key serves the session)."""

    key: str
    exp: float


@dataclass(frozen=True)
class Sealer:
    aead: AESGCM

    @classmethod
    def from_secret(cls, secret: str | None) -> "Sealer":
        key = hashlib.sha256(secret.encode()).digest() if secret else os.urandom(32)
        return cls(AESGCM(key))

    def seal(self, sealed: UiSession | LoginLink) -> str:
        nonce = os.urandom(12)
        aad = type(sealed).__name__.encode()  # a session cookie is never a valid link, nor the other way round
        return base64.urlsafe_b64encode(nonce + self.aead.encrypt(nonce, msgspec.json.encode(sealed), aad)).decode()

    @overload
    def open(self, token: str | None) -> UiSession | None: ...
    @overload
    def open(self, token: str | None, kind: type[LoginLink]) -> LoginLink | None: ...

    def open(  # an instance of `kind`, or None
        self, token: str | None, kind: type[UiSession] | type[LoginLink] = UiSession
    ) -> UiSession | LoginLink | None:
        if not token or len(token) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            opened: UiSession | LoginLink = msgspec.json.decode(
                self.aead.decrypt(raw[:12], raw[12:], kind.__name__.encode()), type=kind
            )
        except (ValueError, InvalidTag, msgspec.DecodeError):
            return None
        return opened if opened.exp > time.time() else None


def new_session(ttl_s: float, key: str | None = None, *, own_key: bool = False) -> UiSession:
    return UiSession(csrf=secrets.token_urlsafe(24), exp=time.time() + ttl_s, key=key, own_key=own_key)


def csrf_ok(session: UiSession | None, presented: str | None) -> bool:
    return bool(session and presented and hmac.compare_digest(session.csrf, presented))
