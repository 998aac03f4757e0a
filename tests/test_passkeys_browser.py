"""The passkeys page (/passkeys/, static/passkeys.js) in a real headless Chromium, with
a virtual authenticator (Chrome DevTools' WebAuthn domain) standing in for the user's
device: add a passkey after a password login, sign in with the browser's picker, use it
as a password login's second step, re-authenticate, rename and remove it; and a page on
another origin cannot complete a ceremony. Each step is checked on the page and in
what the server recorded.

WebAuthn needs a domain as its RP id, so the server is reached as
`http://localhost:<port>` (a secure context for Chromium) with that origin configured."""

from __future__ import annotations

from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from app import make_app, make_server
from config import load_config
from devdb import free_port
from tests.conftest import PASSWORD, Api, register

WAIT = 15_000  # ms: the longest any one step of the page may take
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(port: int) -> dict[str, Any]:
    return {"webauthn_rp_id": "localhost", "webauthn_origins": (f"http://localhost:{port}",)}


async def serve(app, config, port: int):
    server = make_server(app, config)
    server.listen(port, "127.0.0.1")
    return server


async def stop(server) -> None:
    server.stop()
    await server.close_all_connections()


@pytest.fixture
async def base_url(app, config, port: int):
    server = await serve(app, config, port)
    yield f"http://localhost:{port}"
    await stop(server)


@pytest.fixture
def api(port: int, base_url: str) -> Api:
    return Api(f"http://127.0.0.1:{port}")  # the same server; no name to resolve


class Tab:
    """A page in its own browser context with a virtual authenticator of its own, and
    what went wrong in it (script errors, CSP violations)."""

    def __init__(self, page, cdp, authenticator: str) -> None:
        self.page, self.cdp, self.authenticator = page, cdp, authenticator
        self.problems: list[str] = []
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        # A refused call is logged by Chromium as a failed resource: that is no problem here.
        page.on("console", lambda m: self.note(m))

    def note(self, message) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(message.text)

    async def credentials(self) -> list[dict]:
        got = await self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        return got["credentials"]

    async def text(self, selector: str) -> str:
        return await self.page.locator(selector).inner_text()

    async def state(self, state: str) -> str:
        """Wait for the outcome `state`; its message."""
        status = self.page.locator(f"#status[data-state='{state}']")
        await status.wait_for(timeout=WAIT)
        return await status.inner_text()

    async def click(self, selector: str, state: str) -> str:
        await self.page.click(selector)
        return await self.state(state)

    async def password_login(self, user: dict, state: str = "signed-in") -> str:
        await self.page.fill("#password-form [name=username]", user["username"])
        await self.page.fill("#password-form [name=password]", user["password"])
        return await self.click("#password-form button", state)

    async def add_passkey(self, name: str, state: str = "added") -> str:
        await self.page.fill("#add-form [name=name]", name)
        return await self.click("#add-form button", state)

    async def token(self) -> str | None:
        return await self.page.evaluate("sessionStorage.getItem('gatehouse.token')")


async def open_tab(browser, url: str) -> Tab:
    context = await browser.new_context(user_agent="Gatehouse passkeys test")
    page = await context.new_page()
    page.set_default_timeout(WAIT)
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    tab = Tab(page, cdp, added["authenticatorId"])
    await page.goto(url + "/passkeys/")
    await tab.state("signed-out")
    return tab


async def who(tab: Tab) -> tuple[str, str, str]:
    return await tab.text("#who"), await tab.text("#aal"), await tab.text("#amr")


async def with_passkey(browser, base_url: str, api: Api, gatehouse) -> tuple[Tab, dict, Any]:
    """A new account, signed in on the page with its password, that has added a passkey."""
    user = await register(api)
    tab = await open_tab(browser, base_url)
    await tab.password_login(user)
    assert await who(tab) == (user["username"], "aal1", "pwd")
    assert "laptop" in await tab.add_passkey("laptop")
    [passkey] = await gatehouse.passkeys.list(user["id"])
    return tab, user, passkey


