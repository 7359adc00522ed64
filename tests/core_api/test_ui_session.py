"""The UI's sealed session cookie, without a server: it expires, it cannot be read or altered, and
a cookie sealed by another secret means nothing here."""

import time

from nexus.core_api.ui.session import LoginLink, Sealer, UiSession, csrf_ok, new_session


def test_a_sealed_session_opens_until_it_expires() -> None:
    sealer = Sealer.from_secret("s3cret")
    live = new_session(60, key="nxk_abc")
    opened = sealer.open(sealer.seal(live))
    assert opened == live
    assert sealer.open(sealer.seal(UiSession(csrf="t", exp=time.time() - 1, key="nxk_abc"))) is None


def test_the_key_is_not_readable_and_a_changed_cookie_is_refused() -> None:
    sealer = Sealer.from_secret("s3cret")
    token = sealer.seal(new_session(60, key="nxk_visible_if_plain"))
    assert "nxk_visible_if_plain" not in token
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    assert sealer.open(flipped) is None
    assert sealer.open("not base64 at all!") is None and sealer.open("") is None and sealer.open(None) is None
    assert Sealer.from_secret("another").open(token) is None
    assert Sealer.from_secret("s3cret").open(token) is not None  # the same secret in another process opens it


def test_csrf_needs_the_sessions_own_token() -> None:
    session = new_session(60)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, "") and not csrf_ok(session, None) and not csrf_ok(None, session.csrf)
    assert not csrf_ok(session, new_session(60).csrf)


def test_a_session_cookie_is_no_login_link_and_a_link_expires() -> None:
    sealer = Sealer.from_secret("s3cret")
    assert sealer.open(sealer.seal(new_session(60, key="nxk_a")), LoginLink) is None
    assert sealer.open(sealer.seal(LoginLink(key="nxk_a", exp=time.time() + 60))) is None  # read as a session
    assert sealer.open(sealer.seal(LoginLink(key="nxk_a", exp=time.time() + 60)), LoginLink).key == "nxk_a"
    assert sealer.open(sealer.seal(LoginLink(key="nxk_a", exp=time.time() - 1)), LoginLink) is None
