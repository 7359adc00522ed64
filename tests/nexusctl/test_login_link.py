"""`nexusctl keys login-link`: a one-time web UI sign-in an admin hands to someone."""

import re

import httpx
import pytest

pytestmark = pytest.mark.infra
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def test_a_minted_link_signs_in_once(ctl, nexus) -> None:
    minted = ctl("keys", "login-link", "--name", "carol", "--role", "lead", "--ttl", "300")
    assert minted.code == 0 and "one-time sign-in for carol (lead)" in minted.stderr
    url = minted.stdout.strip()
    assert url.startswith(f"{nexus.url}/ui/login/link?t=")
    with httpx.Client(timeout=30) as browser:
        page = browser.get(url)
        assert page.status_code == 200 and "Sign in as carol (lead)" in page.text
        token = url.split("t=", 1)[1]
        r = browser.post(f"{nexus.url}/ui/login/link", data={"_csrf": CSRF.search(page.text).group(1), "t": token})
        assert r.status_code == 303
        assert "carol-ui · lead" in browser.get(f"{nexus.url}/ui/approvals").text
    with httpx.Client(timeout=30) as other:
        assert other.get(url).status_code == 401  # spent
    assert ctl("keys", "login-link", "--name", "dave", "--role", "viewer", NEXUS_API_KEY="nxk_nobody").code == 1