async def test_add_a_passkey_then_sign_in_with_the_picker(browser, base_url, api, gatehouse):
    tab, user, passkey = await with_passkey(browser, base_url, api, gatehouse)
    assert passkey.name == "laptop" and passkey.transports == ("internal",)
    # The authenticator holds it, discoverable, for this RP; the page shows it once.
    [held] = await tab.credentials()
    assert held["isResidentCredential"] and held["rpId"] == "localhost"
    assert await tab.page.locator("#recovery-codes li").count() == 10
    assert await tab.text(f"li[data-passkey-id='{passkey.id}'] .meta") != ""
    assert (await who(tab))[1:] == ("aal2", "pwd + webauthn")  # showing the passkey raised the session
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.mfa == ("webauthn",)

    token = await tab.token()
    await tab.click("#logout", "signed-out")
    assert await tab.token() is None
    assert (await api.get("/auth/me", token=token)).status == 403  # the session ended on the server

    # The picker: no username typed; the passkey says whose it is.
    assert await tab.click("#passkey-signin", "signed-in") == "Signed in with your passkey."
    assert await who(tab) == (user["username"], "aal2", "webauthn")
    me = await api.get("/auth/me", token=await tab.token())
    assert me.data["data"]["account"]["id"] == user["id"]
    assert (me.data["data"]["aal"], me.data["data"]["amr"]) == (2, ["webauthn"])
    [login] = await gatehouse.events.find(account_id=user["id"], type="passkey_login")
    assert login["passkey"] == passkey.id
    # A reload keeps the tab signed in (the token is in sessionStorage).
    await tab.page.reload()
    await tab.state("signed-in")
    assert (await who(tab))[0] == user["username"]
    assert tab.problems == [], tab.problems


async def test_a_password_login_finishes_with_the_passkey(browser, base_url, api, gatehouse, clock, config):
    user = await register(api)
    tab = await open_tab(browser, base_url)
    await tab.password_login(user)
    # An old login must show the password again to add a factor: the page asks, then goes on.
    clock.advance(config.sessions.fresh_login_seconds + 1)
    await tab.add_passkey("phone", state="reauthenticate")
    assert await tab.page.is_visible("#reauth-form [name=password]")
    assert not await tab.page.is_visible("#reauth-passkey")
    assert not await tab.page.is_visible("#reauth-form [name=code]")
    await tab.page.fill("#reauth-form [name=password]", PASSWORD)
    await tab.click("#reauth-form button", "added")
    assert [p.name for p in await gatehouse.passkeys.list(user["id"])] == ["phone"]
    assert await tab.page.is_hidden("#reauth")
    await tab.click("#logout", "signed-out")

    # The password alone is one step now; the passkey is the second.
    assert "second step" in await tab.password_login(user, state="second-step")
    assert await tab.token() is None
    await tab.click("#second-passkey", "signed-in")
    assert await who(tab) == (user["username"], "aal2", "pwd + webauthn")
    me = await api.get("/auth/me", token=await tab.token())
    assert (me.data["data"]["aal"], me.data["data"]["amr"]) == (2, ["pwd", "webauthn"])
    logins = await gatehouse.events.find(account_id=user["id"], type="login_ok")
    assert [e["aal"] for e in logins if e["session_id"] == me.data["data"]["session"]] == [2]
    # A wrong password never gets as far as a second step.
    await tab.click("#logout", "signed-out")
    message = await tab.password_login({**user, "password": "not-" + PASSWORD}, state="error")
    assert message and await tab.page.is_hidden("#second-step")
    assert tab.problems == [], tab.problems


async def test_rename_remove_and_the_passkey_no_longer_signs_in(browser, base_url, api, gatehouse, clock, config):
    tab, user, passkey = await with_passkey(browser, base_url, api, gatehouse)
    row = f"li[data-passkey-id='{passkey.id}']"
    await tab.page.fill(f"{row} [name=name]", "work laptop")
    assert "work laptop" in await tab.click(f"{row} button[type=submit]", "renamed")
    assert [p.name for p in await gatehouse.passkeys.list(user["id"])] == ["work laptop"]
    assert await tab.page.input_value(f"{row} [name=name]") == "work laptop"

    # Removing a factor needs a recent sign-in with the second factor: the passkey itself.
    clock.advance(config.sessions.fresh_login_seconds + 1)
    await tab.click(f"{row} button.remove", "reauthenticate")
    assert await tab.page.is_visible("#reauth-passkey")
    assert not await tab.page.is_visible("#reauth-form [name=password]")
    await tab.click("#reauth-passkey", "removed")
    assert await gatehouse.passkeys.list(user["id"]) == []
    assert await tab.page.locator("#passkey-list li").count() == 0 and await tab.page.is_visible("#no-passkeys")
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.mfa == ()
    [removed] = await gatehouse.events.find(account_id=user["id"], type="passkey_removed")
    assert removed["passkey"] == passkey.id
    assert await gatehouse.events.find(account_id=user["id"], type="reauthenticate")

    # The authenticator still holds the key; the server no longer takes it.
    await tab.click("#logout", "signed-out")
    assert len(await tab.credentials()) == 1
    message = await tab.click("#passkey-signin", "error")
    assert message.startswith("The server did not accept the passkey (one it does not know, perhaps removed")
    assert await tab.page.get_attribute("#status", "data-code") == "PASSKEY_REJECTED"
    assert await tab.token() is None and await tab.page.is_hidden("#signed-in")
    # The password alone is enough again.
    await tab.password_login(user)
    assert await who(tab) == (user["username"], "aal1", "pwd")
    assert tab.problems == [], tab.problems


async def test_a_page_on_another_origin_cannot_register(browser, base_url, api, gatehouse, app, config, port):
    user = await register(api)
    # The same server as http://127.0.0.1: an IP address is no RP for "localhost", the browser refuses.
    tab = await open_tab(browser, f"http://127.0.0.1:{port}")
    await tab.password_login(user)  # the API itself answers any origin's page
    await tab.add_passkey("phished", state="error")
    assert await tab.page.get_attribute("#status", "data-code") == "SecurityError"
    assert await tab.credentials() == []
    # A sibling origin (another port of localhost) may use the RP id, so the browser makes
    # the passkey; the server refuses it: that origin is not in GATEHOUSE_WEBAUTHN_ORIGINS.
    other = free_port()
    server = await serve(app, config, other)
    try:
        tab = await open_tab(browser, f"http://localhost:{other}")
        await tab.password_login(user)
        message = await tab.add_passkey("phished", state="error")
        assert await tab.page.get_attribute("#status", "data-code") == "PASSKEY_REJECTED", message
        assert len(await tab.credentials()) == 1
    finally:
        await stop(server)
    assert await gatehouse.passkeys.list(user["id"]) == []
    [failed] = await gatehouse.events.find(account_id=user["id"], type="passkey_failed")
    assert failed["via"] == "register"
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.mfa == ()


async def test_a_sibling_origin_cannot_sign_in_with_a_real_passkey(browser, base_url, api, gatehouse, app, config):
    """A phishing page on another localhost port holding a copy of a real passkey (as a
    relaying proxy would): the assertion names the wrong origin, the server refuses it."""
    tab, user, passkey = await with_passkey(browser, base_url, api, gatehouse)
    [credential] = await tab.credentials()
    other = free_port()
    server = await serve(app, config, other)
    try:
        phish = await open_tab(browser, f"http://localhost:{other}")
        await phish.cdp.send(
            "WebAuthn.addCredential", {"authenticatorId": phish.authenticator, "credential": credential}
        )
        await phish.click("#passkey-signin", "error")
        assert await phish.page.get_attribute("#status", "data-code") == "PASSKEY_REJECTED"
        assert await phish.token() is None
    finally:
        await stop(server)
    assert await gatehouse.events.find(account_id=user["id"], type="passkey_login") == []
    assert await gatehouse.events.find(type="passkey_clone_suspected") == []  # refused for its origin
    assert [e["via"] for e in await gatehouse.events.find(type="passkey_failed")] == ["login"]
    sessions = await api.get("/auth/sessions", token=await tab.token())
    assert len(sessions.data["data"]["sessions"]) == 1  # the password login's only


async def test_the_page_headers_and_passkeys_off(base_url, port, gatehouse, tmp_path):
    client = AsyncHTTPClient()
    page = await client.fetch(f"http://127.0.0.1:{port}/passkeys/")
    assert page.code == 200 and page.headers["Content-Type"] == "text/html; charset=UTF-8"
    for name, value in HEADERS.items():
        assert page.headers[name] == value, name
    body = page.body.decode()
    assert "<script>" not in body and 'id="status" role="status"' in body
    script = await client.fetch(f"http://127.0.0.1:{port}/static/passkeys.js")
    assert script.code == 200 and "javascript" in script.headers["Content-Type"]
    # Off (no RP id, no origins): a 404 saying how to turn them on, and no script.
    env = {"GATEHOUSE_ENV": "development", "GATEHOUSE_DATA_DIR": str(tmp_path), "SECRET_KEY": "k" * 48}
    off = load_config(env)
    other = free_port()
    server = await serve(make_app(off, gatehouse), off, other)
    try:
        page = await client.fetch(f"http://127.0.0.1:{other}/passkeys", raise_error=False)
    finally:
        await stop(server)
    assert page.code == 404 and page.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
    body = page.body.decode()
    assert 'data-state="off"' in body and "GATEHOUSE_WEBAUTHN_RP_ID" in body and "passkeys.js" not in body
